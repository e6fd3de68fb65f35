"""The interface between market sources (Bybit REST, Bybit WS, simulator) and the engine, and the clocks.

Every source hands over what its venue gave, per symbol and tick (``MarketSnapshot``);
validation of books is the engine's alone. Venue faults are counted in the shared
``Metrics`` (``lobbot_venue_faults_total{venue,reason}``), not inside the source.
"""

from __future__ import annotations

import abc
import asyncio
import time
from typing import Sequence

from backend.metrics import Metrics
from backend.venues.types import Candle, MarketSnapshot

__all__ = ["Clock", "MarketSource", "OffsetClock", "UnknownSymbolError", "VenueBannedError", "VenueConfigError",
           "VenueStartupError", "VirtualClock"]


class WebSocketUnreachable(ConnectionError):
    """REST answered but no WebSocket connection opened at start (a wrong URL or path, a blocked port)."""


class VenueStartupError(RuntimeError):
    """An expected condition that stops a live source at start; the message is complete and says nothing
    about the network (the bot prints it as is, exit code 1)."""


class UnknownSymbolError(VenueStartupError):
    """Configured symbols the venue does not list (or lists as closed); ``symbols`` names them."""

    def __init__(self, symbols, message: str):
        super().__init__(message)
        self.symbols = list(symbols)


class VenueBannedError(VenueStartupError):
    """The venue has banned this IP address (Bybit: HTTP 403)."""


class VenueConfigError(VenueStartupError):
    """The configuration would break the venue's documented limits (request rate, connections)."""


class Clock:
    """Wall clock in integer ms since the epoch. The simulator's ``--fast`` mode substitutes a virtual clock.

    ``virtual`` is True for a clock whose time moves only when the loop sleeps.
    """

    virtual = False

    def now_ms(self) -> int:
        """Current time, ms since the Unix epoch."""
        return int(time.time() * 1000)

    async def sleep_until(self, t_ms: int) -> None:
        """Return at ``t_ms`` (at once if it has passed)."""
        delay = (t_ms - self.now_ms()) / 1000.0
        if delay > 0:
            await asyncio.sleep(delay)


class OffsetClock(Clock):
    """Wall-clock pace from a chosen start time: the real-time simulator with ``--sim-start``."""

    def __init__(self, start_ms: int):
        self._offset = int(start_ms) - super().now_ms()

    def now_ms(self) -> int:
        """Wall time shifted so that construction happened at ``start_ms``."""
        return super().now_ms() + self._offset


class VirtualClock(Clock):
    """Time advances only when the loop sleeps: a simulated day runs in seconds."""

    virtual = True

    def __init__(self, start_ms: int):
        self._now = int(start_ms)

    def now_ms(self) -> int:
        """The virtual time, ms since the epoch."""
        return self._now

    async def sleep_until(self, t_ms: int) -> None:
        """Jump to ``t_ms`` (never backwards) and yield once to other tasks."""
        if t_ms > self._now:
            self._now = int(t_ms)
        await asyncio.sleep(0)  # let other tasks (flushes, signals) run


class MarketSource(abc.ABC):
    """One market data source for a fixed list of symbols.

    Contract for the engine:

    * ``start()`` connects and back-fills enough closed 1-minute candles per
      symbol (``history_candles``) that indicator features are ready at once;
      ``initial_candles(symbol)`` returns them, oldest first. It raises when the
      venue cannot be reached at all (the bot reports that at start).
    * ``poll()`` is called once per tick and returns one ``MarketSnapshot`` per
      symbol. It never raises for bad market data or network faults: a symbol
      whose book is unavailable gets ``book=None`` with a ``reason``, and the others
      are unaffected. Books are not validated here.
    * ``close()`` releases connections; safe to call twice.

    ``name`` becomes the ``source`` column of stored rows; ``venue`` labels this
    source's counts in ``metrics`` (the bot's one registry; a new one when None).
    """

    name: str = "abstract"
    venue: str = "abstract"
    history_candles: int = 400

    def __init__(self, symbols: Sequence[str], clock: Clock | None = None, metrics: Metrics | None = None):
        self.symbols = list(symbols)
        self.clock = clock or Clock()
        self.metrics = metrics if metrics is not None else Metrics()

    @abc.abstractmethod
    async def start(self) -> None:
        """Connect and back-fill candles."""

    @abc.abstractmethod
    def initial_candles(self, symbol: str) -> list[Candle]:
        """The back-filled closed bars of ``symbol``, oldest first."""

    @abc.abstractmethod
    async def poll(self) -> dict[str, MarketSnapshot]:
        """One snapshot per symbol for this tick; never raises for venue faults."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections; safe to call twice."""

    def count_fault(self, reason: str) -> None:
        """Count one fault of this source's venue in ``lobbot_venue_faults_total``."""
        self.metrics.venue_faults.labels(venue=self.venue, reason=reason).inc()
