"""A run whose every symbol is delisted stops with a clear error instead of ticking on with none."""

from __future__ import annotations

import asyncio
import logging

from backend.config import Settings
from backend.engine.bot import Bot
from backend.testing.fake_bybit import FakeBybit


async def test_every_symbol_delisted_stops_the_run_with_exit_1(tmp_path, caplog):
    async with FakeBybit(["BTCUSDT", "ETHUSDT"], seed=7, push_interval_s=0.05) as fake:
        settings = Settings(data_dir=tmp_path / "data", source="bybit-ws", symbols=["BTCUSDT", "ETHUSDT"],
                            instruments_refresh_s=0.3, interval=0.1, collection_interval=1, max_iterations=600,
                            BYBIT_REST_URL=fake.rest_url, BYBIT_WS_URL=fake.ws_url, http_timeout_s=2.0,
                            http_max_retries=1, spool_fsync=False, use_legacy_format=False)
        bot = Bot(settings)
        run = asyncio.ensure_future(bot.run())
        for _ in range(200):  # in the tick loop: the tape has rows
            await asyncio.sleep(0.05)
            if bot.ticks >= 3:
                break
        fake.delist("BTCUSDT")
        fake.delist("ETHUSDT")
        with caplog.at_level(logging.ERROR, logger="backend.engine.bot"):
            code = await asyncio.wait_for(run, 30)
    assert code == 1
    assert bot.ticks < 600  # it stopped instead of running out its ticks with no symbol
    assert set(bot.left) == {"BTCUSDT", "ETHUSDT"} and bot.symbols == []
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("Every symbol has left the run" in e and "BTCUSDT" in e for e in errors), errors
    assert any("All collected samples are on disk." in line for line in bot.summary), bot.summary
