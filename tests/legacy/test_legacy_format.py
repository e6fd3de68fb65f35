"""Legacy .npy/.json batches: round trip, numbering, idempotent flushes, strict reader."""

from __future__ import annotations

import json
import pickle
import threading
from pathlib import Path

import numpy as np
import pytest

from backend.ml_engine.feature_store.feature_schema import FEATURE_NAMES, LABEL_COLUMNS
from backend.ml_engine.feature_store.legacy_format import (
    LegacyBatchRef,
    LegacyBatchWriter,
    LegacyFormatError,
    list_batches,
    list_symbols,
    read_batch,
    rewrite_labels,
)
from backend.symbols import InvalidSymbolError

T0 = 1_762_509_600_000  # 2025-11-07 10:00:00 UTC
DAY = 86_400_000


def samples(n: int, start: int = T0, step: int = 30_000, seed: int = 0):
    rng = np.random.default_rng(seed)
    feats = rng.normal(size=(n, 110)).astype(np.float32)
    ts = start + np.arange(n, dtype=np.int64) * step
    mids = 90_000 + rng.normal(0, 5, n).cumsum()
    return feats, ts, mids


def test_round_trip(tmp_path: Path):
    w = LegacyBatchWriter(tmp_path, fsync=False)
    feats, ts, mids = samples(50)
    labels = [{"future_direction_10s": 2, "future_movement_10s": 0.5}] + [None] * 0 + [{}] * 49
    paths = w.write_batch("BTCUSDT", feats, ts, mids, "sim", labels=labels)
    assert paths == [tmp_path / "BTCUSDT" / "metadata" / "2025-11-07_batch_0001.json"]
    [ref] = list_batches(tmp_path, "BTCUSDT")
    batch = read_batch(ref.features_path)
    np.testing.assert_array_equal(batch.features, feats)
    np.testing.assert_array_equal(batch.timestamps_ms, ts)
    np.testing.assert_array_equal(batch.mid_prices, mids)
    assert batch.labels[0]["future_direction_10s"] == 2 and batch.labels[0]["future_movement_10s"] == 0.5
    assert all(batch.labels[1][k] is None for k in LABEL_COLUMNS)
    meta = batch.metadata
    assert meta["symbol"] == "BTCUSDT" and meta["batch_number"] == 1 and meta["date"] == "2025-11-07"
    assert meta["sample_count"] == 50 and meta["feature_count"] == 110 and meta["feature_names"] == list(FEATURE_NAMES)
    assert meta["timestamps"] == ts.tolist() and meta["source"] == "sim"
    # no pickle anywhere: the file loads with allow_pickle=False
    assert np.load(ref.features_path, allow_pickle=False).dtype == np.float32
    assert list_symbols(tmp_path) == (["BTCUSDT"], [])


def test_midnight_split_and_numbering_continues_after_restart(tmp_path: Path):
    feats, ts, mids = samples(10, start=T0 + 14 * 3_600_000 - 150_000)  # 23:57:30 .. 00:02:00
    w = LegacyBatchWriter(tmp_path, fsync=False)
    paths = w.write_batch("ETHUSDT", feats, ts, mids, "sim")
    assert [p.name for p in paths] == ["2025-11-07_batch_0001.json", "2025-11-08_batch_0002.json"]
    b1, b2 = (read_batch(r.features_path) for r in list_batches(tmp_path, "ETHUSDT"))
    assert b1.sample_count + b2.sample_count == 10
    np.testing.assert_array_equal(np.concatenate([b1.features, b2.features]), feats)
    # a new writer (restart) continues numbering, even past an orphan left by a crash
    (tmp_path / "ETHUSDT" / "features" / "2025-11-08_batch_0003.npy").write_bytes(b"orphan")
    w2 = LegacyBatchWriter(tmp_path, fsync=False)
    [p] = w2.write_batch("ETHUSDT", *samples(3, start=T0 + DAY + 600_000), "sim")
    assert p.name == "2025-11-08_batch_0004.json"
    # the uncommitted orphan is kept, moved out of the readers' way
    assert not (tmp_path / "ETHUSDT" / "features" / "2025-11-08_batch_0003.npy").exists()
    assert (tmp_path / "ETHUSDT" / ".incomplete" / "features" / "2025-11-08_batch_0003.npy").read_bytes() == b"orphan"
    assert [r.number for r in list_batches(tmp_path, "ETHUSDT")] == [1, 2, 4]


def test_flush_id_is_idempotent_across_restarts(tmp_path: Path):
    feats, ts, mids = samples(10, start=T0 + 14 * 3_600_000 - 150_000)
    w = LegacyBatchWriter(tmp_path, fsync=False)
    assert len(w.write_batch("BTCUSDT", feats, ts, mids, "sim", flush_id="f1")) == 2
    assert w.write_batch("BTCUSDT", feats, ts, mids, "sim", flush_id="f1") == []
    assert LegacyBatchWriter(tmp_path, fsync=False).write_batch("BTCUSDT", feats, ts, mids, "sim", flush_id="f1") == []
    # crash after the first date of a flush was committed: only the missing date is written
    (tmp_path / "BTCUSDT" / "metadata" / "2025-11-08_batch_0002.json").unlink()
    again = LegacyBatchWriter(tmp_path, fsync=False).write_batch("BTCUSDT", feats, ts, mids, "sim", flush_id="f1")
    assert [p.name for p in again] == ["2025-11-08_batch_0003.json"]
    assert len(LegacyBatchWriter(tmp_path, fsync=False).write_batch("BTCUSDT", feats, ts, mids, "sim", flush_id="f2")) == 2


def test_thread_safe_writes_never_collide(tmp_path: Path):
    w = LegacyBatchWriter(tmp_path, fsync=False)
    errors = []

    def flush(k: int):
        try:
            w.write_batch("BTCUSDT", *samples(5, start=T0 + k * 1000, seed=k), "sim")
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=flush, args=(k,)) for k in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    refs = list_batches(tmp_path, "BTCUSDT")
    assert [r.number for r in refs] == list(range(1, 21))
    assert sum(read_batch(r.features_path).sample_count for r in refs) == 100


def test_writer_rejects_bad_input(tmp_path: Path):
    w = LegacyBatchWriter(tmp_path, fsync=False)
    feats, ts, mids = samples(4)
    with pytest.raises(InvalidSymbolError):
        w.write_batch("../etc", feats, ts, mids, "sim")
    with pytest.raises(ValueError, match="shape"):
        w.write_batch("BTCUSDT", feats[:, :100], ts, mids, "sim")
    with pytest.raises(ValueError, match="timestamps"):
        w.write_batch("BTCUSDT", feats, ts[:3], mids, "sim")
    with pytest.raises(ValueError, match="labels"):
        w.write_batch("BTCUSDT", feats, ts, mids, "sim", labels=[{}])
    bad = feats.copy()
    bad[2, 5] = np.nan
    with pytest.raises(ValueError, match="row 2"):
        w.write_batch("BTCUSDT", bad, ts, mids, "sim")
    assert not (tmp_path / "etc").exists() and list_batches(tmp_path, "BTCUSDT") == []


@pytest.fixture
def batch(tmp_path: Path) -> LegacyBatchRef:
    LegacyBatchWriter(tmp_path, fsync=False).write_batch("BTCUSDT", *samples(20), "sim")
    return list_batches(tmp_path, "BTCUSDT")[0]


def _expect(ref_path: Path, bad_file: Path, fragment: str):
    with pytest.raises(LegacyFormatError) as info:
        read_batch(ref_path)
    assert info.value.path == bad_file
    assert str(bad_file) in str(info.value) and fragment in str(info.value)


def test_truncated_npy(batch: LegacyBatchRef):
    data = batch.features_path.read_bytes()
    batch.features_path.write_bytes(data[: len(data) - 100])
    _expect(batch.features_path, batch.features_path, "truncated")
    batch.features_path.write_bytes(data[:20])
    _expect(batch.features_path, batch.features_path, "not a valid .npy")


def test_pickled_npy(batch: LegacyBatchRef):
    obj = np.empty((20, 110), dtype=object)
    with open(batch.features_path, "wb") as fh:
        np.save(fh, obj, allow_pickle=True)
    _expect(batch.features_path, batch.features_path, "pickled")
    batch.features_path.write_bytes(pickle.dumps(np.zeros((20, 110), np.float32)))
    _expect(batch.features_path, batch.features_path, "not a valid .npy")


def test_wrong_shape_and_dtype(batch: LegacyBatchRef):
    np.save(batch.features_path, np.zeros((20, 109), np.float32))
    _expect(batch.features_path, batch.features_path, "shape (20, 109)")
    np.save(batch.features_path, np.zeros((20, 110), np.float64))
    _expect(batch.features_path, batch.features_path, "float64")
    np.save(batch.features_path, np.zeros((19, 110), np.float32))
    _expect(batch.features_path, batch.metadata_path, "sample_count=20")


def test_label_count_mismatch(batch: LegacyBatchRef):
    rows = json.loads(batch.labels_path.read_text())
    batch.labels_path.write_text(json.dumps(rows[:-1]))
    _expect(batch.features_path, batch.labels_path, "19 label entries but the batch has 20 samples")


def test_invalid_json(batch: LegacyBatchRef):
    batch.labels_path.write_text(batch.labels_path.read_text()[:-5])
    _expect(batch.features_path, batch.labels_path, "invalid JSON")
    batch.labels_path.write_text("[NaN]")
    _expect(batch.features_path, batch.labels_path, "invalid JSON")


def test_invalid_metadata_json(batch: LegacyBatchRef):
    batch.metadata_path.write_text("{not json")
    _expect(batch.features_path, batch.metadata_path, "invalid JSON in metadata")


def test_missing_metadata(batch: LegacyBatchRef):
    batch.metadata_path.unlink()
    _expect(batch.features_path, batch.metadata_path, "metadata file missing")


def test_missing_labels_and_features(batch: LegacyBatchRef):
    batch.labels_path.unlink()
    _expect(batch.features_path, batch.labels_path, "labels file missing")
    batch.features_path.unlink()
    _expect(batch.features_path, batch.features_path, "features file missing")


def test_inconsistent_metadata_and_labels(batch: LegacyBatchRef):
    meta = json.loads(batch.metadata_path.read_text())
    rows = json.loads(batch.labels_path.read_text())
    rows[3]["timestamp"] += 1
    batch.labels_path.write_text(json.dumps(rows))
    _expect(batch.features_path, batch.labels_path, "entry 3: timestamp")
    rows[3]["timestamp"] -= 1
    rows[4]["future_direction_30s"] = 7
    batch.labels_path.write_text(json.dumps(rows))
    _expect(batch.features_path, batch.labels_path, "entry 4: future_direction_30s=7")
    rows[4]["future_direction_30s"] = None
    batch.labels_path.write_text(json.dumps(rows))
    meta["symbol"] = "ETHUSDT"
    batch.metadata_path.write_text(json.dumps(meta))
    _expect(batch.features_path, batch.metadata_path, "symbol='ETHUSDT'")


def test_nonfinite_features(batch: LegacyBatchRef):
    arr = np.load(batch.features_path)
    arr[7, 3] = np.inf
    np.save(batch.features_path, arr)
    _expect(batch.features_path, batch.features_path, "row 7")


def test_rewrite_labels_is_atomic_and_checks_stat(batch: LegacyBatchRef):
    from backend.ml_engine.feature_store.atomic import FileChangedError

    b = read_batch(batch.features_path, load_features=False)
    assert b.features is None
    rows = [dict(r, future_direction_60s=1, future_movement_60s=0.0) for r in b.labels]
    rewrite_labels(batch.labels_path, rows, b.labels_stat)
    again = read_batch(batch.features_path)
    assert all(r["future_direction_60s"] == 1 for r in again.labels)
    with pytest.raises(FileChangedError):
        rewrite_labels(batch.labels_path, rows, b.labels_stat)  # stale stat: refused
    assert not [p for p in batch.labels_path.parent.iterdir() if p.name.startswith(".")]
