"""The two Bybit ``MarketSource``s: REST polling ("bybit") and the WebSocket local book ("bybit-ws").

* ``BybitRestSource`` polls ``/v5/market/orderbook`` for every symbol concurrently
  each tick, plus new trades (de-duplicated by ``execId``) and newly closed
  1-minute bars.
* ``BybitWsSource`` hands out the local books kept by ``BybitWsClient``; closed bars
  come from the kline stream, with REST filling any bar the stream missed.

Common promises: ``poll()`` never raises for market or network faults (the symbol
gets ``book=None`` with a ``reason``; other symbols are unaffected); books are
trimmed to ``book_depth`` and handed over as the venue gave them (the engine
validates them, once); each closed candle is delivered exactly once, oldest first,
across ``initial_candles`` and later snapshots, and never a forming bar. Faults are
counted in the shared ``Metrics`` under ``venue="bybit"``.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any, Sequence

from backend.metrics import Metrics
from backend.venues.bybit.messages import BybitApiError
from backend.venues.bybit.rest import BybitRequestError, BybitRestClient
from backend.venues.bybit.ws import BybitWsClient
from backend.venues.source import Clock, MarketSource
from backend.venues.types import CANDLE_MS, Candle, MarketSnapshot, Trade

__all__ = ["BybitRestSource", "BybitWsSource", "CandleFeed"]

log = logging.getLogger(__name__)


class CandleFeed:
    """Hands out each closed bar once, in order, whatever mix of sources produced it."""

    def __init__(self) -> None:
        self.last_start: int | None = None

    def take(self, candles: Sequence[Candle], now_ms: int | None = None) -> list[Candle]:
        """The bars after the last one handed out, oldest first; bars still forming at ``now_ms`` are left out."""
        out: list[Candle] = []
        for c in sorted(candles, key=lambda c: c.start_ms):
            if now_ms is not None and c.close_ms > now_ms:
                continue  # still forming
            if self.last_start is None or c.start_ms > self.last_start:
                out.append(c)
                self.last_start = c.start_ms
        return out

    def due(self, now_ms: int, grace_ms: int = 0) -> bool:
        """A bar after the last one delivered has closed (plus ``grace_ms``) and has not arrived."""
        return self.last_start is None or now_ms >= self.last_start + 2 * CANDLE_MS + grace_ms


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) < 300 else text[:297] + "..."


def _reason(exc: BaseException) -> str:
    """The fault word for a failed book request."""
    if isinstance(exc, BybitRequestError):
        return exc.reason
    if isinstance(exc, BybitApiError):
        return f"ret_code_{exc.ret_code}" if exc.ret_code >= 0 else f"http_{-exc.ret_code}"
    return "request_error"


class _RestBase(MarketSource):
    """What both Bybit sources share: the REST client and the candle back-fill."""

    venue = "bybit"

    def __init__(self, symbols: Sequence[str], clock: Clock | None = None, *, rest_url: str,
                 timeout_s: float = 10.0, max_retries: int = 5, book_depth: int = 50,
                 backoff_base_s: float = 0.5, backoff_max_s: float = 10.0, poll_timeout_s: float | None = None,
                 seed: int | None = None, metrics: Metrics | None = None):
        super().__init__(symbols, clock, metrics)
        self.book_depth = book_depth
        self.rest = BybitRestClient(rest_url, timeout_s=timeout_s, max_retries=max_retries,
                                    backoff_base_s=backoff_base_s, backoff_max_s=backoff_max_s,
                                    clock=self.clock, seed=seed, metrics=self.metrics, venue=self.venue)
        self.poll_timeout_s = poll_timeout_s if poll_timeout_s is not None else timeout_s
        self._feeds = {s: CandleFeed() for s in self.symbols}
        self._initial: dict[str, list[Candle]] = {s: [] for s in self.symbols}

    async def _backfill(self) -> None:
        errors: list[Exception] = []

        async def one(sym: str) -> None:
            try:
                bars = await self.rest.get_closed_candles(sym, count=self.history_candles)
                self._initial[sym] = self._feeds[sym].take(bars)
            except Exception as exc:  # start() must not die on one symbol: poll() retries the back-fill
                errors.append(exc)
                log.warning("%s: candle back-fill failed (%s); will retry while polling", sym, _describe(exc))

        await asyncio.gather(*(one(s) for s in self.symbols))
        if errors and len(errors) == len(self.symbols):
            # not one symbol answered: the exchange is unreachable, which the bot reports at start
            raise errors[-1]

    def initial_candles(self, symbol: str) -> list[Candle]:
        """The back-filled closed bars, oldest first (empty when the back-fill failed)."""
        return list(self._initial[symbol])

    async def _rest_candles(self, sym: str) -> list[Candle]:
        feed = self._feeds[sym]
        if feed.last_start is None:
            bars = await self.rest.get_closed_candles(sym, count=self.history_candles)
        else:
            bars = await self.rest.get_closed_candles(sym, after_ms=feed.last_start)
        return feed.take(bars)


class BybitRestSource(_RestBase):
    """Bybit REST polling: one order-book, trade and (when due) kline request per symbol per tick.

    ``trade_limit`` trades are asked for per poll (Bybit's maximum is 1000); a poll
    that takes longer than ``poll_timeout_s`` (default: ``timeout_s``) is abandoned
    for this tick with reason ``poll_timeout``.
    """

    name = "bybit"

    def __init__(self, *args: Any, trade_limit: int = 1000, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.trade_limit = trade_limit
        self._seen: dict[str, tuple[deque, set]] = {s: (deque(), set()) for s in self.symbols}
        self._trades_since = 0

    async def start(self) -> None:
        """Back-fill candles; raises when no symbol could be fetched (exchange unreachable)."""
        self._trades_since = self.clock.now_ms()
        await self._backfill()

    async def poll(self) -> dict[str, MarketSnapshot]:
        """Every symbol's book, new trades and new closed bars, fetched concurrently."""
        results = await asyncio.gather(*(self._poll_symbol(s) for s in self.symbols))
        return {snap.symbol: snap for snap in results}

    async def _poll_symbol(self, sym: str) -> MarketSnapshot:
        try:
            book_t = asyncio.ensure_future(self.rest.get_orderbook(sym, limit=min(200, max(1, self.book_depth)),
                                                                   depth=self.book_depth))
            trades_t = asyncio.ensure_future(self.rest.get_recent_trades(sym, limit=self.trade_limit))
            candles_t = (asyncio.ensure_future(self._rest_candles(sym))
                         if self._feeds[sym].due(self.clock.now_ms()) else None)
            tasks = [t for t in (book_t, trades_t, candles_t) if t is not None]
            done, pending = await asyncio.wait(tasks, timeout=self.poll_timeout_s)
            for t in pending:
                t.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
                self.count_fault("poll_timeout")
            snap = MarketSnapshot(sym, None)
            if book_t in done and book_t.exception() is None:
                snap.book = book_t.result()
            elif book_t in done:
                exc = book_t.exception()
                snap.error, snap.reason = _describe(exc), _reason(exc)
            else:
                snap.error = f"order book request timed out after {self.poll_timeout_s:g} s"
                snap.reason = "poll_timeout"
            if trades_t in done and trades_t.exception() is None:
                snap.trades = self._new_trades(sym, trades_t.result())
            if candles_t is not None and candles_t in done and candles_t.exception() is None:
                snap.candles = candles_t.result()
            # a failed trade or candle request was counted by the client; the next poll asks again
            return snap
        except Exception as exc:  # poll() must never raise; the symbol reports why
            self.count_fault("poll_error")
            return MarketSnapshot(sym, None, error=f"{type(exc).__name__}: {_describe(exc)}", reason="poll_error")

    def _new_trades(self, sym: str, items: list[tuple[str, Trade]]) -> list[Trade]:
        order, seen = self._seen[sym]
        out = []
        for exec_id, trade in items:
            if exec_id in seen or trade.ts_ms <= self._trades_since:
                continue
            seen.add(exec_id)
            order.append(exec_id)
            out.append(trade)
        while len(order) > 4 * self.trade_limit + 1000:
            seen.discard(order.popleft())
        return out

    async def close(self) -> None:
        """Close the HTTP session."""
        await self.rest.close()


class BybitWsSource(_RestBase):
    """Bybit WebSocket local books (``BybitWsClient``), with REST for the candle back-fill and gaps.

    ``start()`` waits up to ``sync_timeout_s`` for every book's first snapshot (a symbol
    still waiting is reported per poll with reason ``resync_pending``).
    """

    name = "bybit-ws"
    kline_grace_ms = 5_000  # the stream's confirm=true bar normally arrives within a second

    def __init__(self, symbols: Sequence[str], clock: Clock | None = None, *, ws_url: str,
                 ping_interval_s: float = 20.0, ws_backoff_base_s: float = 0.5, ws_backoff_max_s: float = 30.0,
                 sync_timeout_s: float = 5.0, **kwargs: Any):
        super().__init__(symbols, clock, **kwargs)
        self.sync_timeout_s = sync_timeout_s
        self.ws = BybitWsClient(ws_url, self.symbols, depth=50, ping_interval_s=ping_interval_s,
                                backoff_base_s=ws_backoff_base_s, backoff_max_s=ws_backoff_max_s,
                                open_timeout_s=kwargs.get("timeout_s", 10.0), clock=self.clock,
                                metrics=self.metrics, venue=self.venue)

    async def start(self) -> None:
        """Connect, back-fill candles over REST, and wait (bounded) for the first snapshots."""
        await self.ws.start()
        await self._backfill()
        await self.ws.wait_synced(self.sync_timeout_s)

    async def poll(self) -> dict[str, MarketSnapshot]:
        """Every symbol's current local book, trades and closed bars since the last poll."""
        now = self.clock.now_ms()
        out: dict[str, MarketSnapshot] = {}
        fill: list[str] = []
        for sym in self.symbols:
            try:
                snap = MarketSnapshot(sym, None, trades=self.ws.drain_trades(sym))
                snap.book = self.ws.protocol.book(sym, self.book_depth)
                if snap.book is None:
                    snap.reason, snap.error = self.ws.status(sym)
                feed = self._feeds[sym]
                streamed = self.ws.drain_candles(sym)
                gap = bool(streamed) and feed.last_start is not None and min(c.start_ms for c in streamed) > feed.last_start + CANDLE_MS
                if gap or (not streamed and feed.due(now, self.kline_grace_ms)):
                    fill.append(sym)  # REST fetches the missing bars (and any streamed ones) in order
                else:
                    snap.candles = feed.take(streamed, now)
                out[sym] = snap
            except Exception as exc:  # poll() must never raise
                self.count_fault("poll_error")
                out[sym] = MarketSnapshot(sym, None, error=f"{type(exc).__name__}: {_describe(exc)}", reason="poll_error")
        if fill:
            async def one(sym: str) -> None:
                try:
                    out[sym].candles = await asyncio.wait_for(self._rest_candles(sym), self.poll_timeout_s)
                except asyncio.TimeoutError:
                    self.count_fault("poll_timeout")
                except Exception as exc:  # the next poll asks again; nothing is lost
                    log.debug("%s: candle fill failed: %s", sym, _describe(exc))

            await asyncio.gather(*(one(s) for s in fill))
        return out

    async def close(self) -> None:
        """Close the WebSocket and the HTTP session."""
        await self.ws.close()
        await self.rest.close()
