"""MLDataCollector through its public API: files on disk, registry values, real crashes (SIGKILL)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from backend.metrics import Metrics
from backend.ml_engine.data_collection import MLDataCollector
from backend.ml_engine.data_collection.spool import SpoolLockedError
from backend.ml_engine.feature_store.feature_schema import FEATURE_NAMES
from backend.ml_engine.feature_store.feature_store import FeatureStore
from backend.ml_engine.feature_store.legacy_format import list_batches, read_batch
from backend.venues.types import Candle

T0 = 1_762_473_600_000  # 2025-11-07 00:00:00 UTC
REPO = Path(__file__).resolve().parents[2]

# The child half of a crash test: build a collector like make(), run BODY, then SIGKILL itself.
CHILD = """
import os, signal, sys
import numpy as np
sys.path.insert(0, {repo!r})
from backend.ml_engine.data_collection import MLDataCollector
T0 = {t0}
def features(i):
    return (np.arange(110, dtype=np.float32) + i).astype(np.float32)
def collect(c, symbol, n, start=0, step_ms=30_000):
    for i in range(start, start + n):
        assert c.collect_sample(symbol, features(i), T0 + i * step_ms, 100.0 + i)
c = MLDataCollector(storage_path={storage!r}, source="sim", fsync=False, **{kw!r})
c.recover()
{body}
sys.stdout.flush()
os.kill(os.getpid(), signal.SIGKILL)
"""


def make(tmp_path: Path, **kw) -> MLDataCollector:
    kw.setdefault("max_samples_per_file", 50)
    kw.setdefault("source", "sim")
    kw.setdefault("fsync", False)
    c = MLDataCollector(storage_path=tmp_path / "ml_training", **kw)
    c.recover()
    return c


def run_and_kill(tmp_path: Path, body: str, **kw) -> str:
    """Run ``body`` against a fresh collector in a child process that then dies by SIGKILL; returns its stdout."""
    kw.setdefault("max_samples_per_file", 50)
    code = CHILD.format(repo=str(REPO), t0=T0, storage=str(tmp_path / "ml_training"), kw=kw, body=textwrap.dedent(body))
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == -9, res.stderr[-3000:]
    return res.stdout


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
    c.maybe_flush()
    assert c.close_sync()
    df = parquet_rows(tmp_path, "BTCUSDT")
    ts, feats = legacy_rows(tmp_path, "BTCUSDT")
    assert len(df) == 120 and len(ts) == 120
    np.testing.assert_array_equal(df[list(FEATURE_NAMES)].to_numpy(np.float32), feats)
    np.testing.assert_array_equal(df["timestamp"].astype("int64").to_numpy() // 1, ts)
    np.testing.assert_array_equal(feats[7], features(7))
    assert c.stats.collected == 120 and c.stats.flushed == 120 and c.buffered == 0
    assert c.metrics.value("lobbot_samples_collected_total", symbol="BTCUSDT") == 120
    assert c.metrics.value("lobbot_rows_flushed_total", stream="sample") == 120
    # a clean close leaves no spool segment behind: nothing to recover
    assert not list((tmp_path / "spool").glob("wal_*.log"))


def test_buffer_is_flushed_when_it_reaches_max_samples(tmp_path):
    c = make(tmp_path, max_samples_per_file=40)
    for i in range(100):
        c.collect_sample("ETHUSDT", features(i), T0 + i * 30_000, 10.0)
        c.maybe_flush()
    c.wait_for_flushes()
    assert c.stats.flushed == 80 and c.buffered == 20
    assert c.metrics.value("lobbot_rows_buffered", stream="sample") == 20
    assert "collected=100 buffered=20 flushed=80" in c.statistics_line()
    c.close_sync()
    assert len(list_batches(tmp_path / "ml_training", "ETHUSDT")) == 3


def test_memory_cap_flushes_largest_buffer_first(tmp_path):
    c = make(tmp_path, max_samples_per_file=10_000, max_buffer_memory_mb=0.3)
    collect(c, "BTCUSDT", 600)
    collect(c, "ETHUSDT", 100)
    c.maybe_flush()
    c.wait_for_flushes()
    c.maybe_flush()
    assert c.stats.flushed == 600  # the larger buffer went, the small one stayed
    assert 0 < c.metrics.value("lobbot_buffer_bytes") <= 0.3 * 1024 * 1024
    c.close_sync()


async def test_memory_cap_holds_after_every_row_of_many_symbols_filling_together(tmp_path):
    # 120 symbols collected on the same ticks fill their buffers in step: before the fix
    # every buffer allocated its doubled block on the same tick (120 x 64 rows x 472 B =
    # 3.6 MB in one tick), and flushes still being written were not waited for, so memory
    # rose well past the cap. Now a new block takes only the room left and each tick
    # waits (``wait_for_room``) until the next tick's rows fit under the cap. A tick here
    # costs at most 120 x (472 + 40 + 2 x 640) B = 215 kB, under a quarter of the cap, so
    # the cap holds at every row, not only between ticks.
    cap_mb = 1.0
    cap = int(cap_mb * 1024 * 1024)
    c = make(tmp_path, max_samples_per_file=10_000, max_buffer_memory_mb=cap_mb)
    symbols = [f"S{i:03d}USDT" for i in range(120)]
    peak = 0
    for tick in range(80):
        for sym in symbols:
            assert c.collect_sample(sym, features(tick), T0 + tick * 30_000, 100.0 + tick)
            c.add_tape(sym, T0 + tick * 30_000, 100.0, 99.9, 100.1)
            peak = max(peak, c.memory_bytes)
        c.maybe_flush()
        await c.wait_for_room()
        peak = max(peak, c.memory_bytes)
    assert peak <= cap, (peak, cap)
    assert c.stats.flushed >= 120 * 40  # the cap was hit several times
    book = c.spool.bookkeeping_bytes
    assert await c.close()
    df = parquet_rows(tmp_path)
    assert len(df) == 80 * 120 and not df.duplicated(["symbol", "timestamp"]).any()
    # a cap flush takes at least half the cap less the spool's bookkeeping (~0.1 MB here) of
    # buffer bytes, which are at most twice the rows' bytes (blocks are at least half full):
    # few files, never one per sample
    files = FeatureStore(tmp_path / "feature_store" / "offline").list_files("training_features")
    assert len(files) <= 2 * 80 * 120 * (472 + 40) / (cap / 2 - book) + 1, (len(files), book)


def test_invalid_samples_are_skipped_and_counted_by_reason(tmp_path):
    c = make(tmp_path)
    bad = features(0)
    bad[3] = np.nan
    assert not c.collect_sample("BTCUSDT", bad, T0, 1.0)
    assert not c.collect_sample("BTCUSDT", np.zeros(109, np.float32), T0, 1.0)
    assert not c.collect_sample("BTCUSDT", features(0), T0, 0.0)
    c.skip("ETHUSDT", "warming_up")
    assert c.stats.skipped == 4 and c.stats.collected == 0
    assert c.stats.skip_reasons == {"invalid_sample": 3, "warming_up": 1}
    assert c.metrics.value("lobbot_samples_skipped_total", symbol="BTCUSDT", reason="invalid_sample") == 3
    c.close_sync()


def test_counts_go_to_the_registry_it_is_given(tmp_path):
    m = Metrics()
    c = make(tmp_path, metrics=m)
    collect(c, "BTCUSDT", 50)
    c.add_tape("BTCUSDT", T0, 100.0, 99.9, 100.1)
    c.maybe_flush()
    c.wait_for_flushes()
    assert m.value("lobbot_rows_flushed_total", stream="sample") == 50
    assert m.value("lobbot_files_written_total", stream="sample", sink="parquet") == 1
    assert m.value("lobbot_files_written_total", stream="sample", sink="legacy") == 1
    assert c.stats.files == 2
    assert m.value("lobbot_flush_seconds_count") == 1
    assert m.value("lobbot_spool_bytes") > 0
    c.close_sync()
    assert m.value("lobbot_rows_flushed_total", stream="tape") == 1
    assert m.value("lobbot_files_written_total", stream="tape", sink="parquet") == 1
    assert c.stats.files == 2  # files= counts sample files only


def test_memory_per_sample_is_close_to_raw_float32(tmp_path):
    c = make(tmp_path, max_samples_per_file=100_000)
    collect(c, "BTCUSDT", 2560)
    raw = 2560 * 110 * 4
    assert c.memory_bytes <= 1.25 * raw
    c.close_sync()


def test_unflushed_samples_survive_a_kill_9_and_are_flushed_exactly_once(tmp_path):
    run_and_kill(tmp_path, """
        collect(c, "BTCUSDT", 50)
        c.maybe_flush()  # one flush due at 50
        collect(c, "BTCUSDT", 25, start=50)  # 25 left in RAM
        c.wait_for_flushes()
    """)
    c2 = MLDataCollector(storage_path=tmp_path / "ml_training", max_samples_per_file=50, source="sim", fsync=False)
    assert c2.recover() == 25
    assert c2.stats.collected == 25 and c2.stats.recovered == 25
    assert c2.metrics.value("lobbot_rows_recovered_total", stream="sample") == 25
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


def test_predictions_and_paper_fills_survive_a_kill_9_under_their_model_uri(tmp_path):
    """The --model streams (DESIGN.md 6.6) are spooled like samples: rows never flushed before a
    SIGKILL reach the predictions and paper_trades groups at the next start, once, with their model URI."""
    from backend.ml_engine.feature_store.feature_schema import PAPER_TRADES_SCHEMA, PREDICTIONS_SCHEMA
    from backend.ml_engine.live.records import column_numpy

    run_and_kill(tmp_path, """
        from backend.ml_engine.data_collection.streams import PAPER_TRADE, PREDICTION
        for i in range(7):
            for sym, uri in (("BTCUSDT", "models:/a/1"), ("ETHUSDT", "models:/b@champion")):
                c.add_record(PREDICTION, sym, (T0 + i * 30_000, 60, i % 3), (0.125 * i / 7, 0.25, 1 - 0.25 - 0.125 * i / 7), source=uri)
        c.add_record(PAPER_TRADE, "BTCUSDT", (T0 + 30_000, 1, 0), (0.01, 100.5, 0.0005), source="models:/a/1")
        c.add_record(PAPER_TRADE, "BTCUSDT", (T0 + 90_000, -1, 1), (0.01, 100.25, 0.0004), source="models:/a/1")
    """)
    store = FeatureStore(tmp_path / "feature_store" / "offline")
    assert not list((tmp_path / "feature_store").rglob("*.parquet"))  # nothing was flushed before the kill
    c2 = MLDataCollector(storage_path=tmp_path / "ml_training", max_samples_per_file=50, source="sim", fsync=False)
    c2.recover()
    c2.close_sync()
    p = store.read_offline_table("predictions")
    t = store.read_offline_table("paper_trades")
    assert p.schema.equals(PREDICTIONS_SCHEMA, check_metadata=False)
    assert t.schema.equals(PAPER_TRADES_SCHEMA, check_metadata=False)
    order = np.lexsort((column_numpy(p, "timestamp"), column_numpy(p, "symbol").astype(str)))
    col = {name: column_numpy(p, name)[order] for name in p.column_names}
    assert p.num_rows == 14 and col["model_uri"].tolist() == ["models:/a/1"] * 7 + ["models:/b@champion"] * 7
    np.testing.assert_array_equal(col["timestamp"].astype(np.int64), np.tile(T0 + np.arange(7) * 30_000, 2))
    assert (col["horizon_s"] == 60).all() and col["predicted_direction"].tolist() == [i % 3 for i in range(7)] * 2
    np.testing.assert_allclose(col["prob_down"] + col["prob_neutral"] + col["prob_up"], 1.0, atol=1e-6)
    assert p.column("future_direction_60s").null_count == 14
    rows = t.drop(["timestamp"]).to_pylist()
    assert rows == [
        {"symbol": "BTCUSDT", "side": "buy", "qty": 0.01, "price": 100.5, "fee": 0.0005, "reason": "enter", "model_uri": "models:/a/1"},
        {"symbol": "BTCUSDT", "side": "sell", "qty": 0.01, "price": 100.25, "fee": 0.0004, "reason": "exit", "model_uri": "models:/a/1"},
    ]
    assert column_numpy(t, "timestamp").astype(np.int64).tolist() == [T0 + 30_000, T0 + 90_000]
    # a third start finds nothing left to write
    make(tmp_path).close_sync()
    assert store.read_offline_table("predictions").num_rows == 14 and store.read_offline_table("paper_trades").num_rows == 2


def test_interrupted_flush_is_completed_with_the_same_id(tmp_path):
    # A file where the legacy symbol folder belongs makes the legacy sink fail after parquet was written.
    (tmp_path / "ml_training").mkdir(parents=True)
    blocker = tmp_path / "ml_training" / "BTCUSDT"
    blocker.write_text("not a folder")
    out = run_and_kill(tmp_path, """
        collect(c, "BTCUSDT", 30)
        c.flush_all()
        c.wait_for_flushes()
        print(c.stats.flush_failures, c.buffered)
    """)
    assert out.split() == ["1", "30"]
    assert len(parquet_rows(tmp_path)) == 30  # the parquet sink was done before the crash
    blocker.unlink()
    c2 = make(tmp_path)
    assert c2.stats.recovered == 30
    c2.close_sync()
    assert len(parquet_rows(tmp_path)) == 30  # re-run under the same flush id: no duplicate file
    ts, _ = legacy_rows(tmp_path, "BTCUSDT")
    assert len(ts) == 30


def test_failing_sink_keeps_samples_and_retries(tmp_path):
    c = make(tmp_path, retry_delay_s=0.0)
    # A file where the sample group's folder belongs: the parquet sink fails until it is gone.
    group = tmp_path / "feature_store" / "offline" / "training_features"
    group.parent.mkdir(parents=True, exist_ok=True)
    group.write_text("in the way")
    collect(c, "BTCUSDT", 50)
    c.maybe_flush()
    c.wait_for_flushes()
    assert c.stats.flush_failures == 1 and c.buffered == 50 and c.stats.flushed == 0
    assert sum(v for _, v in c.metrics.samples("lobbot_flush_failures_total")) == 1
    group.unlink()
    c.maybe_flush()  # resubmits the failed job
    c.wait_for_flushes()
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
    run_and_kill(tmp_path, 'collect(c, "BTCUSDT", 5)')
    seg = sorted((tmp_path / "spool").glob("wal_*.log"))[-1]
    with open(seg, "ab") as fh:
        fh.write(b"\x10\x00\x00\x00garbage")
    c2 = MLDataCollector(storage_path=tmp_path / "ml_training", max_samples_per_file=50, source="sim", fsync=False)
    assert c2.recover() == 5
    c2.close_sync()
    assert len(parquet_rows(tmp_path)) == 5


def test_a_second_collector_on_the_same_data_is_refused(tmp_path):
    c = make(tmp_path)
    with pytest.raises(SpoolLockedError, match="another collector is already running"):
        MLDataCollector(storage_path=tmp_path / "ml_training", source="sim", fsync=False)
    c.close_sync()
    make(tmp_path).close_sync()  # free again once the first one closed


def test_relative_storage_path_is_relative_to_backend_not_cwd(tmp_path, monkeypatch):
    backend_dir = REPO / "backend"
    target = tmp_path / "data" / "ml_training"
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    c = MLDataCollector(storage_path=os.path.relpath(target, backend_dir), max_samples_per_file=5, source="sim", fsync=False)
    c.recover()
    collect(c, "BTCUSDT", 5)
    assert c.close_sync()
    assert len(list_batches(target, "BTCUSDT")) == 1
    assert len(FeatureStore(tmp_path / "data" / "feature_store" / "offline").read_offline_features("training_features")) == 5
    assert not any(elsewhere.iterdir())  # nothing was written relative to the current directory
