"""``SimSource`` ("sim"): the in-process simulated market as a ``MarketSource``.

Time is the given clock's time, so a ``VirtualClock`` makes a simulated day run in
seconds. Deterministic for a given seed, start time and tick times.

The simulated hours are generated off the event loop: the start-up history on worker
threads (``start``), and each next hour on one background thread from
``PREFETCH_LEAD_MS`` before it begins, so 500 symbols neither block the loop for their
history nor stall a tick at each simulated hour boundary. A poll that reaches an hour not
yet made (a ``--fast`` run outpacing the thread) makes it on the spot; the values are the
same either way.
"""

from __future__ import annotations

import asyncio
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

from backend.metrics import Metrics
from backend.venues.sim.market import CHUNK_S, SimMarket
from backend.venues.source import Clock, MarketSource
from backend.venues.types import Candle, MarketSnapshot

__all__ = ["SimSource"]

log = logging.getLogger(__name__)

PREFETCH_LEAD_MS = 20 * 60_000  #: the next simulated hour is made from this long before it begins
START_WORKERS = max(1, min(4, os.cpu_count() or 1))  #: threads making the start-up history


class SimSource(MarketSource):
    """Books, trades and closed bars of ``SimMarket`` at the clock's time.

    ``book_depth`` levels per side (the market keeps at least 50);
    ``history_minutes`` of closed bars are back-filled (at least ``history_candles``).
    """

    name = "sim"
    venue = "sim"

    def __init__(self, symbols: Sequence[str], clock: Clock | None = None, *, seed: int | None = None,
                 book_depth: int = 50, history_minutes: int | None = None, metrics: Metrics | None = None):
        super().__init__(symbols, clock, metrics)
        self.seed = seed
        self.book_depth = book_depth
        self.history_minutes = max(self.history_candles, history_minutes or 480)
        self.market: SimMarket | None = None
        self._last_ms = 0
        self._origin_ms = 0
        self._prepared_hour = -1  # the last simulated hour handed to the background thread
        self._prefetch: asyncio.Future | None = None
        self._executor: ThreadPoolExecutor | None = None

    async def start(self) -> None:
        """Build the market starting at the clock's current time; its history is made on worker threads."""
        now = self.clock.now_ms()
        market = SimMarket(self.symbols, seed=self.seed, start_ms=now, history_minutes=self.history_minutes,
                           levels=max(50, self.book_depth))
        await asyncio.to_thread(market.prepare, now, START_WORKERS)
        self.market = market
        self._origin_ms = next(iter(market.sims.values())).origin_ms if market.sims else now
        self._prepared_hour = (now - self._origin_ms) // (CHUNK_S * 1000)
        self._last_ms = now

    def _market(self) -> SimMarket:
        if self.market is None:
            raise RuntimeError("SimSource: call start() first")
        return self.market

    def initial_candles(self, symbol: str) -> list[Candle]:
        """The simulated history before the start, oldest first."""
        return self._market()[symbol].history()

    async def poll(self) -> dict[str, MarketSnapshot]:
        """Each symbol's book now, and the trades and bars since the previous poll."""
        market = self._market()
        now = self.clock.now_ms()
        t0, self._last_ms = self._last_ms, max(now, self._last_ms)
        out = {}
        for s in self.symbols:
            sim = market[s]
            out[s] = MarketSnapshot(
                s,
                sim.book_at(now, depth=self.book_depth, recv_ms=now),
                sim.trades_between(t0, now),
                sim.candles_closed_between(t0, now),
            )
        self._prefetch_next_hour(now)
        return out

    def _prefetch_next_hour(self, now_ms: int) -> None:
        """From ``PREFETCH_LEAD_MS`` before the next simulated hour, make it on the background thread."""
        hour_ms = CHUNK_S * 1000
        nxt = (now_ms - self._origin_ms) // hour_ms + 1
        if nxt <= self._prepared_hour or self._origin_ms + nxt * hour_ms - now_ms > PREFETCH_LEAD_MS:
            return
        if self._prefetch is not None and not self._prefetch.done():
            return
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sim-next-hour")
        self._prepared_hour = nxt
        self._prefetch = asyncio.get_running_loop().run_in_executor(
            self._executor, self._market().prepare, self._origin_ms + nxt * hour_ms)
        self._prefetch.add_done_callback(_log_failure)

    @property
    def next_hour_started(self) -> bool:
        """True once a poll has handed a next simulated hour to the background thread."""
        return self._prefetch is not None

    async def wait_next_hour(self) -> None:
        """Wait until the hour the background thread is making (if any) is made; never raises
        for a failed one (that hour is then made by the poll that needs it)."""
        if self._prefetch is not None:
            await asyncio.wait([self._prefetch])

    async def close(self) -> None:
        """Wait for the background thread to finish the hour it is making."""
        await self.wait_next_hour()
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None


def _log_failure(fut: asyncio.Future) -> None:
    if not fut.cancelled() and fut.exception() is not None:
        # the hour is made on the spot by the poll that needs it (and fails there, if it must)
        log.warning("Simulator: making the next hour in the background failed: %s", fut.exception())
