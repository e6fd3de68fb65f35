"""``--map NAMES.json``: legacy batches whose feature names differ from ours migrate through an
explicit rename map with exact values; a partial map is refused naming what remains; a bad map
file exits 2 with a clear message before any batch is read; sources are never modified."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from backend.apps.migrate import main
from backend.config import configure
from backend.ml_engine.feature_store.feature_schema import FEATURE_NAMES
from backend.ml_engine.feature_store.feature_store import FeatureStore
from backend.ml_engine.feature_store.legacy_format import LegacyBatchWriter
from backend.ml_engine.migration.legacy_to_parquet import FEATURE_NAME_MAP_KEY, INTERPRETATIONS_KEY

T0 = 1_762_509_600_000  # 2025-11-07 10:00:00 UTC
N = 6


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def _samples(seed: int):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(N, 110)).astype(np.float32), T0 + seed * 600_000 + np.arange(N, dtype=np.int64) * 30_000, 100 + rng.random(N)


#: an older bot's names for three of ours
OLD = {"spread_bps_v0": "ob_spread_bps", "old_name_b": FEATURE_NAMES[5], "old_name_c": FEATURE_NAMES[42]}
#: the legacy column order: ours reversed (so every column moves)
PERM = np.arange(110)[::-1]


@pytest.fixture
def legacy(tmp_path: Path):
    """One batch in today's form (number 1) and one (number 2) with renamed, reordered columns."""
    w = LegacyBatchWriter(tmp_path / "ml_training", fsync=False)
    for seed in (0, 1):
        w.write_batch("BTCUSDT", *_samples(seed), "bybit")
    base = tmp_path / "ml_training" / "BTCUSDT"
    canonical, _, _ = _samples(1)
    np.save(base / "features" / "2025-11-07_batch_0002.npy", canonical[:, PERM], allow_pickle=False)
    back = {v: k for k, v in OLD.items()}
    meta_path = base / "metadata" / "2025-11-07_batch_0002.json"
    meta = json.loads(meta_path.read_text())
    meta["feature_names"] = [back.get(FEATURE_NAMES[i], FEATURE_NAMES[i]) for i in PERM]
    meta_path.write_text(json.dumps(meta))
    yield tmp_path
    configure()


def _write_map(d: Path, value, name: str = "names.json") -> Path:
    path = d / name
    path.write_text(value if isinstance(value, str) else json.dumps(value))
    return path


def _line(out: str, number: int) -> str:
    [line] = [ln for ln in out.splitlines() if f"batch_{number:04d}.npy" in ln]
    return line


def test_without_map_refused_listing_missing_and_unknown(legacy: Path, capsys):
    assert main(["--data-dir", str(legacy), "--no-progress"]) == 1
    line = _line(capsys.readouterr().out, 2)
    assert "missing ['ob_spread_bps'" in line and "'spread_bps_v0'" in line and "--map" in line, line


def test_renamed_reordered_batch_migrates_exactly_through_map(legacy: Path, capsys):
    before = _digest(legacy / "ml_training")
    path = _write_map(legacy, OLD)
    assert main(["--data-dir", str(legacy), "--no-progress", "--map", str(path)]) == 0
    out = capsys.readouterr().out
    assert "Traceback" not in out
    assert f"Feature name map: {path} (3 name(s))" in out
    assert out.count("feature_names renamed through --map (3 renamed") == 1, out
    assert "'spread_bps_v0'->'ob_spread_bps'" in out and "110 column(s) reordered" in out

    store = FeatureStore(legacy / "feature_store" / "offline")
    df = store.read_offline_features("training_features")
    ms = df.timestamp.dt.as_unit("ms").astype("int64")
    for seed in (0, 1):
        feats, ts, mids = _samples(seed)
        rows = df[ms.isin(ts)].sort_values("timestamp")
        assert len(rows) == N
        np.testing.assert_array_equal(rows[list(FEATURE_NAMES)].to_numpy(), feats)
        np.testing.assert_array_equal(rows["mid_price"].to_numpy(), mids)

    metas = {p.name: pq.read_schema(p).metadata for p in store.list_files("training_features")}
    mapped = [m for m in metas.values() if FEATURE_NAME_MAP_KEY.encode() in m]
    assert len(mapped) == 1
    assert json.loads(mapped[0][FEATURE_NAME_MAP_KEY.encode()]) == OLD
    assert "renamed through --map" in mapped[0][INTERPRETATIONS_KEY.encode()].decode()
    assert _digest(legacy / "ml_training") == before  # sources untouched

    # idempotent: a second run writes nothing
    files = store.list_files("training_features")
    assert main(["--data-dir", str(legacy), "--no-progress", "--map", str(path)]) == 0
    assert "Samples migrated: 0" in capsys.readouterr().out
    assert store.list_files("training_features") == files


def test_partial_map_refused_naming_what_remains(legacy: Path, capsys):
    before = _digest(legacy / "ml_training")
    path = _write_map(legacy, {"spread_bps_v0": "ob_spread_bps"})
    assert main(["--data-dir", str(legacy), "--no-progress", "--map", str(path)]) == 1
    line = _line(capsys.readouterr().out, 2)
    assert "after the --map renames" in line, line
    assert repr(FEATURE_NAMES[5]) in line and repr(FEATURE_NAMES[42]) in line
    assert "'old_name_b'" in line and "'old_name_c'" in line
    assert "'ob_spread_bps'" not in line and "'spread_bps_v0'" not in line
    store = FeatureStore(legacy / "feature_store" / "offline")
    assert len(store.list_files("training_features")) == 1  # only the batch in today's form
    assert _digest(legacy / "ml_training") == before


def test_strict_still_refuses_and_does_not_combine_with_map(legacy: Path, capsys):
    assert main(["--data-dir", str(legacy), "--no-progress", "--strict"]) == 1
    assert "batch_0002.npy" in capsys.readouterr().out
    path = _write_map(legacy, OLD)
    with pytest.raises(SystemExit) as exc:
        main(["--data-dir", str(legacy), "--no-progress", "--strict", "--map", str(path)])
    assert exc.value.code == 2
    assert "cannot be combined" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("[\"a\", \"b\"]", "expected a JSON object"),
        ("{not json", "invalid JSON"),
        ({"x": "no_such_feature"}, "not one of our 110 feature names"),
        ({"x": 3}, "expected one of our feature names"),
        ({"x": "ob_spread_bps", "y": "ob_spread_bps"}, "'x' and 'y' are both mapped to 'ob_spread_bps'"),
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
        (None, "no such file"),
    ],
)
def test_bad_map_file_exits_2_before_reading_batches(legacy: Path, capsys, content, reason):
    before = _digest(legacy / "ml_training")
    path = legacy / "missing.json" if content is None else _write_map(legacy, content)
    with pytest.raises(SystemExit) as exc:
        main(["--data-dir", str(legacy), "--no-progress", "--map", str(path)])
    assert exc.value.code == 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and f"--map: {path}" in captured.err and reason in captured.err, captured.err
    assert "MIGRATION" not in captured.out  # no batch was read
    assert not (legacy / "feature_store").exists() or not any((legacy / "feature_store").rglob("*.parquet"))
    assert _digest(legacy / "ml_training") == before


def test_oversized_map_refused(legacy: Path, capsys):
    path = _write_map(legacy, json.dumps({f"n{i}": "ob_spread_bps" for i in range(1)}) + " " * (1024 * 1024 + 1))
    with pytest.raises(SystemExit) as exc:
        main(["--data-dir", str(legacy), "--no-progress", "--map", str(path)])
    assert exc.value.code == 2 and "more than the" in capsys.readouterr().err
