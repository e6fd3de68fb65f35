"""Binance USD-M futures public REST client (market data) on one aiohttp session.

Endpoints (Binance USD-M futures docs, "Market Data Endpoints"), each with its request
weight: ``/fapi/v1/depth`` (limit 5, 10, 20, 50: weight 2; 100: 5; 500: 10; 1000: 20),
``/fapi/v1/klines`` (1-minute bars oldest first, the forming bar included and dropped
here; limit up to 1500, weight 1 below 100 bars, 2 below 500, 5 up to 1000, 10 above),
``/fapi/v1/trades`` (recent trades, limit up to 1000, weight 5), ``/fapi/v1/time``
(``serverTime``, weight 1) and ``/fapi/v1/exchangeInfo`` (listed symbols and their
status, weight 1).

Rate limits (docs, "General Info > Limits" and "IP Limits"):

* every reply carries ``X-MBX-USED-WEIGHT-1M``, the weight this IP has used in the
  current minute; the limit is 2400 per minute (``WEIGHT_LIMIT_1M``). ``WeightBudget``
  keeps our own count, takes the header's when it is higher (other programs on the same
  IP), and makes a request wait for the next minute when it would take the minute past
  ``budget_share`` of the limit;
* HTTP 429 means "back off": the reply's ``Retry-After`` (seconds) is honoured for every
  request to Binance (not only the one refused), plus a random jitter, and counted
  (``http_429``). Ignoring 429s gets the IP banned;
* HTTP 418 means the IP is banned (for 2 minutes up to 3 days, "Retry-After" says how
  long): no request at all goes to Binance until then; each call raises
  ``BinanceBannedError`` at once. The ban is logged once, loudly, counted in
  ``lobbot_venue_bans_total{venue="binance"}`` and exported as
  ``lobbot_venue_banned_until_seconds``.

Other transient faults (5xx, timeouts, dropped connections, unparseable bodies) are
retried with exponential backoff and full jitter (``backoff_delay``); the retry loop,
the session and the ban bookkeeping are the venue-neutral ``RestClientBase``
(``venues/rest_client.py``), shared with Bybit. Other 4xx answers raise
``BinanceApiError`` at once (asking again cannot fix a bad symbol). Every fault is
counted as ``lobbot_venue_faults_total{venue,reason}``,
every re-sent request as ``lobbot_venue_retries_total{venue}``.

Exchange time: ``/fapi/v1/time`` replies and the depth snapshot's ``E`` (its output
time) are fed with the request's local send and receive times to ``offset``
(a ``ClockOffsetEstimator``, minimum round trip wins).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from backend.metrics import Metrics
from backend.symbols import validate_symbol
from backend.venues.binance.messages import (
    BinanceApiError,
    BinanceMessageError,
    DepthSnapshot,
    decode_json,
    parse_depth_snapshot,
    parse_error_body,
    parse_exchange_info,
    parse_kline_rows,
    parse_rest_trades,
    parse_server_time,
)
from backend.venues.rest_client import RestClientBase, Transient
from backend.venues.source import Clock
from backend.venues.types import Candle, Trade

__all__ = ["BinanceBannedError", "BinanceRequestError", "BinanceRestClient", "DEPTH_LIMITS", "WEIGHT_LIMIT_1M",
           "WeightBudget", "depth_limit_for", "depth_weight", "kline_weight"]

log = logging.getLogger(__name__)

WEIGHT_LIMIT_1M = 2400
"""Binance USD-M "IP Limits": request weight per IP per minute (``REQUEST_WEIGHT`` 2400 / 1 MINUTE)."""
DEFAULT_BAN_S = 120.0
"""Ban length assumed when a 418 has no ``Retry-After``: Binance's shortest automated IP ban (2 minutes)."""
DEPTH_LIMITS = (5, 10, 20, 50, 100, 500, 1000)
MAX_KLINE_LIMIT = 1500
MAX_TRADE_LIMIT = 1000
TRADES_WEIGHT = 5
USED_WEIGHT_HEADER = "X-MBX-USED-WEIGHT-1M"


def depth_limit_for(levels: int) -> int:
    """The smallest valid ``/fapi/v1/depth`` limit holding ``levels`` levels (at most 1000)."""
    return next((lim for lim in DEPTH_LIMITS if lim >= levels), DEPTH_LIMITS[-1])


def depth_weight(limit: int) -> int:
    """Request weight of ``/fapi/v1/depth`` with ``limit``."""
    return 2 if limit <= 50 else 5 if limit <= 100 else 10 if limit <= 500 else 20


def kline_weight(limit: int) -> int:
    """Request weight of ``/fapi/v1/klines`` with ``limit`` bars."""
    return 1 if limit < 100 else 2 if limit < 500 else 5 if limit <= 1000 else 10


class BinanceBannedError(RuntimeError):
    """Binance answered HTTP 418 (this IP is banned); no request is sent until ``until_ms`` (ms since the epoch)."""

    reason = "banned"

    def __init__(self, until_ms: int, remaining_s: float):
        self.until_ms = until_ms
        self.remaining_s = remaining_s
        super().__init__(f"Binance has banned this IP address (HTTP 418, rate limits ignored); REST requests are "
                         f"paused for {remaining_s:.0f} s more")


class BinanceRequestError(RuntimeError):
    """A request that still failed after every retry (the last cause is chained), or a malformed answer.

    ``reason`` is the fault word of the last cause (``http_429``, ``timeout``, ``malformed_book`` ...).
    """

    def __init__(self, message: str, reason: str = "request_failed"):
        super().__init__(message)
        self.reason = reason


class WeightBudget:
    """The IP's request weight in the current minute, and how long a request must wait to stay inside a share of it.

    Clock-free: every method takes the time (ms since the epoch, on the exchange's clock
    when known). Binance counts weight per calendar minute (``X-MBX-USED-WEIGHT-1M``).
    """

    def __init__(self, limit: int = WEIGHT_LIMIT_1M, share: float = 0.8):
        self.limit = limit
        self.share = share
        self.minute = -1
        self.used = 0

    def _roll(self, now_ms: int) -> None:
        m = now_ms // 60_000
        if m != self.minute:
            self.minute, self.used = m, 0

    def observe(self, used: int, now_ms: int) -> None:
        """The header's weight used this minute, seen at ``now_ms``: our count becomes the larger of the two."""
        self._roll(now_ms)
        self.used = max(self.used, int(used))

    def delay_ms(self, weight: int, now_ms: int) -> int:
        """How long (ms) a request of ``weight`` must wait so the minute stays within ``share * limit``; 0: send now."""
        self._roll(now_ms)
        if self.used + weight <= self.share * self.limit:
            return 0
        return (self.minute + 1) * 60_000 - now_ms + 50  # a little past the boundary

    def take(self, weight: int, now_ms: int) -> None:
        """Count a request of ``weight`` sent at ``now_ms``."""
        self._roll(now_ms)
        self.used += weight


class BinanceRestClient(RestClientBase):
    """GET requests to one Binance USD-M REST base URL with rate limits, bans and retries; an async context manager.

    ``timeout_s`` bounds one attempt; ``max_retries`` attempts follow the first. ``metrics``
    is the bot's registry (a new one when None); counts carry ``venue``.
    """

    label = "Binance"
    banned_error = BinanceBannedError
    request_error = BinanceRequestError
    ban_text = ("BINANCE IP BAN: %s answered HTTP 418 (this IP kept sending after being told to back off). "
                "All REST requests to Binance stop for %.0f s, until %s, and then resume by themselves; "
                "samples that need REST are skipped with reason 'banned' meanwhile.")
    log = log

    def __init__(self, base_url: str, *, timeout_s: float = 10.0, max_retries: int = 5, backoff_base_s: float = 0.5,
                 backoff_max_s: float = 10.0, clock: Clock | None = None, seed: int | None = None,
                 metrics: Metrics | None = None, venue: str = "binance", weight_share: float = 0.8,
                 max_wait_s: float = 60.0):
        self._init_rest(base_url, timeout_s=timeout_s, max_retries=max_retries, backoff_base_s=backoff_base_s,
                        backoff_max_s=backoff_max_s, clock=clock, seed=seed, metrics=metrics, venue=venue,
                        ban_s=DEFAULT_BAN_S)
        self.max_wait_s = max_wait_s
        self.weights = WeightBudget(WEIGHT_LIMIT_1M, weight_share)
        self.paused_until_ms = 0  # after a 429: no request before this (local ms)

    def _on_banned(self, retry_after_s: float | None) -> BinanceBannedError:
        """HTTP 418: a ban as long as its ``Retry-After`` says (``DEFAULT_BAN_S`` without one)."""
        self.ban.duration_ms = int((retry_after_s if retry_after_s is not None else DEFAULT_BAN_S) * 1000)
        return self._banned()

    async def _before_send(self, weight: int) -> None:
        """Wait out a 429 pause and the minute's weight budget (bounded by ``max_wait_s``)."""
        now = self.clock.now_ms()
        wait_ms = max(self.paused_until_ms - now, 0)
        off = self.offset.offset_ms(now) or 0.0
        wait_ms = max(wait_ms, self.weights.delay_ms(weight, int(now + off)))
        if wait_ms > 0:
            if wait_ms > self.max_wait_s * 1000:
                raise BinanceRequestError(f"Binance request weight: waiting {wait_ms / 1000:.0f} s for the rate "
                                          "limit would exceed the wait allowed", "rate_limited")
            await asyncio.sleep(wait_ms / 1000.0)
        self._check_ban()
        now = self.clock.now_ms()
        self.weights.take(weight, int(now + (self.offset.offset_ms(now) or 0.0)))

    # --- requests --------------------------------------------------------------------
    async def request(self, path: str, params: dict[str, Any], weight: int = 1) -> tuple[Any, int, int]:
        """GET ``path`` and return ``(decoded JSON, local send ms, local receive ms)``, retrying transient faults.

        Raises ``BinanceBannedError`` at once during an IP ban (nothing is sent) or on
        HTTP 418, ``BinanceApiError`` at once for other 4xx answers, and
        ``BinanceRequestError`` when every attempt failed.
        """
        return await self._retrying(path, params, weight)

    async def _once(self, url: str, params: dict[str, Any], where: str) -> tuple[Any, int, int]:
        """One attempt: the used-weight header feeds ``weights``; HTTP 418 is a ban, 429 pauses every request
        for its ``Retry-After`` (plus jitter), 5xx is transient, other statuses raise ``BinanceApiError``."""
        status, headers, body, t_send, t_recv = await self._get(url, params)
        used = headers.get(USED_WEIGHT_HEADER)
        if used is not None and used.isdigit():
            self.weights.observe(int(used), int(t_recv + (self.offset.offset_ms(t_recv) or 0.0)))
        retry_after = _seconds(headers.get("Retry-After"))
        if status == 418:
            self._fault("http_418")
            raise self._on_banned(retry_after)
        if status == 429:
            pause = (retry_after if retry_after is not None else 1.0) * 1000
            pause += self._rng.uniform(0, 0.2 * pause + 100)  # jitter: do not all come back at once
            self.paused_until_ms = max(self.paused_until_ms, t_recv + int(pause))
            log.warning("Binance answered HTTP 429 (rate limit): all REST requests wait %.1f s", pause / 1000)
            raise Transient("http_429")
        if status >= 500:
            raise Transient(f"http_{status}")
        if status != 200:
            try:
                payload = decode_json(body, where)
            except BinanceMessageError:
                payload = None
            err = parse_error_body(payload, status, where)
            self._fault(f"http_{status}")
            raise err
        try:
            return decode_json(body, where), t_send, t_recv
        except BinanceMessageError as exc:
            raise Transient("malformed_response", str(exc)[:100]) from None

    # --- endpoints -------------------------------------------------------------------
    async def get_depth(self, symbol: str, limit: int = 1000) -> DepthSnapshot:
        """``/fapi/v1/depth``: the book with ``limit`` levels per side (one of ``DEPTH_LIMITS``), as sent.

        Its ``E`` feeds the clock offset. Raises ``BinanceRequestError`` (after retries, or a
        malformed book), ``BinanceApiError``, ``BinanceBannedError`` or ``ValueError`` (a bad limit).
        """
        validate_symbol(symbol)
        if limit not in DEPTH_LIMITS:
            raise ValueError(f"depth limit must be one of {DEPTH_LIMITS}, got {limit}")
        payload, t_send, t_recv = await self.request("/fapi/v1/depth", {"symbol": symbol, "limit": limit},
                                                     depth_weight(limit))
        try:
            snap = parse_depth_snapshot(payload, symbol)
        except BinanceMessageError as exc:
            self._fault("malformed_book")
            raise BinanceRequestError(str(exc), "malformed_book") from exc
        self.offset.add_round_trip(t_send, t_recv, snap.event_ms)
        return snap

    async def get_server_time(self) -> int:
        """``/fapi/v1/time``: the server's time in ms (its round trip also feeds ``offset``)."""
        payload, t_send, t_recv = await self.request("/fapi/v1/time", {}, 1)
        try:
            server = parse_server_time(payload)
        except BinanceMessageError as exc:
            self._fault("malformed_response")
            raise BinanceRequestError(str(exc), "malformed_response") from exc
        self.offset.add_round_trip(t_send, t_recv, server)
        return server

    async def get_exchange_info(self) -> dict[str, tuple[str, str]]:
        """``/fapi/v1/exchangeInfo``: ``{symbol: (status, contractType)}`` of every listed contract."""
        payload, _, _ = await self.request("/fapi/v1/exchangeInfo", {}, 1)
        try:
            return parse_exchange_info(payload)
        except BinanceMessageError as exc:
            self._fault("malformed_response")
            raise BinanceRequestError(str(exc), "malformed_response") from exc

    async def get_klines(self, symbol: str, *, start_ms: int | None = None, end_ms: int | None = None,
                         limit: int = 500) -> list[Candle]:
        """1-minute bars oldest first (``/fapi/v1/klines``), the forming bar included."""
        validate_symbol(symbol)
        limit = max(1, min(limit, MAX_KLINE_LIMIT))
        params: dict[str, Any] = {"symbol": symbol, "interval": "1m", "limit": limit}
        if start_ms is not None:
            params["startTime"] = int(start_ms)
        if end_ms is not None:
            params["endTime"] = int(end_ms)
        payload, _, _ = await self.request("/fapi/v1/klines", params, kline_weight(limit))
        try:
            return parse_kline_rows(payload, symbol)
        except BinanceMessageError as exc:
            self._fault("malformed_klines")
            raise BinanceRequestError(str(exc), "malformed_klines") from exc

    async def get_closed_candles(self, symbol: str, *, count: int | None = None,
                                 after_ms: int | None = None) -> list[Candle]:
        """Closed 1-minute bars, oldest first: the last ``count`` bars, or every bar starting after ``after_ms``.

        A bar is closed when ``start + 60 s`` is at or before the exchange's time (local
        time plus the measured offset). Pages through history as needed.
        """
        if (count is None) == (after_ms is None):
            raise ValueError("give exactly one of count or after_ms")
        now = self.clock.now_ms()
        ex_now = int(now + (self.offset.offset_ms(now) or 0.0))
        out: dict[int, Candle] = {}
        if after_ms is not None:
            start = after_ms + 1
            for _ in range(50):
                bars = await self.get_klines(symbol, start_ms=start, limit=MAX_KLINE_LIMIT)
                for c in bars:
                    if c.start_ms > after_ms and c.close_ms <= ex_now:
                        out[c.start_ms] = c
                if len(bars) < MAX_KLINE_LIMIT:
                    break
                start = bars[-1].start_ms + 1
        else:
            end: int | None = None
            for _ in range(50):
                want = min(MAX_KLINE_LIMIT, count - len(out) + 1)
                bars = await self.get_klines(symbol, end_ms=end, limit=want)
                for c in bars:
                    if c.close_ms <= ex_now:
                        out[c.start_ms] = c
                if not bars or len(out) >= count or len(bars) < want:
                    break
                end = bars[0].start_ms - 1
        keys = sorted(out)
        bars = [out[k] for k in keys]
        return bars[-count:] if count is not None else bars

    async def get_recent_trades(self, symbol: str, limit: int = 500) -> list[tuple[int, Trade]]:
        """``/fapi/v1/trades``: ``[(trade id, Trade)]`` oldest first."""
        validate_symbol(symbol)
        payload, _, _ = await self.request("/fapi/v1/trades",
                                           {"symbol": symbol, "limit": max(1, min(limit, MAX_TRADE_LIMIT))},
                                           TRADES_WEIGHT)
        try:
            return parse_rest_trades(payload, symbol)
        except BinanceMessageError as exc:
            self._fault("malformed_trades")
            raise BinanceRequestError(str(exc), "malformed_trades") from exc


def _seconds(value: str | None) -> float | None:
    """A ``Retry-After`` header in seconds, or None when absent or not a number."""
    if not value:
        return None
    try:
        out = float(value)
    except ValueError:
        return None
    return out if out >= 0 else None

