"""A WebSocket source recording raw events says at start what the delta form costs on disk."""

from __future__ import annotations

import logging

import pytest

from backend.config import Settings
from backend.engine.bot import RAW_DELTA_MB_PER_SYMBOL_DAY, Bot, raw_disk_warning
from backend.testing.fake_bybit import FakeBybit


@pytest.mark.parametrize("record", [None, False])
async def test_start_says_the_raw_events_disk_cost_unless_recording_is_off(tmp_path, caplog, record):
    async with FakeBybit(["BTCUSDT", "ETHUSDT"], seed=11, push_interval_s=0.05) as fake:
        settings = Settings(data_dir=tmp_path / "data", source="bybit-ws", symbols=["BTCUSDT", "ETHUSDT"],
                            interval=0.1, collection_interval=1, max_iterations=2, record_raw=record,
                            BYBIT_REST_URL=fake.rest_url, BYBIT_WS_URL=fake.ws_url, http_timeout_s=2.0,
                            http_max_retries=1, spool_fsync=False, use_legacy_format=False)
        with caplog.at_level(logging.INFO, logger="backend.engine.bot"):
            assert await Bot(settings).run() == 0
    notes = [r.getMessage() for r in caplog.records if "Recording raw events" in r.getMessage()]
    if record is False:
        assert notes == []
    else:
        gb = 2 * RAW_DELTA_MB_PER_SYMBOL_DAY / 1000
        assert len(notes) == 1 and f"for 2 symbols: up to about {gb:.1f} GB a day" in notes[0], notes
        assert "--no-record-raw" in notes[0]


def test_raw_disk_warning_forecasts_days_of_free_space(tmp_path):
    per_symbol_day = RAW_DELTA_MB_PER_SYMBOL_DAY * 1e6
    # 500 symbols = 75 GB a day: 100 GB free lasts about 1.3 days -> a warning naming the folder and the way out
    text = raw_disk_warning(500, int(100e9), tmp_path)
    assert text is not None and str(tmp_path) in text and "--no-record-raw" in text
    assert "about 1.3 days" in text and "75.0 GB a day" in text
    # exactly seven days of space is enough; a byte less is not
    assert raw_disk_warning(3, int(3 * per_symbol_day * 7), tmp_path) is None
    assert raw_disk_warning(3, int(3 * per_symbol_day * 7) - 1, tmp_path) is not None
    assert raw_disk_warning(0, 0, tmp_path) is None and raw_disk_warning(5, None, tmp_path) is None


@pytest.fixture
def small_disk(tmp_path):
    """A 64 MB tmpfs as the data dir's filesystem (needs root; CI runs as root)."""
    import os
    import subprocess

    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (CI runs as root)")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


async def test_start_warns_when_raw_events_would_fill_the_disk_within_a_week(small_disk, caplog):
    data = small_disk / "data"  # 64 MB free: two symbols' raw events (300 MB a day) fill it in hours
    async with FakeBybit(["BTCUSDT", "ETHUSDT"], seed=11, push_interval_s=0.05) as fake:
        settings = Settings(data_dir=data, source="bybit-ws", symbols=["BTCUSDT", "ETHUSDT"],
                            interval=0.1, collection_interval=1, max_iterations=2,
                            BYBIT_REST_URL=fake.rest_url, BYBIT_WS_URL=fake.ws_url, http_timeout_s=2.0,
                            http_max_retries=1, spool_fsync=False, use_legacy_format=False)
        with caplog.at_level(logging.INFO, logger="backend.engine.bot"):
            assert await Bot(settings).run() == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "would fill" in r.getMessage()]
    assert len(warnings) == 1 and str(data) in warnings[0] and "--no-record-raw" in warnings[0], warnings
