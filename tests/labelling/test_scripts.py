"""The two labelling scripts on a real store: expected labels, identical legacy labels,
idempotency, the date range with look-ahead, late data, atomic rewrites under kill -9."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from backend.config import configure
from backend.ml_engine.feature_store.feature_store import FeatureStore
from backend.ml_engine.feature_store.legacy_format import list_batches, read_batch
from backend.apps.label import main_legacy, main_parquet
from tests.labelling.helpers import write_samples, write_tape
from tests.labelling.test_labels_core import EXPECTED, SAMPLES, TAPE

REPO = Path(__file__).resolve().parents[2]
SYMS = {0: "BTCUSDT", 1: "ETHUSDT"}
DAY = 86_400_000


@pytest.fixture
def data_dir(tmp_path: Path):
    yield tmp_path
    configure()


def _store(d: Path) -> FeatureStore:
    return FeatureStore(d / "feature_store" / "offline")


def _hand_example(d: Path) -> None:
    store = _store(d)
    for code, sym in SYMS.items():
        m = SAMPLES.codes == code
        write_samples(store, sym, SAMPLES.ts_ms[m], SAMPLES.mid[m], legacy=d / "ml_training")
        t = TAPE.codes == code
        if t.any():
            write_tape(store, sym, TAPE.ts_ms[t], TAPE.mid[t])


def _stats(store: FeatureStore) -> dict[Path, tuple[int, int]]:
    return {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in store.list_files("training_features")}


def _labels_by_key(df) -> dict[tuple[str, int], dict]:
    out = {}
    for row in df.to_dict("records"):
        out[(row["symbol"], int(row["timestamp"].value // 1_000_000))] = row
    return out


def _check_expected(rows: dict[tuple[str, int], dict]) -> None:
    for h, expected in EXPECTED.items():
        for i, exp in enumerate(expected):
            row = rows[(SYMS[int(SAMPLES.codes[i])], int(SAMPLES.ts_ms[i]))]
            d, m = row[f"future_direction_{h}s"], row[f"future_movement_{h}s"]
            if exp is None:
                assert pd.isna(d) and pd.isna(m), (h, i, d)
            else:
                assert int(d) == exp[0] and m == pytest.approx(exp[1], abs=1e-9), (h, i)


def test_parquet_script_labels_rewrites_only_changes_and_is_idempotent(data_dir: Path, capsys):
    _hand_example(data_dir)
    store = _store(data_dir)
    assert main_parquet(["--data-dir", str(data_dir), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "PREPROCESSING: Adding Future Labels (Parquet)" in out
    assert "Loaded 5 samples" in out and "Symbols: ['BTCUSDT', 'ETHUSDT']" in out
    assert "Processing BTCUSDT" in out and "Labelled: 0/2 samples (0.0%)" in out
    assert "Samples processed: 5" in out and "Label percentage:" in out and "Class balance" in out
    assert "60s: DOWN 2 (100.0%)" in out
    _check_expected(_labels_by_key(store.read_offline_features("training_features")))

    before = _stats(store)
    assert main_parquet(["--data-dir", str(data_dir), "--no-progress"]) == 0
    assert "Files rewritten: 0 of 3" in capsys.readouterr().out
    assert _stats(store) == before  # a second run rewrites no file
    assert not [p for p in (store.root / "training_features").rglob(".*")]


def test_legacy_script_gives_identical_labels(data_dir: Path, capsys):
    _hand_example(data_dir)
    assert main_parquet(["--data-dir", str(data_dir), "--no-progress"]) == 0
    assert main_legacy(["--data-dir", str(data_dir), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "Adding Future Labels (legacy" in out and "Label files rewritten: 2 of 3" in out
    parquet = _labels_by_key(_store(data_dir).read_offline_features("training_features"))
    root = data_dir / "ml_training"
    legacy_rows = {}
    for sym in SYMS.values():
        for ref in list_batches(root, sym):
            for r in read_batch(ref).labels:
                legacy_rows[(sym, r["timestamp"])] = r
    assert legacy_rows.keys() == parquet.keys()
    for key, row in legacy_rows.items():
        for h in (10, 30, 60):
            pd_dir, pd_mov = parquet[key][f"future_direction_{h}s"], parquet[key][f"future_movement_{h}s"]
            if row[f"future_direction_{h}s"] is None:
                assert pd.isna(pd_dir) and pd.isna(pd_mov)
            else:
                assert row[f"future_direction_{h}s"] == int(pd_dir)
                assert row[f"future_movement_{h}s"] == pd_mov  # bit-identical
    labels_before = {p: p.read_bytes() for p in root.rglob("labels/*.json")}
    assert main_legacy(["--data-dir", str(data_dir), "--no-progress"]) == 0
    assert "Label files rewritten: 0 of 3" in capsys.readouterr().out
    assert {p: p.read_bytes() for p in root.rglob("labels/*.json")} == labels_before


def _three_days(d: Path) -> int:
    """Samples every 30 s and a 3 s tape over 3 days (BTCUSDT); returns day 1 start."""
    store = _store(d)
    start = 1_762_473_600_000  # 2025-11-07 00:00 UTC
    ts = start + np.arange(0, 3 * DAY, 30_000 * 40)  # a sample every 20 min keeps it small
    write_samples(store, "BTCUSDT", ts, 100 + np.sin(np.arange(ts.size)))
    tape_ts = np.concatenate([t + np.arange(0, 90_000, 3_000) for t in ts])
    write_tape(store, "BTCUSDT", tape_ts, 100 + np.cos(tape_ts / 1e6))
    return start


def test_date_range_is_honoured_and_uses_look_ahead(data_dir: Path, capsys):
    _three_days(data_dir)
    store = _store(data_dir)
    before = _stats(store)
    assert main_parquet(["--data-dir", str(data_dir), "--no-progress", "--start-date", "2025-11-08", "--end-date", "2025-11-08"]) == 0
    out = capsys.readouterr().out
    after = _stats(store)
    changed = {p.parent.name for p in after if after[p] != before[p]}
    assert changed == {"date=2025-11-08"}
    df = store.read_offline_features("training_features", "2025-11-08", "2025-11-08")
    # the tape covers 90 s after every sample, so the whole requested day is labelled
    assert df["future_direction_60s"].notna().all() and "Labelled: 72/72" in out
    assert store.read_offline_features("training_features", "2025-11-07", "2025-11-07")["future_direction_60s"].isna().all()


def test_midnight_look_ahead_beyond_end_date(data_dir: Path):
    store = _store(data_dir)
    t = 1_762_559_970_000  # 2025-11-07 23:59:30
    write_samples(store, "BTCUSDT", [t], [100.0])
    write_tape(store, "BTCUSDT", t + np.arange(3_000, 120_000, 3_000), np.full(39, 100.1))
    assert main_parquet(["--data-dir", str(data_dir), "--no-progress", "--end-date", "2025-11-07"]) == 0
    row = store.read_offline_features("training_features").iloc[0]
    assert row["future_direction_60s"] == 2 and row["future_movement_60s"] == pytest.approx(0.1)


def test_uncovered_horizons_stay_null_then_get_labelled(data_dir: Path, capsys):
    store = _store(data_dir)
    t0 = 1_762_509_600_000
    ts = t0 + np.arange(4) * 30_000
    write_samples(store, "BTCUSDT", ts, [100, 100.1, 100.2, 100.3])
    write_tape(store, "BTCUSDT", np.arange(t0, t0 + 100_000, 3_000), 100 + np.arange(34) * 0.01)
    assert main_parquet(["--data-dir", str(data_dir), "--no-progress"]) == 0
    df = store.read_offline_features("training_features").sort_values("timestamp")
    assert df["future_direction_60s"].notna().tolist() == [True, True, False, False]
    write_tape(store, "BTCUSDT", np.arange(t0 + 102_000, t0 + 200_000, 3_000), np.full(33, 101.0))
    capsys.readouterr()
    assert main_parquet(["--data-dir", str(data_dir), "--no-progress"]) == 0
    assert "Files rewritten: 1 of 1" in capsys.readouterr().out
    df2 = store.read_offline_features("training_features").sort_values("timestamp")
    assert df2["future_direction_60s"].notna().all()
    np.testing.assert_array_equal(df2["future_movement_10s"].to_numpy()[:2], df["future_movement_10s"].to_numpy()[:2])


def test_dry_run_and_bad_arguments(data_dir: Path, capsys):
    _hand_example(data_dir)
    before = _stats(_store(data_dir))
    assert main_parquet(["--data-dir", str(data_dir), "--no-progress", "--dry-run"]) == 0
    assert "Files would be rewritten: 2 of 3" in capsys.readouterr().out
    assert _stats(_store(data_dir)) == before
    for bad, msg in (
        (["--tolerance", "10"], "smaller than the smallest horizon"),
        (["--horizons", "15"], "horizons must be among"),
        (["--start-date", "2025-13-01"], "invalid date"),
        (["--start-date", "2025-11-09", "--end-date", "2025-11-08"], "is after"),
    ):
        with pytest.raises(SystemExit) as info:
            main_parquet(["--data-dir", str(data_dir), *bad])
        assert info.value.code == 2 and msg in capsys.readouterr().err


KILL_SCRIPT = r"""
import sys, json
import numpy as np, pyarrow as pa
from pathlib import Path
from backend.ml_engine.feature_store import atomic
from backend.ml_engine.feature_store.feature_store import FeatureStore
from backend.ml_engine.feature_store.legacy_format import rewrite_labels
store = FeatureStore(Path(sys.argv[1]))
[path] = store.list_files("training_features")
labels = Path(sys.argv[2])
print("ready", flush=True)
k = 0
while True:
    k += 1
    t = store.read_file(path, "training_features")
    v = pa.array(np.full(t.num_rows, float(k % 2)))
    t = t.set_column(t.schema.get_field_index("future_movement_60s"), "future_movement_60s", v)
    store.rewrite_file(path, t, atomic.file_stat(path), "training_features")
    rows = json.loads(labels.read_text())
    for r in rows:
        r["future_movement_60s"] = float(k % 2)
    rewrite_labels(labels, rows, atomic.file_stat(labels))
"""


def test_killed_rewrite_leaves_old_or_new_file(data_dir: Path):
    store = _store(data_dir)
    ts = 1_762_509_600_000 + np.arange(10_000) * 3_000
    write_samples(store, "BTCUSDT", ts, np.full(ts.size, 100.0), legacy=data_dir / "ml_training")
    [ref] = list_batches(data_dir / "ml_training", "BTCUSDT")
    [path] = store.list_files("training_features")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    rng = np.random.default_rng(0)
    for _ in range(6):
        proc = subprocess.Popen(
            [sys.executable, "-c", KILL_SCRIPT, str(store.root), str(ref.labels_path)],
            stdout=subprocess.PIPE, env=env, cwd=REPO,
        )
        assert proc.stdout.readline().strip() == b"ready"
        time.sleep(float(rng.uniform(0.05, 0.6)))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        t = store.read_file(path, "training_features")
        values = set(t.column("future_movement_60s").to_pylist())
        assert t.num_rows == ts.size and (values <= {0.0, 1.0} or values == {None}) and len(values) == 1
        batch = read_batch(ref)  # strict reader: a torn JSON file would fail here
        assert len({r["future_movement_60s"] for r in batch.labels}) == 1
    assert store.list_files("training_features") == [path]
