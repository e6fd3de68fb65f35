"""Delta form: the book messages a local book applied, recorded and replayed, rebuild the same books bit for bit."""

from __future__ import annotations

import dataclasses

import numpy as np

from backend.venues.bybit.protocol import BybitProtocol
from backend.venues.local_book import CHECKPOINT_MS, JOURNAL_MAX, LocalBook
from backend.venues.raw import RAW_FLOATS, RAW_INTS, encode_tick, raw_table
from backend.venues.replay.events import RunDecoder, decode_runs
from backend.venues.types import MarketSnapshot

T0 = 1_762_500_000_000


def _msg(kind: str, u: int, ts: int, bids, asks, sym: str = "BTCUSDT") -> dict:
    return {"topic": f"orderbook.50.{sym}", "type": kind, "ts": ts, "cts": ts - 3,
            "data": {"s": sym, "b": [[repr(float(p)), repr(float(q))] for p, q in bids],
                     "a": [[repr(float(p)), repr(float(q))] for p, q in asks],
                     "u": u, "seq": 7 * u}}


def _cols(ints, floats):
    return {n: ints[:, j] for j, n in enumerate(RAW_INTS)}, {n: floats[:, j] for j, n in enumerate(RAW_FLOATS)}


def _same(a, b) -> None:
    assert (a is None) == (b is None)
    if a is None:
        return
    for f in ("bid_prices", "bid_sizes", "ask_prices", "ask_sizes"):
        assert getattr(a, f).tobytes() == getattr(b, f).tobytes(), f
    assert (a.ts_ms, a.recv_ms, a.cts_ms, a.update_id) == (b.ts_ms, b.recv_ms, b.cts_ms, b.update_id)


def test_recorded_bybit_messages_replay_to_the_books_the_source_handed_out():
    rng = np.random.default_rng(3)
    proto = BybitProtocol(["BTCUSDT"], depth=50)
    proto.connection_opened()
    proto.data_to_send()
    u, ts = 1, T0
    bids = [(100.0 - 0.1 * i, float(i + 1)) for i in range(80)]
    asks = [(100.1 + 0.1 * i, float(i + 1)) for i in range(80)]
    proto.receive(_msg("snapshot", u, ts, bids, asks), ts + 2)
    live, rows = [], []
    for tick in range(60):
        for _ in range(int(rng.integers(0, 6))):
            u += 1
            ts += 100
            side = [(round(100.0 - 0.1 * rng.integers(0, 90), 1), float(rng.choice([0.0, 1.5, 2.25 + tick])))]
            oth = [(round(100.1 + 0.1 * rng.integers(0, 90), 1), float(rng.choice([0.0, 0.1 + 0.2])))]
            if tick == 20:
                proto.receive(_msg("delta", u - 1, ts, side, oth), ts + 1)  # a duplicate: not applied
            proto.receive(_msg("delta", u, ts, side, oth), ts + 1)
        if tick == 40:  # a gap: the book is discarded until the next snapshot
            u += 5
            proto.receive(_msg("delta", u, ts, [(99.0, 1.0)], []), ts + 1)
        if tick == 43:  # the resubscribe's snapshot
            u += 1
            ts += 100
            proto.receive(_msg("snapshot", u, ts, bids[:30], asks[:70]), ts + 5)
        if tick == 50:  # a crossed delta: discarded, then a fresh snapshot in the same tick
            u += 1
            proto.receive(_msg("delta", u, ts + 1, [(200.0, 1.0)], []), ts + 2)
            u += 1
            ts += 100
            proto.receive(_msg("snapshot", u, ts, bids, asks), ts + 3)
        now = T0 + 3000 * tick
        book = proto.book("BTCUSDT", 50)
        if book is not None and tick % 7 == 0:  # the source stamps a quiet book with its own time
            book = dataclasses.replace(book, ts_ms=now + 11)
        snap = MarketSnapshot("BTCUSDT", book, reason=None if book else "resync_pending",
                              book_events=proto.books["BTCUSDT"].drain_events(), live=book is not None)
        live.append(book)
        rows.append(encode_tick({"BTCUSDT": snap}, now, tick % 3 == 0, ["BTCUSDT"])["BTCUSDT"])
    assert any(b is None for b in live) and any(b is not None for b in live)
    table = raw_table([("BTCUSDT", "bybit-ws", *_cols(np.concatenate([r[0] for r in rows]),
                                                      np.concatenate([r[1] for r in rows])))])
    kinds = set(table.column("kind").to_pylist())
    assert {"book_snapshot", "book_delta", "book_ref", "no_book"} <= kinds and "book" not in kinds
    (run,) = decode_runs(table)
    assert len(run.ticks) == 60
    for got, want in zip(run.ticks, live):
        _same(got.snapshots["BTCUSDT"].book, want)
    # decoded a few ticks at a time, the rebuilt books carry over
    ts_col = table.column("timestamp").cast("int64").to_numpy()
    dec = RunDecoder()
    got = []
    for lo in range(0, 60, 7):
        got += dec.feed(table.filter((ts_col >= T0 + 3000 * lo) & (ts_col < T0 + 3000 * (lo + 7))))
    assert len(got) == 60 and dec.mismatches == 0
    for (_, tick), want in zip(got, live):
        _same(tick.snapshots["BTCUSDT"].book, want)


def test_journal_checkpoints_let_a_replay_start_mid_recording_and_stay_bounded():
    book = LocalBook("XUSDT")
    lv = np.array([[10.0, 1.0], [9.0, 2.0]])
    book.apply_snapshot(lv, lv + [[2.0, 0.0], [4.0, 0.0]], 1, T0, T0)
    assert [e.kind for e in book.drain_events()] == ["snapshot"]
    book.apply_delta(np.array([[9.5, 3.0]]), np.empty((0, 2)), 2, T0 + CHECKPOINT_MS, T0 + CHECKPOINT_MS)
    events = book.drain_events()
    assert [e.kind for e in events] == ["delta", "checkpoint"]
    replayed = LocalBook("XUSDT")
    cp = events[-1]
    replayed.apply_snapshot(cp.bids, cp.asks, cp.update_id, cp.ts_ms, cp.recv_ms, cp.cts_ms)
    _same(replayed.book(), book.book())
    assert book.drain_events() == []  # nothing new, and the checkpoint is recent
    for u in range(3, JOURNAL_MAX + 10):  # nobody drains: the journal folds into one checkpoint
        book.apply_delta(np.array([[9.5, float(u)]]), np.empty((0, 2)), u, T0 + CHECKPOINT_MS, 0)
    events = book.drain_events()
    assert len(events) < 20 and events[0].kind == "checkpoint"


def test_binance_diff_ids_are_stored_beside_each_diff_and_levels_stay_in_order():
    book = LocalBook("XUSDT")
    book.apply_snapshot(np.array([[10.0, 1.0], [9.0, 2.0]]), np.array([[11.0, 1.0]]), 100, T0, T0 + 1)
    book.apply_delta(np.array([[9.5, 3.0]]), np.empty((0, 2)), 105, T0 + 100, T0 + 101, None, 98, 100)
    book.apply_delta(np.empty((0, 2)), np.array([[11.0, 0.0], [12.0, 4.0]]), 109, T0 + 200, T0 + 201, T0 + 199, 106, 105)
    want = book.book()
    snap = MarketSnapshot("XUSDT", want, book_events=book.drain_events(), live=True)
    rows = encode_tick({"XUSDT": snap}, T0 + 300, True, ["XUSDT"])["XUSDT"]
    table = raw_table([("XUSDT", "binance-ws", *_cols(*rows))])
    assert table.column("kind").to_pylist() == ["book_snapshot", "book_delta", "book_delta", "book_ref"]
    assert table.column("trade_ts").to_pylist() == [[], [98, 100], [106, 105], []]
    assert table.column("seq").to_pylist() == [100, 105, 109, 109]
    assert table.column("price").to_pylist() == [[10.0, 9.0, 11.0], [9.5], [11.0, 12.0], []]
    assert table.column("size").to_pylist() == [[1.0, 2.0, 1.0], [3.0], [0.0, 4.0], []]
    assert table.column("n_bids").to_pylist() == [2, 1, 0, 3]
    (run,) = decode_runs(table)
    _same(run.ticks[0].snapshots["XUSDT"].book, want)
