"""Delta messages/s applied by LocalBook versus a naive dict-of-levels book, in the same run.

The stream is synthetic but shaped like Bybit's orderbook.500 feed (see
shared/data/bybit_xrpusdt_ob500.jsonl): a 500-level snapshot, then deltas of
about 10-40 levels, 40 % of them deletes, concentrated near the touch. Parsing is
done up front and excluded, so only book maintenance is timed. Two figures per book:

* apply:      apply every delta (LocalBook also checks it is not crossed);
* apply+cross: the dict book also checks for a crossed book after each delta;
* apply+top:  apply every delta and read the top 50 levels of both sides after each
              (what a consumer that validates or snapshots every message pays).

Usage: .venv/bin/python bench/book_bench.py [--messages N] [--full] [--seed S]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backend.venues.bybit.messages import BookMessage  # noqa: E402
from backend.venues.local_book import ApplyResult, LocalBook  # noqa: E402


class NaiveDictBook:
    """One dict per side; the top levels are found by sorting on every read."""

    def __init__(self) -> None:
        self.bids: dict[float, float] = {}
        self.asks: dict[float, float] = {}

    def apply(self, bids: list, asks: list, snapshot: bool) -> None:
        if snapshot:
            self.bids, self.asks = {}, {}
        for side, levels in ((self.bids, bids), (self.asks, asks)):
            for p, s in levels:
                if s == 0.0:
                    side.pop(p, None)
                else:
                    side[p] = s

    def top(self, n: int):
        return sorted(self.bids.items(), reverse=True)[:n], sorted(self.asks.items())[:n]

    def crossed(self) -> bool:
        return bool(self.bids) and bool(self.asks) and max(self.bids) >= min(self.asks)


def make_stream(n: int, seed: int, depth: int = 500) -> list[BookMessage]:
    rng = np.random.default_rng(seed)
    tick = 0.0001
    mid = 20_000  # in ticks
    bids = np.c_[(mid - np.arange(1, depth + 1)) * tick, rng.integers(1, 50_000, depth)]
    asks = np.c_[(mid + np.arange(1, depth + 1)) * tick, rng.integers(1, 50_000, depth)]
    out = [BookMessage("XRPUSDT", "snapshot", bids.astype(float), asks.astype(float), 1_000, None, 0, None)]
    for i in range(1, n + 1):
        sides = []
        for sign in (-1, 1):
            k = int(rng.integers(5, 20))
            off = np.minimum(rng.geometric(0.08, k), depth)
            prices = np.round((mid + sign * off) * tick, 4)
            sizes = np.where(rng.random(k) < 0.4, 0.0, rng.integers(1, 50_000, k).astype(float))
            sides.append(np.c_[prices, sizes])
        b, a = sides  # bids strictly below the mid, asks above: the book never crosses
        out.append(BookMessage("XRPUSDT", "delta", b, a, 1_000 + i, None, i, None))
    return out


def apply(lb: LocalBook, m: BookMessage) -> ApplyResult:
    """What BybitProtocol does with an in-order message, without the sequence check."""
    if m.kind == "snapshot":
        return lb.apply_snapshot(m.bids, m.asks, m.u, m.ts_ms)
    return lb.apply_delta(m.bids, m.asks, m.u, m.ts_ms)


def bench_local(stream: list[BookMessage], top: bool) -> float:
    lb = LocalBook("XRPUSDT", depth=50)
    t = time.perf_counter()
    for m in stream:
        r = apply(lb, m)
        if top:
            lb.book(50)
    dt = time.perf_counter() - t
    assert r is ApplyResult.APPLIED, r
    return (len(stream) - 1) / dt


def bench_naive(stream_lists: list[tuple[list, list, bool]], top: bool | str) -> float:
    nb = NaiveDictBook()
    t = time.perf_counter()
    for b, a, snap in stream_lists:
        nb.apply(b, a, snap)
        if top == "crossed":
            nb.crossed()
        elif top:
            nb.top(50)
    return (len(stream_lists) - 1) / (time.perf_counter() - t)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=20_000, help="delta messages per run (default 20,000)")
    ap.add_argument("--full", action="store_true", help="full size: 500,000 delta messages")
    ap.add_argument("--seed", type=int, default=1, help="stream seed (default 1)")
    args = ap.parse_args()
    n = 500_000 if args.full else args.messages
    stream = make_stream(n, args.seed)
    lists = [(m.bids.tolist(), m.asks.tolist(), m.kind == "snapshot") for m in stream]
    # equal results first: a benchmark of a wrong book is worthless
    lb, nb = LocalBook("XRPUSDT", depth=500), NaiveDictBook()
    for m, (b, a, s) in zip(stream[:2000], lists[:2000]):
        apply(lb, m)
        nb.apply(b, a, s)
    book = lb.book(500)
    tb, ta = nb.top(500)
    assert list(zip(book.bid_prices.tolist(), book.bid_sizes.tolist())) == tb
    assert list(zip(book.ask_prices.tolist(), book.ask_sizes.tolist())) == ta
    print(f"{n:,} delta messages, ~{np.mean([m.bids.shape[0] + m.asks.shape[0] for m in stream[1:]]):.1f} levels each, 500-level book")
    print(f"{'':12s}{'LocalBook (bisect)':>20s}{'naive dict':>16s}{'ratio':>9s}")
    # LocalBook checks for a crossed book after every message as part of apply; the
    # dict needs a max/min over each side for the same guarantee ("apply+cross").
    for label, top in (("apply", False), ("apply+cross", "crossed"), ("apply+top50", True)):
        ours = bench_local(stream, top is True)
        naive = bench_naive(lists, top)
        print(f"{label:12s}{ours:>17,.0f}/s{naive:>13,.0f}/s{ours / naive:>8.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
