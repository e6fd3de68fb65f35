"""migrate_legacy_to_parquet.py: guide output, carried labels, bad batches, idempotency, sources untouched."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from backend.config import configure
from backend.ml_engine.feature_store.feature_store import FeatureStore
from backend.ml_engine.feature_store.legacy_format import LegacyBatchWriter
from backend.apps.migrate import main
from tests.store.helpers import training_frame

T0 = 1_762_509_600_000  # 2025-11-07 10:00:00 UTC


def _samples(n, start, seed=0):
    rng = np.random.default_rng(seed)
    return (
        rng.normal(size=(n, 110)).astype(np.float32),
        start + np.arange(n, dtype=np.int64) * 30_000,
        100 + rng.normal(0, 0.1, n).cumsum(),
    )


def _tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    w = LegacyBatchWriter(tmp_path / "ml_training", fsync=False)
    labels = [{"future_direction_60s": 2, "future_movement_60s": 0.25}] + [{}] * 9
    w.write_batch("BTCUSDT", *_samples(10, T0), "bybit", labels=labels)
    w.write_batch("BTCUSDT", *_samples(10, T0 + 600_000, seed=1), "bybit")
    w.write_batch("4USDT", *_samples(5, T0 + 14 * 3_600_000 - 60_000, seed=2), "sim")  # spans midnight
    yield tmp_path
    configure()


def test_migrates_with_guide_output_and_is_idempotent(data_dir: Path, capsys):
    before = _tree_digest(data_dir / "ml_training")
    assert main(["--data-dir", str(data_dir), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "MIGRATION: Legacy -> Feature Store (Parquet)" in out
    assert "Symbols found: 2" in out and "Symbols: 4USDT, BTCUSDT" in out
    assert "Migrating BTCUSDT" in out and "Batches found: 2" in out
    assert "2025-11-07_batch_0001.npy: 10 samples" in out
    assert "Batches processed: 4" in out and "Samples migrated: 25" in out

    store = FeatureStore(data_dir / "feature_store" / "offline")
    df = store.read_offline_features("training_features").sort_values(["symbol", "timestamp"])
    assert len(df) == 25 and sorted(df["symbol"].unique()) == ["4USDT", "BTCUSDT"]
    btc = df[df.symbol == "BTCUSDT"]
    feats, ts, mids = _samples(10, T0)
    np.testing.assert_array_equal(btc.iloc[:10][["ob_spread_bps"]].to_numpy()[:, 0], feats[:, 0])
    np.testing.assert_array_equal(btc["mid_price"].to_numpy()[:10], mids)
    assert (btc["source"] == "bybit").all()
    assert btc["future_direction_60s"].iloc[0] == 2 and btc["future_movement_60s"].iloc[0] == 0.25
    assert btc["future_direction_60s"].iloc[1:].isna().all()
    assert len(store.list_files("training_features", "2025-11-08", "2025-11-08")) == 1  # midnight split kept

    files = store.list_files("training_features")
    assert main(["--data-dir", str(data_dir), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "Samples migrated: 0" in out and "already in the feature store" in out
    assert store.list_files("training_features") == files
    assert len(store.read_offline_features("training_features")) == 25
    assert _tree_digest(data_dir / "ml_training") == before  # sources never modified


def test_rows_already_in_the_store_are_not_duplicated(data_dir: Path, capsys):
    store = FeatureStore(data_dir / "feature_store" / "offline")
    df = training_frame(10, start="2025-11-07 10:00:00", symbol="BTCUSDT", step_s=30)  # same times as batch 1
    store.write_offline_features("training_features", df)
    assert main(["--data-dir", str(data_dir), "--no-progress", "--symbols", "BTCUSDT"]) == 0
    out = capsys.readouterr().out
    assert "2025-11-07_batch_0001.npy: already in the feature store" in out
    assert len(store.read_offline_features("training_features")) == 20


def test_dry_run_writes_nothing(data_dir: Path, capsys):
    assert main(["--data-dir", str(data_dir), "--no-progress", "--dry-run"]) == 0
    assert "Samples migrated: 25" in capsys.readouterr().out
    assert not (data_dir / "feature_store").exists()


def _corrupt(data_dir: Path) -> dict[str, str]:
    base = data_dir / "ml_training" / "BTCUSDT"
    w = LegacyBatchWriter(data_dir / "ml_training", fsync=False)
    for k in range(6):
        w.write_batch("BTCUSDT", *_samples(4, T0 + 3_600_000 * (k + 1), seed=10 + k), "bybit")
    # batches 3..8: one corruption each
    npy3 = base / "features" / "2025-11-07_batch_0003.npy"
    npy3.write_bytes(npy3.read_bytes()[:-40])
    obj = np.empty((4, 110), dtype=object)
    np.save(base / "features" / "2025-11-07_batch_0004.npy", obj, allow_pickle=True)
    np.save(base / "features" / "2025-11-07_batch_0005.npy", np.zeros((4, 100), np.float32))
    lab6 = base / "labels" / "2025-11-07_batch_0006.json"
    lab6.write_text(json.dumps(json.loads(lab6.read_text())[:3]))
    (base / "labels" / "2025-11-07_batch_0007.json").write_text("[{")
    (base / "metadata" / "2025-11-07_batch_0008.json").unlink()
    return {
        "2025-11-07_batch_0003.npy": "truncated",
        "2025-11-07_batch_0004.npy": "pickled",
        "2025-11-07_batch_0005.npy": "shape (4, 100)",
        "2025-11-07_batch_0006.npy": "3 label entries but the batch has 4 samples",
        "2025-11-07_batch_0007.npy": "invalid JSON",
        "2025-11-07_batch_0008.npy": "metadata file missing",
    }


def test_each_bad_batch_is_reported_and_skipped(data_dir: Path, capsys):
    expected = _corrupt(data_dir)
    before = _tree_digest(data_dir / "ml_training")
    assert main(["--data-dir", str(data_dir), "--no-progress"]) == 1
    out = capsys.readouterr().out
    lines = out.splitlines()
    for name, reason in expected.items():
        [line] = [ln for ln in lines if name in ln and "✗" in ln]
        assert reason in line and "ml_training/BTCUSDT/" in line
    assert "Batches failed: 6" in out and "Batches processed: 4" in out
    assert len(FeatureStore(data_dir / "feature_store" / "offline").read_offline_features("training_features")) == 25
    assert _tree_digest(data_dir / "ml_training") == before
    # still idempotent and still failing on a second run
    assert main(["--data-dir", str(data_dir), "--no-progress"]) == 1
    assert "Samples migrated: 0" in capsys.readouterr().out


def test_bad_arguments(data_dir: Path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["--data-dir", str(data_dir), "--symbols", "../x"])
    assert info.value.code == 2 and "invalid symbol" in capsys.readouterr().err


def test_label_provenance_travels_with_the_labels(data_dir: Path):
    from backend.contracts.labels import LABEL_PROVENANCE_KEY, LabelSetting, decode_provenance
    from backend.ml_engine.feature_store.legacy_format import list_batches

    # Record a provenance in the first BTCUSDT batch, as the legacy labeller does.
    first = list_batches(data_dir / "ml_training", "BTCUSDT")[0]
    meta = json.loads(first.metadata_path.read_text())
    meta[LABEL_PROVENANCE_KEY] = {"version": 1, "horizons": {"60": [{"threshold_pct": 0.05, "tolerance_s": 5.0}]}}
    first.metadata_path.write_text(json.dumps(meta))
    assert main(["--data-dir", str(data_dir), "--no-progress"]) == 0
    store = FeatureStore(data_dir / "feature_store" / "offline")
    records = {p.name: store.label_provenance(p) for p in store.list_files("training_features")}
    labelled = [r for name, r in records.items() if f"legacy_BTCUSDT_{first.stem}" in name]
    assert labelled == [{60: frozenset({LabelSetting(0.05, 5.0)})}]
    assert all(r == {} for name, r in records.items() if f"legacy_BTCUSDT_{first.stem}" not in name)  # none recorded, none invented
    assert decode_provenance(None) == {}
