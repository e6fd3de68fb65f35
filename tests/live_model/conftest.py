"""Fixtures: one real training run tracked in SQLite (shared by the loader and parity tests)."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "training"))

from live_model.common import SEQ_LEN  # noqa: E402


@dataclass
class TrainedRun:
    """A run logged by the real orchestrator: where it is tracked and how to name its model."""

    data_dir: Path
    tracking_uri: str
    run_id: str
    logged_uri: str  # models:/m-... as the orchestrator reports it
    name: str
    store: object


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> TrainedRun:
    """Train a tiny model on two synthetic symbols (ETHUSDT with a 10-minute gap) with the real
    orchestrator, register it as ``live_test`` version 1 with alias ``champion``."""
    import mlflow
    from synthetic import make_samples, write_store

    from backend.ml_engine.training_orchestrator.config import DataConfig, TrainConfig
    from backend.ml_engine.training_orchestrator.orchestrator import train_and_track
    from backend.ml_engine.training_orchestrator.tracking import resolve_tracking

    data_dir = tmp_path_factory.mktemp("live_model_run")
    store = write_store(
        data_dir / "feature_store" / "offline",
        [make_samples("BTCUSDT", 500, seed=1), make_samples("ETHUSDT", 500, seed=2, gaps={250: 600_000})],
    )
    target = resolve_tracking(None, None, data_dir)
    dcfg = DataConfig(sequence_length=SEQ_LEN, min_samples=100, min_split_sequences=20)
    tcfg = TrainConfig(epochs=2, batch_size=128, device="cpu", conv_channels=8, hidden_size=8, num_threads=1, show_progress=False)
    summary = train_and_track(store, dcfg, tcfg, target, "live_test", register_model="live_test", out=lambda *_: None)
    client = mlflow.MlflowClient(tracking_uri=target.uri, registry_uri=target.uri)
    client.set_registered_model_alias("live_test", "champion", "1")
    return TrainedRun(data_dir, target.uri, summary.run_id, summary.model_uri, "live_test", store)


SIM_START = "2025-11-07T00:00:00Z"  # the training period; tests run the bot on the hours after it
SIM_TRAIN = "4h"


@pytest.fixture(scope="session")
def sim_run(tmp_path_factory) -> TrainedRun:
    """A model trained on the simulated market: the bot collects ``SIM_TRAIN`` from ``SIM_START``
    (two symbols, a known learnable signal), the parquet labeller labels it, the real orchestrator
    trains a small model (windows of 10, horizon 60 s) and registers it as ``sim_live`` version 1."""
    import os
    import subprocess

    import mlflow

    from backend.ml_engine.feature_store.feature_store import FeatureStore
    from backend.ml_engine.training_orchestrator.config import DataConfig, TrainConfig
    from backend.ml_engine.training_orchestrator.orchestrator import train_and_track
    from backend.ml_engine.training_orchestrator.tracking import resolve_tracking

    repo = Path(__file__).resolve().parents[2]
    data_dir = tmp_path_factory.mktemp("sim_run")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOBBOT_", "MLFLOW_")) and k != "DATA_DIR"}
    for cmd in (
        [sys.executable, "-m", "backend.main", "--source", "sim", "--fast", "--duration", SIM_TRAIN, "--seed", "3",
         "--sim-start", SIM_START, "--symbols", "BTCUSDT,ETHUSDT", "--data-dir", str(data_dir), "--no-legacy"],
        [sys.executable, str(repo / "preprocessing_add_future_labels_parquet.py"), "--data-dir", str(data_dir), "--no-progress"],
    ):
        proc = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    store = FeatureStore(data_dir / "feature_store" / "offline")
    target = resolve_tracking(None, None, data_dir)
    dcfg = DataConfig(sequence_length=10, min_samples=100, min_split_sequences=20)
    tcfg = TrainConfig(epochs=4, batch_size=64, device="cpu", conv_channels=16, hidden_size=16, num_threads=1, show_progress=False)
    summary = train_and_track(store, dcfg, tcfg, target, "sim_live", register_model="sim_live", out=lambda *_: None)
    return TrainedRun(data_dir, target.uri, summary.run_id, summary.model_uri, "sim_live", store)
