"""An exchange-neutral local L2 order book kept from snapshot and delta level arrays (sans I/O).

A venue's protocol object (e.g. ``venues/bybit/protocol.py``) decides, by the venue's
own sequencing rules, whether a message is a snapshot, an in-order delta, a duplicate
or a gap, and calls ``apply_snapshot`` / ``apply_delta`` here only for messages that
must be applied. What stays here is what every venue shares:

* a snapshot replaces the whole book;
* a delta's ``[price, size]`` levels are applied in message order: size ``0`` deletes
  the level (deleting a level the book does not hold is a no-op), any other size
  inserts or replaces it, so a price repeated in one message takes its last size;
* after either, a book whose best bid is at or above its best ask is discarded
  (``CROSSED``): it cannot be right, and only a fresh snapshot can repair it.

Each side is kept as two parallel sorted lists (key, size) with the best level
first (ask price ascending, negated bid price ascending). A delta touches ~10-40
levels, so each is placed with ``bisect`` (binary search, then a C memmove on
insert/delete); measured in bench/book_bench.py this beats both a numpy
searchsorted/insert pipeline (whose per-call overhead dominates at this size) and a
dict that must be sorted on every read. The top N levels are a slice, turned into
numpy arrays only when a book is handed out.
"""

from __future__ import annotations

import enum
from bisect import bisect_left

import numpy as np

from backend.venues.orderbook import OrderBook

__all__ = ["ApplyResult", "LocalBook"]


class ApplyResult(str, enum.Enum):
    """What applying one venue book message did; the value is a short snake_case word.

    ``APPLIED`` and ``RESET`` leave a usable book. ``GAP`` and ``CROSSED`` discard it
    and need a resync (``needs_resync``). ``STALE``, ``NOT_READY`` and
    ``WRONG_SYMBOL`` leave the book as it was and the message unused.
    """

    APPLIED = "applied"  # delta applied, book usable
    RESET = "reset"  # snapshot (or a venue's restart marker) replaced the book
    GAP = "gap"  # the sequence jumped: book discarded, resync needed
    CROSSED = "crossed"  # after applying, best bid >= best ask: book discarded, resync needed
    STALE = "stale"  # a delta the book already has (duplicate or older): ignored
    NOT_READY = "not_ready"  # delta before any snapshot: ignored
    WRONG_SYMBOL = "wrong_symbol"  # a message for another symbol: ignored

    @property
    def needs_resync(self) -> bool:
        """True when the book was discarded and only a fresh snapshot can rebuild it."""
        return self in (ApplyResult.GAP, ApplyResult.CROSSED)


def _apply_side(keys: list[float], sizes: list[float], levels: list[list[float]], sign: float) -> None:
    """Apply ``[price, size]`` updates in message order (a repeated price's last update wins); size 0 deletes.

    ``sign`` is -1 for bids, whose keys are negated prices so both sides sort best-first.
    """
    n = len(keys)
    for p, sz in levels:
        k = sign * p
        i = bisect_left(keys, k)
        if i < n and keys[i] == k:
            if sz == 0.0:
                del keys[i]
                del sizes[i]
                n -= 1
            else:
                sizes[i] = sz
        elif sz != 0.0:  # deleting a level we do not hold is a no-op
            keys.insert(i, k)
            sizes.insert(i, sz)
            n += 1


def _side_from_snapshot(keys: np.ndarray, sizes: np.ndarray) -> tuple[list[float], list[float]]:
    """Sorted by key (venues send it sorted; checked, not assumed), last duplicate wins, zero sizes dropped."""
    if keys.size > 1 and np.any(np.diff(keys) <= 0):
        rev = keys[::-1]
        _, first = np.unique(rev, return_index=True)
        keys, sizes = rev[first], sizes[::-1][first]
    keep = sizes > 0
    return keys[keep].tolist(), sizes[keep].tolist()


class LocalBook:
    """One symbol's book, fed level arrays by a venue protocol; ``book()`` hands out the top levels.

    Level arrays are float64 ``(n, 2)`` of ``[price, size]`` (price > 0, size >= 0, as
    the venue parsers guarantee). ``update_id`` is the venue's sequence id of the last
    message applied (Bybit ``u``), ``None`` until the first snapshot; ``ts_ms`` its
    exchange time in ms since the epoch; ``recv_ms`` the local receive time the caller
    passed in (this object never reads a clock).
    """

    def __init__(self, symbol: str, depth: int = 50):
        self.symbol = symbol
        self.depth = depth
        self.reset()

    def reset(self) -> None:
        """Forget the book: deltas are ignored (``NOT_READY``) until the next snapshot."""
        self._bk: list[float] = []
        self._bs: list[float] = []
        self._ak: list[float] = []
        self._as: list[float] = []
        self.ready = False
        self.update_id: int | None = None
        self.ts_ms = 0
        self.cts_ms: int | None = None
        self.recv_ms = 0

    def apply_snapshot(self, bids: np.ndarray, asks: np.ndarray, update_id: int, ts_ms: int,
                       recv_ms: int = 0, cts_ms: int | None = None) -> ApplyResult:
        """Replace the book; ``RESET``, or ``CROSSED`` (book discarded) when the snapshot itself crosses."""
        self._bk, self._bs = _side_from_snapshot(-bids[:, 0], bids[:, 1])
        self._ak, self._as = _side_from_snapshot(asks[:, 0], asks[:, 1])
        return self._finish(ApplyResult.RESET, update_id, ts_ms, recv_ms, cts_ms)

    def apply_delta(self, bids: np.ndarray, asks: np.ndarray, update_id: int, ts_ms: int,
                    recv_ms: int = 0, cts_ms: int | None = None) -> ApplyResult:
        """Apply one in-order delta: ``APPLIED``, ``NOT_READY`` before any snapshot, or ``CROSSED``.

        Sequencing (duplicates, gaps) is the caller's: it passes only the delta that
        follows ``update_id``.
        """
        if not self.ready:
            return ApplyResult.NOT_READY
        if bids.size:
            _apply_side(self._bk, self._bs, bids.tolist(), -1.0)
        if asks.size:
            _apply_side(self._ak, self._as, asks.tolist(), 1.0)
        return self._finish(ApplyResult.APPLIED, update_id, ts_ms, recv_ms, cts_ms)

    def _finish(self, result: ApplyResult, update_id: int, ts_ms: int, recv_ms: int, cts_ms: int | None) -> ApplyResult:
        if self._bk and self._ak and -self._bk[0] >= self._ak[0]:
            self.reset()
            return ApplyResult.CROSSED
        self.ready = True
        self.update_id = int(update_id)
        self.ts_ms = int(ts_ms)
        self.cts_ms = cts_ms
        self.recv_ms = int(recv_ms)
        return result

    @property
    def levels(self) -> tuple[int, int]:
        """(bid levels, ask levels) held, however many more than ``depth``."""
        return len(self._bk), len(self._ak)

    def book(self, depth: int | None = None) -> OrderBook | None:
        """The top ``depth`` levels (default: this book's depth) as a new ``OrderBook``, or None if not synced.

        The arrays are copies: a handed-out book never changes under its consumer.
        """
        if not self.ready:
            return None
        d = self.depth if depth is None else depth
        return OrderBook(
            self.symbol,
            -np.array(self._bk[:d], dtype=np.float64),
            np.array(self._bs[:d], dtype=np.float64),
            np.array(self._ak[:d], dtype=np.float64),
            np.array(self._as[:d], dtype=np.float64),
            ts_ms=self.ts_ms,
            recv_ms=self.recv_ms,
            cts_ms=self.cts_ms,
            update_id=self.update_id,
        )
