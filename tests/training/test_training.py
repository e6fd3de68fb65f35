"""The model trains and predicts on CPU, deterministically; a full CLI run lands in MLflow (SQLite)."""

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from backend.ml_engine.feature_store.feature_schema import FEATURE_NAMES
from backend.ml_engine.training_orchestrator.config import DataConfig, TrainConfig
from backend.ml_engine.training_orchestrator.model import LOBSequenceClassifier
from backend.ml_engine.training_orchestrator.orchestrator import prepare, use_fold
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
    # The verdict, not a bare comparison of point estimates (the simulated signal is strong).
    assert "Model macro-F1" in proc.stdout and "beats majority" in proc.stdout and "beats:" not in proc.stdout, out
    assert "1 fold, " in proc.stdout and "Bonferroni over 3 baselines" in proc.stdout, out
    # the registered version is printed in the form the bot's --model takes
    assert re.search(r"registered as 'lob_test' version (\d+) \(models:/lob_test/\1\)", proc.stdout), out

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
    assert {"evaluation.md", "folds.png", "reliability.png"} <= names
    assert run["tags.verdict_majority"] == "beats" and run["tags.verdict_persistence"] == "beats"
    assert run["metrics.verdict_persistence_code"] == 1.0 and run["metrics.diff_persistence_ci_low"] > 0
    assert run["metrics.test_macro_f1_ci_low"] < f1 < run["metrics.test_macro_f1_ci_high"]
    assert run["metrics.eval_diff_level"] == pytest.approx(1 - 0.05 / 3)
    assert run["tags.mlflow.note.content"].startswith(run["tags.verdict_summary"])
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


def test_each_fold_is_normalised_with_its_own_training_rows(tmp_path):
    frames = [make_samples("BTCUSDT", 1500, seed=5)]
    frames[0].iloc[700:, 6:116] = frames[0].iloc[700:, 6:116] + 100.0  # later rows far away
    store = write_store(tmp_path, frames, tape=False)
    cfg = DataConfig(sequence_length=8, folds=3)
    assert prepare(store, DataConfig(sequence_length=8)).raw_features is None  # one split: no second matrix
    p = prepare(store, cfg)
    assert p.raw_features is not None and len(p.folds) == 3
    raw = p.raw_features.copy()
    means = []
    for k in (0, 1, 2, 0):
        norm = use_fold(p, k, cfg.clip)
        mask = p.folds[k].train_rows_mask
        assert p.split is p.folds[k] and norm.fitted_rows == mask.sum()
        np.testing.assert_allclose(norm.mean, raw[mask].mean(axis=0), rtol=1e-4, atol=1e-3)
        expected = np.clip((raw - norm.mean) / norm.std, -cfg.clip, cfg.clip)
        np.testing.assert_allclose(p.data.features, expected, rtol=1e-5, atol=1e-4)
        # No row a validation or test window of this fold reads is in the statistics.
        later = np.concatenate([p.folds[k].val, p.folds[k].test])
        assert not mask[later].any()
        means.append(norm.mean[0])
    # Later folds train on more of the shifted rows, so their statistics move; fold 1 again is fold 1.
    assert means[0] < means[1] < means[2] and means[3] == means[0]


def test_walk_forward_run_tracks_every_fold_and_flags_a_model_without_skill(run_cli, tmp_path):
    import mlflow

    # Prices, and so labels, independent of every feature: nothing to learn, for persistence neither.
    write_store(tmp_path / "feature_store" / "offline", [make_samples(s, 1500, seed=i, signal=0.0) for i, s in enumerate(("BTCUSDT", "ETHUSDT"))])
    proc = run_cli(*FAST_TRAIN_ARGS, "--folds", "3", "--window", "5h", "--experiment", "t_folds", data_dir=tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "Walk-forward: 3 folds, rolling 18000 s training" in proc.stdout, out
    for k in (1, 2, 3):
        assert f"Fold {k}/3: train " in proc.stdout and f"fold {k}/3\n" in proc.stdout, out
    assert "Evaluation: 3 folds, " in proc.stdout and "\nall  " in proc.stdout, out
    assert "beats persistence" not in proc.stdout and "beats logreg" not in proc.stdout, out
    summary = proc.stdout.split("SUMMARY", 1)[1]
    assert "WARNING: the model" in summary and "persistence baseline" in summary and "do not trade on it" in summary, out

    mlflow.set_tracking_uri(f"sqlite:///{(tmp_path / 'mlflow' / 'mlflow.db').as_posix()}")
    run = mlflow.search_runs(experiment_names=["t_folds"]).iloc[0]
    assert run["params.folds"] == "3" and run["params.window_s"] == "18000.0" and run["params.data_folds"] == "3"
    p = prepare(write_store(tmp_path / "feature_store" / "offline", [], tape=False), DataConfig(sequence_length=10, folds=3, window_s=18000))
    tests = [f.test.size for f in p.folds]
    assert int(run["params.data_rows_test"]) == sum(tests)
    assert run["params.data_fold_sizes"].endswith(f"3: {p.folds[2].train.size}/{p.folds[2].val.size}/{tests[2]}")
    for k in (1, 2, 3):
        assert 0 < run[f"metrics.fold_{k}_test_macro_f1"] < 1 and run[f"metrics.fold_{k}_best_epoch"] >= 1
    client = mlflow.MlflowClient()
    # The plain curves are the logged model's: the last fold's.
    plain = [(m.step, m.value) for m in client.get_metric_history(run["run_id"], "val_macro_f1")]
    last = [(m.step, m.value) for m in client.get_metric_history(run["run_id"], "fold_3_val_macro_f1")]
    assert plain == last and len(client.get_metric_history(run["run_id"], "fold_1_val_macro_f1")) >= 1
    md = Path(client.download_artifacts(run["run_id"], "evaluation.md")).read_text()
    assert "\n| 3 | " in md and "98.3 % interval" in md

    # The warning reaches the run: tags and the description shown in the MLflow UI.
    assert run["tags.verdict_persistence"] != "beats" and run["metrics.verdict_persistence_code"] <= 0
    assert run["tags.evaluation_warning"].startswith("WARNING: the model")
    assert run["tags.mlflow.note.content"].startswith("**WARNING: the model")


@pytest.mark.parametrize(
    "args,code,message",
    [
        (["--folds", "0"], 2, "folds must be >= 1"),
        (["--window", "5 hours"], 2, "invalid --window '5 hours'"),
        (["--folds", "40"], 1, "Insufficient data for 40 walk-forward folds: fold "),
    ],
)
def test_fold_options_are_checked(run_cli, learnable_store_dir, args, code, message):
    proc = run_cli(*args, data_dir=learnable_store_dir)
    assert proc.returncode == code and message in proc.stderr, proc.stdout + proc.stderr
