"""The sans-I/O Bybit protocol driven without sockets: wire-format messages in, books, events and requests out."""

import json
from pathlib import Path

import pytest

from backend.venues.bybit.protocol import BookUpdate, BybitProtocol, Fault, Pong, ResyncNeeded
from backend.venues.local_book import ApplyResult
from backend.venues.orderbook import validate_book

from .helpers import DictBook, levels

CAPTURE = Path("/work/shared/data/bybit_xrpusdt_ob500.jsonl")


def book_msg(kind, u, bids=(), asks=(), symbol="BTCUSDT", ts=1_000, depth=50):
    return {"topic": f"orderbook.{depth}.{symbol}", "type": kind, "ts": ts, "cts": ts - 5,
            "data": {"s": symbol, "b": [[str(p), str(s)] for p, s in bids], "a": [[str(p), str(s)] for p, s in asks],
                     "u": u, "seq": 7_000_000 + 13 * u}}


SNAP = dict(bids=[(100.0, 1), (99.0, 2)], asks=[(101.0, 1), (102.0, 2)])


@pytest.fixture
def proto():
    p = BybitProtocol(["BTCUSDT", "ETHUSDT"])
    p.connection_opened()
    p.data_to_send()
    return p


def sent(p):
    return [json.loads(t) for t in p.data_to_send()]


def test_opening_subscribes_every_topic_in_batches_of_ten():
    syms = [f"S{i}USDT" for i in range(5)]
    p = BybitProtocol(syms)
    assert p.data_to_send() == [] and not p.is_open
    p.connection_opened()
    reqs = sent(p)
    assert [r["op"] for r in reqs] == ["subscribe", "subscribe"]
    assert [len(r["args"]) for r in reqs] == [10, 5]
    assert sorted(a for r in reqs for a in r["args"]) == sorted(
        [f"orderbook.50.{s}" for s in syms] + [f"publicTrade.{s}" for s in syms] + [f"kline.1.{s}" for s in syms])
    assert len({r["req_id"] for r in reqs}) == 2
    assert p.data_to_send() == []  # each request is handed out once


def test_snapshot_and_deltas_build_the_book_and_report_each_message(proto):
    proto.receive(book_msg("snapshot", 500, **SNAP), recv_ms=1_010)
    proto.receive(book_msg("delta", 501, bids=[(99.5, 3), (99.0, 0)], ts=1_100), recv_ms=1_111)
    assert proto.events_received() == [BookUpdate("BTCUSDT", ApplyResult.RESET, 500),
                                       BookUpdate("BTCUSDT", ApplyResult.APPLIED, 501)]
    book = proto.book("BTCUSDT")
    assert levels(book, 5) == ([(100.0, 1), (99.5, 3)], [(101.0, 1), (102.0, 2)])
    assert (book.update_id, book.ts_ms, book.cts_ms, book.recv_ms) == (501, 1_100, 1_095, 1_111)
    assert validate_book(book, book.ts_ms) is None
    assert proto.synced(["BTCUSDT"]) and not proto.synced()
    assert proto.data_to_send() == []


def test_sequence_gap_discards_the_book_and_resubscribes(proto):
    proto.receive(book_msg("snapshot", 500, **SNAP), 0)
    proto.events_received()
    proto.receive(book_msg("delta", 502, bids=[(99.5, 3)]), 0)
    ev = proto.events_received()
    assert ev[0] == BookUpdate("BTCUSDT", ApplyResult.GAP, 502)
    assert isinstance(ev[1], Fault) and ev[1].reason == "sequence_gap" and ev[1].symbol == "BTCUSDT"
    assert ev[2] == ResyncNeeded("BTCUSDT", "gap")
    assert [(r["op"], r["args"]) for r in sent(proto)] == [("unsubscribe", ["orderbook.50.BTCUSDT"]),
                                                           ("subscribe", ["orderbook.50.BTCUSDT"])]
    assert proto.book("BTCUSDT") is None
    proto.receive(book_msg("delta", 503, bids=[(99.5, 3)]), 0)  # deltas wait for the fresh snapshot
    assert proto.events_received() == [BookUpdate("BTCUSDT", ApplyResult.NOT_READY, 503)]
    proto.receive(book_msg("snapshot", 900, **SNAP), 0)
    assert proto.book("BTCUSDT").update_id == 900


def test_duplicate_delta_is_ignored(proto):
    proto.receive(book_msg("snapshot", 500, **SNAP), 0)
    proto.receive(book_msg("delta", 501, bids=[(99.0, 9)]), 0)
    proto.receive(book_msg("delta", 501, bids=[(99.0, 1)]), 0)
    proto.receive(book_msg("delta", 480, bids=[(99.0, 1)]), 0)
    assert [e.result for e in proto.events_received()] == [ApplyResult.RESET, ApplyResult.APPLIED,
                                                          ApplyResult.STALE, ApplyResult.STALE]
    assert levels(proto.book("BTCUSDT"), 2)[0] == [(100.0, 1), (99.0, 9)]
    assert proto.data_to_send() == []


def test_u_equal_1_is_a_service_restart_not_an_old_message(proto):
    proto.receive(book_msg("snapshot", 500, **SNAP), 0)
    proto.receive(book_msg("delta", 501, bids=[(99.5, 1)]), 0)
    # the restart marker resets the book even when the message is typed as a delta
    proto.receive(book_msg("delta", 1, bids=[(90.0, 1)], asks=[(91.0, 1)]), 0)
    proto.receive(book_msg("delta", 2, asks=[(92.0, 1)]), 0)
    assert [e.result for e in proto.events_received()] == [ApplyResult.RESET, ApplyResult.APPLIED,
                                                          ApplyResult.RESET, ApplyResult.APPLIED]
    assert levels(proto.book("BTCUSDT"), 5) == ([(90.0, 1)], [(91.0, 1), (92.0, 1)])
    assert proto.data_to_send() == []  # no resync


def test_crossing_delta_discards_the_book_and_resubscribes(proto):
    proto.receive(book_msg("snapshot", 500, **SNAP), 0)
    proto.receive(book_msg("delta", 501, bids=[(101.5, 1)]), 0)
    ev = proto.events_received()
    assert ev[1] == BookUpdate("BTCUSDT", ApplyResult.CROSSED, 501)
    assert [type(e) for e in ev[2:]] == [Fault, ResyncNeeded] and ev[2].reason == "crossed_book"
    assert [r["op"] for r in sent(proto)] == ["unsubscribe", "subscribe"]
    assert proto.book("BTCUSDT") is None


@pytest.mark.parametrize("frame", [
    '{"topic":"orderbook.50.BTCUSDT","type":"delta","data":{"b":[["1',  # truncated JSON
    '[1, 2, 3]',  # not an object
    json.dumps(book_msg("delta", 501, bids=[("abc", 1)])),  # a level that is not a number
    json.dumps({"topic": "orderbook.50.BTCUSDT", "type": "delta", "ts": 1}),  # no data
    json.dumps(book_msg("snapshot", 5, **SNAP, symbol="ETHUSDT") | {"topic": "orderbook.50.BTCUSDT"}),  # data for another symbol
])
def test_malformed_frames_become_faults_and_leave_the_book_alone(proto, frame):
    proto.receive_text(json.dumps(book_msg("snapshot", 500, **SNAP)), 0)
    proto.events_received()
    proto.receive_text(frame, 0)
    faults = [e for e in proto.events_received() if isinstance(e, Fault)]
    assert [f.reason for f in faults] == ["malformed"] and faults[0].detail
    assert proto.book("BTCUSDT").update_id == 500
    assert proto.book("ETHUSDT") is None


def test_pongs_pings_and_subscription_answers(proto):
    proto.send_ping()
    assert [r["op"] for r in sent(proto)] == ["ping"]
    proto.receive({"success": True, "ret_msg": "pong", "conn_id": "x", "op": "ping"}, 0)
    proto.receive({"op": "pong", "args": ["1733011200000"], "conn_id": "x"}, 0)
    proto.receive({"success": True, "ret_msg": "", "op": "subscribe", "conn_id": "x"}, 0)
    proto.receive({"success": False, "ret_msg": "error:handler not found", "op": "subscribe", "conn_id": "x"}, 0)
    proto.receive({"topic": "orderbook.50.XRPUSDT", "type": "snapshot", "ts": 1, "data": {}}, 0)
    ev = proto.events_received()
    assert ev[:2] == [Pong(), Pong()]
    assert [f.reason for f in ev[2:]] == ["subscribe_error", "unknown_topic"]


def test_trades_are_deduplicated_and_only_closed_bars_kept(proto):
    def trades(*ids):
        return {"topic": "publicTrade.BTCUSDT", "type": "snapshot", "ts": 5,
                "data": [{"T": 1000 + i, "s": "BTCUSDT", "S": "Buy" if i % 2 else "Sell", "v": "0.5", "p": "100.5",
                          "i": f"id-{i}", "BT": False} for i in ids]}

    proto.receive(trades(1, 2), 0)
    proto.receive(trades(2, 3), 0)  # id-2 again, as after a reconnect
    got = proto.drain_trades("BTCUSDT")
    assert [(t.ts_ms, t.side) for t in got] == [(1001, 1), (1002, -1), (1003, 1)]
    assert proto.drain_trades("BTCUSDT") == []
    assert [e.reason for e in proto.events_received()] == ["duplicate_trade"]

    def bar(start, confirm):
        return {"start": start, "end": start + 59_999, "interval": "1", "open": "1", "close": "2", "high": "3",
                "low": "0.5", "volume": "10", "turnover": "20", "confirm": confirm, "timestamp": start + 1}

    proto.receive({"topic": "kline.1.BTCUSDT", "type": "snapshot", "ts": 1,
                   "data": [bar(60_000, False), bar(0, True)]}, 0)
    assert [c.start_ms for c in proto.drain_candles("BTCUSDT")] == [0]


def test_closing_the_connection_forgets_books_and_unsent_requests(proto):
    proto.receive(book_msg("snapshot", 500, **SNAP), 0)
    proto.send_ping()
    proto.connection_closed()
    assert not proto.is_open and proto.book("BTCUSDT") is None and proto.data_to_send() == []
    proto.receive(book_msg("delta", 501, bids=[(99.5, 1)]), 0)  # a late frame cannot revive the old book
    assert proto.events_received()[-1].result is ApplyResult.NOT_READY
    proto.connection_opened()
    assert [r["op"] for r in sent(proto)] == ["subscribe"]


def test_real_capture_rebuilds_the_same_book_as_a_dict_of_levels():
    from backend.venues.bybit.messages import parse_ws_book

    p = BybitProtocol(["XRPUSDT"], depth=500, trades=False, klines=False)
    p.connection_opened()
    ref = DictBook()
    for line in CAPTURE.read_text().splitlines():
        p.receive_text(line, 0)
        ref.apply(parse_ws_book(json.loads(line)))
        assert levels(p.book("XRPUSDT", 500), 500) == ref.top(500)
    results = [e.result for e in p.events_received()]
    assert results[0] is ApplyResult.RESET and set(results[1:]) == {ApplyResult.APPLIED}
