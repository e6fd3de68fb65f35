"""An immutable L2 order-book snapshot and its validation (sans I/O).

Prices and sizes are numpy float64 arrays, best level first: bids descending,
asks ascending, trimmed to a fixed depth. Validation returns a typed reason
instead of raising, so one bad book is counted and skipped, never fatal.
"""

from __future__ import annotations

import enum
import math
import time
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np


class BookInvalid(str, enum.Enum):
    """Why a book was rejected; the value is the ``reason`` label of ``lobbot_books_rejected_total``."""

    EMPTY = "empty"
    ONE_SIDED = "one_sided"
    CROSSED = "crossed"
    LOCKED = "locked"
    BAD_PRICE = "bad_price"  # non-positive or NaN/inf price
    BAD_SIZE = "bad_size"  # non-positive or NaN/inf size
    UNSORTED = "unsorted"
    NON_FINITE = "non_finite"  # finite levels whose mid, spread or notional overflow (e.g. 1e308 prices)
    STALE = "stale"
    FUTURE = "future_timestamp"
    OUT_OF_ORDER = "out_of_order"


@dataclass(frozen=True, slots=True)
class OrderBook:
    """One L2 book: float64 price and size arrays per side, best level first; times in ms since the epoch."""

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
        """Levels on the deeper side."""
        return max(self.bid_prices.size, self.ask_prices.size)

    @property
    def best_bid(self) -> float:
        """Highest bid price; NaN without bids."""
        return float(self.bid_prices[0]) if self.bid_prices.size else float("nan")

    @property
    def best_ask(self) -> float:
        """Lowest ask price; NaN without asks."""
        return float(self.ask_prices[0]) if self.ask_prices.size else float("nan")

    @property
    def mid(self) -> float:
        """(best bid + best ask) / 2."""
        return (self.best_bid + self.best_ask) / 2.0

    def trimmed(self, depth: int) -> "OrderBook":
        """The top ``depth`` levels per side (views, not copies); ``self`` when already that shallow."""
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


_NOTIONAL_CHECK = 1e300  # a level's price x size below this cannot make a side's notional overflow (depth << 1e8)


def validate_book(
    book: OrderBook,
    now_ms: int,
    *,
    max_age_ms: float = 15_000,
    max_future_ms: float = 5_000,
    last_ts_ms: int | None = None,
    check_age: bool = True,
) -> BookInvalid | None:
    """Return why ``book`` must not be used at exchange time ``now_ms``, or ``None`` if it is sound.

    ``now_ms`` is the current time on the venue's clock (local time plus the measured
    clock offset), so a local clock that is off does not make sound books stale or
    future. Checks, in order: both sides present, finite positive prices and sizes,
    bids strictly descending and asks strictly ascending, not crossed or locked, a finite
    mid, spread and per-side notional (sum of price x size: levels near the float64
    maximum overflow to inf), exchange time ``ts_ms`` at most ``max_future_ms`` ahead of
    and (when ``check_age``) ``max_age_ms`` behind ``now_ms``, and not older than
    ``last_ts_ms`` (the symbol's last accepted book). ``check_age=False`` is for a book
    its source vouches for as current (a WebSocket book on a live connection: venues
    push a book only when it changes).
    """
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
    bid, ask = float(book.bid_prices[0]), float(book.ask_prices[0])
    # Python float sums overflow to inf quietly; the notional needs numpy's overflow warning silenced,
    # which is only paid for when a level is big enough to overflow at all
    if not (math.isfinite(bid + ask) and math.isfinite(ask - bid)):
        return BookInvalid.NON_FINITE
    if float(book.ask_prices[-1]) * max(float(book.bid_sizes.max()), float(book.ask_sizes.max())) > _NOTIONAL_CHECK:
        with np.errstate(over="ignore", invalid="ignore"):
            if not (np.isfinite(book.bid_prices.dot(book.bid_sizes)) and np.isfinite(book.ask_prices.dot(book.ask_sizes))):
                return BookInvalid.NON_FINITE
    if book.ts_ms - now_ms > max_future_ms:
        return BookInvalid.FUTURE
    if check_age and now_ms - book.ts_ms > max_age_ms:
        return BookInvalid.STALE
    if last_ts_ms is not None and book.ts_ms < last_ts_ms:
        return BookInvalid.OUT_OF_ORDER
    return None


@dataclass
class BookValidator:
    """``validate_book`` with per-symbol memory of the last accepted exchange time (for ``OUT_OF_ORDER``).

    Thresholds in ms. It counts nothing: the engine counts every rejection by reason
    in the shared ``Metrics`` (``lobbot_books_rejected_total``).
    """

    max_age_ms: float = 15_000
    max_future_ms: float = 5_000
    _last_ts: dict[str, int] = field(default_factory=dict)

    def check(self, book: OrderBook, now_ms: int, *, check_age: bool = True) -> BookInvalid | None:
        """Why ``book`` must not be used at exchange time ``now_ms``, or None (then it becomes the symbol's latest).

        ``check_age=False`` skips the staleness test for a book its source vouches for (see ``validate_book``).
        """
        reason = validate_book(
            book,
            now_ms,
            max_age_ms=self.max_age_ms,
            max_future_ms=self.max_future_ms,
            last_ts_ms=self._last_ts.get(book.symbol),
            check_age=check_age,
        )
        if reason is None:
            self._last_ts[book.symbol] = book.ts_ms
        return reason


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
