"""The exchange-neutral local book: snapshot and delta level arrays in, top levels out."""

import numpy as np

from backend.venues.local_book import ApplyResult, LocalBook
from backend.venues.orderbook import validate_book

from .helpers import DictBook, levels, msg


def arr(levels_):
    return np.array(levels_, dtype=np.float64).reshape(-1, 2)


def snapshot(lb, uid=100, bids=((100.0, 1), (99.0, 2), (98.0, 3)), asks=((101.0, 1), (102.0, 2), (103.0, 3))):
    return lb.apply_snapshot(arr(bids), arr(asks), uid, ts_ms=1000, recv_ms=1001)


def delta(lb, uid, bids=(), asks=()):
    return lb.apply_delta(arr(bids), arr(asks), uid, ts_ms=1000 + uid, recv_ms=1001 + uid)


def test_snapshot_then_deltas_insert_update_delete():
    lb = LocalBook("BTCUSDT", depth=50)
    assert lb.book() is None
    assert snapshot(lb) is ApplyResult.RESET
    # update 99, delete 98, insert 99.5 and 97; on asks delete a level we do not hold (no-op) and insert 100.5
    r = delta(lb, 101, bids=[[99.0, 5], [98.0, 0], [99.5, 7], [97.0, 1]], asks=[[150.0, 0], [100.5, 4]])
    assert r is ApplyResult.APPLIED
    book = lb.book()
    b, a = levels(book, 50)
    assert b == [(100.0, 1), (99.5, 7), (99.0, 5), (97.0, 1)]
    assert a == [(100.5, 4), (101.0, 1), (102.0, 2), (103.0, 3)]
    assert (book.update_id, book.ts_ms, book.recv_ms) == (101, 1101, 1102)
    assert validate_book(book, now_ms=1101) is None


def test_last_update_wins_within_one_message():
    lb = LocalBook("BTCUSDT")
    snapshot(lb)
    delta(lb, 101, bids=[[99.5, 1], [99.5, 0], [99.0, 4], [99.0, 6]])
    b, _ = levels(lb.book(), 50)
    assert b == [(100.0, 1), (99.0, 6), (98.0, 3)]


def test_delta_before_any_snapshot_is_not_applied():
    lb = LocalBook("BTCUSDT")
    assert delta(lb, 5, bids=[[99.0, 1]], asks=[[100.0, 1]]) is ApplyResult.NOT_READY
    assert lb.book() is None and lb.update_id is None


def test_a_later_snapshot_replaces_everything():
    lb = LocalBook("BTCUSDT")
    snapshot(lb, 500)
    delta(lb, 501, bids=[[99.5, 1]])
    assert snapshot(lb, 3, bids=[[90.0, 1]], asks=[[91.0, 1]]) is ApplyResult.RESET
    assert levels(lb.book(), 5) == ([(90.0, 1)], [(91.0, 1)])
    assert lb.update_id == 3


def test_unsorted_snapshot_with_duplicates_and_zero_sizes_is_normalised():
    lb = LocalBook("BTCUSDT")
    snapshot(lb, bids=[[98.0, 3], [100.0, 1], [99.0, 2], [98.0, 4], [97.0, 0]], asks=[[102.0, 2], [101.0, 1]])
    assert levels(lb.book(), 5) == ([(100.0, 1), (99.0, 2), (98.0, 4)], [(101.0, 1), (102.0, 2)])


def test_crossing_delta_or_snapshot_discards_book():
    lb = LocalBook("BTCUSDT")
    snapshot(lb)
    assert delta(lb, 101, bids=[[101.5, 1]]) is ApplyResult.CROSSED
    assert lb.book() is None and not lb.ready
    assert delta(lb, 102, bids=[[99.0, 1]]) is ApplyResult.NOT_READY
    assert snapshot(lb, bids=[[101.0, 1]], asks=[[101.0, 1]]) is ApplyResult.CROSSED  # locked counts as crossed
    assert lb.book() is None
    assert ApplyResult.CROSSED.needs_resync and ApplyResult.GAP.needs_resync
    assert not ApplyResult.STALE.needs_resync and not ApplyResult.APPLIED.needs_resync


def test_reset_forgets_the_book():
    lb = LocalBook("BTCUSDT")
    snapshot(lb)
    lb.reset()
    assert lb.book() is None and lb.update_id is None and lb.levels == (0, 0)


def test_trimmed_to_depth_and_not_aliased():
    lb = LocalBook("BTCUSDT", depth=2)
    snapshot(lb)
    book = lb.book()
    assert book.bid_prices.tolist() == [100.0, 99.0] and book.ask_prices.tolist() == [101.0, 102.0]
    delta(lb, 101, bids=[[100.0, 42]])
    assert book.bid_sizes[0] == 1  # a handed-out book never changes under the consumer
    assert lb.book(depth=3).bid_prices.size == 3
    assert lb.levels == (3, 3)


def test_random_deltas_match_dict_reference():
    rng = np.random.default_rng(7)
    lb, ref = LocalBook("BTCUSDT", depth=50), DictBook()
    grid_b = np.round(1000 - np.arange(300) * 0.5, 1)
    grid_a = np.round(1000.5 + np.arange(300) * 0.5, 1)
    first = msg("snapshot", 1, bids=np.c_[grid_b[:200], rng.integers(1, 50, 200)], asks=np.c_[grid_a[:200], rng.integers(1, 50, 200)])
    lb.apply_snapshot(first.bids, first.asks, 1, 0)
    ref.apply(first)
    for u in range(2, 1500):
        nb, na = rng.integers(0, 30, 2)
        bp = rng.choice(grid_b, nb)
        ap = rng.choice(grid_a, na)
        bs = np.where(rng.random(nb) < 0.4, 0, rng.integers(1, 50, nb))
        as_ = np.where(rng.random(na) < 0.4, 0, rng.integers(1, 50, na))
        m = msg("delta", u, bids=np.c_[bp, bs], asks=np.c_[ap, as_])
        assert lb.apply_delta(m.bids, m.asks, u, u) is ApplyResult.APPLIED
        ref.apply(m)
        assert levels(lb.book(500), 500) == ref.top(500)
