"""A WebSocket source recording raw events says at start what the delta form costs on disk."""

from __future__ import annotations

import logging

import pytest

from backend.config import Settings
from backend.engine.bot import RAW_DELTA_MB_PER_SYMBOL_DAY, Bot
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
