"""``SimSource`` ("sim"): the in-process simulated market as a ``MarketSource``.

Time is the given clock's time, so a ``VirtualClock`` makes a simulated day run in
seconds. Deterministic for a given seed, start time and tick times.
"""

from __future__ import annotations

from typing import Sequence

from backend.metrics import Metrics
from backend.venues.sim.market import SimMarket
from backend.venues.source import Clock, MarketSource
from backend.venues.types import Candle, MarketSnapshot

__all__ = ["SimSource"]


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

    async def start(self) -> None:
        """Build the market starting at the clock's current time."""
        now = self.clock.now_ms()
        self.market = SimMarket(self.symbols, seed=self.seed, start_ms=now, history_minutes=self.history_minutes,
                                levels=max(50, self.book_depth))
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
        return out

    async def close(self) -> None:
        """Nothing to release."""
        return None
