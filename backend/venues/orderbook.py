"""An immutable L2 order-book snapshot and its validation (sans I/O).

Prices and sizes are numpy float64 arrays, best level first: bids descending,
asks ascending, trimmed to a fixed depth. Validation returns a typed reason
instead of raising, so one bad book is counted and skipped, never fatal.
"""

from __future__ import annotations

import enum
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np


class BookInvalid(str, enum.Enum):
    EMPTY = "empty"
    ONE_SIDED = "one_sided"
    CROSSED = "crossed"
    LOCKED = "locked"
    BAD_PRICE = "bad_price"  # non-positive or NaN/inf price
    BAD_SIZE = "bad_size"  # non-positive or NaN/inf size
    UNSORTED = "unsorted"
    STALE = "stale"
    FUTURE = "future_timestamp"
    OUT_OF_ORDER = "out_of_order"


@dataclass(frozen=True, slots=True)
class OrderBook:
    symbol: str
    bid_prices: np.ndarray
    bid_sizes: np.ndarray
    ask_prices: np.ndarray
    ask_sizes: np.ndarray
    ts_ms: int  # exchange system time of the book (Bybit "ts")
    recv_ms: int  # local receive time
    cts_ms: int | None = None  # matching-engine time (Bybit "cts") when given
    update_id: int | None = None  # Bybit "u"

    @classmethod
    def from_levels(
        cls,
        symbol: str,
        bids: Sequence[Sequence[float | str]] | np.ndarray,
        asks: Sequence[Sequence[float | str]] | np.ndarray,
        ts_ms: int,
        *,
        recv_ms: int | None = None,
        cts_ms: int | None = None,
        update_id: int | None = None,
        depth: int | None = None,
    ) -> "OrderBook":
        """Build from ``[[price, size], ...]`` (strings as Bybit sends them, or numbers).

        Levels are taken in the given order (the exchange's, best first); sorting is
        checked by ``validate_book``, not silently repaired.
        """
        b = _levels_array(bids)
        a = _levels_array(asks)
        if depth is not None:
            b, a = b[:depth], a[:depth]
        return cls(
            symbol=symbol,
            bid_prices=np.ascontiguousarray(b[:, 0]),
            bid_sizes=np.ascontiguousarray(b[:, 1]),
            ask_prices=np.ascontiguousarray(a[:, 0]),
            ask_sizes=np.ascontiguousarray(a[:, 1]),
            ts_ms=int(ts_ms),
            recv_ms=int(recv_ms if recv_ms is not None else time.time() * 1000),
            cts_ms=None if cts_ms is None else int(cts_ms),
            update_id=update_id,
        )

    @property
    def depth(self) -> int:
        return max(self.bid_prices.size, self.ask_prices.size)

    @property
    def best_bid(self) -> float:
        return float(self.bid_prices[0]) if self.bid_prices.size else float("nan")

    @property
    def best_ask(self) -> float:
        return float(self.ask_prices[0]) if self.ask_prices.size else float("nan")

    @property
    def mid(self) -> float:
        return (self.best_bid + self.best_ask) / 2.0

    def trimmed(self, depth: int) -> "OrderBook":
        if self.bid_prices.size <= depth and self.ask_prices.size <= depth:
            return self
        return OrderBook(
            self.symbol,
            self.bid_prices[:depth],
            self.bid_sizes[:depth],
            self.ask_prices[:depth],
            self.ask_sizes[:depth],
            self.ts_ms,
            self.recv_ms,
            self.cts_ms,
            self.update_id,
        )

    def scaled(self, price_factor: float) -> "OrderBook":
        """The same book with every price multiplied by ``price_factor`` (tests, sim)."""
        return OrderBook(
            self.symbol,
            self.bid_prices * price_factor,
            self.bid_sizes,
            self.ask_prices * price_factor,
            self.ask_sizes,
            self.ts_ms,
            self.recv_ms,
            self.cts_ms,
            self.update_id,
        )


def _levels_array(levels) -> np.ndarray:
    if isinstance(levels, np.ndarray):
        arr = levels.astype(np.float64, copy=False)
    else:
        levels = list(levels)
        if not levels:
            return np.empty((0, 2), dtype=np.float64)
        try:
            arr = np.array(levels, dtype=np.float64)
        except (TypeError, ValueError):
            # a malformed level becomes NaN and is rejected by validation
            arr = np.array([[_to_float(p), _to_float(s)] for p, s, *_ in levels], dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] < 2:
        if arr.size == 0:
            return np.empty((0, 2), dtype=np.float64)
        raise ValueError(f"order-book levels must be [price, size] pairs, got shape {arr.shape}")
    return arr[:, :2]


def _to_float(x) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return float("nan")


def validate_book(
    book: OrderBook,
    now_ms: int,
    *,
    max_age_ms: float = 15_000,
    max_future_ms: float = 5_000,
    last_ts_ms: int | None = None,
) -> BookInvalid | None:
    """Return why ``book`` must not be used, or ``None`` if it is sound."""
    nb, na = book.bid_prices.size, book.ask_prices.size
    if nb == 0 and na == 0:
        return BookInvalid.EMPTY
    if nb == 0 or na == 0:
        return BookInvalid.ONE_SIDED
    for prices in (book.bid_prices, book.ask_prices):
        if not np.all(np.isfinite(prices)) or np.any(prices <= 0):
            return BookInvalid.BAD_PRICE
    for sizes in (book.bid_sizes, book.ask_sizes):
        if not np.all(np.isfinite(sizes)) or np.any(sizes <= 0):
            return BookInvalid.BAD_SIZE
    if nb > 1 and np.any(np.diff(book.bid_prices) >= 0):
        return BookInvalid.UNSORTED
    if na > 1 and np.any(np.diff(book.ask_prices) <= 0):
        return BookInvalid.UNSORTED
    if book.bid_prices[0] > book.ask_prices[0]:
        return BookInvalid.CROSSED
    if book.bid_prices[0] == book.ask_prices[0]:
        return BookInvalid.LOCKED
    if book.ts_ms - now_ms > max_future_ms:
        return BookInvalid.FUTURE
    if now_ms - book.ts_ms > max_age_ms:
        return BookInvalid.STALE
    if last_ts_ms is not None and book.ts_ms < last_ts_ms:
        return BookInvalid.OUT_OF_ORDER
    return None


@dataclass
class BookValidator:
    """Per-symbol validation with counters; remembers the last accepted timestamp."""

    max_age_ms: float = 15_000
    max_future_ms: float = 5_000
    counts: Counter = field(default_factory=Counter)
    accepted: int = 0
    _last_ts: dict[str, int] = field(default_factory=dict)

    def check(self, book: OrderBook, now_ms: int) -> BookInvalid | None:
        reason = validate_book(
            book,
            now_ms,
            max_age_ms=self.max_age_ms,
            max_future_ms=self.max_future_ms,
            last_ts_ms=self._last_ts.get(book.symbol),
        )
        if reason is None:
            self._last_ts[book.symbol] = book.ts_ms
            self.accepted += 1
        else:
            self.counts[reason] += 1
        return reason

    @property
    def rejected(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> str:
        if not self.counts:
            return "none"
        return ", ".join(f"{r.value}={n}" for r, n in sorted(self.counts.items(), key=lambda kv: kv[0].value))


def books_equal(a: OrderBook, b: OrderBook, depth: int | None = None) -> bool:
    """Level-by-level equality of prices and sizes (timestamps ignored)."""
    depth = depth or max(a.depth, b.depth)
    pairs: Iterable[tuple[np.ndarray, np.ndarray]] = (
        (a.bid_prices[:depth], b.bid_prices[:depth]),
        (a.bid_sizes[:depth], b.bid_sizes[:depth]),
        (a.ask_prices[:depth], b.ask_prices[:depth]),
        (a.ask_sizes[:depth], b.ask_sizes[:depth]),
    )
    return all(x.shape == y.shape and np.array_equal(x, y) for x, y in pairs)
