"""No book rejection and no skipped sample can be invisible in the run summary.

For every ``BookInvalid`` reason there is a book that triggers it (the test fails when a
reason is added without one), and for the source-side reasons (ban, silent connection,
delisting, ...) a snapshot without a book; one ``TickEngine`` step over all of them with
the bot's own registry must show each reason, with its count, in ``Bot.summary_lines``.
"""

import re

import pytest

from backend.config import Settings
from backend.engine.bot import Bot
from backend.engine.tick import TickEngine
from backend.venues.orderbook import BookInvalid, OrderBook
from backend.venues.types import MarketSnapshot

NOW = 1_800_000_000_000
GOOD_B, GOOD_A = [[100.0, 1.0], [99.0, 1.0]], [[101.0, 1.0], [102.0, 1.0]]


def book(sym, bids=GOOD_B, asks=GOOD_A, ts=NOW):
    return OrderBook.from_levels(sym, bids, asks, ts_ms=ts, recv_ms=ts)


BAD_BOOKS = {
    BookInvalid.EMPTY: dict(bids=[], asks=[]),
    BookInvalid.ONE_SIDED: dict(asks=[]),
    BookInvalid.BAD_PRICE: dict(bids=[[-1.0, 1.0]]),
    BookInvalid.BAD_SIZE: dict(bids=[[100.0, 0.0]]),
    BookInvalid.UNSORTED: dict(bids=[[99.0, 1.0], [100.0, 1.0]]),
    BookInvalid.CROSSED: dict(bids=[[103.0, 1.0]]),
    BookInvalid.LOCKED: dict(bids=[[101.0, 1.0]]),
    BookInvalid.NON_FINITE: dict(bids=[[1e308, 1.0]], asks=[[1.7e308, 1.0]]),  # issue 11 item 5: mid = inf
    BookInvalid.STALE: dict(ts=NOW - 60_000),
    BookInvalid.FUTURE: dict(ts=NOW + 60_000),
    BookInvalid.OUT_OF_ORDER: dict(ts=NOW - 1_000),  # after an accepted book at NOW
}
SOURCE_REASONS = ["banned", "ws_silent", "ws_disconnected", "resync_pending", "delisted", "http_429", "poll_timeout"]


def test_every_rejection_reason_has_a_book_and_shows_in_the_run_summary(tmp_path):
    assert set(BAD_BOOKS) == set(BookInvalid), "a new BookInvalid reason needs a book here"
    syms = [f"S{i}USDT" for i in range(len(BAD_BOOKS) + len(SOURCE_REASONS))]
    bot = Bot(Settings(data_dir=tmp_path / "data", source="sim", symbols=syms, spool_fsync=False))
    engine = TickEngine(syms, metrics=bot.metrics)
    expect_rejected, expect_skipped = {}, {}
    first = {}
    snaps = {}
    for sym, (reason, kw) in zip(syms, BAD_BOOKS.items()):
        if reason is BookInvalid.OUT_OF_ORDER:
            first[sym] = MarketSnapshot(sym, book(sym))
        snaps[sym] = MarketSnapshot(sym, book(sym, **kw))
        expect_rejected[reason.value] = 1
        expect_skipped[f"book_{reason.value}"] = 1
    for sym, reason in zip(syms[len(BAD_BOOKS):], SOURCE_REASONS):
        snaps[sym] = MarketSnapshot(sym, None, reason=reason, error="...")
        expect_skipped[reason] = 1
    engine.step(first, NOW - 5_000, collect=False)
    out = engine.step(snaps, NOW, collect=True)
    for sym, reason in out.skips:
        bot.ml_data_collector.skip(sym, reason)
    assert {r.value for r in out.rejected.values()} == set(expect_rejected)

    text = "\n".join(bot.summary_lines(True))
    run = next(line for line in bot.summary_lines(True) if "books_rejected=" in line)
    m = re.search(r"books_rejected=(\d+) \(([^)]*)\)", run)
    shown = dict(kv.split("=") for kv in m.group(2).split(", "))
    assert {k: int(v) for k, v in shown.items()} == expect_rejected, run
    assert int(m.group(1)) == len(BookInvalid)
    for reason, n in expect_skipped.items():
        assert re.search(rf"\b{reason}={n}\b", text), (reason, text)
    # and the registry /metrics exposes holds the same counts
    assert bot.metrics.by_label("lobbot_books_rejected_total", "reason") == {k: float(v) for k, v in expect_rejected.items()}
