"""Raw event rows round-trip exactly: what a source delivered comes back as the same snapshots."""

from __future__ import annotations

import numpy as np

from backend.venues.orderbook import OrderBook
from backend.venues.raw import encode_history, encode_tick, raw_table, RAW_FLOATS, RAW_INTS
from backend.venues.replay.events import decode_runs
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
