"""A full disk under a running bot: it survives, says so once, and resumes by itself when space returns.

The data dir (spool, store, legacy batches) sits on a small tmpfs that the test fills with a
filler file; deleting the filler gives the space back. Needs root to mount (CI runs as root).
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest

from tests.collector.bot_helpers import assert_formats_identical, start_bot, stats_lines

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root (CI runs as root)")


@pytest.fixture
def small_disk(tmp_path):
    mnt = tmp_path / "disk"
    mnt.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.strip()}")
    # a reserve taken before the bot starts: deleting it always gives space back, even when the bot
    # (fast, many small files) fills the disk before the test's own filler does
    with open(mnt / "filler", "wb") as f:
        f.write(b"\0" * (8 << 20))
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _wait_for(log: Path, proc, predicate, what: str, timeout_s: float = 120.0) -> str:
    deadline = time.monotonic() + timeout_s
    while True:
        text = log.read_text()
        if predicate(text):
            return text
        assert proc.poll() is None, f"the bot exited while waiting for {what}:\n{text[-3000:]}"
        assert time.monotonic() < deadline, f"no {what} within {timeout_s:.0f} s:\n{text[-3000:]}"
        time.sleep(0.05)


def _fill(mnt: Path) -> Path:
    filler = mnt / "filler"  # the fixture's reserve, grown until the disk is full
    # unbuffered: a buffered file keeps the bytes its last write could not place and raises
    # ENOSPC again when it is closed (the intermittent failure at this line)
    with open(filler, "ab", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 65536)
        except OSError:
            pass
    return filler


def _outage_then_space(log: Path, proc, filler: Path, text: str, during=lambda: None) -> None:
    """From the bot's report of the full disk: it keeps collecting, ``during()`` is checked, the
    filler is deleted, and the bot says it persists again; then SIGTERM."""
    try:
        before = stats_lines(text)[-1]["collected"]
        _wait_for(log, proc, lambda t: stats_lines(t)[-1]["collected"] > before + 20, "collection during the outage")
        during()
        _give_space_back(log, proc, filler)
    finally:
        _terminate(proc)


def _give_space_back(log: Path, proc, filler: Path) -> None:
    """Delete the filler and wait until the bot says it persists again."""
    filler.unlink()
    _wait_for(log, proc, lambda t: "Persisting again" in t or "takes writes again" in t, "resumption")
    time.sleep(0.5)


def _terminate(proc) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=120)


def _assert_clean_exit_said_once(out: str, proc) -> None:
    assert proc.returncode == 0, out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    assert out.count("CANNOT PERSIST") == 1  # said once
    assert "Disk: could not persist" in out and "ENOSPC" in out


def test_bot_survives_a_full_disk_and_stores_every_collected_row_once(small_disk, tmp_path):
    data = small_disk / "data"
    log = tmp_path / "bot.log"
    proc = start_bot(data, "--source", "sim", "--fast", "--duration", "30d", "--symbols", "BTCUSDT,ETHUSDT",
                     "--sim-start", "2025-11-07T00:00:00Z", "--stats-interval", "50", "--max-samples-per-file", "40",
                     "--interval", "3", log_path=log)
    try:
        _wait_for(log, proc, lambda t: len(stats_lines(t)) >= 2, "statistics line")
        filler = _fill(small_disk)
        text = _wait_for(log, proc, lambda t: "CANNOT PERSIST" in t, "report of the full disk")
    except BaseException:
        proc.kill()
        proc.wait(timeout=120)
        raise
    _outage_then_space(log, proc, filler, text)  # it keeps collecting while nothing can be written
    out = log.read_text()
    _assert_clean_exit_said_once(out, proc)
    final = stats_lines(out)[-1]
    df = assert_formats_identical(data)
    assert not df.duplicated(["symbol", "timestamp"]).any()
    assert len(df) == final["collected"] == final["flushed"] and final["buffered"] == 0
    assert "All collected samples are on disk." in out


def test_bot_started_on_a_full_disk_keeps_collecting_and_stores_every_row_once(small_disk, tmp_path):
    """An earlier run left its rows in the spool; the disk is full before the bot starts.

    The bot must start, say once that it cannot persist, collect into memory, keep the old
    segment (its rows are not yet anywhere else), and once space returns write the
    recovered rows and the new ones exactly once.
    """
    data = small_disk / "data"
    # run 1: collects into the spool only (files of 100000 samples), then dies without a word
    first_log = tmp_path / "first.log"
    first = start_bot(data, "--source", "sim", "--fast", "--duration", "30d", "--symbols", "BTCUSDT,ETHUSDT",
                      "--sim-start", "2025-11-07T00:00:00Z", "--stats-interval", "50",
                      "--max-samples-per-file", "100000", "--interval", "3", log_path=first_log)
    try:
        _wait_for(first_log, first, lambda t: len(stats_lines(t)) >= 2 and stats_lines(t)[-1]["collected"] >= 30,
                  "samples in the first run")
    finally:
        first.kill()
        first.wait(timeout=60)
    segments = sorted((data / "spool").glob("wal_*.log"))
    assert segments, "the first run left no spool"
    # the fast simulator writes ~0.35 MB of spool a second; under a loaded machine the kill can come late,
    # so the disk is large enough for minutes of it, and the test says so if it still filled up
    free = os.statvfs(small_disk)
    assert free.f_bavail * free.f_frsize > 1 << 20, f"the first run filled the disk before it was killed: {first_log.read_text()[-1500:]}"

    filler = _fill(small_disk)
    log = tmp_path / "bot.log"
    proc = start_bot(data, "--source", "sim", "--fast", "--duration", "30d", "--symbols", "BTCUSDT,ETHUSDT",
                     "--sim-start", "2025-11-20T00:00:00Z", "--stats-interval", "50", "--max-samples-per-file", "40",
                     "--interval", "3", log_path=log)
    try:
        text = _wait_for(log, proc, lambda t: "CANNOT PERSIST" in t and len(stats_lines(t)) >= 2,
                         "report of the full disk")
    except BaseException:
        proc.kill()
        proc.wait(timeout=120)
        raise

    def segments_kept() -> None:  # nothing could be written: the earlier run's segments are all still there
        assert all(p.exists() for p in segments)

    _outage_then_space(log, proc, filler, text, segments_kept)
    out = log.read_text()
    _assert_clean_exit_said_once(out, proc)
    recovered = re.search(r"Spool recovery: (\d+) samples recovered", out)
    assert recovered and int(recovered.group(1)) > 0, out[-3000:]
    final = stats_lines(out)[-1]
    df = assert_formats_identical(data)
    assert not df.duplicated(["symbol", "timestamp"]).any()
    # the first run flushed nothing: every stored sample was counted as collected by this run
    assert len(df) == final["collected"] == final["flushed"] and final["buffered"] == 0
    assert (df["timestamp"] < pd.Timestamp("2025-11-20", tz="UTC")).sum() == int(recovered.group(1))
    assert "All collected samples are on disk." in out
    assert not list((data / "spool").glob("wal_*.log"))


def test_past_the_memory_cap_during_an_outage_drops_are_counted_by_reason_and_the_rest_stored_once(small_disk, caplog):
    """In-process, on the full tmpfs: the collector holds rows up to its memory cap, drops the
    oldest queued flushes past it, counts them by reason (metric and summary lines), stays
    under the cap, and once space returns stores every row it did not drop, exactly once."""
    import numpy as np

    from backend.ml_engine.data_collection import MLDataCollector
    from backend.ml_engine.feature_store.feature_store import FeatureStore

    t0 = 1_762_473_600_000
    c = MLDataCollector(storage_path=small_disk / "data" / "ml_training", max_samples_per_file=50, source="sim",
                        fsync=False, max_buffer_memory_mb=1.0, retry_delay_s=0.05)
    c.recover()
    filler = _fill(small_disk)
    caplog.set_level(logging.ERROR, logger="backend.ml_engine.data_collection")
    for i in range(3000):
        for sym in ("BTCUSDT", "ETHUSDT"):
            assert c.collect_sample(sym, np.full(110, i % 7, np.float32), t0 + i * 30_000, 100.0 + i * 0.01)
        c.maybe_flush()
        assert c.memory_bytes <= c.max_buffer_bytes
    dropped = c.dropped
    assert set(dropped) == {"memory_cap_not_persisted"} and dropped["memory_cap_not_persisted"] > 0
    n_dropped = dropped["memory_cap_not_persisted"]
    assert c.metrics.value("lobbot_rows_dropped_total", stream="sample", reason="memory_cap_not_persisted") == n_dropped
    lines = c.persistence_lines()
    assert lines[0].startswith("Disk: could not persist") and "ENOSPC" in lines[0] and "still failing" in lines[0]
    assert lines[1] == f"Dropped rows by reason: memory_cap_not_persisted={n_dropped}"

    assert c.metrics.value("lobbot_persisting") == 0
    filler.unlink()
    deadline = time.monotonic() + 60
    while c.metrics.value("lobbot_persisting") != 1:  # resumes by itself: a later probe succeeds
        assert time.monotonic() < deadline, c.persistence_lines()
        c.maybe_flush()
        time.sleep(0.06)
    assert c.close_sync()  # the held rows' flushes, then the rest
    assert "resumed by itself" in c.persistence_lines()[0]
    # many flushes were dropped, but the log says it once at once and the rest summed when the outage ended,
    # and the lines add up to the count
    said = [r.getMessage() for r in caplog.records if "past the memory cap" in r.getMessage()]
    assert len(said) == 2 and "at most every 60 s" in said[0], said
    assert sum(int(re.search(r"Dropped (\d+) sample rows", m).group(1)) for m in said) == n_dropped
    assert n_dropped > 10 * 50  # more than ten 50-row flushes: one line each would have flooded the log
    df = FeatureStore(small_disk / "data" / "feature_store" / "offline").read_offline_features("training_features")
    assert not df.duplicated(["symbol", "timestamp"]).any()
    assert len(df) + n_dropped == c.stats.collected == 6000 and c.stats.flushed == len(df)


def test_bot_that_drops_rows_past_its_cap_says_so_and_exits_1(small_disk, tmp_path):
    """A long outage with a small memory cap: the bot drops the oldest held rows, counts them by
    reason in the summary, and its exit status is 1 (rows were lost), while every row it did not
    drop is on disk exactly once."""
    data = small_disk / "data"
    log = tmp_path / "bot.log"
    proc = start_bot(data, "--source", "sim", "--fast", "--duration", "30d", "--symbols", "BTCUSDT,ETHUSDT",
                     "--sim-start", "2025-11-07T00:00:00Z", "--stats-interval", "50", "--max-samples-per-file", "40",
                     "--interval", "3", "--max-buffer-memory-mb", "0.5", log_path=log)
    try:
        _wait_for(log, proc, lambda t: len(stats_lines(t)) >= 2, "statistics line")
        filler = _fill(small_disk)
        _wait_for(log, proc, lambda t: "CANNOT PERSIST" in t, "report of the full disk")
        _wait_for(log, proc, lambda t: "past the memory cap" in t, "rows dropped past the cap", timeout_s=240)
        _give_space_back(log, proc, filler)
    finally:
        _terminate(proc)
    out = log.read_text()
    assert proc.returncode == 1, out[-3000:]
    assert "Traceback" not in out and out.count("CANNOT PERSIST") == 1, out[-3000:]
    m = re.search(r"Dropped rows by reason: memory_cap_not_persisted=(\d+)", out)
    assert m, out[-3000:]
    final = stats_lines(out)[-1]
    df = assert_formats_identical(data)
    assert not df.duplicated(["symbol", "timestamp"]).any()
    dropped_samples = sum(int(n) for n in re.findall(r"Dropped (\d+) sample rows past the memory cap", out))
    assert dropped_samples > 0 and len(df) + dropped_samples == final["collected"] == final["flushed"] + dropped_samples
    assert int(m.group(1)) >= dropped_samples  # the summary counts every stream's rows
    # the summary tells the truth: not "all on disk"
    assert "All collected samples are on disk." not in out
    assert f"Not every collected row is on disk: {m.group(1)} were dropped past the memory cap" in out
