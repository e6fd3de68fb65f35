from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from backend.venues.types import Candle
from backend.ml_engine.data_collection import MLDataCollector
from backend.ml_engine.data_collection.spool import Spool
from backend.ml_engine.feature_store.feature_schema import FEATURE_NAMES
from backend.ml_engine.feature_store.feature_store import FeatureStore
from backend.ml_engine.feature_store.legacy_format import list_batches, read_batch

T0 = 1_762_473_600_000  # 2025-11-07 00:00:00 UTC


def make(tmp_path: Path, **kw) -> MLDataCollector:
    kw.setdefault("max_samples_per_file", 50)
    kw.setdefault("source", "sim")
    kw.setdefault("fsync", False)
    c = MLDataCollector(storage_path=tmp_path / "ml_training", **kw)
    c.recover()
    return c


def crash(c: MLDataCollector) -> None:
    """What a kill -9 leaves: no flush, no close; the OS drops the spool's lock."""
    c._executor.shutdown(wait=True)
    os.close(c.spool._lock_fd)
    c.spool._lock_fd = None


def features(i: int) -> np.ndarray:
    return (np.arange(110, dtype=np.float32) + i).astype(np.float32)


def collect(c: MLDataCollector, symbol: str, n: int, start: int = 0, step_ms: int = 30_000) -> None:
    for i in range(start, start + n):
        assert c.collect_sample(symbol, features(i), T0 + i * step_ms, 100.0 + i)


def parquet_rows(tmp_path: Path, symbol: str | None = None):
    store = FeatureStore(tmp_path / "feature_store" / "offline")
    df = store.read_offline_features("training_features", symbols=[symbol] if symbol else None)
    return df.sort_values(["symbol", "timestamp"]).reset_index(drop=True)


def legacy_rows(tmp_path: Path, symbol: str):
    batches = [read_batch(ref) for ref in list_batches(tmp_path / "ml_training", symbol)]
    feats = np.concatenate([b.features for b in batches]) if batches else np.empty((0, 110), np.float32)
    ts = np.concatenate([np.asarray(b.metadata["timestamps"], dtype=np.int64) for b in batches]) if batches else np.empty(0, np.int64)
    order = np.argsort(ts, kind="stable")
    return ts[order], feats[order]


def test_flush_at_max_samples_writes_identical_rows_in_both_formats(tmp_path):
    c = make(tmp_path)
    collect(c, "BTCUSDT", 120)
    c.maybe_flush()  # first 50-row batch? no: flush happens once a buffer reaches 50
    assert c.close_sync()
    df = parquet_rows(tmp_path, "BTCUSDT")
    ts, feats = legacy_rows(tmp_path, "BTCUSDT")
    assert len(df) == 120 and len(ts) == 120
    np.testing.assert_array_equal(df[list(FEATURE_NAMES)].to_numpy(np.float32), feats)
    np.testing.assert_array_equal(df["timestamp"].astype("int64").to_numpy() // 1, ts)
    np.testing.assert_array_equal(feats[7], features(7))
    assert c.stats.collected == 120 and c.stats.flushed == 120 and c.buffered == 0


def test_buffer_is_flushed_when_it_reaches_max_samples(tmp_path):
    c = make(tmp_path, max_samples_per_file=40)
    for i in range(100):
        c.collect_sample("ETHUSDT", features(i), T0 + i * 30_000, 10.0)
        c.maybe_flush()
    c._executor.submit(lambda: None).result()
    c.maybe_flush()
    assert c.stats.flushed == 80 and c.buffered == 20
    c.close_sync()
    assert len(list_batches(tmp_path / "ml_training", "ETHUSDT")) == 3


def test_memory_cap_flushes_largest_buffer_first(tmp_path):
    c = make(tmp_path, max_samples_per_file=10_000, max_buffer_memory_mb=0.3)
    collect(c, "BTCUSDT", 600)
    collect(c, "ETHUSDT", 100)
    c.maybe_flush()
    c._executor.submit(lambda: None).result()
    c.maybe_flush()
    assert c.stats.flushed == 600  # the larger buffer went, the small one stayed
    assert sum(b.nbytes for b in c._buffers.values()) <= 0.3 * 1024 * 1024
    c.close_sync()


def test_invalid_samples_are_skipped_and_counted(tmp_path):
    c = make(tmp_path)
    bad = features(0)
    bad[3] = np.nan
    assert not c.collect_sample("BTCUSDT", bad, T0, 1.0)
    assert not c.collect_sample("BTCUSDT", np.zeros(109, np.float32), T0, 1.0)
    assert not c.collect_sample("BTCUSDT", features(0), T0, 0.0)
    assert c.stats.skipped == 3 and c.stats.collected == 0
    c.close_sync()


def test_memory_per_sample_is_close_to_raw_float32(tmp_path):
    c = make(tmp_path, max_samples_per_file=100_000)
    collect(c, "BTCUSDT", 2560)
    raw = 2560 * 110 * 4
    assert c.memory_bytes <= 1.25 * raw
    c.close_sync()


def test_unflushed_samples_survive_a_crash_and_are_flushed_exactly_once(tmp_path):
    c = make(tmp_path)
    collect(c, "BTCUSDT", 50)
    c.maybe_flush()  # one flush due at 50
    collect(c, "BTCUSDT", 25, start=50)  # 25 left in RAM
    c._executor.submit(lambda: None).result()
    crash(c)  # no close(): the process state is simply dropped
    c2 = MLDataCollector(storage_path=tmp_path / "ml_training", max_samples_per_file=50, source="sim", fsync=False)
    recovered = c2.recover()
    assert recovered == 25
    assert c2.stats.collected == 25
    c2.close_sync()
    df = parquet_rows(tmp_path)
    ts, _ = legacy_rows(tmp_path, "BTCUSDT")
    expected = T0 + np.arange(75) * 30_000
    np.testing.assert_array_equal(np.sort(df["timestamp"].astype("int64").to_numpy()), expected)
    np.testing.assert_array_equal(ts, expected)
    # a third start finds nothing to do
    c3 = make(tmp_path)
    assert c3.stats.recovered == 0
    c3.close_sync()
    assert len(parquet_rows(tmp_path)) == 75


def test_interrupted_flush_is_completed_with_the_same_id(tmp_path):
    c = make(tmp_path)
    collect(c, "BTCUSDT", 30)
    # dispatch the flush but make the legacy sink fail after parquet was written
    original = c.legacy.write_batch

    def boom(*a, **kw):
        raise OSError(28, "No space left on device")

    c.legacy.write_batch = boom
    c.flush_all()
    c._executor.submit(lambda: None).result()
    c._reap()
    assert c.stats.flush_failures == 1 and c.buffered == 30
    assert len(parquet_rows(tmp_path)) == 30  # parquet sink already done
    # crash now; a new process finishes the same flush without duplicating parquet rows
    crash(c)
    c2 = make(tmp_path)
    assert c2.stats.recovered == 30
    c2.close_sync()
    assert len(parquet_rows(tmp_path)) == 30
    ts, _ = legacy_rows(tmp_path, "BTCUSDT")
    assert len(ts) == 30
    c.legacy.write_batch = original


def test_failing_sink_keeps_samples_and_retries(tmp_path):
    c = make(tmp_path, retry_delay_s=0.0)
    store_write = c.store.write_offline_features
    calls = {"n": 0}

    def flaky(*a, **kw):
        calls["n"] += 1
        if calls["n"] == 1:
            raise PermissionError(13, "Permission denied")
        return store_write(*a, **kw)

    c.store.write_offline_features = flaky
    collect(c, "BTCUSDT", 50)
    c.maybe_flush()
    c._executor.submit(lambda: None).result()
    c.maybe_flush()  # reaps the failure, resubmits
    c._executor.submit(lambda: None).result()
    c.maybe_flush()
    assert c.stats.flush_failures == 1 and c.stats.flushed == 50
    c.close_sync()
    assert len(parquet_rows(tmp_path)) == 50
    # no temp file or partial file was left behind
    assert not [p for p in (tmp_path / "feature_store").rglob("*") if p.is_file() and p.suffix != ".parquet"]


def test_tape_and_candles_are_flushed_and_candles_stored_once(tmp_path):
    c = make(tmp_path)
    for i in range(10):
        c.add_tape("BTCUSDT", T0 + i * 3000, 100.0 + i, 99.9 + i, 100.1 + i)
    bars = [Candle(T0 + i * 60_000, 1, 2, 0.5, 1.5, 10, 15) for i in range(5)]
    assert c.add_candles("BTCUSDT", bars) == 5
    assert c.add_candles("BTCUSDT", bars[3:]) == 0
    c.close_sync()
    store = FeatureStore(tmp_path / "feature_store" / "offline")
    tape = store.read_offline_features("price_tape")
    assert len(tape) == 10 and tape["mid_price"].tolist() == [100.0 + i for i in range(10)]
    assert len(store.read_offline_features("candles")) == 5
    # a restart that back-fills the same bars does not store them again
    c2 = make(tmp_path)
    assert c2.add_candles("BTCUSDT", bars + [Candle(T0 + 5 * 60_000, 1, 2, 0.5, 1.5, 10, 15)]) == 1
    c2.close_sync()
    assert len(store.read_offline_features("candles")) == 6


def test_torn_spool_tail_is_ignored(tmp_path):
    c = make(tmp_path)
    collect(c, "BTCUSDT", 5)
    seg = c.spool.segments()[-1]
    c.spool.close()
    with open(seg, "ab") as fh:
        fh.write(b"\x10\x00\x00\x00garbage")
    c2 = MLDataCollector(storage_path=tmp_path / "ml_training", max_samples_per_file=50, source="sim", fsync=False)
    assert c2.recover() == 5
    c2.close_sync()


def test_a_second_collector_on_the_same_data_is_refused(tmp_path):
    from backend.ml_engine.data_collection.spool import SpoolLockedError

    c = make(tmp_path)
    with pytest.raises(SpoolLockedError, match="another collector is already running"):
        MLDataCollector(storage_path=tmp_path / "ml_training", source="sim", fsync=False)
    c.close_sync()
    make(tmp_path).close_sync()  # free again once the first one closed


def test_storage_path_is_relative_to_backend_not_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    c = MLDataCollector.__new__(MLDataCollector)
    from backend.ml_engine.data_collection.ml_data_collector import PACKAGE_DIR
    assert (PACKAGE_DIR / "../data/ml_training").resolve() == PACKAGE_DIR.parent / "data" / "ml_training"


def test_checkpoint_rewrites_unflushed_rows_into_a_new_segment(tmp_path):
    c = make(tmp_path, max_samples_per_file=1000)
    collect(c, "BTCUSDT", 30)
    for i in range(20):
        c.add_tape("BTCUSDT", T0 + i * 3000, 100.0 + i, 99.9 + i, 100.1 + i)
    old = c.spool.segments()
    c.checkpoint()
    new = c.spool.segments()
    assert len(new) == 1 and new[0] not in old
    crash(c)
    c2 = MLDataCollector(storage_path=tmp_path / "ml_training", max_samples_per_file=1000, source="sim", fsync=False)
    assert c2.recover() == 30
    c2.close_sync()
    df = parquet_rows(tmp_path)
    np.testing.assert_array_equal(df[list(FEATURE_NAMES)].to_numpy(np.float32)[5], features(5))
    tape = FeatureStore(tmp_path / "feature_store" / "offline").read_offline_features("price_tape")
    assert sorted(tape["mid_price"].tolist()) == [100.0 + i for i in range(20)]
