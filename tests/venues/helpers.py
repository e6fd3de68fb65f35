"""Shared helpers of the market-data tests: a plain dict-of-levels reference book."""

from __future__ import annotations

import asyncio
import time

import numpy as np

from backend.venues.bybit.messages import BookMessage
from backend.venues.orderbook import books_equal


class DictBook:
    """The straightforward reconstruction: one dict per side, sorted on read."""

    def __init__(self) -> None:
        self.bids: dict[float, float] = {}
        self.asks: dict[float, float] = {}

    def apply(self, msg: BookMessage) -> None:
        if msg.kind == "snapshot" or msg.u == 1:
            self.bids, self.asks = {}, {}
        for side, levels in ((self.bids, msg.bids), (self.asks, msg.asks)):
            for p, s in levels.tolist():
                if s == 0:
                    side.pop(p, None)
                else:
                    side[p] = s

    def top(self, n: int) -> tuple[list, list]:
        return sorted(self.bids.items(), reverse=True)[:n], sorted(self.asks.items())[:n]


def levels(book, n: int) -> tuple[list, list]:
    return (list(zip(book.bid_prices[:n].tolist(), book.bid_sizes[:n].tolist())),
            list(zip(book.ask_prices[:n].tolist(), book.ask_sizes[:n].tolist())))


def msg(kind: str, u: int, bids=(), asks=(), symbol: str = "BTCUSDT", ts: int = 1000) -> BookMessage:
    b = np.array(bids, dtype=np.float64).reshape(-1, 2)
    a = np.array(asks, dtype=np.float64).reshape(-1, 2)
    return BookMessage(symbol, kind, b, a, u, None, ts, None)


async def wait_for(cond, timeout: float = 5.0, step: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        await asyncio.sleep(step)
    return bool(cond())


async def assert_in_sync(fake, client, symbols) -> None:
    """With the fake's publishing paused, the client's local book of every symbol catches up with the fake's
    (same last update id) and equals it level by level."""
    fake.pause()
    try:
        ok = await wait_for(lambda: all(client.books[s].ready and client.books[s].update_id == fake.update_id(s)
                                        for s in symbols), 5)
        assert ok, {s: (client.books[s].update_id, fake.update_id(s)) for s in symbols}
        for s in symbols:
            assert books_equal(client.books[s].book(), fake.book(s)), s  # level by level
    finally:
        fake.resume()
