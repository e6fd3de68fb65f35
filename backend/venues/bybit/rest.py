"""Bybit v5 public REST client (linear market data) on one aiohttp session.

Endpoints (Bybit v5 docs, "Market"): ``/v5/market/orderbook`` (limit 1..200),
``/v5/market/kline`` (1-minute bars; Bybit answers newest first and includes the
still-forming bar, which is dropped here), ``/v5/market/recent-trade`` (limit 1..1000),
``/v5/market/time`` (server time) and ``/v5/market/instruments-info`` (the listed
symbols and their status, paged by ``cursor``, at most 1000 per page).

Exchange time: every reply's envelope ``time`` (the server's clock, ms) is fed with the
request's local send and receive times to ``offset`` (a ``ClockOffsetEstimator``), so
the venue's clock offset is known from ordinary traffic.

Bans: HTTP 403 means Bybit has banned this IP ("Rate Limit Rules > IP Limit": stop all
HTTP sessions and wait at least 10 minutes). The first 403 starts ``ban`` (a
``BanState`` of ``BYBIT_BAN_S``), logs one loud line, counts
``lobbot_venue_bans_total{venue}`` and sets ``lobbot_venue_banned_until_seconds{venue}``;
until it ends no request is sent at all: each call raises ``BybitBannedError`` at once.

Transient failures are retried with exponential backoff and full jitter:
HTTP 429 and 5xx, the rate-limit/restart ``retCode``s 10006, 10016 and 10018,
timeouts, dropped connections and unparseable bodies. Any other non-zero
``retCode`` (bad symbol, bad parameter, ...) raises ``BybitApiError`` at once,
because asking again cannot fix it. Every fault is counted in the shared ``Metrics``
as ``lobbot_venue_faults_total{venue,reason}`` (reasons ``http_429``, ``http_503``,
``ret_code_10006``, ``timeout``, ``connection_error``, ``malformed_response``,
``malformed_book``, ``request_failed``, ...) and every re-sent request as
``lobbot_venue_retries_total{venue}``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Any

import aiohttp

from backend.metrics import Metrics
from backend.venues.health import BYBIT_BAN_S, BanState, ClockOffsetEstimator
from backend.venues.bybit.messages import (
    BybitApiError,
    BybitMessageError,
    Instrument,
    decode_json,
    parse_instruments,
    parse_kline_rows,
    parse_rest_orderbook,
    parse_rest_trades,
    unwrap_envelope,
)
from backend.venues.orderbook import OrderBook
from backend.venues.source import Clock
from backend.venues.types import CANDLE_MS, Candle, Trade
from backend.symbols import validate_symbol

log = logging.getLogger(__name__)

MAX_BOOK_LIMIT = 200
MAX_KLINE_LIMIT = 1000
MAX_TRADE_LIMIT = 1000
MAX_INSTRUMENTS_LIMIT = 1000  # "Get Instruments Info": limit 1..1000 per page
IP_REQUESTS_PER_5S = 600
"""Bybit v5 "Rate Limit Rules > IP Limit": at most 600 HTTP requests per IP in any 5-second window."""


class BybitBannedError(RuntimeError):
    """Bybit answered HTTP 403 (this IP is banned); no request is sent until ``until_ms`` (ms since the epoch)."""

    reason = "banned"

    def __init__(self, until_ms: int, remaining_s: float):
        self.until_ms = until_ms
        self.remaining_s = remaining_s
        super().__init__(f"Bybit has banned this IP address (HTTP 403, too many requests); REST requests are paused "
                         f"for {remaining_s:.0f} s more")


class BybitRequestError(RuntimeError):
    """A request that still failed after every retry (the last cause is chained), or a malformed answer.

    ``reason`` is the fault word of the last cause (``http_429``, ``timeout``,
    ``malformed_book``, ...), for a snapshot's ``reason``.
    """

    def __init__(self, message: str, reason: str = "request_failed"):
        super().__init__(message)
        self.reason = reason


class _Transient(Exception):
    def __init__(self, reason: str, retry_after: float | None = None, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.retry_after = retry_after


def backoff_delay(attempt: int, base_s: float, max_s: float, rng: random.Random) -> float:
    """Full jitter: uniform in [0, min(max, base * 2**attempt)], never below a tenth of the cap."""
    cap = min(max_s, base_s * (2**attempt))
    return rng.uniform(cap * 0.1, cap)


class BybitRestClient:
    """GET requests to one Bybit REST base URL with retries; an async context manager.

    ``timeout_s`` bounds one attempt; ``max_retries`` attempts follow the first.
    ``metrics`` is the bot's registry (a new one when None).
    """

    def __init__(
        self,
        base_url: str,
        *,
        timeout_s: float = 10.0,
        max_retries: int = 5,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 10.0,
        category: str = "linear",
        clock: Clock | None = None,
        seed: int | None = None,
        metrics: Metrics | None = None,
        venue: str = "bybit",
        ban_s: float = BYBIT_BAN_S,
    ):
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.category = category
        self.clock = clock or Clock()
        self._rng = random.Random(seed)
        self._session: aiohttp.ClientSession | None = None
        self.metrics = metrics if metrics is not None else Metrics()
        self.venue = venue
        self.ban = BanState(ban_s)
        self.offset = ClockOffsetEstimator()
        self.requests_sent = 0

    def _check_ban(self) -> None:
        now = self.clock.now_ms()
        if self.ban.active(now):
            raise BybitBannedError(self.ban.until_ms, self.ban.remaining_s(now))
        if self.ban.until_ms:
            self.metrics.venue_banned_until.labels(venue=self.venue).set(0)

    def _on_forbidden(self) -> BybitBannedError:
        now = self.clock.now_ms()
        if self.ban.ban(now):
            self.metrics.venue_bans.labels(venue=self.venue).inc()
            self.metrics.venue_banned_until.labels(venue=self.venue).set(self.ban.until_ms / 1000.0)
            until = time.strftime("%H:%M:%S UTC", time.gmtime(self.ban.until_ms / 1000))
            log.error("BYBIT IP BAN: %s answered HTTP 403 (too many requests from this IP). All REST requests to "
                      "Bybit stop for %.0f s, until %s, and then resume by themselves; samples that need REST are "
                      "skipped with reason 'banned' meanwhile.", self.base_url, self.ban.duration_ms / 1000, until)
        return BybitBannedError(self.ban.until_ms, self.ban.remaining_s(now))

    def _fault(self, reason: str) -> None:
        self.metrics.venue_faults.labels(venue=self.venue, reason=reason).inc()

    async def __aenter__(self) -> "BybitRestClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout_s),
                headers={"Accept": "application/json", "User-Agent": "lob-collector-bot"},
            )
        return self._session

    async def close(self) -> None:
        """Close the HTTP session; safe to call twice."""
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None

    async def request(self, path: str, params: dict[str, Any]) -> tuple[Any, int | None]:
        """GET ``path`` and return ``(result, server_time_ms)``, retrying transient failures.

        Raises ``BybitRequestError`` when every attempt failed, ``BybitApiError`` at once
        for a non-retryable retCode or HTTP status (``ret_code`` is ``-status`` then),
        ``BybitBannedError`` at once during an IP ban (nothing is sent) or on HTTP 403.
        """
        url = self.base_url + path
        where = f"GET {path} {params.get('symbol', '')}".rstrip()
        last: Exception | None = None
        for attempt in range(self.max_retries + 1):
            if attempt:
                self.metrics.venue_retries.labels(venue=self.venue).inc()
                delay = backoff_delay(attempt - 1, self.backoff_base_s, self.backoff_max_s, self._rng)
                if isinstance(last, _Transient) and last.retry_after is not None:
                    delay = max(delay, min(last.retry_after, self.backoff_max_s))
                await asyncio.sleep(delay)
            self._check_ban()
            try:
                return await self._once(url, params, where)
            except _Transient as exc:
                self._fault(exc.reason)
                last = exc
                log.debug("%s: %s (attempt %d/%d)", where, exc, attempt + 1, self.max_retries + 1)
            except BybitApiError as exc:
                self._fault(f"ret_code_{exc.ret_code}" if exc.ret_code >= 0 else f"http_{-exc.ret_code}")
                if not exc.retryable:
                    raise
                last = exc
        self._fault("request_failed")
        reason = last.reason if isinstance(last, _Transient) else (
            f"ret_code_{last.ret_code}" if isinstance(last, BybitApiError) else "request_failed")
        raise BybitRequestError(f"{where}: failed after {self.max_retries + 1} attempts: {last}", reason) from last

    async def _once(self, url: str, params: dict[str, Any], where: str) -> tuple[Any, int | None]:
        session = self._get_session()
        t_send = self.clock.now_ms()
        self.requests_sent += 1
        try:
            async with session.get(url, params=params) as resp:
                body = await resp.read()
                t_recv = self.clock.now_ms()
                if resp.status == 403:
                    self._fault("http_403")
                    raise self._on_forbidden()
                if resp.status == 429:
                    ra = resp.headers.get("Retry-After")
                    raise _Transient("http_429", float(ra) if ra and ra.replace(".", "", 1).isdigit() else None)
                if resp.status >= 500:
                    raise _Transient(f"http_{resp.status}")
                if resp.status != 200:
                    raise BybitApiError(-resp.status, f"HTTP {resp.status}: {body[:200].decode('utf-8', 'replace')}", where)
        except asyncio.TimeoutError:
            raise _Transient("timeout") from None
        except aiohttp.ClientError as exc:
            raise _Transient("connection_error", detail=type(exc).__name__) from None
        try:
            payload = decode_json(body, where)
            result, server_ms = unwrap_envelope(payload, where)
        except BybitMessageError as exc:
            raise _Transient("malformed_response") from exc
        except BybitApiError:
            t = payload.get("time") if isinstance(payload, dict) else None
            if isinstance(t, int):
                self.offset.add_round_trip(t_send, t_recv, t)
            raise
        if server_ms is not None:
            self.offset.add_round_trip(t_send, t_recv, server_ms)
        return result, server_ms

    # --- endpoints -------------------------------------------------------------------
    async def get_orderbook(self, symbol: str, limit: int = 50, depth: int | None = None) -> OrderBook:
        """The book as Bybit sent it (``limit`` levels per side, trimmed to ``depth``), not validated.

        Raises ``BybitRequestError`` (after retries, or a malformed book), ``BybitApiError``
        (a non-retryable retCode) or ``ValueError`` (limit outside 1..200).
        """
        validate_symbol(symbol)
        if not 1 <= limit <= MAX_BOOK_LIMIT:
            raise ValueError(f"orderbook limit must be 1..{MAX_BOOK_LIMIT}, got {limit}")
        result, _ = await self.request(
            "/v5/market/orderbook", {"category": self.category, "symbol": symbol, "limit": limit}
        )
        try:
            return parse_rest_orderbook(result, symbol, self.clock.now_ms(), depth=depth)
        except BybitMessageError as exc:
            self._fault("malformed_book")
            raise BybitRequestError(str(exc), "malformed_book") from exc

    async def get_klines(
        self, symbol: str, *, start_ms: int | None = None, end_ms: int | None = None, limit: int = 200
    ) -> tuple[list[Candle], int]:
        """1-minute bars oldest first, forming bar included, and the server time (ms)."""
        validate_symbol(symbol)
        params: dict[str, Any] = {"category": self.category, "symbol": symbol, "interval": "1",
                                  "limit": max(1, min(limit, MAX_KLINE_LIMIT))}
        if start_ms is not None:
            params["start"] = int(start_ms)
        if end_ms is not None:
            params["end"] = int(end_ms)
        result, server_ms = await self.request("/v5/market/kline", params)
        try:
            candles = parse_kline_rows(result, symbol)
        except BybitMessageError as exc:
            self._fault("malformed_klines")
            raise BybitRequestError(str(exc), "malformed_klines") from exc
        return candles, server_ms if server_ms is not None else self.clock.now_ms()

    async def get_closed_candles(self, symbol: str, *, count: int | None = None, after_ms: int | None = None) -> list[Candle]:
        """Closed 1-minute bars, oldest first: the last ``count`` bars, or all bars starting after ``after_ms``.

        A bar is closed when ``start + 60 s <= server time``; pages backwards
        through history when more than one request's worth is needed.
        """
        if (count is None) == (after_ms is None):
            raise ValueError("give exactly one of count or after_ms")
        out: dict[int, Candle] = {}
        end: int | None = None
        now: int | None = None
        for _ in range(50):  # a hard stop: 50 pages = 50,000 bars
            want = (count - len(out) + 1) if count is not None else MAX_KLINE_LIMIT
            candles, server_ms = await self.get_klines(symbol, end_ms=end, limit=min(MAX_KLINE_LIMIT, want),
                                                       start_ms=None if after_ms is None else after_ms + 1)
            now = server_ms if now is None else now
            for c in candles:
                if c.start_ms + CANDLE_MS <= now and (after_ms is None or c.start_ms > after_ms):
                    out[c.start_ms] = c
            if not candles:
                break
            oldest = candles[0].start_ms
            if count is not None and len(out) >= count:
                break
            if after_ms is not None and oldest <= after_ms + CANDLE_MS:
                break
            if len(candles) < min(MAX_KLINE_LIMIT, want):
                break  # the exchange has no older history
            end = oldest - 1
        bars = [out[k] for k in sorted(out)]
        return bars[-count:] if count is not None else bars

    async def get_server_time(self) -> int:
        """``/v5/market/time``: the server's time in ms (its round trip also feeds ``offset``)."""
        result, server_ms = await self.request("/v5/market/time", {})
        try:
            nano = int(result["timeNano"])
            return nano // 1_000_000
        except (KeyError, TypeError, ValueError):
            if server_ms is None:
                raise BybitRequestError("GET /v5/market/time: no server time in the answer", "malformed_response")
            return server_ms

    async def get_instrument_rows(self) -> list[Instrument]:
        """Every listed instrument of the category (``/v5/market/instruments-info``, ``limit`` 1000, following
        ``nextPageCursor``), in Bybit's order.

        Raises ``BybitRequestError`` for an answer without a ``list``, as ``request`` does otherwise.
        """
        out: list[Instrument] = []
        cursor = ""
        for _ in range(100):  # 100 pages of 1000: far more than Bybit lists
            params: dict[str, Any] = {"category": self.category, "limit": MAX_INSTRUMENTS_LIMIT}
            if cursor:
                params["cursor"] = cursor
            result, _ = await self.request("/v5/market/instruments-info", params)
            try:
                rows, cursor = parse_instruments(result)
            except BybitMessageError as exc:
                raise BybitRequestError(f"GET /v5/market/instruments-info: {exc}", "malformed_response") from None
            out.extend(rows)
            if not cursor or not rows:
                break
        return out

    async def get_instruments(self) -> dict[str, str]:
        """Every listed symbol of the category and its ``status`` (``Trading``, ``PreLaunch``, ``Delivering``,
        ``Closed``, ...), from ``get_instrument_rows``."""
        return {i.symbol: i.status for i in await self.get_instrument_rows()}

    async def get_recent_trades(self, symbol: str, limit: int = 500) -> list[tuple[str, Trade]]:
        """``[(execId, Trade)]`` oldest first."""
        validate_symbol(symbol)
        result, _ = await self.request(
            "/v5/market/recent-trade",
            {"category": self.category, "symbol": symbol, "limit": max(1, min(limit, MAX_TRADE_LIMIT))},
        )
        try:
            return parse_rest_trades(result, symbol)
        except BybitMessageError as exc:
            self._fault("malformed_trades")
            raise BybitRequestError(str(exc), "malformed_trades") from exc
