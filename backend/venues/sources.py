"""The three ``MarketSource`` implementations and the factory the bot uses.

* ``SimSource`` ("sim"): the in-process simulator; time is the given clock's time,
  so a ``VirtualClock`` makes a simulated day run in seconds.
* ``BybitRestSource`` ("bybit"): polls ``/v5/market/orderbook`` for every symbol
  concurrently each tick, plus new trades (deduplicated by ``execId``) and newly
  closed 1-minute bars.
* ``BybitWsSource`` ("bybit-ws"): local books from the public WebSocket; closed bars
  from the kline stream, with REST filling any bar the stream missed.

Common promises: ``poll()`` never raises for market or network faults (the symbol
gets ``book=None`` and an ``error``; other symbols are unaffected); books are
trimmed to ``settings.book_depth`` and validated (an invalid book is withheld
and counted); each closed candle is delivered exactly once, oldest first,
across ``initial_candles`` and later snapshots, and never a forming bar.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, deque
from typing import Any, Sequence

from backend.venues.bybit.rest import BybitRestClient
from backend.venues.bybit.ws import BybitWsClient
from backend.venues.orderbook import BookValidator, OrderBook
from backend.venues.sim.market import SimMarket, parse_sim_start
from backend.venues.source import Clock, MarketSource, VirtualClock
from backend.venues.types import CANDLE_MS, Candle, MarketSnapshot, Trade

log = logging.getLogger(__name__)

__all__ = ["SimSource", "BybitRestSource", "BybitWsSource", "make_source", "parse_sim_start"]


class CandleFeed:
    """Hands out each closed bar once, in order, whatever mix of sources produced it."""

    def __init__(self) -> None:
        self.last_start: int | None = None

    def take(self, candles: Sequence[Candle], now_ms: int | None = None) -> list[Candle]:
        out: list[Candle] = []
        for c in sorted(candles, key=lambda c: c.start_ms):
            if now_ms is not None and c.close_ms > now_ms:
                continue  # still forming
            if self.last_start is None or c.start_ms > self.last_start:
                out.append(c)
                self.last_start = c.start_ms
        return out

    def due(self, now_ms: int, grace_ms: int = 0) -> bool:
        """A bar after the last one delivered has closed (plus grace) and has not arrived."""
        return self.last_start is None or now_ms >= self.last_start + 2 * CANDLE_MS + grace_ms


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) < 300 else text[:297] + "..."


# --- simulator -----------------------------------------------------------------------------------


class SimSource(MarketSource):
    name = "sim"

    def __init__(self, symbols: Sequence[str], clock: Clock | None = None, *, seed: int | None = None,
                 book_depth: int = 50, history_minutes: int | None = None):
        super().__init__(symbols, clock)
        self.seed = seed
        self.book_depth = book_depth
        self.history_minutes = max(self.history_candles, history_minutes or 480)
        self.market: SimMarket | None = None
        self._last_ms = 0
        self._polls = 0

    async def start(self) -> None:
        now = self.clock.now_ms()
        self.market = SimMarket(self.symbols, seed=self.seed, start_ms=now, history_minutes=self.history_minutes,
                                levels=max(50, self.book_depth))
        self._last_ms = now

    def initial_candles(self, symbol: str) -> list[Candle]:
        assert self.market is not None, "start() first"
        return self.market[symbol].history()

    async def poll(self) -> dict[str, MarketSnapshot]:
        assert self.market is not None, "start() first"
        now = self.clock.now_ms()
        t0, self._last_ms = self._last_ms, max(now, self._last_ms)
        self._polls += 1
        out = {}
        for s in self.symbols:
            sim = self.market[s]
            out[s] = MarketSnapshot(
                s,
                sim.book_at(now, depth=self.book_depth, recv_ms=now),
                sim.trades_between(t0, now),
                sim.candles_closed_between(t0, now),
            )
        return out

    async def close(self) -> None:
        return None

    def stats(self) -> dict[str, int]:
        return {"polls": self._polls}


# --- Bybit REST ----------------------------------------------------------------------------------


class _RestBase(MarketSource):
    """What both Bybit sources share: the REST client, candle back-fill, validation, counters."""

    def __init__(self, symbols: Sequence[str], clock: Clock | None = None, *, rest_url: str,
                 timeout_s: float = 10.0, max_retries: int = 5, book_depth: int = 50,
                 max_book_age_s: float = 15.0, max_clock_skew_s: float = 5.0,
                 backoff_base_s: float = 0.5, backoff_max_s: float = 10.0, poll_timeout_s: float | None = None,
                 seed: int | None = None):
        super().__init__(symbols, clock)
        self.book_depth = book_depth
        self.rest = BybitRestClient(rest_url, timeout_s=timeout_s, max_retries=max_retries,
                                    backoff_base_s=backoff_base_s, backoff_max_s=backoff_max_s,
                                    clock=self.clock, seed=seed)
        self.poll_timeout_s = poll_timeout_s if poll_timeout_s is not None else timeout_s
        self.validator = BookValidator(max_age_ms=max_book_age_s * 1000, max_future_ms=max_clock_skew_s * 1000)
        self._feeds = {s: CandleFeed() for s in self.symbols}
        self._initial: dict[str, list[Candle]] = {s: [] for s in self.symbols}
        self.counts: Counter = Counter()

    async def _backfill(self) -> None:
        errors: list[Exception] = []

        async def one(sym: str) -> None:
            try:
                bars = await self.rest.get_closed_candles(sym, count=self.history_candles)
                self._initial[sym] = self._feeds[sym].take(bars)
            except Exception as exc:  # start() must not die on one symbol: poll() retries the back-fill
                errors.append(exc)
                self.counts["backfill_errors"] += 1
                log.warning("%s: candle back-fill failed (%s); will retry while polling", sym, _describe(exc))

        await asyncio.gather(*(one(s) for s in self.symbols))
        if errors and len(errors) == len(self.symbols):
            # not one symbol answered: the exchange is unreachable, which the bot reports at start
            raise errors[-1]

    def initial_candles(self, symbol: str) -> list[Candle]:
        return list(self._initial[symbol])

    async def _rest_candles(self, sym: str) -> list[Candle]:
        feed = self._feeds[sym]
        if feed.last_start is None:
            bars = await self.rest.get_closed_candles(sym, count=self.history_candles)
        else:
            bars = await self.rest.get_closed_candles(sym, after_ms=feed.last_start)
        return feed.take(bars)

    def _checked(self, book: OrderBook | None, now_ms: int) -> tuple[OrderBook | None, str | None]:
        if book is None:
            return None, None
        book = book.trimmed(self.book_depth)
        reason = self.validator.check(book, now_ms)
        if reason is not None:
            return None, f"invalid book: {reason.value}"
        return book, None

    def stats(self) -> dict[str, int]:
        out = {f"rest_{k}": v for k, v in self.rest.counts.items()}
        out.update(self.counts)
        out.update({f"book_rejected_{r.value}": n for r, n in self.validator.counts.items()})
        return out


class BybitRestSource(_RestBase):
    name = "bybit"

    def __init__(self, *args: Any, trade_limit: int = 1000, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.trade_limit = trade_limit
        self._seen: dict[str, tuple[deque, set]] = {s: (deque(), set()) for s in self.symbols}
        self._trades_since = 0

    async def start(self) -> None:
        self._trades_since = self.clock.now_ms()
        await self._backfill()

    async def poll(self) -> dict[str, MarketSnapshot]:
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
                self.counts["poll_timeouts"] += 1
            snap = MarketSnapshot(sym, None)
            if book_t in done and book_t.exception() is None:
                snap.book, snap.error = self._checked(book_t.result(), self.clock.now_ms())
            else:
                exc = book_t.exception() if book_t in done else None
                snap.error = _describe(exc) if exc else f"order book request timed out after {self.poll_timeout_s:g} s"
                self.counts["book_errors"] += 1
            if trades_t in done and trades_t.exception() is None:
                snap.trades = self._new_trades(sym, trades_t.result())
            else:
                self.counts["trade_errors"] += 1
            if candles_t is not None:
                if candles_t in done and candles_t.exception() is None:
                    snap.candles = candles_t.result()
                else:
                    self.counts["candle_errors"] += 1  # nothing is lost: the next poll asks again
            return snap
        except Exception as exc:  # poll() must never raise; the symbol reports why
            self.counts["poll_errors"] += 1
            return MarketSnapshot(sym, None, error=f"{type(exc).__name__}: {_describe(exc)}")

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
        await self.rest.close()


# --- Bybit WebSocket ------------------------------------------------------------------------------


class BybitWsSource(_RestBase):
    name = "bybit-ws"
    kline_grace_ms = 5_000  # the stream's confirm=true bar normally arrives within a second

    def __init__(self, symbols: Sequence[str], clock: Clock | None = None, *, ws_url: str,
                 ping_interval_s: float = 20.0, ws_backoff_base_s: float = 0.5, ws_backoff_max_s: float = 30.0,
                 sync_timeout_s: float = 5.0, **kwargs: Any):
        super().__init__(symbols, clock, **kwargs)
        self.sync_timeout_s = sync_timeout_s
        self.ws = BybitWsClient(ws_url, self.symbols, depth=50, ping_interval_s=ping_interval_s,
                                backoff_base_s=ws_backoff_base_s, backoff_max_s=ws_backoff_max_s,
                                open_timeout_s=kwargs.get("timeout_s", 10.0), clock=self.clock)

    async def start(self) -> None:
        await self.ws.start()
        await self._backfill()
        await self.ws.wait_synced(self.sync_timeout_s)

    async def poll(self) -> dict[str, MarketSnapshot]:
        now = self.clock.now_ms()
        out: dict[str, MarketSnapshot] = {}
        fill: list[str] = []
        for sym in self.symbols:
            try:
                snap = MarketSnapshot(sym, None, trades=self.ws.drain_trades(sym))
                book = self.ws.books[sym].book(self.book_depth)
                if book is None:
                    snap.error = self.ws.status(sym)
                else:
                    snap.book, snap.error = self._checked(book, now)
                feed = self._feeds[sym]
                streamed = self.ws.drain_candles(sym)
                gap = bool(streamed) and feed.last_start is not None and min(c.start_ms for c in streamed) > feed.last_start + CANDLE_MS
                if gap or (not streamed and feed.due(now, self.kline_grace_ms)):
                    fill.append(sym)  # REST fetches the missing bars (and any streamed ones) in order
                else:
                    snap.candles = feed.take(streamed, now)
                out[sym] = snap
            except Exception as exc:  # poll() must never raise
                self.counts["poll_errors"] += 1
                out[sym] = MarketSnapshot(sym, None, error=f"{type(exc).__name__}: {_describe(exc)}")
        if fill:
            async def one(sym: str) -> None:
                try:
                    out[sym].candles = await asyncio.wait_for(self._rest_candles(sym), self.poll_timeout_s)
                    self.counts["candle_rest_fills"] += 1
                except Exception as exc:  # the next poll asks again; nothing is lost
                    self.counts["candle_errors"] += 1
                    log.debug("%s: candle fill failed: %s", sym, _describe(exc))

            await asyncio.gather(*(one(s) for s in fill))
        return out

    async def close(self) -> None:
        await self.ws.close()
        await self.rest.close()

    def stats(self) -> dict[str, int]:
        out = super().stats()
        out.update({f"ws_{k}": v for k, v in self.ws.counts.items()})
        return out


# --- factory ------------------------------------------------------------------------------------------


def make_source(settings: Any, symbols: Sequence[str], clock: Clock | None = None) -> MarketSource:
    """Build the source named by ``settings.source`` ("sim", "bybit" or "bybit-ws")."""
    clock = clock or Clock()
    if settings.source == "sim":
        if settings.fast and not isinstance(clock, VirtualClock):
            log.warning("--fast without a VirtualClock: the simulator will run in real time")
        return SimSource(symbols, clock, seed=settings.seed, book_depth=settings.book_depth)
    common = dict(
        rest_url=settings.bybit_rest_url,
        timeout_s=settings.http_timeout_s,
        max_retries=settings.http_max_retries,
        book_depth=settings.book_depth,
        max_book_age_s=settings.max_book_age_s,
        max_clock_skew_s=settings.max_clock_skew_s,
        seed=settings.seed,
    )
    if settings.source == "bybit":
        return BybitRestSource(symbols, clock, **common)
    if settings.source == "bybit-ws":
        return BybitWsSource(symbols, clock, ws_url=settings.bybit_ws_url,
                             ping_interval_s=settings.ws_ping_interval_s, **common)
    raise ValueError(f"unknown market source {settings.source!r}: expected sim, bybit or bybit-ws")
