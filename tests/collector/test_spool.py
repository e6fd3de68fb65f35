"""The versioned spool: segments of another feature version, round-1 segments, rotation without rewrites."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from backend.contracts.versions import FEATURE_VERSIONS, current_feature_version
from backend.ml_engine.data_collection import MLDataCollector
from backend.ml_engine.data_collection.records import RowLayout, StreamKey
from backend.ml_engine.data_collection.spool import Spool
from backend.ml_engine.data_collection.spool_format import REC_ROW, ROW_HEAD, encode_key, frame_v2
from backend.ml_engine.data_collection.streams import default_streams
from backend.ml_engine.feature_store.feature_schema import FEATURE_NAMES
from backend.ml_engine.feature_store.feature_store import FeatureStore

from .test_ml_data_collector import T0, collect, features, make, parquet_rows, run_and_kill


def _layouts(width: int) -> dict[str, RowLayout]:
    specs = default_streams(sample_group="training_features", max_samples_per_file=50, collection_interval=10)
    out = {n: s.layout for n, s in specs.items()}
    out["sample"] = RowLayout(out["sample"].ints, out["sample"].floats, width)
    return out


def _write_other_build_spool(folder: Path, width: int, samples: int, tape: int) -> None:
    """A spool as a build with ``width`` features leaves it when killed: samples and tape rows, no flush."""
    names = tuple(FEATURE_NAMES[:width]) if width <= len(FEATURE_NAMES) else FEATURE_NAMES + tuple(
        f"new_feature_{i}" for i in range(width - len(FEATURE_NAMES)))
    sp = Spool(folder, _layouts(width), fsync=False, feature_version=2 if width > 110 else 0, feature_names=names)
    sp.begin(sp.recover())
    for i in range(samples):
        vec = np.full(width, i, np.float32)
        sp.append_row(StreamKey("sample", "BTCUSDT", "sim"), i, (T0 + i * 30_000, T0), (100.0 + i,), vec)
    for i in range(tape):
        sp.append_row(StreamKey("tape", "BTCUSDT", "sim"), i, (T0 + i * 3000,), (100.0 + i, 99.9 + i, 100.1 + i))
    sp.close()


@pytest.mark.parametrize("width", [111, 109])
def test_spool_of_another_feature_count_is_set_aside_intact_and_the_bot_starts(tmp_path, width, caplog):
    spool = tmp_path / "spool"
    _write_other_build_spool(spool, width, samples=20, tape=30)
    originals = {p.name: p.read_bytes() for p in spool.glob("wal_*.log")}
    assert originals
    with caplog.at_level(logging.WARNING, logger="backend.ml_engine.data_collection"):
        c = MLDataCollector(storage_path=tmp_path / "ml_training", max_samples_per_file=50, source="sim", fsync=False)
        assert c.recover() == 0  # no sample of another feature version becomes a training row
    aside = [p for p in spool.iterdir() if p.name.startswith(".incompatible-")]
    assert len(aside) == 1
    # the set-aside segments are byte-identical to what the other build wrote; nothing is truncated
    assert {p.name: p.read_bytes() for p in aside[0].glob("wal_*.log")} == originals
    assert f"{width} features" in (aside[0] / "REASON.txt").read_text()
    assert str(aside[0]) in caplog.text and "20 sample rows" in caplog.text
    # the tape, which does not depend on the features, was recovered
    tape = FeatureStore(tmp_path / "feature_store" / "offline").read_offline_features("price_tape")
    assert sorted(tape["mid_price"].tolist()) == [100.0 + i for i in range(30)]
    # and collection goes on as usual
    collect(c, "BTCUSDT", 60)
    c.maybe_flush()
    assert c.close_sync()
    df = parquet_rows(tmp_path)
    assert len(df) == 60
    np.testing.assert_array_equal(df[list(FEATURE_NAMES)].to_numpy(np.float32)[59], features(59))
    # a later start does not touch the set-aside folder again
    c2 = make(tmp_path)
    c2.close_sync()
    assert {p.name: p.read_bytes() for p in aside[0].glob("wal_*.log")} == originals


def test_round_1_spool_without_header_is_recovered(tmp_path):
    """A segment as round 1 wrote it (no header; 110-feature ROW records) is still read."""
    spool = tmp_path / "spool"
    spool.mkdir()
    key = StreamKey("sample", "ETHUSDT", "sim")
    lay = _layouts(110)["sample"]
    records = [frame_v2(encode_key(1, key))]
    for i in range(7):
        body = ROW_HEAD.pack(REC_ROW, 1, i) + lay.packer.pack(T0 + i * 30_000, T0, 50.0 + i) + features(i).tobytes()
        records.append(frame_v2(body))
    (spool / "wal_00000003.log").write_bytes(b"".join(records))
    c = make(tmp_path)
    assert c.stats.recovered == 7
    c.close_sync()
    df = parquet_rows(tmp_path)
    assert len(df) == 7 and df["mid_price"].tolist() == [50.0 + i for i in range(7)]
    np.testing.assert_array_equal(df[list(FEATURE_NAMES)].to_numpy(np.float32)[3], features(3))
    assert not list(spool.glob(".incompatible-*"))


def test_current_feature_version_is_in_the_history():
    now = current_feature_version()
    assert FEATURE_VERSIONS[now.version] == now


def _spool_bytes(tmp_path: Path) -> int:
    return sum(p.stat().st_size for p in (tmp_path / "spool").glob("wal_*.log"))


def test_rotation_rewrites_no_row_and_drops_segments_once_flushed(tmp_path):
    c = make(tmp_path, max_samples_per_file=1000, spool_segment_bytes=20_000)
    collect(c, "BTCUSDT", 30)
    for i in range(20):
        c.add_tape("BTCUSDT", T0 + i * 3000, 100.0 + i, 99.9 + i, 100.1 + i)
    before = _spool_bytes(tmp_path)
    old = set((tmp_path / "spool").glob("wal_*.log"))
    c.checkpoint()
    # the unflushed rows stay where they are: the new segment holds a header and a small state record
    assert _spool_bytes(tmp_path) - before < 10_000
    assert old < set((tmp_path / "spool").glob("wal_*.log"))
    c.flush_all()
    c.wait_for_flushes()
    c.checkpoint()
    assert not (old & set((tmp_path / "spool").glob("wal_*.log")))  # every row in them is written: gone
    assert c.metrics.value("lobbot_spool_bytes") == _spool_bytes(tmp_path)
    c.close_sync()


def test_kill_9_across_rotations_recovers_every_row_once(tmp_path):
    # a segment limit of a few rows: the loop's maybe_flush rotates on the maintenance thread over and over,
    # while flushes of 40 samples complete and a quiet symbol keeps old segments pinned
    run_and_kill(tmp_path, """
        for i in range(400):
            assert c.collect_sample("BTCUSDT", features(i), T0 + i * 30_000, 100.0 + i)
            if i % 25 == 0:
                assert c.collect_sample("ETHUSDT", features(i), T0 + i * 30_000, 100.0 + i)
            c.add_tape("BTCUSDT", T0 + i * 3000, 100.0, 99.9, 100.1)
            c.maybe_flush()
            if i % 50 == 0:
                c.wait_for_flushes()
                c.checkpoint()
        c.wait_for_flushes()
        c.maybe_flush()
        c.wait_for_flushes()
        print(c.stats.flushed)
    """, max_samples_per_file=40, spool_segment_bytes=8_000)
    segments = list((tmp_path / "spool").glob("wal_*.log"))
    # old segments were dropped or compacted as they were written: far fewer than were opened
    assert _spool_bytes(tmp_path) < 400 * 500
    c = make(tmp_path, max_samples_per_file=40)
    c.close_sync()
    df = parquet_rows(tmp_path)
    assert not df.duplicated(["symbol", "timestamp"]).any()
    assert (df["symbol"] == "BTCUSDT").sum() == 400 and (df["symbol"] == "ETHUSDT").sum() == 16
    tape = FeatureStore(tmp_path / "feature_store" / "offline").read_offline_features("price_tape")
    assert len(tape) == 400 and not tape.duplicated(["symbol", "timestamp"]).any()
    assert segments  # the child left a spool to recover


def test_begin_on_a_full_disk_keeps_the_old_segments_and_finishes_later(tmp_path, monkeypatch):
    """A full disk at start-up: ``begin`` raises, leaves no new segment, deletes nothing; ``finish_begin`` completes."""
    import errno
    import os

    from backend.ml_engine.data_collection import spool as spool_module

    folder = tmp_path / "spool"
    layouts = _layouts(len(FEATURE_NAMES))
    key = StreamKey("sample", "BTCUSDT", "sim")
    sp = Spool(folder, layouts, fsync=False)
    sp.begin(sp.recover())
    for i in range(12):
        sp.append_row(key, i, (T0 + i * 30_000, T0), (100.0 + i,), np.full(len(FEATURE_NAMES), i, np.float32))
    sp.close()
    originals = {p.name: p.read_bytes() for p in folder.glob("wal_*.log")}

    real_write = os.write
    full = {"on": True}

    def write(fd, data):
        if full["on"]:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(spool_module.os, "write", write)
    sp = Spool(folder, layouts, fsync=False)
    with pytest.raises(OSError):
        sp.begin(sp.recover())
    assert not sp.started
    assert {p.name: p.read_bytes() for p in folder.glob("wal_*.log")} == originals  # nothing new, nothing gone
    with pytest.raises(OSError):  # appends are refused, never a TypeError
        sp.append_row(key, 12, (T0, T0), (100.0,), np.zeros(len(FEATURE_NAMES), np.float32))
    with pytest.raises(OSError):  # still full: a retry changes nothing either
        sp.finish_begin()
    assert {p.name: p.read_bytes() for p in folder.glob("wal_*.log")} == originals
    full["on"] = False
    sp.finish_begin()
    assert sp.started
    sp.close()
    left = list(folder.glob("wal_*.log"))
    assert len(left) == 1 and left[0].name not in originals
    rows = Spool(folder, layouts, fsync=False).recover().rows[key]
    assert rows.seq.tolist() == list(range(12))


def test_close_before_begin_finished_keeps_the_old_segments(tmp_path, monkeypatch):
    """``close(remove_segments=True)`` while ``begin`` never completed deletes nothing."""
    import errno

    from backend.ml_engine.data_collection import spool as spool_module

    folder = tmp_path / "spool"
    layouts = _layouts(len(FEATURE_NAMES))
    sp = Spool(folder, layouts, fsync=False)
    sp.begin(sp.recover())
    sp.append_row(StreamKey("tape", "BTCUSDT", "sim"), 0, (T0,), (100.0, 99.9, 100.1))
    sp.close()
    originals = {p.name: p.read_bytes() for p in folder.glob("wal_*.log")}

    def write(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(spool_module.os, "write", write)
    sp = Spool(folder, layouts, fsync=False)
    with pytest.raises(OSError):
        sp.begin(sp.recover())
    monkeypatch.undo()
    sp.close(remove_segments=True)
    assert {p.name: p.read_bytes() for p in folder.glob("wal_*.log")} == originals


async def test_bot_starts_and_collects_over_a_spool_of_another_feature_count(tmp_path):
    """The whole bot (``python -m backend.main``'s ``Bot``), not only the collector, starts."""
    from backend.config import Settings
    from backend.engine.bot import Bot

    data = tmp_path / "data"
    _write_other_build_spool(data / "spool", 111, samples=20, tape=30)
    originals = {p.name: p.read_bytes() for p in (data / "spool").glob("wal_*.log")}
    bot = Bot(Settings(data_dir=data, source="sim", symbols=["BTCUSDT"], fast=True, sim_start="2025-11-07T06:00:00Z",
                       seed=1, collection_interval=10, max_iterations=400, spool_fsync=False))
    assert await bot.run() == 0, bot.summary
    aside = [p for p in (data / "spool").iterdir() if p.name.startswith(".incompatible-")]
    assert len(aside) == 1
    assert {p.name: p.read_bytes() for p in aside[0].glob("wal_*.log")} == originals
    store = FeatureStore(data / "feature_store" / "offline")
    samples = store.read_offline_features("training_features")
    # only this run's samples, with this build's 110 features: none came from the 111-feature spool
    assert len(samples) == bot.ml_data_collector.stats.collected > 0
    assert samples[list(FEATURE_NAMES)].notna().all().all()
    # the spool's tape rows (which do not depend on the features) were recovered beside the run's own
    tape = store.read_offline_features("price_tape")
    spooled = tape["timestamp"] < pd.Timestamp(T0 + 30 * 3000, unit="ms", tz="UTC")  # the run starts hours later
    assert sorted(tape["mid_price"][spooled].tolist()) == [100.0 + i for i in range(30)]


def test_short_writes_are_completed_and_a_torn_append_is_taken_back(tmp_path, monkeypatch):
    """``os.write`` may write fewer bytes than asked: every record is still written whole. An
    append that fails half-way (ENOSPC after part of the record) is cut back, so the segment
    ends on a whole record and later appends decode with no damage."""
    import errno
    import os

    from backend.ml_engine.data_collection import spool as spool_module

    folder = tmp_path / "spool"
    layouts = _layouts(len(FEATURE_NAMES))
    key = StreamKey("sample", "BTCUSDT", "sim")
    real_write = os.write
    calls = {"n": 0, "fail_after": None}

    def write(fd, data):
        calls["n"] += 1
        if calls["fail_after"] is not None:
            if calls["fail_after"] == 0:
                calls["fail_after"] = None
                raise OSError(errno.ENOSPC, "No space left on device")
            calls["fail_after"] -= 1
        return real_write(fd, bytes(data[:7]))  # a short write: 7 bytes at most

    monkeypatch.setattr(spool_module.os, "write", write)
    sp = Spool(folder, layouts, fsync=False)
    sp.begin(sp.recover())
    vec = lambda i: np.full(len(FEATURE_NAMES), i, np.float32)  # noqa: E731
    for i in range(5):
        sp.append_row(key, i, (T0 + i * 30_000, T0), (100.0 + i,), vec(i))
    assert calls["n"] > 5 * 60  # each record took many short writes
    size = sp.segments()[-1].stat().st_size
    calls["fail_after"] = 10  # the next record: 70 bytes written, then the disk is full
    with pytest.raises(OSError):
        sp.append_row(key, 5, (T0 + 5 * 30_000, T0), (105.0,), vec(5))
    assert sp.segments()[-1].stat().st_size == size  # the torn part was taken back
    for i in range(6, 9):
        sp.append_row(key, i, (T0 + i * 30_000, T0), (100.0 + i,), vec(i))
    sp.close()
    monkeypatch.undo()
    rec = Spool(folder, layouts, fsync=False).recover()
    assert not rec.damage and rec.torn_records == 0
    cols = rec.rows[key]
    assert cols.seq.tolist() == [0, 1, 2, 3, 4, 6, 7, 8]
    assert cols.floats["mid"].tolist() == [100.0, 101.0, 102.0, 103.0, 104.0, 106.0, 107.0, 108.0]
    np.testing.assert_array_equal(cols.matrix[:, 0], [0, 1, 2, 3, 4, 6, 7, 8])
