"""Training reads how its labels were made: it refuses mixed thresholds and its baseline uses the stored one."""

import pytest

from backend.contracts.labels import DEFAULT_THRESHOLD_PCT, HORIZONS_S, LabelSetting, encode_provenance
from backend.ml_engine.feature_store.feature_store import FeatureStore
from backend.ml_engine.training_orchestrator.config import DataConfig
from backend.ml_engine.training_orchestrator.data import load_training_data
from backend.ml_engine.training_orchestrator.errors import TrainingDataError
from synthetic import make_samples


def _store(tmp_path) -> FeatureStore:
    return FeatureStore(tmp_path / "feature_store" / "offline")


def _write(store: FeatureStore, df, threshold: float | None, group: str = "training_features") -> None:
    record = None
    if threshold is not None:
        record = encode_provenance({h: {LabelSetting(threshold, 5.0)} for h in HORIZONS_S})
    store.write_offline_features(group, df, fsync=False, label_provenance=record)


def test_stored_threshold_drives_the_baseline(tmp_path):
    store = _store(tmp_path)
    _write(store, make_samples("BTCUSDT", 700, threshold=0.05), 0.05)
    data = load_training_data(store, DataConfig())
    assert data.label_setting.setting == LabelSetting(0.05, 5.0)
    assert data.label_setting.notes == []


def test_passing_a_different_threshold_is_said_clearly(tmp_path):
    store = _store(tmp_path)
    _write(store, make_samples("BTCUSDT", 700, threshold=0.05), 0.05)
    data = load_training_data(store, DataConfig(threshold_pct=0.02))
    assert data.label_setting.setting.threshold_pct == 0.02
    assert any("--threshold 0.02 differs from the ±0.05%" in n for n in data.label_setting.notes)


def test_mixed_thresholds_are_refused_unless_allowed(tmp_path):
    store = _store(tmp_path)
    _write(store, make_samples("BTCUSDT", 700, threshold=0.02), 0.02)
    _write(store, make_samples("ETHUSDT", 700, threshold=0.05, seed=3), 0.05)
    with pytest.raises(TrainingDataError) as info:
        load_training_data(store, DataConfig())
    msg = str(info.value)
    assert "different thresholds" in msg and "±0.02% (1 files)" in msg and "±0.05% (1 files)" in msg
    assert "--allow-mixed-label-thresholds" in msg
    data = load_training_data(store, DataConfig(allow_mixed_label_thresholds=True))
    assert data.label_setting.setting.threshold_pct in (0.02, 0.05)
    assert any("mix thresholds" in n for n in data.label_setting.notes)


def test_labels_without_provenance_still_train_with_a_warning(tmp_path):
    store = _store(tmp_path)
    _write(store, make_samples("BTCUSDT", 700), None)
    data = load_training_data(store, DataConfig())
    assert data.label_setting.setting.threshold_pct == DEFAULT_THRESHOLD_PCT
    assert None in data.label_setting.stored
    assert any("before the labeller recorded its threshold" in n for n in data.label_setting.notes)


def test_unlabelled_files_do_not_count_as_unknown_labels(tmp_path):
    store = _store(tmp_path)
    _write(store, make_samples("BTCUSDT", 700, threshold=0.05), 0.05)
    unlabelled = make_samples("ETHUSDT", 100, seed=4, label_fraction=0.0)
    _write(store, unlabelled, None)
    data = load_training_data(store, DataConfig())
    assert data.label_setting.stored == frozenset({LabelSetting(0.05, 5.0)})
    assert data.label_setting.notes == []


def test_cli_refuses_mixed_thresholds_with_the_fix(run_cli, tmp_path):
    store = _store(tmp_path)
    _write(store, make_samples("BTCUSDT", 700, threshold=0.02), 0.02)
    _write(store, make_samples("ETHUSDT", 700, threshold=0.05, seed=3), 0.05)
    proc = run_cli("--epochs", "1")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1 and "--allow-mixed-label-thresholds" in out and "Traceback" not in out, out


def test_cli_trains_on_the_configured_feature_group(run_cli, tmp_path):
    # 250 samples in the configured group, none in training_features: the message shows which group was read.
    _write(_store(tmp_path), make_samples("BTCUSDT", 250), 0.02, group="my_samples")
    proc = run_cli(env_extra={"LOBBOT_FEATURE_STORE_GROUP": "my_samples"})
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1 and "Insufficient data: 250 samples" in out and "'my_samples'" in out, out
    proc = run_cli()
    assert "No training data available" in proc.stdout + proc.stderr
    proc = run_cli("--feature-group", "my_samples")
    assert "Insufficient data: 250 samples" in proc.stdout + proc.stderr
