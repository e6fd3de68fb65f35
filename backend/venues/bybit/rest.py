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
``lobbot_venue_retries_total{venue}``. The retry loop, the session and the ban bookkeeping
are the venue-neutral ``RestClientBase`` (``venues/rest_client.py``); this module says
what Bybit's statuses, retCodes and envelopes mean.
"""

from __future__ import annotations

import logging
from typing import Any

from backend.metrics import Metrics
from backend.venues.health import BYBIT_BAN_S
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
from backend.venues.rest_client import RestClientBase, Transient
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


class BybitRestClient(RestClientBase):
    """GET requests to one Bybit REST base URL with retries; an async context manager.

    ``timeout_s`` bounds one attempt; ``max_retries`` attempts follow the first.
    ``metrics`` is the bot's registry (a new one when None).
    """

    label = "Bybit"
    banned_error = BybitBannedError
    request_error = BybitRequestError
    api_errors = (BybitApiError,)
    ban_text = ("BYBIT IP BAN: %s answered HTTP 403 (too many requests from this IP). All REST requests to "
                "Bybit stop for %.0f s, until %s, and then resume by themselves; samples that need REST are "
                "skipped with reason 'banned' meanwhile.")
    log = log

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
        self._init_rest(base_url, timeout_s=timeout_s, max_retries=max_retries, backoff_base_s=backoff_base_s,
                        backoff_max_s=backoff_max_s, clock=clock, seed=seed, metrics=metrics, venue=venue,
                        ban_s=ban_s)
        self.category = category

    def _api_fault(self, exc: Exception) -> str:
        """``ret_code_<n>`` for a retCode, ``http_<status>`` for an HTTP status (kept as ``-status``)."""
        return f"ret_code_{exc.ret_code}" if exc.ret_code >= 0 else f"http_{-exc.ret_code}"

    async def request(self, path: str, params: dict[str, Any]) -> tuple[Any, int | None]:
        """GET ``path`` and return ``(result, server_time_ms)``, retrying transient failures.

        Raises ``BybitRequestError`` when every attempt failed, ``BybitApiError`` at once
        for a non-retryable retCode or HTTP status (``ret_code`` is ``-status`` then),
        ``BybitBannedError`` at once during an IP ban (nothing is sent) or on HTTP 403.
        """
        return await self._retrying(path, params)

    async def _once(self, url: str, params: dict[str, Any], where: str) -> tuple[Any, int | None]:
        """One attempt: HTTP 403 is a ban, 429 and 5xx are transient (429's ``Retry-After`` is honoured),
        other statuses raise ``BybitApiError``; the envelope's ``time`` feeds the clock offset."""
        status, headers, body, t_send, t_recv = await self._get(url, params)
        if status == 403:
            self._fault("http_403")
            raise self._banned()
        if status == 429:
            ra = headers.get("Retry-After")
            raise Transient("http_429", retry_after=float(ra) if ra and ra.replace(".", "", 1).isdigit() else None)
        if status >= 500:
            raise Transient(f"http_{status}")
        if status != 200:
            raise BybitApiError(-status, f"HTTP {status}: {body[:200].decode('utf-8', 'replace')}", where)
        try:
            payload = decode_json(body, where)
            result, server_ms = unwrap_envelope(payload, where)
        except BybitMessageError as exc:
            raise Transient("malformed_response") from exc
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
