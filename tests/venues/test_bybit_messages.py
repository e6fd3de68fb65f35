import json

import pytest

from backend.venues.bybit.messages import (
    BybitApiError,
    BybitMessageError,
    decode_json,
    parse_kline_rows,
    parse_rest_orderbook,
    parse_rest_trades,
    parse_ws_book,
    parse_ws_klines,
    parse_ws_trades,
    unwrap_envelope,
)

CAPTURE = "/work/shared/data/bybit_xrpusdt_ob500.jsonl"


def test_real_capture_parses():
    with open(CAPTURE) as f:
        first, second = (json.loads(next(f)) for _ in range(2))
    s = parse_ws_book(first)
    assert (s.kind, s.symbol, s.u, s.ts_ms, s.cts_ms) == ("snapshot", "XRPUSDT", 20254869, 1733011200691, 1733011200589)
    assert s.bids.shape == (500, 2) and s.bids[0].tolist() == [1.9531, 6203.0]
    d = parse_ws_book(second)
    assert d.kind == "delta" and d.u == s.u + 1


@pytest.mark.parametrize(
    "levels, needle",
    [
        ([["1.0", "abc"]], "size"),
        ([["1.0"]], "[price, size]"),
        ([["-1", "2"]], "invalid level"),
        ([["nan", "2"]], "invalid level"),
        ("oops", "expected a list"),
    ],
)
def test_bad_levels_are_named(levels, needle):
    msg = {"topic": "orderbook.50.BTCUSDT", "type": "delta", "ts": 1, "data": {"s": "BTCUSDT", "b": levels, "a": [], "u": 2, "seq": 3}}
    with pytest.raises(BybitMessageError) as err:
        parse_ws_book(msg)
    assert needle in str(err.value) and "orderbook.50.BTCUSDT b" in str(err.value)


def test_missing_fields_and_bad_json():
    with pytest.raises(BybitMessageError, match="missing field 'u'"):
        parse_ws_book({"topic": "orderbook.50.X", "type": "delta", "ts": 1, "data": {"s": "X", "b": [], "a": []}})
    with pytest.raises(BybitMessageError, match="malformed JSON"):
        decode_json('{"topic":', "frame")


def test_envelope_and_ret_codes():
    result, t = unwrap_envelope({"retCode": 0, "retMsg": "OK", "result": {"x": 1}, "retExtInfo": {}, "time": 5}, "w")
    assert result == {"x": 1} and t == 5
    with pytest.raises(BybitApiError) as err:
        unwrap_envelope({"retCode": 10006, "retMsg": "Too many visits!", "result": {}}, "GET /x")
    assert err.value.retryable and "10006" in str(err.value)
    with pytest.raises(BybitApiError) as err:
        unwrap_envelope({"retCode": 10001, "retMsg": "params error", "result": {}}, "GET /x")
    assert not err.value.retryable


def test_rest_payloads():
    book = parse_rest_orderbook({"s": "BTCUSDT", "b": [["10", "1"]], "a": [["11", "2"]], "ts": 7, "u": 3, "cts": 6}, "BTCUSDT", recv_ms=9)
    assert (book.ts_ms, book.cts_ms, book.recv_ms, book.update_id) == (7, 6, 9, 3)
    with pytest.raises(BybitMessageError, match="symbol"):
        parse_rest_orderbook({"s": "ETHUSDT", "b": [], "a": [], "ts": 7}, "BTCUSDT", recv_ms=9)
    rows = {"list": [["120000", "1", "2", "0.5", "1.5", "10", "15"], ["60000", "1", "1", "1", "1", "0", "0"]]}
    bars = parse_kline_rows(rows, "BTCUSDT")
    assert [c.start_ms for c in bars] == [60000, 120000]  # oldest first, although Bybit sends newest first
    trades = parse_rest_trades({"list": [{"execId": "b", "price": "1", "size": "2", "side": "Sell", "time": "20"},
                                         {"execId": "a", "price": "1", "size": "2", "side": "Buy", "time": "10"}]}, "X")
    assert [(i, t.side) for i, t in trades] == [("a", 1), ("b", -1)]
    with pytest.raises(BybitMessageError, match="side"):
        parse_rest_trades({"list": [{"execId": "a", "price": "1", "size": "2", "side": "Up", "time": "1"}]}, "X")


def test_ws_trades_and_confirmed_klines_only():
    t = parse_ws_trades({"topic": "publicTrade.X", "data": [{"T": 5, "s": "X", "S": "Buy", "v": "0.1", "p": "9", "i": "id1"}]})
    assert t[0][0] == "id1" and t[0][1].price == 9.0
    row = {"start": 60000, "end": 119999, "interval": "1", "open": "1", "close": "2", "high": "3", "low": "0.5",
           "volume": "4", "turnover": "5", "timestamp": 1}
    msg = {"topic": "kline.1.X", "data": [dict(row, confirm=False), dict(row, start=0, end=59999, confirm=True)]}
    bars = parse_ws_klines(msg)
    assert [c.start_ms for c in bars] == [0]
