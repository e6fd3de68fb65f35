"""Plain market records shared by the sources, the engine, the feature pipeline and the stores.

Times are integer milliseconds since the Unix epoch, UTC; prices in quote currency,
sizes in base currency, as the venue sends them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from backend.venues.orderbook import OrderBook

CANDLE_MS = 60_000


@dataclass(frozen=True, slots=True)
class Trade:
    """One public trade: exchange time ``ts_ms``, price, size, and the taker's side."""

    ts_ms: int
    price: float
    size: float
    side: int  # +1 taker buy, -1 taker sell


@dataclass(frozen=True, slots=True)
class Candle:
    """A closed 1-minute bar. It starts at ``start_ms`` and closes at ``start_ms + 60 s``."""

    start_ms: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    turnover: float = 0.0

    @property
    def close_ms(self) -> int:
        """When the bar closes: ``start_ms + 60 s``."""
        return self.start_ms + CANDLE_MS


@dataclass(frozen=True, slots=True)
class BookEvent:
    """One order-book message a local book applied, as recorded in raw events' delta form (DESIGN.md §6.4).

    ``kind``: ``snapshot`` (replaced the book), ``delta`` (levels changed: size 0 deletes)
    or ``checkpoint`` (not sent by the venue: the whole local book, written now and then
    so a replay can start in the middle of a recording). ``bids``/``asks`` are float64
    ``(n, 2)`` ``[price, size]`` arrays exactly as applied; ``update_id`` the venue's
    sequence id (Bybit ``u``, Binance ``u``), ``ts_ms`` its book time, ``recv_ms`` the
    local receive time, ``cts_ms`` the matching-engine time when given. Binance diffs
    also carry ``first_id`` (``U``) and ``prev_id`` (``pu``).
    """

    kind: str
    bids: np.ndarray
    asks: np.ndarray
    update_id: int
    ts_ms: int
    recv_ms: int
    cts_ms: int | None = None
    first_id: int | None = None
    prev_id: int | None = None


@dataclass(slots=True)
class MarketSnapshot:
    """What one symbol's source produced for one tick.

    ``book`` is the book as the venue gave it (trimmed to the configured depth, not
    validated: the engine validates every book once), or None when none arrived;
    then ``reason`` is a short snake_case word for counting (``no_book``,
    ``resync_pending``, ``ws_disconnected``, ``http_429``, ``poll_timeout`` ...) and
    ``error`` a sentence for a log line. ``trades`` are those new since the previous
    tick; ``candles`` are bars newly closed since the previous tick, oldest first,
    each bar delivered once.

    ``clock_offset_ms`` is the source's estimate of its venue's clock minus the local
    clock (ms; 0 when unknown or for the simulator): the engine checks staleness and
    future timestamps at local time plus this offset, i.e. in exchange time. ``live``
    is True when the source vouches that the book is current however long since it
    last changed (a WebSocket book whose connection answers pings and has no sequence
    gap pending): the engine then skips the age test, never the others.
    """

    symbol: str
    book: OrderBook | None
    trades: list[Trade] = field(default_factory=list)
    candles: list[Candle] = field(default_factory=list)
    error: str | None = None
    reason: str | None = None
    clock_offset_ms: int = 0
    live: bool = False
    #: None for a source without a local book; otherwise every book message its local book applied
    #: since the previous tick (``BookEvent``), oldest first: ``book`` is that local book after them
    book_events: list[BookEvent] | None = None
