"""Every data problem stops the run with the guide's message and a non-zero exit, never a traceback."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from backend.ml_engine.feature_store.feature_store import FeatureStore
from backend.ml_engine.training_orchestrator.config import DataConfig
from backend.ml_engine.training_orchestrator.data import load_training_data
from backend.ml_engine.training_orchestrator.errors import TrainingDataError
from backend.ml_engine.training_orchestrator.sequences import purged_split
from synthetic import make_samples, write_store


def _assert_guide_exit(proc, message):
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert message in out, out
    assert "Traceback" not in out, out


def test_cli_no_data(run_cli, tmp_path):
    _assert_guide_exit(run_cli(), "No training data available")


def test_cli_insufficient_data(run_cli, tmp_path):
    write_store(tmp_path / "feature_store" / "offline", [make_samples("BTCUSDT", 250)], tape=False)
    proc = run_cli()
    _assert_guide_exit(proc, "Insufficient data: 250 samples, need at least 600")


def test_cli_low_label_coverage_points_to_labeller(run_cli, tmp_path):
    write_store(tmp_path / "feature_store" / "offline", [make_samples("BTCUSDT", 800, label_fraction=0.5)], tape=False)
    proc = run_cli()
    _assert_guide_exit(proc, "preprocessing_add_future_labels_parquet.py")
    assert "50.0%" in proc.stderr and "need at least 80%" in proc.stderr


def test_cli_schema_failure_names_file(run_cli, tmp_path):
    store = write_store(tmp_path / "feature_store" / "offline", [make_samples("BTCUSDT", 700)], tape=False)
    bad = make_samples("ETHUSDT", 50, seed=3)
    table = pa.Table.from_pandas(bad, preserve_index=False)
    idx = table.schema.get_field_index("ob_spread_bps")
    table = table.set_column(idx, "ob_spread_bps", pa.array(["x"] * len(bad)))  # a string where a float belongs
    path = store.group_dir("training_features") / "date=2025-11-07" / "features_000000_bad.parquet"
    pq.write_table(table, path)
    proc = run_cli()
    _assert_guide_exit(proc, "Schema validation failed")
    assert "features_000000_bad.parquet" in proc.stderr and "ob_spread_bps" in proc.stderr


def test_a_corrupt_file_is_named_with_what_to_do_not_the_schema_hint(tmp_path):
    store = write_store(tmp_path, [make_samples("BTCUSDT", 700)], tape=False)
    path = store.group_dir("training_features") / "date=2025-11-07" / "features_000002_torn.parquet"
    path.write_bytes(b"PAR1 not a parquet file")
    with pytest.raises(TrainingDataError) as err:
        load_training_data(store, DataConfig())
    text = str(err.value)
    assert "features_000002_torn.parquet: unreadable parquet file" in text
    assert "truncated or corrupt" in text and "Every sample needs the 110 features" not in text


def test_non_finite_features_fail_schema(tmp_path):
    store = write_store(tmp_path, [make_samples("BTCUSDT", 700)], tape=False)
    bad = make_samples("ETHUSDT", 20, seed=4)
    table = pa.Table.from_pandas(bad, preserve_index=False)
    col = bad["ob_imbalance_5"].to_numpy().copy()
    col[3] = np.nan
    table = table.set_column(table.schema.get_field_index("ob_imbalance_5"), "ob_imbalance_5", pa.array(col, pa.float32()))
    pq.write_table(table, store.group_dir("training_features") / "date=2025-11-07" / "features_000001_nan.parquet")
    with pytest.raises(TrainingDataError, match=r"(?s)Schema validation failed.*ob_imbalance_5 \(1 rows\)"):
        load_training_data(store, DataConfig())


def test_filters_that_match_nothing_say_no_data(tmp_path):
    store = write_store(tmp_path, [make_samples("BTCUSDT", 700)], tape=False)
    with pytest.raises(TrainingDataError, match="No training data available"):
        load_training_data(store, DataConfig(symbols=["ETHUSDT"]))
    with pytest.raises(TrainingDataError, match="No training data available"):
        load_training_data(store, DataConfig(start_date="2026-01-01"))


def test_sequence_length_too_long_for_data_is_insufficient(tmp_path):
    store = write_store(tmp_path, [make_samples("BTCUSDT", 700)], tape=False)
    data = load_training_data(store, DataConfig(sequence_length=200))
    with pytest.raises(TrainingDataError, match=r"Insufficient data: \d+ samples, need at least \d+ for sequence_length=200"):
        purged_split(data, DataConfig(sequence_length=200))


def test_duplicate_rows_are_dropped(tmp_path):
    df = make_samples("BTCUSDT", 700)
    store = FeatureStore(tmp_path)
    store.write_offline_features("training_features", df, fsync=False)
    store.write_offline_features("training_features", df.iloc[:100], fsync=False)
    data = load_training_data(store, DataConfig())
    assert data.n == 700 and data.duplicates_dropped == 100
    assert np.all(np.diff(data.timestamps_ms) > 0)


def test_cli_refuses_mixed_sources_and_names_them(run_cli, tmp_path):
    sim = make_samples("BTCUSDT", 700)
    live = make_samples("ETHUSDT", 650, seed=5)
    live["source"] = "bybit"
    write_store(tmp_path / "feature_store" / "offline", [sim, live], tape=False)
    proc = run_cli("--epochs", "1")
    _assert_guide_exit(proc, "Mixed sources in feature group 'training_features'")
    assert "bybit 650, sim 700 samples" in proc.stderr and "--sources bybit" in proc.stderr, proc.stderr
    assert "--allow-mixed-sources" in proc.stderr and proc.returncode == 1
    assert len(proc.stderr.strip().splitlines()) == 1


def test_sources_choose_the_rows(tmp_path):
    sim = make_samples("BTCUSDT", 700)
    live = make_samples("ETHUSDT", 650, seed=5)
    live["source"] = "bybit"
    store = write_store(tmp_path, [sim, live], tape=False)
    only = load_training_data(store, DataConfig(sources=["bybit"]))
    assert only.symbols == ["ETHUSDT"] and only.n == 650 and only.facts["sources"] == "bybit"
    both = load_training_data(store, DataConfig(allow_mixed_sources=True))
    assert both.symbols == ["BTCUSDT", "ETHUSDT"] and both.n == 1350
    with pytest.raises(TrainingDataError, match="no samples of source binance .*sources present: bybit 650, sim 700"):
        load_training_data(store, DataConfig(sources=["binance"]))
    # one source: trains exactly as before, no option needed
    single = write_store(tmp_path / "single", [make_samples("BTCUSDT", 700)], tape=False)
    assert load_training_data(single, DataConfig()).n == 700


def test_cli_names_the_groups_when_the_group_does_not_exist(run_cli, tmp_path):
    write_store(tmp_path / "feature_store" / "offline", [make_samples("BTCUSDT", 250)], tape=False)
    proc = run_cli("--feature-group", "nope")
    _assert_guide_exit(proc, "feature group 'nope' does not exist")
    assert proc.returncode == 2 and "groups present: training_features" in proc.stderr, proc.stderr
