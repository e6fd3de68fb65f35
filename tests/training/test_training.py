"""The model trains and predicts on CPU, deterministically; a full CLI run lands in MLflow (SQLite)."""

import numpy as np
import pytest
import torch

from backend.ml_engine.feature_store.feature_schema import FEATURE_NAMES
from backend.ml_engine.training_orchestrator.config import DataConfig, TrainConfig
from backend.ml_engine.training_orchestrator.model import LOBSequenceClassifier
from backend.ml_engine.training_orchestrator.orchestrator import prepare
from backend.ml_engine.training_orchestrator.sequences import gather_windows
from backend.ml_engine.training_orchestrator.train import Trainer, class_weights, seed_everything
from conftest import FAST_TRAIN_ARGS
from synthetic import make_samples, write_store


def _fit(p, seed, epochs=2):
    seed_everything(seed)
    tcfg = TrainConfig(epochs=epochs, batch_size=128, seed=seed, device="cpu", lr=3e-3)
    core = LOBSequenceClassifier(len(FEATURE_NAMES), 16, 24)
    trainer = Trainer(core, p.data.features, np.maximum(p.data.labels, 0), 8, tcfg)
    result = trainer.fit(p.split.train, p.split.val)
    return trainer, result


@pytest.fixture
def prepared(tmp_path):
    store = write_store(tmp_path, [make_samples("BTCUSDT", 900, seed=1), make_samples("ETHUSDT", 900, seed=2)], tape=False)
    return prepare(store, DataConfig(sequence_length=8))


def test_trains_and_predicts_on_cpu_deterministically(prepared):
    t1, r1 = _fit(prepared, seed=7)
    t2, r2 = _fit(prepared, seed=7)
    t3, _ = _fit(prepared, seed=8)
    assert t1.device.type == "cpu"
    a, b, c = (t.predict_logits(prepared.split.test) for t in (t1, t2, t3))
    assert a.shape == (prepared.split.test.size, 3) and np.isfinite(a).all()
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert [h.train_loss for h in r1.history] == [h.train_loss for h in r2.history]
    assert 1 <= r1.best_epoch <= 2 and r1.best_val_macro_f1 == max(h.val_macro_f1 for h in r1.history)


def test_best_epoch_is_restored(prepared):
    trainer, result = _fit(prepared, seed=3, epochs=4)
    from backend.ml_engine.training_orchestrator.evaluate import score

    val = score("v", prepared.data.labels[prepared.split.val], trainer.predict_logits(prepared.split.val).argmax(1))
    assert val.macro_f1 == pytest.approx(result.best_val_macro_f1)


def test_class_weights_are_balanced():
    w = class_weights(np.array([0] * 10 + [1] * 30 + [2] * 60))
    np.testing.assert_allclose(w, [100 / 30, 100 / 90, 100 / 180], rtol=1e-6)
    assert class_weights(np.array([0, 0, 2]))[1] == 0.0


def test_cli_run_tracked_in_sqlite(run_cli, learnable_store_dir):
    import mlflow

    proc = run_cli(*FAST_TRAIN_ARGS, "--experiment", "t_sqlite", "--register-model", "lob_test", data_dir=learnable_store_dir)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    for piece in ("majority", "persistence", "logreg", "Confusion matrix", "MLflow run:", "epoch   1/10"):
        assert piece in proc.stdout, out

    mlflow.set_tracking_uri(f"sqlite:///{(learnable_store_dir / 'mlflow' / 'mlflow.db').as_posix()}")
    runs = mlflow.search_runs(experiment_names=["t_sqlite"])
    assert len(runs) == 1
    run = runs.iloc[0]
    assert run["status"] == "FINISHED"
    f1 = run["metrics.test_macro_f1"]
    assert f1 > run["metrics.baseline_majority_macro_f1"]
    assert f1 > run["metrics.baseline_persistence_macro_f1"]
    assert 0 <= run["metrics.baseline_logreg_macro_f1"] <= 1 and 0 <= run["metrics.test_accuracy"] <= 1
    assert run["params.data_symbols"] == "BTCUSDT,ETHUSDT" and run["params.data_feature_schema_version"] == "1"
    assert len(run["params.data_content_sha256"]) == 64 and int(run["params.data_rows_test"]) > 0
    # Artifacts sit under the data dir, never in ./mlruns of the working directory.
    exp = mlflow.get_experiment_by_name("t_sqlite")
    assert exp.artifact_location.startswith((learnable_store_dir / "mlflow" / "artifacts").resolve().as_uri())
    client = mlflow.MlflowClient()
    names = {a.path for a in client.list_artifacts(run["run_id"])}
    assert {"confusion_matrix.png", "normalization.json", "features.json", "report.txt", "checkpoint"} <= names
    history = client.get_metric_history(run["run_id"], "val_macro_f1")
    assert len(history) >= 2 and [m.step for m in history] == list(range(1, len(history) + 1))

    # The logged model takes raw feature windows (normalisation is inside) and predicts any batch size.
    model = mlflow.pytorch.load_model("models:/lob_test/1")
    store = write_store(learnable_store_dir / "feature_store" / "offline", [], tape=False)
    p = prepare(store, DataConfig(sequence_length=10))
    raw = make_samples("BTCUSDT", 1500, seed=1)[list(FEATURE_NAMES)].to_numpy(np.float32)
    windows = gather_windows(raw, np.arange(20, 25), 10)
    with torch.no_grad():
        logits = model(torch.from_numpy(np.ascontiguousarray(windows)))
    assert tuple(logits.shape) == (5, 3) and torch.isfinite(logits).all()
    assert p.split.test.size == int(run["params.data_rows_test"])
