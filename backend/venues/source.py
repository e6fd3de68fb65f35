"""The interface between market sources (Bybit REST, Bybit WS, simulator) and the bot loop."""

from __future__ import annotations

import abc
import asyncio
import time
from typing import Sequence

from backend.venues.types import Candle, MarketSnapshot


class Clock:
    """Wall clock. The simulator's ``--fast`` mode substitutes a virtual clock."""

    def now_ms(self) -> int:
        return int(time.time() * 1000)

    async def sleep_until(self, t_ms: int) -> None:
        delay = (t_ms - self.now_ms()) / 1000.0
        if delay > 0:
            await asyncio.sleep(delay)


class OffsetClock(Clock):
    """Wall-clock pace from a chosen start time: the real-time simulator with ``--sim-start``."""

    def __init__(self, start_ms: int):
        self._offset = int(start_ms) - super().now_ms()

    def now_ms(self) -> int:
        return super().now_ms() + self._offset


class VirtualClock(Clock):
    """Time advances only when the loop sleeps: a simulated day runs in seconds."""

    def __init__(self, start_ms: int):
        self._now = int(start_ms)

    def now_ms(self) -> int:
        return self._now

    async def sleep_until(self, t_ms: int) -> None:
        if t_ms > self._now:
            self._now = int(t_ms)
        await asyncio.sleep(0)  # let other tasks (flushes, signals) run


class MarketSource(abc.ABC):
    """One market data source for a fixed list of symbols.

    Contract for the bot loop:
    * ``start()`` connects and back-fills enough closed 1-minute candles per
      symbol (``history_candles``) that indicator features are ready at once;
      ``initial_candles(symbol)`` returns them, oldest first.
    * ``poll()`` is called once per tick and returns one ``MarketSnapshot`` per
      symbol. It never raises for bad market data or network faults: a symbol
      whose book is unavailable gets ``book=None`` and an ``error`` string, and
      the others are unaffected.
    * ``close()`` releases connections; safe to call twice.
    """

    name: str = "abstract"  # becomes the ``source`` column
    history_candles: int = 400

    def __init__(self, symbols: Sequence[str], clock: Clock | None = None):
        self.symbols = list(symbols)
        self.clock = clock or Clock()

    @abc.abstractmethod
    async def start(self) -> None: ...

    @abc.abstractmethod
    def initial_candles(self, symbol: str) -> list[Candle]: ...

    @abc.abstractmethod
    async def poll(self) -> dict[str, MarketSnapshot]: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    def stats(self) -> dict[str, int]:
        """Counters worth logging (reconnects, resyncs, retries, ...)."""
        return {}
