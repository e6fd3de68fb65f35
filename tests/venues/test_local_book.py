import numpy as np
import pytest

from backend.venues.local_book import ApplyResult, LocalBook
from backend.venues.orderbook import validate_book

from .helpers import DictBook, levels, msg


def snap(u=100):
    return msg("snapshot", u, bids=[[100.0, 1], [99.0, 2], [98.0, 3]], asks=[[101.0, 1], [102.0, 2], [103.0, 3]])


def test_snapshot_then_deltas_insert_update_delete():
    lb = LocalBook("BTCUSDT", depth=50)
    assert lb.book() is None
    assert lb.apply(snap()) is ApplyResult.RESET
    # update 99, delete 98, insert 99.5 and 97; on asks delete a level we do not hold (no-op) and insert 100.5
    r = lb.apply(msg("delta", 101, bids=[[99.0, 5], [98.0, 0], [99.5, 7], [97.0, 1]], asks=[[150.0, 0], [100.5, 4]]))
    assert r is ApplyResult.APPLIED
    b, a = levels(lb.book(), 50)
    assert b == [(100.0, 1), (99.5, 7), (99.0, 5), (97.0, 1)]
    assert a == [(100.5, 4), (101.0, 1), (102.0, 2), (103.0, 3)]
    assert lb.book().update_id == 101
    assert validate_book(lb.book(), now_ms=1000) is None


def test_last_update_wins_within_one_message():
    lb = LocalBook("BTCUSDT")
    lb.apply(snap())
    lb.apply(msg("delta", 101, bids=[[99.5, 1], [99.5, 0], [99.0, 4], [99.0, 6]]))
    b, _ = levels(lb.book(), 50)
    assert b == [(100.0, 1), (99.0, 6), (98.0, 3)]


def test_u_gap_discards_book_until_next_snapshot():
    lb = LocalBook("BTCUSDT")
    lb.apply(snap(100))
    assert lb.apply(msg("delta", 102, bids=[[99.0, 9]])) is ApplyResult.GAP
    assert lb.book() is None and not lb.ready
    assert lb.apply(msg("delta", 103, bids=[[99.0, 9]])) is ApplyResult.NOT_READY
    assert lb.apply(snap(200)) is ApplyResult.RESET
    assert lb.book().update_id == 200


def test_duplicate_delta_is_ignored():
    lb = LocalBook("BTCUSDT")
    lb.apply(snap(100))
    lb.apply(msg("delta", 101, bids=[[99.0, 9]]))
    assert lb.apply(msg("delta", 101, bids=[[99.0, 1]])) is ApplyResult.STALE
    assert levels(lb.book(), 2)[0] == [(100.0, 1), (99.0, 9)]


def test_u_equal_1_and_later_snapshots_reset():
    lb = LocalBook("BTCUSDT")
    lb.apply(snap(500))
    lb.apply(msg("delta", 501, bids=[[99.5, 1]]))
    # service restart: u drops to 1; it must not be mistaken for an old message
    assert lb.apply(msg("snapshot", 1, bids=[[90.0, 1]], asks=[[91.0, 1]])) is ApplyResult.RESET
    assert levels(lb.book(), 5) == ([(90.0, 1)], [(91.0, 1)])
    assert lb.apply(msg("delta", 2, asks=[[92.0, 1]])) is ApplyResult.APPLIED
    # a later snapshot replaces everything, even without a gap
    assert lb.apply(snap(3)) is ApplyResult.RESET
    assert levels(lb.book(), 5)[0] == [(100.0, 1), (99.0, 2), (98.0, 3)]


def test_crossing_delta_discards_book():
    lb = LocalBook("BTCUSDT")
    lb.apply(snap())
    assert lb.apply(msg("delta", 101, bids=[[101.5, 1]])) is ApplyResult.CROSSED
    assert lb.book() is None
    assert ApplyResult.CROSSED.needs_resync and ApplyResult.GAP.needs_resync


def test_trimmed_to_depth_and_not_aliased():
    lb = LocalBook("BTCUSDT", depth=2)
    lb.apply(snap())
    book = lb.book()
    assert book.bid_prices.tolist() == [100.0, 99.0] and book.ask_prices.tolist() == [101.0, 102.0]
    lb.apply(msg("delta", 101, bids=[[100.0, 42]]))
    assert book.bid_sizes[0] == 1  # a handed-out book never changes under the consumer
    assert lb.book(depth=3).bid_prices.size == 3


def test_wrong_symbol_is_rejected():
    lb = LocalBook("BTCUSDT")
    assert lb.apply(msg("snapshot", 1, [[1, 1]], [[2, 1]], symbol="ETHUSDT")) is ApplyResult.WRONG_SYMBOL
    assert lb.book() is None


def test_random_deltas_match_dict_reference():
    rng = np.random.default_rng(7)
    lb, ref = LocalBook("BTCUSDT", depth=50), DictBook()
    grid_b = np.round(1000 - np.arange(300) * 0.5, 1)
    grid_a = np.round(1000.5 + np.arange(300) * 0.5, 1)
    first = msg("snapshot", 1, bids=np.c_[grid_b[:200], rng.integers(1, 50, 200)], asks=np.c_[grid_a[:200], rng.integers(1, 50, 200)])
    lb.apply(first)
    ref.apply(first)
    for u in range(2, 1500):
        nb, na = rng.integers(0, 30, 2)
        bp = rng.choice(grid_b, nb)
        ap = rng.choice(grid_a, na)
        bs = np.where(rng.random(nb) < 0.4, 0, rng.integers(1, 50, nb))
        as_ = np.where(rng.random(na) < 0.4, 0, rng.integers(1, 50, na))
        m = msg("delta", u, bids=np.c_[bp, bs], asks=np.c_[ap, as_])
        assert lb.apply(m) is ApplyResult.APPLIED
        ref.apply(m)
        assert levels(lb.book(500), 500) == ref.top(500)
