"""Legacy batches written by older bots migrate with exact values; each reading is reported and
recorded; what has no single reading is refused per file; labels added later reach parquet."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from backend.apps.migrate import main
from backend.config import configure
from backend.ml_engine.feature_store.feature_store import FeatureStore
from backend.ml_engine.feature_store.legacy_format import LegacyBatchWriter
from backend.ml_engine.migration.legacy_to_parquet import INTERPRETATIONS_KEY

T0 = 1_762_509_600_000  # 2025-11-07 10:00:00 UTC


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def _ms(df):
    return df.timestamp.dt.as_unit("ms").astype("int64")


def _samples(n, start, seed):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 110)).astype(np.float32), start + np.arange(n, dtype=np.int64) * 30_000, 100 + rng.random(n)


@pytest.fixture
def legacy(tmp_path: Path):
    w = LegacyBatchWriter(tmp_path / "ml_training", fsync=False)
    for k in range(9):
        w.write_batch("BTCUSDT", *_samples(4, T0 + k * 600_000, seed=k), "bybit")
    yield tmp_path
    configure()


def _edit(base: Path, number: int, meta_fn=None, labels_fn=None) -> None:
    stem = f"2025-11-07_batch_{number:04d}"
    if meta_fn:
        p = base / "metadata" / f"{stem}.json"
        p.write_text(meta_fn(json.loads(p.read_text())))
    if labels_fn:
        p = base / "labels" / f"{stem}.json"
        p.write_text(labels_fn(json.loads(p.read_text())))


def _older_forms(d: Path) -> dict[int, str]:
    base = d / "ml_training" / "BTCUSDT"
    dump = json.dumps
    _edit(base, 1, lambda m: dump({**m, "feature_version": "1"}))
    _edit(base, 2, lambda m: dump({**m, "timestamps": [t // 1000 * 1.0 / 1.0 for t in m["timestamps"]]}),
          lambda rows: dump([{**r, "timestamp": r["timestamp"] // 1000} for r in rows]))
    _edit(base, 3, lambda m: dump({**m, "timestamps": [
        __import__("datetime").datetime.fromtimestamp(t / 1000, __import__("datetime").timezone.utc).isoformat() for t in m["timestamps"]]}),
          lambda rows: dump([{k: v for k, v in r.items() if k != "timestamp"} for r in rows]))
    _edit(base, 4, lambda m: dump({k: v for k, v in m.items() if k != "feature_names"}))
    feats = np.load(base / "features" / "2025-11-07_batch_0005.npy")
    np.save(base / "features" / "2025-11-07_batch_0005.npy", feats.astype(np.float64), allow_pickle=False)
    _edit(base, 6, labels_fn=lambda rows: dump([{"current_mid_price": r["current_mid_price"], "timestamp": r["timestamp"],
                                                 "future_direction_10s": 2, "future_movement_10s": 0.5} for r in rows]))
    _edit(base, 7, lambda m: dump({**m, "timestamps": [t * 1_000_000 for t in m["timestamps"]]}),
          lambda rows: dump([{**r, "timestamp": r["timestamp"] * 1_000_000} for r in rows]))
    # refused: other feature names, timestamps off the file's date, deep JSON
    _edit(base, 8, lambda m: dump({**m, "feature_names": ["x_extra"] + m["feature_names"][1:]}))
    (base / "metadata" / "2025-11-07_batch_0009.json").write_text("[" * 200_000 + "]" * 200_000)
    return {8: "missing ['ob_", 9: "nested too deeply"}


def test_older_forms_migrate_exactly_refused_ones_named_idempotent(legacy: Path, capsys):
    refused = _older_forms(legacy)
    before = _digest(legacy / "ml_training")
    assert main(["--data-dir", str(legacy), "--no-progress"]) == 1
    out = capsys.readouterr().out
    assert "Traceback" not in out
    for number, reason in refused.items():
        [line] = [ln for ln in out.splitlines() if f"batch_{number:04d}.npy" in ln]
        assert reason in line, line
    for phrase in ("feature_version '1' (str) read as 1", "timestamps in s", "ISO 8601", "feature_names absent",
                   "float64 converted to float32", "lacks", "timestamps in ns"):
        assert out.count(phrase) == 1, (phrase, out)
    store = FeatureStore(legacy / "feature_store" / "offline")
    df = store.read_offline_features("training_features").sort_values("timestamp")
    assert len(df) == 7 * 4
    for k in range(7):
        feats, ts, mids = _samples(4, T0 + k * 600_000, seed=k)
        rows = df[_ms(df).isin(ts)]
        np.testing.assert_array_equal(rows[["ob_spread_bps"]].to_numpy()[:, 0], feats[:, 0])
        np.testing.assert_array_equal(rows["mid_price"].to_numpy(), mids)
    six = df[_ms(df).isin(_samples(4, T0 + 5 * 600_000, 5)[1])]
    assert (six["future_direction_10s"] == 2).all() and six["future_direction_60s"].isna().all()
    recorded = [pq.read_schema(p).metadata.get(INTERPRETATIONS_KEY.encode()) for p in store.list_files("training_features")]
    assert sum(r is not None for r in recorded) == 7
    assert _digest(legacy / "ml_training") == before  # sources untouched

    files = store.list_files("training_features")
    assert main(["--data-dir", str(legacy), "--no-progress"]) == 1
    assert "Samples migrated: 0" in capsys.readouterr().out
    assert store.list_files("training_features") == files

    assert main(["--data-dir", str(legacy), "--no-progress", "--strict", "--dry-run"]) == 1
    out = capsys.readouterr().out
    assert "Batches failed: 9" in out or out.count("✗") >= 9


def test_labels_added_after_migration_reach_parquet(legacy: Path, capsys):
    assert main(["--data-dir", str(legacy), "--no-progress"]) == 0
    base = legacy / "ml_training" / "BTCUSDT"
    _edit(base, 2, labels_fn=lambda rows: json.dumps([{**r, "future_direction_30s": 0, "future_movement_30s": -0.2} for r in rows]))
    assert main(["--data-dir", str(legacy), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "labels added since migration carried over (4 rows)" in out
    store = FeatureStore(legacy / "feature_store" / "offline")
    df = store.read_offline_features("training_features")
    assert len(df) == 9 * 4 and (df["future_direction_30s"] == 0).sum() == 4
    assert main(["--data-dir", str(legacy), "--no-progress"]) == 0
    assert "carried over" not in capsys.readouterr().out


def test_more_older_forms_and_refusals_with_a_bad_store_file(legacy: Path, capsys):
    """Microsecond stamps, NaN labels and float64 within float32 rounding migrate exactly; stamps
    off the file's date, of mixed units, float64 beyond float32, an oversized metadata file and a
    disagreeing count are refused per file; a bad file already in the store is named by the
    duplicate check and left untouched."""
    from backend.ml_engine.feature_store.legacy_format import MAX_JSON_BYTES
    from tests.integrity.bad_files import snapshot, write_bad_files

    base = legacy / "ml_training" / "BTCUSDT"
    dump = json.dumps
    _edit(base, 1, lambda m: dump({**m, "timestamps": [t * 1000 for t in m["timestamps"]]}),
          lambda rows: dump([{**r, "timestamp": r["timestamp"] * 1000} for r in rows]))
    _edit(base, 2, labels_fn=lambda rows: dump([{**r, "future_direction_10s": float("nan"), "future_movement_10s": float("nan"),
                                                 "future_direction_30s": 1} for r in rows]))
    _edit(base, 3, lambda m: dump({**m, "timestamps": [t + 86_400_000 for t in m["timestamps"]]}),
          lambda rows: dump([{**r, "timestamp": r["timestamp"] + 86_400_000} for r in rows]))
    _edit(base, 4, lambda m: dump({**m, "timestamps": [m["timestamps"][0] // 1000] + m["timestamps"][1:]}),
          lambda rows: dump([{k: v for k, v in r.items() if k != "timestamp"} for r in rows]))
    feats5 = np.load(base / "features" / "2025-11-07_batch_0005.npy").astype(np.float64)
    feats5[0, 0] = 1e39
    np.save(base / "features" / "2025-11-07_batch_0005.npy", feats5, allow_pickle=False)
    meta6 = base / "metadata" / "2025-11-07_batch_0006.json"
    meta6.write_text(meta6.read_text()[:-1] + ', "padding": "' + "x" * (MAX_JSON_BYTES + 10) + '"}')
    _edit(base, 7, lambda m: dump({**m, "sample_count": 5}))
    wide = _samples(4, T0 + 7 * 600_000, seed=7)[0].astype(np.float64) + 0.1  # not float32 numbers
    np.save(base / "features" / "2025-11-07_batch_0008.npy", wide, allow_pickle=False)
    refused = {3: "outside the batch date 2025-11-07", 4: "no single unit", 5: "beyond float32 range",
               6: "more than", 7: "sample_count=5"}
    store = FeatureStore(legacy / "feature_store" / "offline")
    bad = write_bad_files(store.group_dir("training_features") / "date=2025-11-07", T0 + 3_600_000)
    bad_before = snapshot(bad.values())
    before = _digest(legacy / "ml_training")

    assert main(["--data-dir", str(legacy), "--no-progress"]) == 1
    out = capsys.readouterr().out
    assert "Traceback" not in out
    for number, reason in refused.items():
        lines = [ln for ln in out.splitlines() if f"batch_{number:04d}" in ln and reason in ln]
        assert lines, (number, reason, out)
    for phrase in ("timestamps in us", "NaN/Infinity value(s): read as null", "float64 converted to float32"):
        assert phrase in out, (phrase, out)
    for path in bad.values():
        assert f"store file skipped: {path}" in out, path
    assert snapshot(bad.values()) == bad_before  # named, not touched
    assert _digest(legacy / "ml_training") == before  # sources untouched

    df = store.read_offline_features("training_features", "2025-11-07", "2025-11-07")
    df = df[df["source"] == "bybit"]
    migrated = {0, 1, 7, 8}  # batches 1, 2, 8, 9 (batch n holds _samples(seed=n - 1))
    assert len(df) == 4 * len(migrated) and not df.duplicated(["symbol", "timestamp"]).any()
    for k in migrated:
        feats, ts, mids = _samples(4, T0 + k * 600_000, seed=k)
        rows = df[_ms(df).isin(ts)].sort_values("timestamp")
        expect = (wide if k == 7 else feats).astype(np.float32)
        np.testing.assert_array_equal(rows[["ob_spread_bps"]].to_numpy()[:, 0], expect[:, 0])
        np.testing.assert_array_equal(rows["mid_price"].to_numpy(), mids)
    two = df[_ms(df).isin(_samples(4, T0 + 600_000, 1)[1])]
    assert two["future_direction_10s"].isna().all() and two["future_movement_10s"].isna().all()
    assert (two["future_direction_30s"] == 1).all()

    files = store.list_files("training_features")
    assert main(["--data-dir", str(legacy), "--no-progress"]) == 1  # still refused: still non-zero
    assert "Samples migrated: 0" in capsys.readouterr().out
    assert store.list_files("training_features") == files


def test_deep_metadata_costs_only_its_batch_in_the_legacy_labeller_and_writer(legacy: Path, capsys):
    """A metadata file nested 200,000 deep: the legacy labeller names it and labels the other
    batches (no RecursionError); the bot's legacy writer for that symbol still writes the next batch."""
    from backend.apps.label import main_legacy
    from backend.ml_engine.feature_store.legacy_format import list_batches, read_batch
    from tests.labelling.helpers import write_tape

    deep = legacy / "ml_training" / "BTCUSDT" / "metadata" / "2025-11-07_batch_0003.json"
    deep.write_text("[" * 200_000 + "]" * 200_000)
    tape_ts = np.arange(T0, T0 + 9 * 600_000 + 120_000, 3_000)
    write_tape(FeatureStore(legacy / "feature_store" / "offline"), "BTCUSDT", tape_ts, 100 + np.sin(tape_ts / 1e6))
    assert main_legacy(["--data-dir", str(legacy), "--no-progress"]) == 1
    out = capsys.readouterr().out
    assert "Traceback" not in out and f"{deep}: invalid JSON in metadata file: nested too deeply" in out
    assert "Label files rewritten: 8 of 9" in out
    refs = [r for r in list_batches(legacy / "ml_training", "BTCUSDT") if r.number != 3]
    assert all(row["future_direction_60s"] is not None for r in refs for row in read_batch(r).labels)

    writer = LegacyBatchWriter(legacy / "ml_training", fsync=False)
    [written] = writer.write_batch("BTCUSDT", *_samples(4, T0 + 10 * 600_000, seed=10), "bybit")
    assert written.name == "2025-11-07_batch_0010.json"
