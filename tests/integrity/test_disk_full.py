"""A full disk under a running bot: it survives, says so once, and resumes by itself when space returns.

The data dir (spool, store, legacy batches) sits on a small tmpfs that the test fills with a
filler file; deleting the filler gives the space back. Needs root to mount (CI runs as root).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.collector.bot_helpers import assert_formats_identical, start_bot, stats_lines

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root (CI runs as root)")


@pytest.fixture
def small_disk(tmp_path):
    mnt = tmp_path / "disk"
    mnt.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.strip()}")
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
    filler = mnt / "filler"
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    return filler


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
        # it keeps collecting while nothing can be written
        before = stats_lines(text)[-1]["collected"]
        _wait_for(log, proc, lambda t: stats_lines(t)[-1]["collected"] > before + 20, "collection during the outage")
        filler.unlink()
        _wait_for(log, proc, lambda t: "Persisting again" in t or "takes writes again" in t, "resumption")
        time.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
    out = log.read_text()
    assert proc.returncode == 0, out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    assert out.count("CANNOT PERSIST") == 1  # said once
    assert "Disk: could not persist" in out and "ENOSPC" in out
    final = stats_lines(out)[-1]
    df = assert_formats_identical(data)
    assert not df.duplicated(["symbol", "timestamp"]).any()
    assert len(df) == final["collected"] == final["flushed"] and final["buffered"] == 0
    assert "All collected samples are on disk." in out
