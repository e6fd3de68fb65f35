"""Raw event rows round-trip exactly: what a source delivered comes back as the same snapshots."""

from __future__ import annotations

import numpy as np

from backend.venues.orderbook import OrderBook
from backend.venues.raw import encode_history, encode_tick, raw_table, RAW_FLOATS, RAW_INTS
from backend.venues.replay.events import RunDecoder, decode_runs
from backend.venues.types import Candle, MarketSnapshot, Trade


def _cols(ints, floats):
    return {n: ints[:, j] for j, n in enumerate(RAW_INTS)}, {n: floats[:, j] for j, n in enumerate(RAW_FLOATS)}


def test_snapshots_with_and_without_books_round_trip_bit_for_bit():
    t0 = 1_762_500_000_000
    bars = [Candle(t0 - 120_000, 1.0, 2.0, 0.5, 1.5, 10.0, 15.0), Candle(t0 - 60_000, 1.5, 1.7, 1.1, 1.2, 3.0, 4.0)]
    book = OrderBook("AUSDT", np.array([100.1, 0.1 + 0.2]), np.array([1e-9, 3.0]), np.array([100.3, 100.4, 101.0]),
                     np.array([2.0, 5e300, 7.0]), ts_ms=t0 - 5, recv_ms=t0 - 1, cts_ms=t0 - 7, update_id=2**40)
    ticks = [
        {"AUSDT": MarketSnapshot("AUSDT", book, [Trade(t0 - 900, 100.2, 0.5, 1), Trade(t0 - 800, 100.1, 1.5, -1)],
                                 [Candle(t0 - 60_000, 9.0, 9.5, 8.5, 9.2, 1.0, 9.1)], clock_offset_ms=-250, live=True),
         "BUSDT": MarketSnapshot("BUSDT", None, reason="http_429_too_many_requests", clock_offset_ms=17)},
        {"AUSDT": MarketSnapshot("AUSDT", OrderBook("AUSDT", np.array([1.0]), np.array([2.0]), np.array([3.0]),
                                                    np.array([4.0]), ts_ms=t0 + 2990, recv_ms=t0 + 2995))},
    ]
    parts = {}
    hist = encode_history(t0, bars)
    parts["AUSDT"] = [hist]
    for k, snaps in enumerate(ticks):
        for sym, rows in encode_tick(snaps, t0 + 3000 * k, k == 0, ["AUSDT", "BUSDT"]).items():
            parts.setdefault(sym, []).append(rows)
    table = raw_table((sym, "bybit-ws", *_cols(np.concatenate([r[0] for r in rows]), np.concatenate([r[1] for r in rows])))
                      for sym, rows in parts.items())
    assert set(table.column("venue").to_pylist()) == {"bybit"}
    (run,) = decode_runs(table)
    assert run.history == {"AUSDT": bars}
    assert [t.now_ms for t in run.ticks] == [t0, t0 + 3000] and [t.collect for t in run.ticks] == [True, False]
    for got, want in zip(run.ticks, ticks):
        assert set(got.snapshots) == set(want)
        for sym, w in want.items():
            g = got.snapshots[sym]
            assert (g.trades, g.candles, g.reason, g.clock_offset_ms, g.live) == (w.trades, w.candles, w.reason,
                                                                               w.clock_offset_ms, w.live)
            if w.book is None:
                assert g.book is None
                continue
            for f in ("bid_prices", "bid_sizes", "ask_prices", "ask_sizes"):
                assert getattr(g.book, f).tobytes() == getattr(w.book, f).tobytes()
            assert (g.book.ts_ms, g.book.recv_ms, g.book.cts_ms, g.book.update_id) == (
                w.book.ts_ms, w.book.recv_ms, w.book.cts_ms, w.book.update_id)


def test_decoding_chunk_by_chunk_finds_the_same_runs_and_ticks_as_the_whole_table():
    """A run continues across chunks; a later ``history`` starts a new run wherever the chunks are cut."""
    t0 = 1_762_500_000_000
    book = OrderBook("AUSDT", np.array([1.0]), np.array([2.0]), np.array([3.0]), np.array([4.0]), ts_ms=t0, recv_ms=t0)
    parts = []
    for start in (t0, t0 + 60_000):  # two starts of the recording bot
        parts.append(encode_history(start, [Candle(start - 60_000, 1.0, 2.0, 0.5, 1.5, 10.0, 15.0)]))
        for k in range(6):
            parts.extend(encode_tick({"AUSDT": MarketSnapshot("AUSDT", book)}, start + 3000 * k, k % 2 == 0,
                                     ["AUSDT"]).values())
    table = raw_table([("AUSDT", "sim", *_cols(np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])))])
    whole = decode_runs(table)
    assert len(whole) == 2 and [len(r.ticks) for r in whole] == [6, 6]
    ts = table.column("timestamp").cast("int64").to_numpy()
    for cut in ([t0 + 7000], [t0 + 2000, t0 + 61_000], [t0 + 60_000]):  # inside a run, across a restart
        bounds = [ts.min()] + cut + [ts.max() + 1]
        decoder = RunDecoder()
        got = []
        for lo, hi in zip(bounds, bounds[1:]):
            got.extend(decoder.feed(table.filter((ts >= lo) & (ts < hi))))
        assert [(t.now_ms, t.collect) for _, t in got] == [(t.now_ms, t.collect) for r in whole for t in r.ticks]
        runs = [r for i, (r, _) in enumerate(got) if i == 0 or r is not got[i - 1][0]]
        assert [(r.start_ms, r.history) for r in runs] == [(r.start_ms, r.history) for r in whole]


def test_a_symbol_tick_cut_short_is_not_carried_into_the_next_tick():
    """Events of a tick whose closing row is missing (a damaged recording) never leak into the next tick."""
    t0 = 1_762_500_000_000
    book = OrderBook("AUSDT", np.array([1.0]), np.array([2.0]), np.array([3.0]), np.array([4.0]), ts_ms=t0, recv_ms=t0)
    first = encode_tick({"AUSDT": MarketSnapshot("AUSDT", book, [Trade(t0 - 5, 1.5, 1.0, 1)])}, t0, False, ["AUSDT"])
    ints, floats = first["AUSDT"]
    cut = (ints[:-3], floats[:-3])  # the book row and its levels lost
    second = encode_tick({"AUSDT": MarketSnapshot("AUSDT", book)}, t0 + 3000, False, ["AUSDT"])["AUSDT"]
    table = raw_table([("AUSDT", "sim", *_cols(np.concatenate([cut[0], second[0]]), np.concatenate([cut[1], second[1]])))])
    (run,) = decode_runs(table)
    assert [t.now_ms for t in run.ticks] == [t0, t0 + 3000]
    assert run.ticks[0].snapshots == {}
    assert run.ticks[1].snapshots["AUSDT"].trades == []
