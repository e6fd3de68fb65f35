"""The bot as a real process with ``--model``: predictions and paper fills through the spool to their groups.

Uses the model trained on the first simulated hours (``conftest.sim_run``: 30 s samples,
windows of 10) on the simulated hours after them, which it never saw; the bot's defaults
(3 s ticks, a sample every 10th) give the same 30 s spacing.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from backend.ml_engine.feature_store.feature_schema import PAPER_TRADES_SCHEMA, PREDICTIONS_SCHEMA
from backend.ml_engine.feature_store.feature_store import FeatureStore

REPO = Path(__file__).resolve().parents[2]
START = "2025-11-07T04:00:00Z"  # right after the training period (conftest.SIM_TRAIN)
COUNTS_RE = re.compile(r"Model (\S+): (\d+) predictions .*paper trading: .* (\d+) fills")


def _env(tracking_uri: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOBBOT_", "MLFLOW_"))}
    env.update(PYTHONUNBUFFERED="1", MLFLOW_TRACKING_URI=tracking_uri)
    return env


def _cmd(data_dir: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "backend.main", "--data-dir", str(data_dir), "--source", "sim", "--fast",
            "--symbols", "BTCUSDT,ETHUSDT", "--seed", "3", "--sim-start", START, "--no-legacy", *args]


def _store(data_dir: Path) -> FeatureStore:
    return FeatureStore(data_dir / "feature_store" / "offline")


def _check_groups(data_dir: Path, uri: str):
    store = _store(data_dir)
    preds = store.read_offline_table("predictions")
    trades = store.read_offline_table("paper_trades")
    tape = store.read_offline_features("price_tape")
    assert preds.schema.equals(PREDICTIONS_SCHEMA, check_metadata=False)
    assert trades.num_rows == 0 or trades.schema.equals(PAPER_TRADES_SCHEMA, check_metadata=False)
    p = preds.to_pandas()
    assert len(p) > 0 and set(p["model_uri"]) == {uri} and set(p["symbol"]) <= {"BTCUSDT", "ETHUSDT"}
    probs = p[["prob_down", "prob_neutral", "prob_up"]].to_numpy(np.float64)
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-5) and (probs >= 0).all()
    assert (p["predicted_direction"].to_numpy() == probs.argmax(axis=1)).all()
    assert not p.duplicated(["symbol", "timestamp"]).any()
    # every prediction is at a sample's time, and that time has a price-tape row (the labeller's price)
    samples = store.read_offline_features("training_features", columns=["timestamp", "symbol"])
    keys = set(zip(samples["symbol"], samples["timestamp"]))
    assert all(k in keys for k in zip(p["symbol"], p["timestamp"]))
    t = trades.to_pandas()
    if len(t):
        book = tape.set_index(["symbol", "timestamp"])
        at = book.loc[list(zip(t["symbol"], t["timestamp"]))]
        buy = (t["side"] == "buy").to_numpy()
        # never better than the book of that instant: a buy at or above its best ask, a sell at or below its best bid
        assert (t["price"].to_numpy()[buy] >= at["best_ask"].to_numpy()[buy]).all()
        assert (t["price"].to_numpy()[~buy] <= at["best_bid"].to_numpy()[~buy]).all()
        assert (t["fee"] > 0).all() and (t["qty"] > 0).all()
        assert set(t["reason"]) <= {"enter", "exit", "flip"} and set(t["model_uri"]) == {uri}
    return p, t


def test_bad_uri_and_mismatch_exit_2(trained_run, tmp_path):
    env = _env(trained_run.tracking_uri)
    bad = subprocess.run(_cmd(tmp_path / "a", "--duration", "10m", "--model", "models:/no_such_model/1"),
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2, bad.stdout + bad.stderr
    assert "error: --model: cannot resolve models:/no_such_model/1" in bad.stderr
    wrong = subprocess.run(_cmd(tmp_path / "b", "--duration", "10m", "--interval", "1", "--model", f"models:/{trained_run.name}/1"),
                           cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert wrong.returncode == 2, wrong.stdout + wrong.stderr
    assert "does not match what this bot produces" in wrong.stderr and "sample spacing" in wrong.stderr
    # the threshold the predictions will be labelled with is the user's to state; the model's is named with the way out
    other = subprocess.run(_cmd(tmp_path / "d", "--duration", "10m", "--label-threshold", "0.05", "--model",
                                f"models:/{trained_run.name}/1"), cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert other.returncode == 2, other.stdout + other.stderr
    assert "label threshold" in other.stderr and "--label-threshold 0.02" in other.stderr, other.stderr
    assert "sample spacing" not in other.stderr
    alone = subprocess.run(_cmd(tmp_path / "e", "--duration", "10m", "--label-threshold", "0.05"), cwd=REPO, env=env,
                           capture_output=True, text=True, timeout=120)
    assert alone.returncode == 2 and "--label-threshold applies with --model only" in alone.stderr, alone.stderr
    assert "not a model URI" in subprocess.run(
        _cmd(tmp_path / "c", "--model", "mymodel"), cwd=REPO, env=env, capture_output=True, text=True, timeout=120).stderr


@pytest.fixture(scope="module")
def live_run(sim_run, tmp_path_factory):
    """(data dir, model URI, bot stdout) of 40 simulated minutes with the sim-trained model."""
    data_dir = tmp_path_factory.mktemp("live_run")
    uri = f"models:/{sim_run.name}/1"
    # a low entry threshold so the small model trades often
    res = subprocess.run(_cmd(data_dir, "--duration", "40m", "--model", uri, "--paper-enter-prob", "0.51"),
                         cwd=REPO, env=_env(sim_run.tracking_uri), capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return data_dir, uri, res.stdout


def test_bot_predicts_and_paper_trades_through_the_spool(live_run):
    tmp_path, uri, stdout = live_run
    m = COUNTS_RE.search(stdout)
    assert m, stdout[-3000:]
    p, t = _check_groups(tmp_path, uri)
    assert len(p) == int(m.group(2)) and len(t) == int(m.group(3))
    # 40 min at 30 s = 80 samples per symbol, the first from minute 5, a window after 10
    assert 2 * 55 <= len(p) <= 2 * 80
    assert len(t) > 0


def test_stored_predictions_equal_offline_predictions_of_the_stored_samples(live_run, sim_run):
    """Parity through the whole bot (issue 17): every prediction the bot stored equals the offline
    prediction of the same model on the window training would build from the stored samples
    (max abs difference <= 1e-5), and the bot predicted at every such window and nowhere else."""
    import torch

    from backend.ml_engine.feature_store.feature_schema import FEATURE_NAMES
    from backend.ml_engine.live.model_loader import load_live_model
    from backend.ml_engine.live.records import column_numpy
    from backend.ml_engine.training_orchestrator.data import LoadedData
    from backend.ml_engine.training_orchestrator.sequences import find_segments, gather_windows

    data_dir, uri, _ = live_run
    live = load_live_model(uri, sim_run.tracking_uri)
    L = live.spec.sequence_length
    store = _store(data_dir)
    samples = store.read_offline_table("training_features", columns=["timestamp", "symbol", *FEATURE_NAMES])
    ts = column_numpy(samples, "timestamp").astype(np.int64)
    sym = column_numpy(samples, "symbol").astype(str)
    symbols = sorted(set(sym.tolist()))
    codes = np.searchsorted(symbols, sym).astype(np.int32)
    order = np.lexsort((ts, codes))
    feats = np.column_stack([column_numpy(samples, c) for c in FEATURE_NAMES]).astype(np.float32)[order]
    n = ts.size
    data = LoadedData(np.ascontiguousarray(feats), ts[order], codes[order], symbols, np.ones(n), np.zeros(n, np.int8),
                      np.zeros(n), n)
    seg = find_segments(data, live.spec.gap_factor)
    ends = np.flatnonzero(seg.position >= L - 1)
    with torch.inference_mode():
        offline = torch.softmax(live.module(torch.from_numpy(gather_windows(data.features, ends, L))), dim=1).numpy()
    expected = {(symbols[data.symbol_codes[e]], int(data.timestamps_ms[e])): p for e, p in zip(ends, offline)}

    preds = store.read_offline_table("predictions")
    prob = np.column_stack([column_numpy(preds, c) for c in ("prob_down", "prob_neutral", "prob_up")])
    online = dict(zip(zip(column_numpy(preds, "symbol").astype(str).tolist(),
                          column_numpy(preds, "timestamp").astype(np.int64).tolist()), prob))
    assert len(online) == preds.num_rows > 0
    assert online.keys() == expected.keys()
    diff = max(float(np.abs(online[k] - expected[k]).max()) for k in expected)
    assert diff <= 1e-5, diff


def test_predictions_and_fills_do_not_depend_on_later_market_data(live_run, sim_run, tmp_path):
    """No look-ahead through the whole bot (issue 17): the same simulated market stopped early
    gives the same predictions and paper fills, bit for bit, up to where it stopped; neither run
    has one in that span that the other lacks."""
    import pandas as pd

    data_dir, uri, _ = live_run
    full_store = _store(data_dir)
    full_p = full_store.read_offline_features("predictions")
    full_t = full_store.read_offline_features("paper_trades")
    # stop a few minutes after the full run's first fill, so the short run has fills to compare
    minutes = int((full_t["timestamp"].min() - pd.Timestamp(START)) / pd.Timedelta(minutes=1)) + 3
    assert minutes < 40, "the full run's first fill comes too late to stop before it"
    res = subprocess.run(_cmd(tmp_path, "--duration", f"{minutes}m", "--model", uri, "--paper-enter-prob", "0.51"),
                         cwd=REPO, env=_env(sim_run.tracking_uri), capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    cut_p, cut_t = _check_groups(tmp_path, uri)
    end = cut_p["timestamp"].max()
    assert len(cut_p) > 0 and (cut_t["timestamp"] <= end).any() and full_p["timestamp"].max() > end
    key = ["symbol", "timestamp"]
    for cut, full, cols in ((cut_p, full_p, ["prob_down", "prob_neutral", "prob_up", "predicted_direction"]),
                            (cut_t, full_t, ["side", "qty", "price", "fee", "reason"])):
        # compared up to the short run's last prediction
        cut, full = cut[cut["timestamp"] <= end], full[full["timestamp"] <= end]
        assert len(full) == len(cut)
        both = cut[key + cols].merge(full[key + cols], on=key, how="left", suffixes=("_cut", "_full"), indicator=True)
        assert (both["_merge"] == "both").all()
        for c in cols:
            assert (both[f"{c}_cut"].to_numpy() == both[f"{c}_full"].to_numpy()).all(), c


def test_sigterm_loses_nothing(sim_run, tmp_path):
    uri = f"models:/{sim_run.name}/1"
    proc = subprocess.Popen(_cmd(tmp_path, "--duration", "30d", "--model", uri, "--paper-enter-prob", "0.51",
                                 "--stats-interval", "200"),
                            cwd=REPO, env=_env(sim_run.tracking_uri), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        lines = []
        deadline = time.monotonic() + 180
        for line in proc.stdout:  # stop once the model has been predicting for a while
            lines.append(line)
            if "warmup=done" in line and sum("warmup=done" in x for x in lines) >= 3:
                break
            assert time.monotonic() < deadline, "".join(lines[-20:])
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out = "".join(lines) + rest
    assert proc.returncode == 0, out[-3000:]
    m = COUNTS_RE.search(out)
    assert m, out[-3000:]
    p, t = _check_groups(tmp_path, uri)
    assert len(p) == int(m.group(2)) > 0 and len(t) == int(m.group(3))
    assert not any((tmp_path / "spool").glob("*.seg")) or "All collected samples are on disk." in out


def test_labelled_predictions_and_live_report(live_run, sim_run):
    data_dir, uri, stdout = live_run
    env = _env(sim_run.tracking_uri)
    for group in ("predictions", "training_features"):
        lab = subprocess.run([sys.executable, str(REPO / "preprocessing_add_future_labels_parquet.py"), "--data-dir",
                              str(data_dir), "--feature-group", group, "--no-progress"],
                             cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
        assert lab.returncode == 0, lab.stdout[-2000:] + lab.stderr[-2000:]
    store = _store(data_dir)
    p = store.read_offline_features("predictions")
    s = store.read_offline_features("training_features", columns=["timestamp", "symbol", "future_direction_60s",
                                                                   "future_movement_60s"])
    both = p.merge(s, on=["symbol", "timestamp"], suffixes=("_p", "_s"))
    assert len(both) == len(p) and p["future_direction_60s"].notna().sum() > 0.9 * len(p)
    # the price at prediction time is the tape's at that book, which is the sample's mid: the same labels
    assert both["future_direction_60s_p"].astype("float").fillna(-1).equals(both["future_direction_60s_s"].astype("float").fillna(-1))
    assert np.allclose(both["future_movement_60s_p"], both["future_movement_60s_s"], equal_nan=True, rtol=0, atol=1e-12)
    rep = subprocess.run([sys.executable, "-m", "backend.apps.live_report", "--data-dir", str(data_dir)],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert rep.returncode == 0, rep.stdout[-2000:] + rep.stderr[-2000:]
    assert f"Model {uri}" in rep.stdout and "macro-F1  live 0." in rep.stdout
    import mlflow

    run = mlflow.MlflowClient(tracking_uri=sim_run.tracking_uri).get_run(sim_run.run_id)
    logged = run.data.metrics
    assert 0 <= logged["live_macro_f1"] <= 1 and logged["live_labelled"] == p["future_direction_60s"].notna().sum()
    assert "live_persistence_macro_f1" in logged
    # PnL from the stored fills equals the trader's own account (open positions at the last mid)
    gross = float(re.search(r"gross PnL ([-+][\d.]+), net PnL ([-+][\d.]+)", stdout).group(1))
    assert abs(logged["paper_gross_pnl"] - gross) < 0.01
    # round trips and hit rate from the stored fills are the trader's too, printed and logged
    trips, hit = re.search(r"(\d+) round trips, hit rate ([\d.]+%|n/a)", stdout).groups()
    assert f"paper round trips {trips}, hit rate {hit}, max drawdown gross" in rep.stdout, rep.stdout
    assert logged["paper_round_trips"] == int(trips) and logged["paper_max_drawdown_net"] >= 0
    assert "WARNING" not in rep.stdout  # labelled at the model's own threshold
