"""Raw event blocks are buffered and spooled as whole blocks: the same rows as appending one at a time."""

from __future__ import annotations

import asyncio

import numpy as np

from backend.ml_engine.data_collection import MLDataCollector
from backend.ml_engine.data_collection.buffers import RowBuffer
from backend.ml_engine.data_collection.records import RowLayout
from backend.ml_engine.feature_store.feature_store import FeatureStore
from backend.venues.orderbook import OrderBook
from backend.venues.raw import RAW_FLOATS, RAW_INTS, encode_tick
from backend.venues.replay.events import decode_runs
from backend.venues.types import MarketSnapshot, Trade

LAYOUT = RowLayout(RAW_INTS, RAW_FLOATS)


def test_extend_holds_the_same_rows_as_appending_them_one_by_one():
    rng = np.random.default_rng(4)
    one, many = RowBuffer(LAYOUT), RowBuffer(LAYOUT)
    seq0 = 0
    for n in (1, 3, 7, 300, 2, 600, 5):  # across block boundaries, and blocks bigger than BLOCK_ROWS
        ints = rng.integers(-2**62, 2**62, size=(n, len(RAW_INTS)))
        floats = rng.standard_normal((n, len(RAW_FLOATS)))
        seq = np.arange(seq0, seq0 + n)
        seq0 += n
        for i in range(n):
            one.append(int(seq[i]), tuple(ints[i].tolist()), tuple(floats[i].tolist()))
        grown = many.extend(seq, ints, floats)
        assert grown >= 0
    assert len(one) == len(many) == seq0
    a, b = one.take().columns(), many.take().columns()
    assert a.seq.tolist() == b.seq.tolist()
    for name in RAW_INTS:
        assert a.ints[name].tolist() == b.ints[name].tolist()
    for name in RAW_FLOATS:
        assert a.floats[name].tobytes() == b.floats[name].tobytes()
    assert len(many) == 0 and many.nbytes == 0


def test_extend_near_the_cap_allocates_only_what_the_rows_need():
    """With no room left, a new block holds exactly the rows given (no doubling reserve), as ``append``
    then does; with room, blocks still grow ahead so small appends do not each allocate."""
    tight, roomy = RowBuffer(LAYOUT), RowBuffer(LAYOUT)
    ints = np.zeros((3, len(RAW_INTS)), dtype=np.int64)
    floats = np.zeros((3, len(RAW_FLOATS)))
    seq = np.arange(3)
    assert tight.extend(seq, ints, floats, room=0) == tight.row_cost + 2 * tight.row_bytes  # 3 rows, one block
    assert roomy.extend(seq, ints, floats) > roomy.row_cost + 2 * roomy.row_bytes  # reserves ahead
    for _ in range(5):  # every further block is one block of exactly what comes
        grown = tight.extend(seq + 3, ints, floats, room=0)
        assert grown == tight.row_cost + 2 * tight.row_bytes


def test_collected_raw_blocks_are_stored_whole_and_once(tmp_path):
    """Rows added as blocks reach the ``raw_events`` group once each, and decode to the ticks given."""
    syms = ["AUSDT", "BUSDT"]
    book = OrderBook("AUSDT", np.array([10.0, 9.9]), np.array([1.0, 2.0]), np.array([10.1]), np.array([3.0]),
                     ts_ms=1_762_500_000_000, recv_ms=1_762_500_000_004, update_id=7)
    snaps = {"AUSDT": MarketSnapshot("AUSDT", book, [Trade(1_762_500_000_000, 10.0, 0.5, 1)]),
             "BUSDT": MarketSnapshot("BUSDT", None, reason="resync_pending")}
    c = MLDataCollector(storage_path=tmp_path / "legacy", use_legacy_format=False, source="bybit")
    c.recover()
    for k in range(300):  # ~1800 rows per symbol: many buffer blocks
        for sym, (ints, floats) in encode_tick(snaps, 1_762_500_000_000 + 3000 * k, k % 10 == 0, syms).items():
            c.add_raw_events(sym, ints, floats)
    assert asyncio.run(c.close())
    table = FeatureStore(tmp_path / "feature_store" / "offline").read_offline_table("raw_events")
    assert table.num_rows == 300 * (2 + 1)  # AUSDT: trades + book; BUSDT: no_book
    (run,) = decode_runs(table)
    assert [t.now_ms for t in run.ticks] == [1_762_500_000_000 + 3000 * k for k in range(300)]
    assert [t.collect for t in run.ticks] == [k % 10 == 0 for k in range(300)]
    for t in run.ticks:
        got = t.snapshots["AUSDT"].book
        assert got.update_id == 7 and got.bid_prices.tolist() == [10.0, 9.9] and got.ask_sizes.tolist() == [3.0]
        assert t.snapshots["BUSDT"].reason == "resync_pending"
