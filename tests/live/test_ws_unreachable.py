"""REST answers but the WebSocket never opens (a wrong URL or path, a blocked port): the start says so
in the one "Cannot reach the exchange" paragraph, naming the WebSocket URL, instead of reconnecting
silently for the whole run and ending with collected=0."""

from __future__ import annotations

import socket

import pytest

from backend.config import Settings
from backend.engine.bot import Bot, StartupError
from backend.testing.fake_bybit import FakeBybit


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("path_only", [False, True])
async def test_a_websocket_that_never_opens_ends_the_start_with_the_unreachable_paragraph(tmp_path, path_only):
    async with FakeBybit(["BTCUSDT"], seed=9, push_interval_s=0.05) as fake:
        # a closed port, or the fake's own host with a path it does not serve (HTTP 404 on upgrade)
        ws_url = f"{fake.rest_url.replace('http', 'ws')}/v5/no/such/path" if path_only \
            else f"ws://127.0.0.1:{_closed_port()}/v5/public/linear"
        settings = Settings(data_dir=tmp_path / "data", source="bybit-ws", symbols=["BTCUSDT"], interval=0.2,
                            max_iterations=5, BYBIT_REST_URL=fake.rest_url, BYBIT_WS_URL=ws_url,
                            http_timeout_s=2.0, http_max_retries=1, spool_fsync=False, use_legacy_format=False)
        bot = Bot(settings)
        with pytest.raises(StartupError) as err:
            await bot.run()
    text = str(err.value)
    assert text.startswith("Cannot reach the exchange: the 'bybit-ws' source failed to connect to ws://"), text
    assert "no WebSocket connection opened" in text and "BYBIT_WS_URL" in text, text
    assert bot.ticks == 0


async def test_a_dead_rest_endpoint_of_a_websocket_source_is_the_url_named(tmp_path):
    """A WebSocket source asks REST first (symbols, clock, candles): when that fails, the paragraph
    names the REST URL the user set, not the WebSocket one."""
    rest = f"http://127.0.0.1:{_closed_port()}"
    settings = Settings(data_dir=tmp_path / "data", source="bybit-ws", symbols=["BTCUSDT"], interval=0.2,
                        max_iterations=5, BYBIT_REST_URL=rest, BYBIT_WS_URL="ws://127.0.0.1:9/v5/public/linear",
                        http_timeout_s=1.0, http_max_retries=0, spool_fsync=False, use_legacy_format=False)
    bot = Bot(settings)
    with pytest.raises(StartupError) as err:
        await bot.run()
    text = str(err.value)
    assert text.startswith(f"Cannot reach the exchange: the 'bybit-ws' source failed to connect to {rest} "), text
    assert "ws://127.0.0.1:9" not in text
