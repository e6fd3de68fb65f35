"""The two Binance USD-M ``MarketSource``s: REST polling ("binance") and the WebSocket local book ("binance-ws").

* ``BinanceRestSource`` polls ``/fapi/v1/depth`` for every symbol concurrently each
  tick, new trades from ``/fapi/v1/trades`` (de-duplicated by trade id, at most every
  ``trades_interval_s``) and newly closed 1-minute bars from ``/fapi/v1/klines``.
* ``BinanceWsSource`` hands out the local books ``BinanceWsClient`` keeps from REST
  snapshots and the ``<symbol>@depth@100ms`` diff stream; trades from ``@aggTrade``;
  closed bars from ``@kline_1m``, with REST filling any bar the stream missed.

The promises are those of ``LiveSourceBase`` (``venues/live_source.py``, shared with
Bybit): ``poll()`` never raises for market or network faults (a symbol without a book
gets ``book=None`` and a ``reason``), books are trimmed to ``book_depth`` and handed
over unvalidated (the engine validates once), each closed bar is delivered once, oldest
first, and faults are counted in the shared ``Metrics`` under ``venue="binance"``. At
start the symbols are checked against ``/fapi/v1/exchangeInfo``: an unknown or
non-trading symbol stops the start with ``UnknownSymbolError``, an IP ban (HTTP 418)
with ``VenueBannedError``.

Exchange time: the REST client estimates Binance's clock offset from ``/fapi/v1/time``
(asked at start and every ``TIME_SYNC_S`` seconds) and the snapshots' ``E``; every
snapshot handed out carries it (``clock_offset_ms``), it is exported as
``lobbot_exchange_clock_offset_seconds{venue="binance"}``, and a local clock more than
1 s off is logged once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Sequence

import numpy as np

from backend.metrics import Metrics
from backend.venues.binance.messages import UNKNOWN_SYMBOL_CODE, BinanceApiError, DepthSnapshot
from backend.venues.binance.rest import (WEIGHT_LIMIT_1M, TRADES_WEIGHT, BinanceBannedError, BinanceRequestError,
                                         BinanceRestClient, depth_limit_for, depth_weight)
from backend.venues.binance.ws import MAX_STREAMS_PER_CONNECTION, BinanceWsClient
from backend.venues.live_source import TIME_SYNC_S, LiveSourceBase, describe
from backend.venues.orderbook import OrderBook
from backend.venues.source import Clock, UnknownSymbolError, VenueBannedError, VenueConfigError
from backend.venues.types import MarketSnapshot

__all__ = ["BinanceRestSource", "BinanceWsSource", "TIME_SYNC_S", "shard_symbols", "snapshot_book"]

log = logging.getLogger(__name__)

REST_BUDGET_SHARE = 0.5
"""Share of Binance's 2400 weight per minute the REST source may plan to use; the rest is head room for
retries, candle fills, snapshots and other programs on the same IP."""
STREAMS_PER_SYMBOL = 3  # depth@100ms, aggTrade, kline_1m
MAX_WS_CONNECTIONS = 20
"""Connections this source opens at most (each symbol's reconnects and snapshots cost weight and connections)."""


def shard_symbols(symbols: Sequence[str], streams_per_symbol: int = STREAMS_PER_SYMBOL) -> list[list[str]]:
    """Split ``symbols`` into groups of at most ``MAX_STREAMS_PER_CONNECTION // streams_per_symbol`` (66) symbols,
    one combined-stream connection each; ``VenueConfigError`` above ``MAX_WS_CONNECTIONS`` connections."""
    per = max(1, MAX_STREAMS_PER_CONNECTION // streams_per_symbol)
    groups = [list(symbols[i:i + per]) for i in range(0, len(symbols), per)] or [[]]
    if len(groups) > MAX_WS_CONNECTIONS:
        raise VenueConfigError(f"{len(symbols)} symbols need {len(groups)} Binance WebSocket connections "
                               f"({MAX_STREAMS_PER_CONNECTION} streams each); this bot opens at most "
                               f"{MAX_WS_CONNECTIONS}. Collect fewer symbols per bot.")
    return groups


def snapshot_book(snap: DepthSnapshot, recv_ms: int, depth: int) -> OrderBook:
    """A REST ``DepthSnapshot`` as an ``OrderBook`` (top ``depth`` levels; ``ts`` = ``E``, ``cts`` = ``T``)."""
    b, a = snap.bids[:depth], snap.asks[:depth]
    return OrderBook(snap.symbol, np.ascontiguousarray(b[:, 0]), np.ascontiguousarray(b[:, 1]),
                     np.ascontiguousarray(a[:, 0]), np.ascontiguousarray(a[:, 1]), ts_ms=snap.event_ms,
                     recv_ms=int(recv_ms), cts_ms=snap.transact_ms, update_id=snap.last_update_id)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, BinanceBannedError):
        return "banned"
    if isinstance(exc, BinanceRequestError):
        return exc.reason
    if isinstance(exc, BinanceApiError):
        return f"http_{exc.status}" if exc.status else f"code_{exc.code}"
    return "request_error"


def _ban_message(exc: BinanceBannedError) -> str:
    until = time.strftime("%H:%M:%S UTC", time.gmtime(exc.until_ms / 1000))
    return (f"Binance has banned this IP address (HTTP 418: requests kept coming after HTTP 429). Binance lifts "
            f"the ban by itself (from 2 minutes up to 3 days for repeat offenders); start the bot again after {until}. "
            f"Several bots or programs on one IP share Binance's {WEIGHT_LIMIT_1M} request weight per minute.")


class _RestBase(LiveSourceBase):
    """What both Binance sources share beyond ``LiveSourceBase``: the REST client, the symbol check and the
    candle back-fill."""

    venue = "binance"
    label = "Binance"
    banned_error = BinanceBannedError
    ban_status = "HTTP 418"
    candles_on_exchange_clock = True

    def __init__(self, symbols: Sequence[str], clock: Clock | None = None, *, rest_url: str, timeout_s: float = 10.0,
                 max_retries: int = 5, book_depth: int = 50, backoff_base_s: float = 0.5, backoff_max_s: float = 10.0,
                 poll_timeout_s: float | None = None, seed: int | None = None, metrics: Metrics | None = None):
        super().__init__(symbols, clock, metrics, book_depth=book_depth, poll_timeout_s=poll_timeout_s,
                         timeout_s=timeout_s)
        self.rest = BinanceRestClient(rest_url, timeout_s=timeout_s, max_retries=max_retries,
                                      backoff_base_s=backoff_base_s, backoff_max_s=backoff_max_s, clock=self.clock,
                                      seed=seed, metrics=self.metrics, venue=self.venue)

    def _reason(self, exc: BaseException) -> str:
        """The fault word for a failed book request."""
        return _reason(exc)

    async def _check_symbols(self) -> None:
        try:
            listed = await self.rest.get_exchange_info()
        except BinanceBannedError as exc:
            raise VenueBannedError(_ban_message(exc)) from None
        except (BinanceApiError, BinanceRequestError) as exc:
            log.warning("Could not check the symbols against exchangeInfo (%s); going on", describe(exc))
            return
        unknown = [s for s in self.symbols if s not in listed]
        closed = [s for s in self.symbols if s in listed and listed[s][0] != "TRADING"]
        if unknown or closed:
            parts = []
            if unknown:
                parts.append(f"unknown symbol{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}")
            if closed:
                parts.append("not trading: " + ", ".join(f"{s} ({listed[s][0]})" for s in closed))
            raise UnknownSymbolError(unknown + closed, f"Binance USD-M futures does not list {'; '.join(parts)}. "
                                     "Check the spelling in --symbols (e.g. BTCUSDT); the listed contracts are at "
                                     "/fapi/v1/exchangeInfo.")

    async def _backfill(self) -> None:
        errors: list[Exception] = []

        async def one(sym: str) -> None:
            try:
                bars = await self.rest.get_closed_candles(sym, count=self.history_candles)
                self._initial[sym] = self._feeds[sym].take(bars)
            except Exception as exc:  # poll() retries the back-fill
                errors.append(exc)
                log.warning("%s: candle back-fill failed (%s); will retry while polling", sym, describe(exc))

        await asyncio.gather(*(one(s) for s in self.symbols))
        bans = [e for e in errors if isinstance(e, BinanceBannedError)]
        if bans:
            raise VenueBannedError(_ban_message(bans[0]))
        unknown = [e for e in errors if isinstance(e, BinanceApiError) and e.code == UNKNOWN_SYMBOL_CODE]
        if unknown:
            raise UnknownSymbolError([], f"Binance USD-M futures rejects a configured symbol: {unknown[0].msg}")
        if errors and len(errors) == len(self.symbols):
            raise errors[-1]

    async def _close_rest(self) -> None:
        await self._stop_sync()
        await self.rest.close()


class BinanceRestSource(_RestBase):
    """Binance REST polling: a depth request per symbol per tick, trades every ``trades_interval_s``, bars when due.

    The depth limit is the smallest valid one holding ``book_depth`` levels. ``start()``
    refuses (``VenueConfigError``) a plan above ``REST_BUDGET_SHARE`` of Binance's request
    weight per minute.
    """

    name = "binance"

    def __init__(self, *args: Any, trade_limit: int = 1000, tick_interval_s: float | None = None,
                 trades_interval_s: float = 1.0, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.trade_limit = trade_limit
        self.tick_interval_s = tick_interval_s
        self.trades_interval_s = trades_interval_s
        self.depth_limit = depth_limit_for(self.book_depth)
        self._seen = self._new_seen()
        self._trades_since = 0
        self._last_trades_ms = -10**15

    def planned_weight_per_minute(self) -> float:
        """Request weight per minute this source plans: depth per tick, trades, and one kline request per minute."""
        if not self.tick_interval_s:
            return 0.0
        n = len(self.symbols)
        trades_per_min = 60.0 / max(self.tick_interval_s, self.trades_interval_s)
        return n * (60.0 / self.tick_interval_s * depth_weight(self.depth_limit) + trades_per_min * TRADES_WEIGHT + 1)

    async def start(self) -> None:
        """Check the weight budget and the symbols, measure the clock offset, back-fill candles."""
        planned, budget = self.planned_weight_per_minute(), WEIGHT_LIMIT_1M * REST_BUDGET_SHARE
        if planned > budget:
            raise VenueConfigError(
                f"{len(self.symbols)} symbols polled over REST every {self.tick_interval_s:g} s need about "
                f"{planned:.0f} request weight per minute; Binance allows {WEIGHT_LIMIT_1M} per IP and bans IPs that "
                f"keep going past it, so this bot plans at most {budget:.0f}. Use --source binance-ws, fewer "
                "symbols, or a longer --interval.")
        self._trades_since = self.clock.now_ms()
        await self._check_symbols()
        await self._sync_time(1)
        self._last_sync = self.clock.now_ms()
        await self._backfill()

    async def poll(self) -> dict[str, MarketSnapshot]:
        """Every symbol's book, new trades and new closed bars, fetched concurrently; during a ban nothing is sent."""
        now = self.clock.now_ms()
        banned = self._banned_snapshots(now)
        if banned is not None:
            return banned
        self._maybe_sync_time(now)
        want_trades = now - self._last_trades_ms >= self.trades_interval_s * 1000
        if want_trades:
            self._last_trades_ms = now
        results = await asyncio.gather(*(self._poll_symbol(s, want_trades) for s in self.symbols))
        offset = self.clock_offset_ms()
        for snap in results:
            snap.clock_offset_ms = offset
        return {snap.symbol: snap for snap in results}

    async def _poll_symbol(self, sym: str, want_trades: bool) -> MarketSnapshot:
        return await self._poll_rest_symbol(
            sym, lambda: self.rest.get_depth(sym, self.depth_limit),
            (lambda: self.rest.get_recent_trades(sym, self.trade_limit)) if want_trades else None,
            lambda snap: snapshot_book(snap, self.clock.now_ms(), self.book_depth), "depth")

    async def close(self) -> None:
        """Close the HTTP session."""
        await self._close_rest()


class BinanceWsSource(_RestBase):
    """Binance local books from REST snapshots and the diff stream (``BinanceWsClient``), REST for bars and the clock.

    Symbols are spread over connections of at most 200 streams (``shard_symbols``); ``ws``
    is the first client, ``shards`` all. ``start()`` waits up to ``sync_timeout_s`` for
    every book. ``snapshot_limit`` levels are asked per snapshot (default 1000, Binance's
    documented choice: deep enough that levels moving into the top ``book_depth`` are known).

    Liveness, not age: a book on a connection that answers pings, with no resync pending,
    is current however long since it changed (Binance pushes depth only on change). It is
    handed out ``live`` and stamped as of the current exchange time (local time plus the
    measured offset), never before its own ``E`` nor before the stamp handed out before.
    On a silent connection no book is handed out (``ws_silent``).
    """

    name = "binance-ws"

    def __init__(self, symbols: Sequence[str], clock: Clock | None = None, *, ws_url: str,
                 ping_interval_s: float = 20.0, pong_timeout_s: float | None = None, ws_backoff_base_s: float = 0.5,
                 ws_backoff_max_s: float = 30.0, sync_timeout_s: float = 5.0, snapshot_limit: int = 1000,
                 snapshot_retry_s: float = 1.0, **kwargs: Any):
        kwargs.pop("tick_interval_s", None)
        super().__init__(symbols, clock, **kwargs)
        self.sync_timeout_s = sync_timeout_s
        self.snapshot_limit = snapshot_limit

        async def fetch(sym: str) -> DepthSnapshot:
            return await self.rest.get_depth(sym, self.snapshot_limit)

        self.shards = [BinanceWsClient(ws_url, group, fetch, depth=max(50, self.book_depth),
                                       ping_interval_s=ping_interval_s, pong_timeout_s=pong_timeout_s,
                                       backoff_base_s=ws_backoff_base_s, backoff_max_s=ws_backoff_max_s,
                                       open_timeout_s=kwargs.get("timeout_s", 10.0), snapshot_retry_s=snapshot_retry_s,
                                       clock=self.clock, metrics=self.metrics, venue=self.venue)
                       for group in shard_symbols(self.symbols)]
        self.ws = self.shards[0]
        self._client = {sym: c for c in self.shards for sym in c.symbols}

    async def start(self) -> None:
        """Check the symbols, measure the clock, connect, back-fill candles, wait (bounded) for every book."""
        await self._start_streams()

    async def poll(self) -> dict[str, MarketSnapshot]:
        """Every symbol's current local book, trades and closed bars since the last poll."""
        now = self.clock.now_ms()
        self._maybe_sync_time(now)
        return await self._poll_streams(now)

    async def close(self) -> None:
        """Close the WebSocket connections and the HTTP session."""
        for c in self.shards:
            await c.close()
        await self._close_rest()
