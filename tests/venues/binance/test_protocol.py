"""BinanceProtocol without sockets: the documented local-book procedure, rule by rule."""

from __future__ import annotations

import json

import numpy as np
import pytest

from backend.venues.binance.messages import BinanceMessageError, DepthSnapshot, parse_depth_diff, parse_kline_rows
from backend.venues.binance.protocol import BinanceProtocol, BookUpdate, Fault, ResyncNeeded
from backend.venues.local_book import ApplyResult

SYM = "BTCUSDT"


def lv(*pairs):
    return [[str(p), str(q)] for p, q in pairs]


def diff(U, u, pu, bids=(), asks=(), E=1_000, sym=SYM):
    return {"stream": f"{sym.lower()}@depth@100ms",
            "data": {"e": "depthUpdate", "E": E, "T": E - 1, "s": sym, "U": U, "u": u, "pu": pu,
                     "b": lv(*bids), "a": lv(*asks)}}


def snapshot(last, bids=((100.0, 1.0), (99.0, 2.0)), asks=((101.0, 1.0), (102.0, 2.0)), E=900):
    arr = lambda x: np.array(x, dtype=np.float64).reshape(-1, 2)
    return DepthSnapshot(SYM, last, arr(bids), arr(asks), E, E - 1)


def proto():
    p = BinanceProtocol([SYM])
    p.connection_opened()
    assert p.snapshots_needed() == [SYM] and p.snapshots_needed() == []
    return p


def levels(p):
    b = p.book(SYM)
    return (list(zip(b.bid_prices.tolist(), b.bid_sizes.tolist())),
            list(zip(b.ask_prices.tolist(), b.ask_sizes.tolist())))


def kinds(events, cls):
    return [e for e in events if isinstance(e, cls)]


def test_streams_are_lower_case_combined_names():
    p = BinanceProtocol(["BTCUSDT", "ETHUSDT"])
    assert p.streams == ["btcusdt@depth@100ms", "btcusdt@aggTrade", "btcusdt@kline_1m",
                         "ethusdt@depth@100ms", "ethusdt@aggTrade", "ethusdt@kline_1m"]


def test_buffered_diffs_older_than_the_snapshot_are_dropped_and_the_rest_applied_in_order():
    p = proto()
    # the stream runs while the snapshot loads: ids are not contiguous on futures (U != pu + 1)
    p.receive(diff(90, 95, 85, bids=[(100.0, 9.0)]), 1)  # u < lastUpdateId: already in the snapshot
    p.receive(diff(97, 103, 95, bids=[(100.0, 5.0)]), 2)  # U <= 100 <= u: bridges the snapshot
    p.receive(diff(106, 110, 103, asks=[(101.0, 0.0), (101.5, 3.0)]), 3)
    assert p.book(SYM) is None  # nothing handed out while the snapshot loads
    p.receive_snapshot(snapshot(100), 4)
    ev = p.events_received()
    assert [e.result for e in kinds(ev, BookUpdate)] == [ApplyResult.NOT_READY] * 3 + [ApplyResult.RESET,
                                                                                        ApplyResult.APPLIED,
                                                                                        ApplyResult.APPLIED]
    assert not kinds(ev, Fault)
    assert levels(p) == ([(100.0, 5.0), (99.0, 2.0)], [(101.5, 3.0), (102.0, 2.0)])
    assert p.books[SYM].update_id == 110 and p.books[SYM].ts_ms == 1_000 and p.books[SYM].cts_ms == 999
    # then every event's pu must be the previous u
    p.receive(diff(111, 112, 110, bids=[(99.0, 0.0)]), 5)
    assert levels(p)[0] == [(100.0, 5.0)] and p.books[SYM].update_id == 112


def test_first_event_starting_right_after_the_snapshot_bridges_it():
    p = proto()
    p.receive_snapshot(snapshot(100), 1)  # no diff yet: the book is usable from the snapshot on
    assert p.book(SYM) is not None
    p.receive(diff(98, 99, 97), 2)  # in flight before the snapshot was taken: ignored
    p.receive(diff(104, 108, 100, bids=[(100.0, 7.0)]), 3)  # pu == lastUpdateId
    ev = p.events_received()
    assert [e.result for e in kinds(ev, BookUpdate)] == [ApplyResult.RESET, ApplyResult.STALE, ApplyResult.APPLIED]
    assert levels(p)[0][0] == (100.0, 7.0)


def test_pu_gap_discards_the_book_and_asks_for_a_snapshot_without_reconnecting():
    p = proto()
    p.receive_snapshot(snapshot(100), 1)
    p.receive(diff(95, 101, 94), 2)
    p.events_received()
    p.receive(diff(120, 125, 115, bids=[(100.0, 3.0)]), 3)  # pu 115 != previous u 101: events were lost
    ev = p.events_received()
    assert kinds(ev, BookUpdate)[-1].result is ApplyResult.GAP
    assert [f.reason for f in kinds(ev, Fault)] == ["sequence_gap"]
    assert kinds(ev, ResyncNeeded) == [ResyncNeeded(SYM, "gap")]
    assert p.book(SYM) is None and p.snapshots_needed() == [SYM] and p.is_open
    # the gap event is kept and bridges the next snapshot; what follows is buffered and applied
    p.receive(diff(126, 130, 125, asks=[(101.0, 4.0)]), 4)
    p.receive_snapshot(snapshot(122), 5)
    assert p.books[SYM].update_id == 130 and levels(p) == ([(100.0, 3.0), (99.0, 2.0)], [(101.0, 4.0), (102.0, 2.0)])


def test_stale_snapshot_that_cannot_be_bridged_is_fetched_again():
    p = proto()
    p.receive(diff(150, 155, 149, bids=[(100.0, 8.0)]), 1)
    p.receive(diff(156, 160, 155), 2)
    p.receive_snapshot(snapshot(120), 3)  # lastUpdateId older than the first buffered diff's U
    ev = p.events_received()
    assert [f.reason for f in kinds(ev, Fault)] == ["stale_snapshot"]
    assert kinds(ev, ResyncNeeded) == [ResyncNeeded(SYM, "stale_snapshot")]
    assert p.book(SYM) is None and p.snapshots_needed() == [SYM]
    p.receive_snapshot(snapshot(152), 4)  # a newer one bridges the buffered diffs
    assert p.books[SYM].update_id == 160 and levels(p)[0][0] == (100.0, 8.0)
    assert not kinds(p.events_received(), Fault)


def test_snapshot_newer_than_every_buffered_diff_waits_for_the_next_one():
    p = proto()
    p.receive(diff(10, 20, 5), 1)
    p.receive_snapshot(snapshot(50), 2)  # every buffered diff is older: dropped, the book is the snapshot
    assert p.books[SYM].update_id == 50
    p.receive(diff(45, 52, 44, bids=[(100.0, 2.5)]), 3)  # U <= 50 <= u
    assert p.books[SYM].update_id == 52 and levels(p)[0][0] == (100.0, 2.5)


def test_quiet_book_stays_current_and_duplicates_are_ignored():
    p = proto()
    p.receive_snapshot(snapshot(100), 1)
    for _ in range(3):
        p.receive({"result": None, "id": 1}, 2)  # control replies are not book messages
    assert p.book(SYM) is not None and p.synced()
    p.receive(diff(101, 105, 100), 3)
    p.receive(diff(101, 105, 100), 4)  # the same event again
    ev = p.events_received()
    assert [e.result for e in kinds(ev, BookUpdate)][-2:] == [ApplyResult.APPLIED, ApplyResult.STALE]
    assert not kinds(ev, Fault)


def test_crossing_diff_resyncs():
    p = proto()
    p.receive_snapshot(snapshot(100), 1)
    p.receive(diff(101, 102, 100, bids=[(101.5, 1.0)]), 2)
    ev = p.events_received()
    assert kinds(ev, ResyncNeeded) == [ResyncNeeded(SYM, "crossed")] and p.book(SYM) is None
    assert p.snapshots_needed() == [SYM]


def test_reconnect_starts_over_and_late_snapshots_are_not_used():
    p = proto()
    p.connection_closed()
    p.receive_snapshot(snapshot(100), 1)  # answer to the closed connection's request
    assert p.book(SYM) is None
    p.connection_opened()
    assert p.snapshots_needed() == [SYM]
    p.snapshot_failed(SYM)
    assert p.snapshots_needed() == [SYM]  # asked again


def test_trades_klines_and_malformed_frames():
    p = proto()
    agg = {"e": "aggTrade", "E": 5, "s": SYM, "a": 7, "p": "100.5", "q": "0.2", "f": 1, "l": 2, "T": 4, "m": True}
    p.receive({"stream": "btcusdt@aggTrade", "data": agg}, 1)
    p.receive({"stream": "btcusdt@aggTrade", "data": agg}, 2)  # the same aggregate id again
    trades = p.drain_trades(SYM)
    assert len(trades) == 1 and trades[0].side == -1 and trades[0].price == 100.5 and trades[0].ts_ms == 4
    k = {"t": 60_000, "T": 119_999, "s": SYM, "i": "1m", "o": "1", "c": "2", "h": "3", "l": "0.5", "v": "10",
         "q": "15", "x": False}
    p.receive({"stream": "btcusdt@kline_1m", "data": {"e": "kline", "E": 1, "s": SYM, "k": k}}, 3)
    p.receive({"stream": "btcusdt@kline_1m", "data": {"e": "kline", "E": 1, "s": SYM, "k": {**k, "x": True}}}, 4)
    assert [c.close for c in p.drain_candles(SYM)] == [2.0]
    p.receive_text('{"stream":"btcusdt@depth@100ms","data":{"e":"depthUpdate","b":[["1', 5)
    p.receive(diff(1, 2, 0, bids=[("x", 1)]), 6)
    p.receive({"stream": "ethusdt@depth@100ms", "data": {}}, 7)
    reasons = [f.reason for f in kinds(p.events_received(), Fault)]
    assert reasons == ["duplicate_trade", "malformed", "malformed", "unknown_stream"]


def test_parsers_name_what_is_wrong():
    with pytest.raises(BinanceMessageError, match="missing field 'pu'"):
        parse_depth_diff({"e": "depthUpdate", "E": 1, "T": 1, "s": SYM, "U": 1, "u": 2, "b": [], "a": []})
    with pytest.raises(BinanceMessageError, match="u=1 is below U=2"):
        parse_depth_diff({"e": "depthUpdate", "E": 1, "T": 1, "s": SYM, "U": 2, "u": 1, "pu": 0, "b": [], "a": []})
    with pytest.raises(BinanceMessageError, match="not a 1-minute bar"):
        parse_kline_rows([[0, "1", "1", "1", "1", "1", 30_000, "1"]], SYM)
    rows = json.loads('[[60000,"1","2","0.5","1.5","3",119999,"4.5",7,"1","1","0"]]')
    assert parse_kline_rows(rows, SYM)[0].turnover == 4.5
