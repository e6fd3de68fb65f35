"""A local Bybit order book maintained from WebSocket snapshot + delta pushes (sans I/O).

Bybit's rules (v5 ``orderbook.<depth>.<symbol>``):

* a ``snapshot`` replaces the whole book; any later snapshot, and any message with
  ``u == 1`` (Bybit restarted its order-book service), resets it again;
* a ``delta`` carries ``[price, size]`` levels: size ``0`` deletes the level, any
  other size inserts or replaces it;
* ``u`` grows by exactly one per message for a topic. A jump means messages were
  lost, so the book is wrong until a fresh snapshot arrives (the caller resubscribes).
  ``seq`` is a cross sequence that is *not* contiguous and is deliberately unused.

Each side is kept as two numpy arrays sorted by a key that puts the best level
first (ask price ascending, negated bid price ascending), so a delta is applied
with one ``searchsorted`` plus vectorised update/insert/delete, and the top N
levels are a slice: no per-level Python loop and no re-sort per read.
"""

from __future__ import annotations

import enum

import numpy as np

from backend.market_data.bybit_messages import BookMessage
from backend.market_data.orderbook import OrderBook

_EMPTY = np.empty(0, dtype=np.float64)


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


def _apply_side(keys: np.ndarray, sizes: np.ndarray, uk: np.ndarray, us: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Apply updates (keys ``uk``, sizes ``us``; size 0 deletes) to one sorted side."""
    if uk.size > 1:
        # Sort the updates and, for a price repeated within one message, let the last one win.
        rev_k = uk[::-1]
        _, first = np.unique(rev_k, return_index=True)
        uk, us = rev_k[first], us[::-1][first]
    pos = np.searchsorted(keys, uk)
    hit = pos < keys.size
    hit[hit] = keys[pos[hit]] == uk[hit]
    deleted = False
    if hit.any():
        sizes[pos[hit]] = us[hit]
        deleted = bool((us[hit] == 0).any())
    new = ~hit & (us > 0)  # deleting a level we do not hold is a no-op
    if new.any():
        keys = np.insert(keys, pos[new], uk[new])
        sizes = np.insert(sizes, pos[new], us[new])
    if deleted:
        keep = sizes > 0
        keys, sizes = keys[keep], sizes[keep]
    return keys, sizes


class LocalBook:
    """One symbol's book. ``apply(msg)`` returns what happened; ``book()`` the current top levels."""

    def __init__(self, symbol: str, depth: int = 50):
        self.symbol = symbol
        self.depth = depth
        self.reset()

    def reset(self) -> None:
        """Forget the book: deltas are ignored until the next snapshot."""
        self._bk = self._bs = self._ak = self._as = _EMPTY
        self.ready = False
        self.last_u: int | None = None
        self.ts_ms = 0
        self.cts_ms: int | None = None
        self.recv_ms = 0

    def apply(self, msg: BookMessage, recv_ms: int = 0) -> ApplyResult:
        if msg.symbol != self.symbol:
            return ApplyResult.WRONG_SYMBOL
        if msg.kind == "snapshot" or msg.u == 1:
            # Copies: later deltas update sizes in place and must not touch the message.
            self._bk = -msg.bids[:, 0]
            self._bs = msg.bids[:, 1].copy()
            self._ak = msg.asks[:, 0].copy()
            self._as = msg.asks[:, 1].copy()
            # A snapshot arrives sorted from Bybit; sort defensively (cheap, once) and drop zero sizes.
            if self._bk.size > 1 and np.any(np.diff(self._bk) <= 0):
                self._bk, self._bs = self._sorted_unique(self._bk, self._bs)
            if self._ak.size > 1 and np.any(np.diff(self._ak) <= 0):
                self._ak, self._as = self._sorted_unique(self._ak, self._as)
            if (self._bs == 0).any():
                keep = self._bs > 0
                self._bk, self._bs = self._bk[keep], self._bs[keep]
            if (self._as == 0).any():
                keep = self._as > 0
                self._ak, self._as = self._ak[keep], self._as[keep]
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
                self._bk, self._bs = _apply_side(self._bk, self._bs, -msg.bids[:, 0], msg.bids[:, 1])
            if msg.asks.size:
                self._ak, self._as = _apply_side(self._ak, self._as, msg.asks[:, 0], msg.asks[:, 1])
            result = ApplyResult.APPLIED
        if self._bk.size and self._ak.size and -self._bk[0] >= self._ak[0]:
            self.reset()
            return ApplyResult.CROSSED
        self.ready = True
        self.last_u = msg.u
        self.ts_ms = msg.ts_ms
        self.cts_ms = msg.cts_ms
        self.recv_ms = int(recv_ms)
        return result

    @staticmethod
    def _sorted_unique(keys: np.ndarray, sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rev_k = keys[::-1]
        _, first = np.unique(rev_k, return_index=True)
        return rev_k[first], sizes[::-1][first].copy()

    @property
    def levels(self) -> tuple[int, int]:
        return self._bk.size, self._ak.size

    def book(self, depth: int | None = None) -> OrderBook | None:
        """The top ``depth`` levels (default: this book's depth) as a new ``OrderBook``, or None if not synced."""
        if not self.ready:
            return None
        d = self.depth if depth is None else depth
        return OrderBook(
            self.symbol,
            -self._bk[:d],  # negation allocates: the caller never aliases our arrays
            self._bs[:d].copy(),
            self._ak[:d].copy(),
            self._as[:d].copy(),
            ts_ms=self.ts_ms,
            recv_ms=self.recv_ms,
            cts_ms=self.cts_ms,
            update_id=self.last_u,
        )
