"""What the live venues' market sources share, whatever the venue: candles, clock offset, polling, local books.

``venues/bybit/source.py`` and ``venues/binance/source.py`` each hold a REST polling source
and a WebSocket local-book source on top of ``LiveSourceBase``. The promises they share
(and the rule each follows):

* each closed bar is handed out once, oldest first, whether it came from the stream, a
  REST fill or the start's back-fill (``CandleFeed``);
* the venue's clock offset is measured from its REST replies (``ClockOffsetEstimator``),
  handed out with every snapshot, exported as ``lobbot_exchange_clock_offset_seconds{venue}``
  and a local clock more than 1 s off (``CLOCK_WARN_MS``) is logged once; the WebSocket
  sources ask the server time again every ``TIME_SYNC_S`` seconds, in the background;
* ``poll()`` never raises for market or network faults: a symbol without a book gets
  ``book=None`` and a ``reason`` (``banned`` during an IP ban, when nothing is sent;
  ``poll_timeout`` past ``poll_timeout_s``; ``poll_error`` otherwise);
* liveness, not age (WebSocket sources): a book on a connection that answers pings, with no
  resync pending, is current however long since it changed (both venues push a book only
  when it changes). It is handed out ``live`` and stamped as of the current exchange time,
  never before its own ``ts`` nor before the stamp handed out before; a bar the stream
  missed (a gap, or none ``kline_grace_ms`` after it closed) is fetched over REST.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections import deque
from typing import Any, Awaitable, Callable, Sequence

from backend.metrics import Metrics
from backend.venues.health import CLOCK_WARN_MS
from backend.venues.source import Clock, MarketSource, WebSocketUnreachable
from backend.venues.types import CANDLE_MS, Candle, MarketSnapshot, Trade

__all__ = ["CandleFeed", "LiveSourceBase", "TIME_SYNC_S", "describe"]

log = logging.getLogger(__name__)

TIME_SYNC_S = 30.0  # the WebSocket sources ask the server time this often (s)


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


def describe(exc: BaseException) -> str:
    """An exception as one short line for a snapshot's ``error`` or a log line (at most 300 characters)."""
    text = str(exc) or type(exc).__name__
    return text if len(text) < 300 else text[:297] + "..."


class LiveSourceBase(MarketSource):
    """The part of a live venue's source that does not depend on the venue.

    A subclass sets ``label`` (the venue's name in log lines), ``banned_error`` (its REST
    client's ban exception), ``ban_status`` (the HTTP status of a ban, for snapshots' errors),
    assigns ``self.rest`` (a client with ``offset``, ``ban``, ``get_server_time`` and
    ``get_closed_candles``) after calling this ``__init__``, and overrides the hooks it needs.
    REST polling sources also set ``trade_limit``, ``_seen`` and ``_trades_since``; WebSocket sources set
    ``shards`` (their clients), ``_client`` (symbol -> client) and ``sync_timeout_s``, and implement
    ``_check_symbols`` and ``_backfill`` for ``_start_streams``.
    """

    label = "venue"
    banned_error: type[Exception] = RuntimeError
    ban_status = "HTTP 403"
    kline_grace_ms = 5_000  # the stream's closed bar normally arrives within a second
    candles_on_exchange_clock = False
    """True: a WebSocket source judges bars closed by exchange time (local time plus the offset)."""

    def __init__(self, symbols: Sequence[str], clock: Clock | None, metrics: Metrics | None, *, book_depth: int,
                 poll_timeout_s: float | None, timeout_s: float):
        super().__init__(symbols, clock, metrics)
        self.book_depth = book_depth
        self.poll_timeout_s = poll_timeout_s if poll_timeout_s is not None else timeout_s
        self._feeds = {s: CandleFeed() for s in self.symbols}
        self._initial: dict[str, list[Candle]] = {s: [] for s in self.symbols}
        self._stamp: dict[str, int] = {}
        self._last_sync = float("-inf")
        self._sync_task: asyncio.Task | None = None
        self.rest: Any = None

    # --- exchange time --------------------------------------------------------------
    def clock_offset_ms(self) -> int:
        """The venue's clock minus ours now (ms, 0 until measured); sets the gauge and warns once above 1 s."""
        est = self.rest.offset
        now = self.clock.now_ms()
        off = est.offset_ms(now)
        if off is None:
            return 0
        self.metrics.clock_offset.labels(venue=self.venue).set(off / 1000.0)  # created at the first measurement
        if est.should_warn(now, CLOCK_WARN_MS):
            err = est.error_bound_ms(now)
            log.warning("The local clock is %.3f s %s %s's (offset %+.3f s, measured to within %s). Book ages "
                        "and future timestamps are judged in exchange time, so collection goes on; consider "
                        "enabling NTP on this machine.", abs(off) / 1000.0, "behind" if off > 0 else "ahead of",
                        self.label, off / 1000.0, "?" if err is None else f"{err / 1000.0:.3f} s")
        return int(round(off))

    async def _sync_time(self, rounds: int = 3) -> None:
        """A few server-time round trips (the fastest gives the offset); a ban propagates, other failures are
        left to later (the offset stays as it was)."""
        for _ in range(rounds):
            try:
                await self.rest.get_server_time()
            except self.banned_error:
                raise
            except Exception as exc:  # the offset stays as it was until a later reply
                log.debug("%s server time request failed: %s", self.label, describe(exc))
                return

    def _maybe_sync_time(self, now: int) -> None:
        """Start a background server-time request when ``TIME_SYNC_S`` has passed (never during a ban)."""
        if now - self._last_sync < TIME_SYNC_S * 1000 or (self._sync_task is not None and not self._sync_task.done()):
            return
        self._last_sync = now
        if self.rest.ban.active(now):
            return

        async def sync() -> None:
            try:
                await self._sync_time(1)
            except Exception as exc:  # a ban or a failure: the offset keeps its last value
                log.debug("%s server time sync failed: %s", self.label, describe(exc))

        self._sync_task = asyncio.ensure_future(sync())

    async def _stop_sync(self) -> None:
        """Cancel a background server-time request."""
        if self._sync_task is not None:
            self._sync_task.cancel()
            await asyncio.gather(self._sync_task, return_exceptions=True)

    # --- candles --------------------------------------------------------------------
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

    # --- REST polling ---------------------------------------------------------------
    def _banned_snapshots(self, now: int) -> dict[str, MarketSnapshot] | None:
        """During an IP ban: every symbol's snapshot with reason ``banned`` (nothing is sent); else None."""
        if not self.rest.ban.active(now):
            return None
        left = self.rest.ban.remaining_s(now)
        return {s: MarketSnapshot(s, None, reason="banned",
                                  error=f"{self.label} IP ban ({self.ban_status}): REST paused for {left:.0f} s more")
                for s in self.symbols}

    def _book_failed(self, sym: str, exc: BaseException) -> None:
        """A symbol's book request failed (the snapshot already says why)."""

    def _reason(self, exc: BaseException) -> str:
        """The fault word for a failed book request."""
        return "request_error"

    async def _poll_rest_symbol(self, sym: str, book: Callable[[], Awaitable[Any]],
                                trades: Callable[[], Awaitable[list]] | None, book_of: Callable[[Any], Any],
                                what: str) -> MarketSnapshot:
        """One symbol's REST poll: its book (``book()``, turned into an ``OrderBook`` by ``book_of``), new trades
        (``trades()``, when given) and the bars due, concurrently, abandoned after ``poll_timeout_s``."""
        try:
            book_t = asyncio.ensure_future(book())
            trades_t = asyncio.ensure_future(trades()) if trades is not None else None
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
                snap.book = book_of(book_t.result())
            elif book_t in done:
                exc = book_t.exception()
                snap.error, snap.reason = describe(exc), self._reason(exc)
                self._book_failed(sym, exc)
            else:
                snap.error = f"{what} request timed out after {self.poll_timeout_s:g} s"
                snap.reason = "poll_timeout"
            if trades_t is not None and trades_t in done and trades_t.exception() is None:
                snap.trades = self._new_trades(sym, trades_t.result())
            if candles_t is not None and candles_t in done and candles_t.exception() is None:
                snap.candles = candles_t.result()
            # a failed trade or candle request was counted by the client; the next poll asks again
            return snap
        except Exception as exc:  # poll() must never raise; the symbol reports why
            return self._poll_error(sym, exc)

    def _poll_error(self, sym: str, exc: BaseException, **fields: Any) -> MarketSnapshot:
        """Count ``poll_error`` and return the symbol's snapshot saying what went wrong."""
        self.count_fault("poll_error")
        return MarketSnapshot(sym, None, error=f"{type(exc).__name__}: {describe(exc)}", reason="poll_error",
                              **fields)

    def _new_trades(self, sym: str, items: list[tuple[Any, Trade]]) -> list[Trade]:
        """``[(trade id, Trade)]`` -> the trades not handed out before (by id) and after the start."""
        order, seen = self._seen[sym]
        out = []
        for tid, trade in items:
            if tid in seen or trade.ts_ms <= self._trades_since:
                continue
            seen.add(tid)
            order.append(tid)
            out.append(trade)
        while len(order) > 4 * self.trade_limit + 1000:
            seen.discard(order.popleft())
        return out

    def _new_seen(self) -> dict[str, tuple[deque, set]]:
        """Per symbol, the trade ids handed out (in order, and as a set)."""
        return {s: (deque(), set()) for s in self.symbols}

    # --- WebSocket local books ------------------------------------------------------
    async def _start_streams(self) -> None:
        """The WebSocket sources' start: check the symbols, measure the clock (3 round trips), connect every
        shard (``self.shards``), back-fill candles over REST, wait up to ``sync_timeout_s`` for every book."""
        await self._check_symbols()
        await self._sync_time(3)
        self._last_sync = self.clock.now_ms()
        for c in self.shards:
            await c.start()
        await self._backfill()
        await asyncio.gather(*(c.wait_synced(self.sync_timeout_s) for c in self.shards))
        never = [c for c in self.shards if not c.ever_connected]
        if never:
            # REST answered but no WebSocket connection ever opened (a wrong URL or path, a blocked port):
            # said at start like an unreachable REST endpoint, instead of reconnecting silently forever
            raise WebSocketUnreachable(f"no WebSocket connection opened within {self.sync_timeout_s:g} s "
                                  f"({never[0].last_error or 'no answer'})")

    def _ws_skipped(self, sym: str, ws: Any, offset: int) -> MarketSnapshot | None:
        """A symbol's snapshot when it is not collected any more (Bybit: delisted); None to collect it."""
        return None

    async def _poll_streams(self, now: int) -> dict[str, MarketSnapshot]:
        """Every symbol's current local book, trades and closed bars from its WebSocket client (``self._client``),
        the bars the stream missed fetched over REST."""
        offset = self.clock_offset_ms()
        out: dict[str, MarketSnapshot] = {}
        fill: list[str] = []
        for sym in self.symbols:
            try:
                ws = self._client[sym]
                out[sym] = self._ws_skipped(sym, ws, offset) or self._ws_symbol(sym, ws, now, offset, fill)
            except Exception as exc:  # poll() must never raise
                out[sym] = self._poll_error(sym, exc)
        await self._fill_candles(fill, out, now, offset)
        return out

    def _ws_symbol(self, sym: str, ws: Any, now: int, offset: int, fill: list[str]) -> MarketSnapshot:
        """One symbol's snapshot from its WebSocket client: its live book (stamped), trades and bars; the symbol
        joins ``fill`` when REST must fetch bars the stream missed."""
        snap = MarketSnapshot(sym, None, trades=ws.drain_trades(sym), clock_offset_ms=offset,
                              book_events=ws.drain_book_events(sym))  # raw events' delta form
        book = ws.protocol.book(sym, self.book_depth)
        if book is not None and ws.live():
            stamp = max(book.ts_ms, now + offset, self._stamp.get(sym, book.ts_ms))
            self._stamp[sym] = stamp
            snap.book = book if stamp == book.ts_ms else dataclasses.replace(book, ts_ms=stamp)
            snap.live = True
        else:
            snap.reason, snap.error = ws.status(sym)
        feed = self._feeds[sym]
        streamed = ws.drain_candles(sym)
        bar_now = now + offset if self.candles_on_exchange_clock else now
        gap = bool(streamed) and feed.last_start is not None and \
            min(c.start_ms for c in streamed) > feed.last_start + CANDLE_MS
        if gap or (not streamed and feed.due(bar_now, self.kline_grace_ms)):
            fill.append(sym)  # REST fetches the missing bars (and any streamed ones) in order
        else:
            snap.candles = feed.take(streamed, bar_now)
        return snap

    def _fill_failed(self, sym: str, exc: Exception, out: dict[str, MarketSnapshot], offset: int) -> None:
        """A REST candle fill failed (the next poll asks again; nothing is lost)."""
        log.debug("%s: candle fill failed: %s", sym, describe(exc))

    async def _fill_candles(self, fill: list[str], out: dict[str, MarketSnapshot], now: int, offset: int) -> None:
        """Fetch over REST the bars the stream missed for the symbols in ``fill`` (not during a ban)."""
        if not fill or self.rest.ban.active(now):
            return

        async def one(sym: str) -> None:
            try:
                out[sym].candles = await asyncio.wait_for(self._rest_candles(sym), self.poll_timeout_s)
            except asyncio.TimeoutError:
                self.count_fault("poll_timeout")
            except Exception as exc:  # the next poll asks again; nothing is lost
                self._fill_failed(sym, exc, out, offset)

        await asyncio.gather(*(one(s) for s in fill))
