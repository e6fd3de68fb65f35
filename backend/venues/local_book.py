"""A local Bybit order book maintained from WebSocket snapshot + delta pushes (sans I/O).

Bybit's rules (v5 ``orderbook.<depth>.<symbol>``):

* a ``snapshot`` replaces the whole book; any later snapshot, and any message with
  ``u == 1`` (Bybit restarted its order-book service), resets it again;
* a ``delta`` carries ``[price, size]`` levels: size ``0`` deletes the level, any
  other size inserts or replaces it;
* ``u`` grows by exactly one per message for a topic. A jump means messages were
  lost, so the book is wrong until a fresh snapshot arrives (the caller resubscribes).
  ``seq`` is a cross sequence that is *not* contiguous and is deliberately unused.

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

from backend.venues.bybit.messages import BookMessage
from backend.venues.orderbook import OrderBook


class ApplyResult(str, enum.Enum):
    APPLIED = "applied"  # delta applied, book usable
    RESET = "reset"  # snapshot (or u == 1) replaced the book
    GAP = "gap"  # u jumped: book discarded, resync needed
    CROSSED = "crossed"  # after applying, best bid >= best ask: book discarded, resync needed
    STALE = "stale"  # delta with u <= last u (duplicate): ignored
    NOT_READY = "not_ready"  # delta before any snapshot: ignored
    WRONG_SYMBOL = "wrong_symbol"

    @property
    def needs_resync(self) -> bool:
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
    """Sorted by key (Bybit sends it sorted; checked, not assumed), last duplicate wins, zero sizes dropped."""
    if keys.size > 1 and np.any(np.diff(keys) <= 0):
        rev = keys[::-1]
        _, first = np.unique(rev, return_index=True)
        keys, sizes = rev[first], sizes[::-1][first]
    keep = sizes > 0
    return keys[keep].tolist(), sizes[keep].tolist()


class LocalBook:
    """One symbol's book. ``apply(msg)`` returns what happened; ``book()`` the current top levels."""

    def __init__(self, symbol: str, depth: int = 50):
        self.symbol = symbol
        self.depth = depth
        self.reset()

    def reset(self) -> None:
        """Forget the book: deltas are ignored until the next snapshot."""
        self._bk: list[float] = []
        self._bs: list[float] = []
        self._ak: list[float] = []
        self._as: list[float] = []
        self.ready = False
        self.last_u: int | None = None
        self.ts_ms = 0
        self.cts_ms: int | None = None
        self.recv_ms = 0

    def apply(self, msg: BookMessage, recv_ms: int = 0) -> ApplyResult:
        if msg.symbol != self.symbol:
            return ApplyResult.WRONG_SYMBOL
        if msg.kind == "snapshot" or msg.u == 1:
            self._bk, self._bs = _side_from_snapshot(-msg.bids[:, 0], msg.bids[:, 1])
            self._ak, self._as = _side_from_snapshot(msg.asks[:, 0], msg.asks[:, 1])
            result = ApplyResult.RESET
        else:
            if not self.ready:
                return ApplyResult.NOT_READY
            if msg.u <= self.last_u:
                return ApplyResult.STALE
            if msg.u != self.last_u + 1:
                self.reset()
                return ApplyResult.GAP
            if msg.bids.size:
                _apply_side(self._bk, self._bs, msg.bids.tolist(), -1.0)
            if msg.asks.size:
                _apply_side(self._ak, self._as, msg.asks.tolist(), 1.0)
            result = ApplyResult.APPLIED
        if self._bk and self._ak and -self._bk[0] >= self._ak[0]:
            self.reset()
            return ApplyResult.CROSSED
        self.ready = True
        self.last_u = msg.u
        self.ts_ms = msg.ts_ms
        self.cts_ms = msg.cts_ms
        self.recv_ms = int(recv_ms)
        return result

    @property
    def levels(self) -> tuple[int, int]:
        return len(self._bk), len(self._ak)

    def book(self, depth: int | None = None) -> OrderBook | None:
        """The top ``depth`` levels (default: this book's depth) as a new ``OrderBook``, or None if not synced."""
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
            update_id=self.last_u,
        )
