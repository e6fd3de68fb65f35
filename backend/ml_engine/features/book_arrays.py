"""Stack many order books into padded (n_books, depth) arrays so features run batched.

A missing level (a side shorter than ``depth``) has price NaN and size 0: sums
ignore it, and price look-ups fall back to the deepest level that exists.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from backend.venues.orderbook import OrderBook


@dataclass(slots=True)
class BookArrays:
    """Many books' levels as padded (n, depth) float64 arrays, best level first.

    Prices are in quote currency, sizes in base currency, as the venue sent them.
    A missing level has price NaN and size 0; ``n_bid``/``n_ask`` count the levels
    present per book.
    """

    bid_px: np.ndarray  # (n, depth) float64, best first, NaN where missing
    bid_sz: np.ndarray  # (n, depth) float64, 0 where missing
    ask_px: np.ndarray
    ask_sz: np.ndarray
    n_bid: np.ndarray  # (n,) int64 levels present
    n_ask: np.ndarray

    @property
    def n(self) -> int:
        """Number of books stacked."""
        return self.bid_px.shape[0]

    @property
    def depth(self) -> int:
        """Levels per side in the arrays (the padded width)."""
        return self.bid_px.shape[1]


def stack_books(books: Sequence[OrderBook], depth: int) -> BookArrays:
    """Copy the best ``depth`` levels per side of each book into one ``BookArrays``.

    Shapes: ``n = len(books)``; every price/size array is (n, depth) float64 and
    ``n_bid``/``n_ask`` are (n,) int64. Levels beyond ``depth`` are dropped.
    """
    n = len(books)
    bid_px = np.full((n, depth), np.nan)
    ask_px = np.full((n, depth), np.nan)
    bid_sz = np.zeros((n, depth))
    ask_sz = np.zeros((n, depth))
    n_bid = np.empty(n, dtype=np.int64)
    n_ask = np.empty(n, dtype=np.int64)
    # One Python step per book is unavoidable (books arrive as objects); everything
    # after this runs on whole (n, depth) arrays.
    for i, b in enumerate(books):
        nb = min(b.bid_prices.size, depth)
        na = min(b.ask_prices.size, depth)
        bid_px[i, :nb] = b.bid_prices[:nb]
        bid_sz[i, :nb] = b.bid_sizes[:nb]
        ask_px[i, :na] = b.ask_prices[:na]
        ask_sz[i, :na] = b.ask_sizes[:na]
        n_bid[i] = nb
        n_ask[i] = na
    return BookArrays(bid_px, bid_sz, ask_px, ask_sz, n_bid, n_ask)
