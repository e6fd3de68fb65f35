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

Every message applied is also kept in a journal (``BookEvent``) that the source takes
each tick (``drain_events``) for raw events' delta form (DESIGN.md §6.4): a replay feeds
the same messages to a ``LocalBook`` and gets the same book, bit for bit. A taken journal
ends with a ``checkpoint`` (the whole book) at least every ``CHECKPOINT_MS`` of book
time, so a replay can start mid-recording, and a journal nobody takes is folded into a
checkpoint past ``JOURNAL_MAX`` messages, so it never grows without bound.

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
from backend.venues.types import BookEvent

__all__ = ["ApplyResult", "CHECKPOINT_MS", "JOURNAL_MAX", "LocalBook"]

CHECKPOINT_MS = 600_000  #: a journal taken this long (book time) after the last snapshot or checkpoint ends with one
JOURNAL_MAX = 10_000  #: messages a journal holds untaken before it is folded into one checkpoint


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
        self._journal: list[BookEvent] = []
        self._whole_ts: int | None = None  # book time of the last snapshot or checkpoint journalled
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
        result = self._finish(ApplyResult.RESET, update_id, ts_ms, recv_ms, cts_ms)
        if result is ApplyResult.RESET:
            self._journal = [BookEvent("snapshot", bids, asks, int(update_id), int(ts_ms), int(recv_ms), cts_ms)]
            self._whole_ts = int(ts_ms)
        return result

    def apply_delta(self, bids: np.ndarray, asks: np.ndarray, update_id: int, ts_ms: int,
                    recv_ms: int = 0, cts_ms: int | None = None, first_id: int | None = None,
                    prev_id: int | None = None) -> ApplyResult:
        """Apply one in-order delta: ``APPLIED``, ``NOT_READY`` before any snapshot, or ``CROSSED``.

        Sequencing (duplicates, gaps) is the caller's: it passes only the delta that
        follows ``update_id``; ``first_id``/``prev_id`` (Binance ``U``/``pu``) are only journalled.
        """
        if not self.ready:
            return ApplyResult.NOT_READY
        if bids.size:
            _apply_side(self._bk, self._bs, bids.tolist(), -1.0)
        if asks.size:
            _apply_side(self._ak, self._as, asks.tolist(), 1.0)
        result = self._finish(ApplyResult.APPLIED, update_id, ts_ms, recv_ms, cts_ms)
        if result is ApplyResult.APPLIED:
            self._journal.append(BookEvent("delta", bids, asks, int(update_id), int(ts_ms), int(recv_ms), cts_ms,
                                           first_id, prev_id))
            if len(self._journal) > JOURNAL_MAX:
                self._journal = [self._checkpoint()]
        return result

    def _checkpoint(self) -> BookEvent:
        """The whole book as one event (all levels, best first)."""
        self._whole_ts = self.ts_ms
        bids = np.column_stack([-np.array(self._bk, dtype=np.float64), np.array(self._bs, dtype=np.float64)])
        asks = np.column_stack([np.array(self._ak, dtype=np.float64), np.array(self._as, dtype=np.float64)])
        return BookEvent("checkpoint", bids.reshape(-1, 2), asks.reshape(-1, 2), int(self.update_id), self.ts_ms,
                         self.recv_ms, self.cts_ms)

    def drain_events(self) -> list[BookEvent]:
        """The messages applied since the last call, oldest first (see the module docstring).

        Ends with a ``checkpoint`` of the book as it stands now when the last snapshot or
        checkpoint is older than ``CHECKPOINT_MS`` of book time. Messages not applied
        (duplicates, gaps, those before a snapshot) are not in it; after a reset the next
        snapshot replaces the book anyway.
        """
        out, self._journal = self._journal, []
        if self.ready and (self._whole_ts is None or self.ts_ms - self._whole_ts >= CHECKPOINT_MS):
            out.append(self._checkpoint())
        return out

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
