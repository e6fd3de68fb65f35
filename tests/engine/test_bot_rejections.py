"""Acceptance: a Bybit source whose every book is rejected shows why, in the run summary and the registry.

The fake exchange speaks Bybit's real wire format and stamps every book a minute in the
past (a lagging matching engine) or in the future, on its own clock; the bot (the runtime
``Bot`` object, the same one ``python -m backend.main`` runs) must reject each book once,
in the engine, and say so. A WebSocket book on a live connection is current by liveness,
not age, so for ``bybit-ws`` only the future case can reject every book.
"""

import re

import pytest

from backend.config import Settings
from backend.engine.bot import Bot
from backend.testing.fake_bybit import FakeBybit

SYMS = ["BTCUSDT", "ETHUSDT"]
TICKS = 6


@pytest.mark.parametrize("source,lag_ms,reason", [("bybit", 60_000, "stale"), ("bybit", -60_000, "future_timestamp"),
                                                  ("bybit-ws", -60_000, "future_timestamp")])
async def test_every_book_rejected_is_counted_by_reason_in_summary_and_registry(tmp_path, source, lag_ms, reason):
    async with FakeBybit(SYMS, seed=3, push_interval_s=0.05, book_lag_ms=lag_ms) as fake:
        settings = Settings(data_dir=tmp_path / "data", source=source, symbols=SYMS, interval=0.1,
                            collection_interval=1, max_iterations=TICKS, max_book_age_s=15.0,
                            BYBIT_REST_URL=fake.rest_url, BYBIT_WS_URL=fake.ws_url,
                            http_timeout_s=2.0, http_max_retries=1, spool_fsync=False)
        bot = Bot(settings)
        assert await bot.run() == 0
    m = bot.metrics
    rejected = TICKS * len(SYMS)
    # the registry: every book, by symbol and reason
    for sym in SYMS:
        assert m.value("lobbot_books_rejected_total", symbol=sym, reason=reason) == TICKS
    assert m.total("lobbot_books_rejected_total") == rejected
    # the run summary the app prints
    summary = "\n".join(bot.summary)
    line = next(x for x in bot.summary if x.startswith("Run summary:"))
    assert re.search(rf"\bticks={TICKS}\b", line), line
    assert f"books_rejected={rejected} ({reason}={rejected})" in line, summary
    assert f"book_{reason}={rejected}" in summary  # and no sample was taken from them
    assert "collected=0" in bot.summary[0]
    # the statistics line says why beside the count, not only the exit summary
    stats = bot.statistics_line()
    assert f"skipped={rejected} " in stats and f" skipped_by=book_{reason}:{rejected} " in stats, stats
