"""Live scores per model equal training's scores on the labelled rows; the two groups' columns follow §6.6."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from backend.ml_engine.live.inference import PredictionBatch
from backend.ml_engine.live.live_metrics import live_report, live_scores, rolling_macro_f1
from backend.ml_engine.live.paper import PaperTrade
from backend.ml_engine.live.records import PAPER_TRADES_SCHEMA, PREDICTIONS_SCHEMA, prediction_table, trade_table
from backend.ml_engine.training_orchestrator.evaluate import score


def test_live_scores_per_model_on_labelled_rows_only():
    rng = np.random.default_rng(0)
    n = 500
    uri = rng.choice(["models:/a/1", "models:/b@x"], n)
    pred = rng.integers(0, 3, n)
    real = rng.integers(0, 3, n).astype(float)
    real[rng.random(n) < 0.3] = np.nan  # not labelled yet
    out = live_scores(uri, pred, real)
    for u in ("models:/a/1", "models:/b@x"):
        sel = (uri == u) & ~np.isnan(real)
        s, labelled, total = out[u]
        ref = score("ref", real[sel].astype(int), pred[sel])
        assert labelled == sel.sum() and total == (uri == u).sum()
        assert s.macro_f1 == ref.macro_f1 and s.accuracy == ref.accuracy
    rep = live_report("models:/a/1", out["models:/a/1"], {"test_macro_f1": 0.6, "test_accuracy": 0.7, "baseline_persistence_macro_f1": 0.4})
    assert rep.baselines == {"persistence": 0.4} and rep.as_metrics()["live_macro_f1"] == out["models:/a/1"][0].macro_f1
    assert live_scores(["m"], [1], [np.nan])["m"] == (None, 0, 1)


def test_rolling_macro_f1_equals_the_score_of_each_window():
    rng = np.random.default_rng(1)
    y, p = rng.integers(0, 3, 120), rng.integers(0, 3, 120)
    roll = rolling_macro_f1(y, p, 25)
    assert np.isnan(roll[:24]).all()
    for end in (24, 60, 119):
        assert roll[end] == pytest.approx(score("w", y[end - 24 : end + 1], p[end - 24 : end + 1]).macro_f1)


def test_prediction_and_trade_tables_follow_design_6_6():
    assert PREDICTIONS_SCHEMA.names == [
        "timestamp", "symbol", "model_uri", "horizon_s", "prob_down", "prob_neutral", "prob_up", "predicted_direction",
        "future_direction_10s", "future_direction_30s", "future_direction_60s",
        "future_movement_10s", "future_movement_30s", "future_movement_60s",
    ]
    assert PAPER_TRADES_SCHEMA.names == ["timestamp", "symbol", "side", "qty", "price", "fee", "reason", "model_uri"]
    prob = np.array([[0.2, 0.3, 0.5], [0.7, 0.2, 0.1]], dtype=np.float32)
    b = PredictionBatch("models:/a/1", 60, ["AUSDT", "BUSDT"], np.array([1_700_000_000_000] * 2), prob, np.array([2, 0], np.int8))
    t = prediction_table([b, b])
    assert t.schema.equals(PREDICTIONS_SCHEMA) and t.num_rows == 4
    for c in ("prob_down", "prob_neutral", "prob_up"):
        assert t.schema.field(c).type == pa.float32()
    assert t.column("future_direction_60s").null_count == 4 and t.column("horizon_s").to_pylist() == [60] * 4
    assert str(t.column("timestamp")[0].as_py()) == "2023-11-14 22:13:20+00:00"
    trades = trade_table([PaperTrade(1_700_000_000_000, "AUSDT", "buy", 1.5, 100.2, 0.08, "enter", "models:/a/1")])
    assert trades.schema.equals(PAPER_TRADES_SCHEMA) and trades.to_pylist()[0]["reason"] == "enter"
