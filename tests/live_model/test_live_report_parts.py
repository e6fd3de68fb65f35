"""The live report's pure parts: tape lookups, the threshold check of the predictions' labels, paper statistics."""

from __future__ import annotations

import numpy as np

from backend.apps.live_report import threshold_notes
from backend.contracts.labels import LabelSetting, encode_provenance
from backend.ml_engine.live.live_metrics import last_mids, mids_at, paper_stats
from backend.ml_engine.live.paper import PaperConfig, PaperTrader


def test_mids_at_finds_exact_pairs_and_nan_elsewhere():
    rng = np.random.default_rng(3)
    ts = np.repeat(np.arange(1_700_000_000_000, 1_700_000_000_000 + 50 * 3000, 3000), 3)
    codes = np.tile(np.arange(3, dtype=np.int32), 50)
    mid = rng.uniform(1, 100, ts.size)
    shuffle = rng.permutation(ts.size)
    tape = (ts[shuffle], codes[shuffle], mid[shuffle])
    want_codes = np.array([0, 2, 1, 1, -1], dtype=np.int32)
    want_ts = np.array([ts[0], ts[5], ts[7] + 1, ts[-1], ts[0]])
    got = mids_at(tape, want_codes, want_ts)
    truth = {(int(c), int(t)): m for t, c, m in zip(*tape)}
    assert got[0] == truth[(0, int(ts[0]))] and got[1] == truth[(2, int(ts[5]))] and got[3] == truth[(1, int(ts[-1]))]
    assert np.isnan(got[2]) and np.isnan(got[4])  # no row at that ms; a symbol outside the universe
    assert np.isnan(mids_at((ts[:0], codes[:0], mid[:0]), want_codes, want_ts)).all()


def test_last_mids_takes_each_symbols_latest_row():
    tape = (np.array([5, 1, 9, 3, 9]), np.array([0, 1, 1, 0, 2], dtype=np.int32), np.array([1.0, 2.0, 3.0, 4.0, 5.0]))
    assert last_mids(tape, ["A", "B", "C", "D"]) == {"A": 1.0, "B": 3.0, "C": 5.0}
    assert last_mids((np.zeros(0, np.int64), np.zeros(0, np.int32), np.zeros(0)), ["A"]) == {}


class _Store:
    def __init__(self, records):
        self.records = records

    def label_provenance(self, path):
        return self.records[path]


def test_threshold_notes_warn_only_for_labels_made_at_another_threshold():
    from backend.contracts.labels import decode_provenance

    same = decode_provenance(encode_provenance({60: [LabelSetting(0.02, 5.0)]}))
    other = decode_provenance(encode_provenance({60: [LabelSetting(0.05, 5.0)], 30: [LabelSetting(0.02, 5.0)]}))
    unknown = decode_provenance(encode_provenance({60: [None]}))
    store = _Store({"a": same, "b": other, "c": unknown, "d": {}})
    assert threshold_notes(store, ["a", "c", "d"], 60, 0.02) == []
    notes = threshold_notes(store, ["a", "b"], 60, 0.02)
    assert len(notes) == 1 and "threshold 0.05 %" in notes[0] and "--threshold 0.02" in notes[0]
    assert threshold_notes(store, ["b"], 30, 0.02) == []  # another horizon's labels are not this model's


def test_paper_stats_agree_with_the_trader_on_its_own_fills():
    from types import SimpleNamespace

    from backend.venues.orderbook import OrderBook

    rng = np.random.default_rng(11)
    trader = PaperTrader(["AUSDT", "BUSDT"], PaperConfig(horizon_s=60, enter_prob=0.55, notional_quote=100.0))
    fills = []
    t = 1_700_000_000_000
    for i in range(400):
        t += 3000
        books = {}
        for s, base in (("AUSDT", 100.0), ("BUSDT", 20.0)):
            m = base * (1 + 0.01 * np.sin(i / 17 + (s == "BUSDT")) + rng.normal(0, 1e-3))
            steps = m * 1e-4 * np.arange(1, 6)
            books[s] = OrderBook.from_levels(s, np.c_[m - steps, np.full(5, 5.0)], np.c_[m + steps, np.full(5, 5.0)],
                                             t, recv_ms=t)
        batch = None
        if i % 7 == 0:
            batch = SimpleNamespace(symbols=list(books), prob=rng.dirichlet([1, 1, 1], size=len(books)).astype(np.float32))
        fills += trader.step(t, books, batch).trades
    s = trader.summary()
    assert s.fills == len(fills) > 10 and s.round_trips > 3
    sym = np.array([f.symbol for f in fills])
    q = np.array([f.qty if f.side == "buy" else -f.qty for f in fills])
    out = paper_stats(sym, q, np.array([f.price for f in fills]), np.array([f.fee for f in fills]), {})
    assert out["round_trips"] == s.round_trips and np.isclose(out["hit_rate"], s.hit_rate)
    assert np.isclose(out["fees"], s.fees) and np.isclose(out["turnover"], s.turnover)
    assert out["open_positions"] == s.open_positions and 0 <= out["max_drawdown_net"]
    empty = paper_stats(np.zeros(0, str), np.zeros(0), np.zeros(0), np.zeros(0), {})
    assert empty["round_trips"] == 0 and empty["hit_rate"] is None and empty["open_positions"] == 0


def test_a_bad_predictions_file_is_named_once_and_blamed_not_the_bot(tmp_path, capsys, monkeypatch):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from backend.apps.live_report import main
    from backend.config import configure

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    part = tmp_path / "feature_store" / "offline" / "predictions" / "date=2025-11-07"
    part.mkdir(parents=True)
    pq.write_table(pa.table({"something": [1, 2]}), part / "foreign.parquet")
    try:
        assert main(["--data-dir", str(tmp_path), "--no-log"]) == 1
    finally:
        configure()
    err = capsys.readouterr().err
    assert err.count("foreign.parquet: missing columns") == 1, err
    assert "No readable predictions" in err and "run the bot" not in err, err
