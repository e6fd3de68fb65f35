"""The symbol universe (issues 12 and 13): ``--symbols all``, ``--symbols @FILE``, the instruments refresh
during a run (new listings join, delistings leave) and the REST source's width limit, against the fake Bybit.

The process tests run the bot (``python -m backend.main``) in a child process against the fake exchange
in the test's event loop, so the test lists and delists symbols while the bot runs. New symbols need 60 s
of trade feed before their first sample, longer than these runs, so "the new symbol is collected" is read
on its price-tape rows (one per accepted book per tick).
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from backend.config import configure, settings_error_text
from backend.metrics import Metrics
from backend.ml_engine.feature_store.feature_store import FeatureStore
from backend.symbols import SymbolsFileError, read_symbols_file
from backend.testing.fake_bybit import FakeBybit
from backend.venues.bybit.source import BybitRestSource, BybitWsSource, max_rest_symbols, rest_requests_per_5s
from backend.venues.source import VenueConfigError
from tests.live.helpers import REPO, env_for, run_bot

FAST = dict(backoff_base_s=0.01, backoff_max_s=0.05)


async def until(condition, bot: asyncio.Future, timeout: float = 60) -> None:
    """Wait for ``condition()`` while the bot runs; fail with its output if it ends first."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if bot.done():
            code, out = bot.result()
            raise AssertionError(f"the bot ended (exit {code}) before the change could be made:\n{out[-3000:]}")
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.05)


def tape_ms(data: Path) -> dict[str, np.ndarray]:
    df = FeatureStore(data / "feature_store" / "offline").read_offline_features("price_tape")
    stamps = df["timestamp"]
    if stamps.dt.tz is not None:
        stamps = stamps.dt.tz_convert("UTC").dt.tz_localize(None)
    ts = stamps.astype("datetime64[ms]").astype("int64").to_numpy()
    return {sym: np.sort(ts[(df["symbol"] == sym).to_numpy()]) for sym in df["symbol"].unique()}


def skip_reasons(out: str) -> dict[str, int]:
    line = next((x for x in out.splitlines() if x.startswith("Skipped samples by reason")), "")
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", line.split(":", 1)[-1])}


TICKS = 80  # 16 s at 0.2 s
RUN = ("--symbols", "all", "--instruments-refresh", "1s", "--interval", "0.2", "--collection-interval", "1",
       "--max-iterations", str(TICKS), "--stats-interval", "40")


@pytest.mark.slow
@pytest.mark.parametrize("source,leave", [("bybit-ws", "delist"), ("bybit", "closed")])
async def test_symbols_all_follows_a_listing_and_a_delisting_during_the_run(tmp_path, source, leave):
    """SOLUSDT is listed and ETHUSDT delisted (gone, or status Closed) while the bot runs: SOLUSDT joins
    (tape rows), ETHUSDT stops with one warning, BTCUSDT goes on, exit 0, summary true."""
    instruments = "rest:/v5/market/instruments-info"
    async with FakeBybit(["BTCUSDT", "ETHUSDT", "SOLUSDT"], seed=3, push_interval_s=0.05,
                         unlisted=["SOLUSDT"]) as fake:
        bot = asyncio.ensure_future(run_bot(tmp_path, env_for(fake, LOBBOT_WS_PING_INTERVAL_S="1"),
                                            "--source", source, *RUN))
        # the bot asked once at start; a second request is its first refresh: it is in its tick loop
        await until(lambda: fake.counts.get(instruments, 0) >= 2, bot)
        fake.list_symbol("SOLUSDT")
        if leave == "delist":
            fake.delist("ETHUSDT")
        else:
            fake.set_status("ETHUSDT", "Closed")  # market data goes on; instruments-info says it is over
        code, out = await bot
    assert code == 0 and "Traceback" not in out, out[-3000:]
    assert "every trading linear USDT perpetual" in out and "Bybit lists 2 trading linear USDT perpetuals" in out
    dropped = [x for x in out.splitlines() if "Dropped from this run" in x]
    assert len(dropped) == 1 and "ETHUSDT:" in dropped[0], out[-3000:]
    assert ("Closed" in dropped[0]) == (leave == "closed")
    assert re.search(r"New Bybit listing joins this run: SOLUSDT", out), out[-3000:]
    assert "Symbols: 2 at start, listed during the run: 1 (SOLUSDT), delisted: 1 (ETHUSDT)" in out, out[-3000:]
    assert "All collected samples are on disk." in out
    assert "delisted" not in skip_reasons(out)  # a dropped symbol leaves the run, it is not skipped every tick
    tape = tape_ms(tmp_path)
    # never the USDC perpetual or the dated future; ETHUSDT's rows buffered when it was dropped reached the disk
    assert set(tape) == {"BTCUSDT", "ETHUSDT", "SOLUSDT"}
    btc, eth, sol = tape["BTCUSDT"], tape["ETHUSDT"], tape["SOLUSDT"]
    assert len(btc) >= TICKS - 2  # the others went on, a book every tick
    assert len(sol) >= 20 and sol[0] > btc[0]  # joined during the run, then a book every tick
    assert (btc > eth[-1]).sum() >= 20  # ETHUSDT stopped; BTCUSDT ticked on for a while after it


async def test_listings_and_delistings_are_counted_in_the_registry(tmp_path):
    """The runtime ``Bot`` counts each symbol that joined or left in ``lobbot_symbol_changes_total``,
    labelled with the venue, equal to what its summary says."""
    from backend.config import Settings
    from backend.engine.bot import Bot

    async with FakeBybit(["BTCUSDT", "ETHUSDT", "SOLUSDT"], seed=6, push_interval_s=0.05,
                         unlisted=["SOLUSDT"]) as fake:
        settings = Settings(data_dir=tmp_path / "data", source="bybit-ws", symbols_all=True, symbols=[],
                            instruments_refresh_s=0.3, interval=0.2, collection_interval=1, max_iterations=60,
                            BYBIT_REST_URL=fake.rest_url, BYBIT_WS_URL=fake.ws_url, http_timeout_s=2.0,
                            http_max_retries=1, spool_fsync=False, use_legacy_format=False)
        bot = Bot(settings)
        run = asyncio.ensure_future(bot.run())
        await until(lambda: fake.counts.get("rest:/v5/market/instruments-info", 0) >= 2, run)
        fake.list_symbol("SOLUSDT")
        fake.delist("ETHUSDT")
        assert await run == 0
    m = bot.metrics
    assert m.value("lobbot_symbol_changes_total", venue="bybit", change="listed") == 1
    assert m.value("lobbot_symbol_changes_total", venue="bybit", change="delisted") == 1
    assert bot.joined == ["SOLUSDT"] and list(bot.left) == ["ETHUSDT"]


async def test_explicit_symbols_delisted_during_a_run_are_dropped_by_the_refresh():
    """Without ``all`` nothing joins, but the refresh still drops a delisted symbol; on the WebSocket its
    connection's other symbols go on, and a connection left with no symbol is closed."""
    async with FakeBybit(["BTCUSDT", "ETHUSDT", "SOLUSDT"], seed=4, push_interval_s=0.05) as fake:
        src = BybitWsSource(["BTCUSDT", "ETHUSDT"], ws_url=fake.ws_url, rest_url=fake.rest_url, timeout_s=1,
                            max_retries=1, refresh_s=0.2, metrics=Metrics(), **FAST)
        await src.start()
        try:
            fake.delist("ETHUSDT")
            for _ in range(40):
                await asyncio.sleep(0.1)
                snaps = await src.poll()
                if "ETHUSDT" in src.dropped:
                    break
            assert "no longer lists it" in src.dropped["ETHUSDT"]
            snaps = await src.poll()
            assert snaps["ETHUSDT"].reason == "delisted" and snaps["ETHUSDT"].book is None
            assert not snaps["ETHUSDT"].trades and not snaps["ETHUSDT"].candles
            assert snaps["BTCUSDT"].book is not None
            assert src.take_joined() == [] and src.symbols == ["BTCUSDT", "ETHUSDT"]  # SOLUSDT is not asked for
        finally:
            await src.close()


async def test_ws_source_with_all_symbols_opens_a_connection_for_new_listings():
    async with FakeBybit(["BTCUSDT", "ETHUSDT", "SOLUSDT"], seed=5, push_interval_s=0.05,
                         unlisted=["SOLUSDT"]) as fake:
        src = BybitWsSource([], ws_url=fake.ws_url, rest_url=fake.rest_url, timeout_s=1, max_retries=1,
                            all_symbols=True, refresh_s=0.2, metrics=Metrics(), **FAST)
        await src.start()
        try:
            assert src.symbols == ["BTCUSDT", "ETHUSDT"] and len(src.shards) == 1
            fake.list_symbol("SOLUSDT")
            joined: list[str] = []
            for _ in range(50):
                await asyncio.sleep(0.1)
                snaps = await src.poll()
                joined += src.take_joined()
                if joined and snaps["SOLUSDT"].book is not None:
                    break
            assert joined == ["SOLUSDT"] and src.listed == ["SOLUSDT"] and len(src.shards) == 2
            assert len(src.initial_candles("SOLUSDT")) == src.history_candles  # back-filled as at start
            assert snaps["SOLUSDT"].book is not None and snaps["BTCUSDT"].book is not None
            assert src.take_joined() == []  # handed over once
        finally:
            await src.close()


# --- @FILE --------------------------------------------------------------------------------------------------


def test_symbols_file_lists_symbols_and_ignores_comments_and_blank_lines(tmp_path):
    f = tmp_path / "universe.txt"
    f.write_text("# my universe\nBTCUSDT\n\n  ETHUSDT   # second\n1000PEPEUSDT\n", encoding="utf-8")
    assert read_symbols_file(f) == ["BTCUSDT", "ETHUSDT", "1000PEPEUSDT"]
    assert configure(symbols=f"@{f}").symbols == ["BTCUSDT", "ETHUSDT", "1000PEPEUSDT"]


@pytest.mark.parametrize("text,expected", [
    ("BTCUSDT\nbtc-usdt\n", "line 2: 'btc-usdt' is not a symbol"),
    ("BTCUSDT\nETHUSDT\nBTCUSDT\n", "line 3: BTCUSDT repeats line 1"),
    ("# nothing\n\n", "no symbols in it"),
])
def test_symbols_file_errors_name_the_file_and_line(tmp_path, text, expected):
    f = tmp_path / "syms.txt"
    f.write_text(text, encoding="utf-8")
    with pytest.raises(SymbolsFileError) as err:
        read_symbols_file(f)
    assert str(f) in str(err.value) and expected in str(err.value)
    with pytest.raises(ValidationError) as err:
        configure(symbols=f"@{f}")
    line = settings_error_text(err.value)
    assert line.startswith("symbols: symbols file") and expected in line and "\n" not in line


def test_symbols_file_missing(tmp_path):
    with pytest.raises(SymbolsFileError, match="cannot read it"):
        read_symbols_file(tmp_path / "absent.txt")


def test_a_bad_symbols_file_ends_the_bot_with_one_line(tmp_path):
    f = tmp_path / "syms.txt"
    f.write_text("BTCUSDT\nETH/USDT\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOBBOT_") and k != "DATA_DIR"}
    import subprocess
    res = subprocess.run([sys.executable, "-m", "backend.main", "--data-dir", str(tmp_path / "d"), "--symbols",
                          f"@{f}", "--max-iterations", "1"], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    errors = [x for x in res.stderr.splitlines() if "error:" in x]
    assert len(errors) == 1 and f"{f}, line 2: 'ETH/USDT' is not a symbol" in errors[0], res.stderr
    # named as the user gave it (option and variable), not pydantic's field and "Value error,"
    assert errors[0].startswith("error: invalid settings: --symbols (or LOBBOT_SYMBOLS): symbols file"), errors[0]
    assert "Value error" not in res.stderr


def test_a_symbols_file_saved_with_a_bom_reads_like_any_other(tmp_path):
    f = tmp_path / "syms.txt"
    f.write_bytes(b"\xef\xbb\xbfBTCUSDT\r\nETHUSDT\r\n")  # a Windows editor's UTF-8 with BOM and CRLF
    assert read_symbols_file(f) == ["BTCUSDT", "ETHUSDT"]


def test_symbols_all_is_for_the_bybit_sources_only():
    assert configure(symbols="all", source="bybit-ws").symbols_all
    assert configure(symbols=" ALL ", source="bybit").symbols == []
    for bad in (dict(source="sim"), dict(source="binance-ws"), dict(source="bybit-ws", model_uri="models:/m/1")):
        with pytest.raises(ValidationError) as err:
            configure(symbols="all", **bad)
        assert "--symbols all" in settings_error_text(err.value)
    assert configure(instruments_refresh_s="1d").instruments_refresh_s == 86_400
    assert configure(instruments_refresh_s="30s").instruments_refresh_s == 30
    with pytest.raises(ValidationError):
        configure(instruments_refresh_s="soon")


# --- REST width -------------------------------------------------------------------------------------------


def test_rest_request_arithmetic_of_the_docs():
    """The numbers in docs/data_collection.md, "Which source at which width"."""
    assert [round(rest_requests_per_5s(n, 3.0)) for n in (50, 200, 500)] == [171, 683, 1708]
    assert [round(rest_requests_per_5s(n, 1.0)) for n in (50, 200, 500)] == [504, 2017, 5042]
    assert max_rest_symbols(3.0) == 87 and max_rest_symbols(1.0) == 29
    assert rest_requests_per_5s(max_rest_symbols(3.0), 3.0) <= 300 < rest_requests_per_5s(max_rest_symbols(3.0) + 1, 3.0)


async def test_rest_at_500_symbols_is_refused_before_any_request_and_names_the_websocket_source():
    async with FakeBybit(["BTCUSDT"], seed=6) as fake:
        symbols = [f"S{i}USDT" for i in range(500)]
        src = BybitRestSource(symbols, rest_url=fake.rest_url, tick_interval_s=3.0, metrics=Metrics(), **FAST)
        with pytest.raises(VenueConfigError) as err:
            await src.start()
        await src.close()
        assert fake.counts.get("rest", 0) == 0  # nothing was sent
    text = str(err.value)
    assert "500 symbols" in text and "--source bybit-ws" in text and "at most 87 symbols" in text


async def test_rest_with_all_symbols_takes_new_listings_only_within_its_request_budget(caplog):
    """At 0.2 s a tick the REST source can poll 5 symbols within its budget: with 5 listed, a sixth
    listing is not taken (one warning); the WebSocket source would take it."""
    names = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "ADAUSDT", "DOGEUSDT"]
    assert max_rest_symbols(0.2) == 5
    async with FakeBybit(names, seed=7, unlisted=["DOGEUSDT"]) as fake:
        src = BybitRestSource([], rest_url=fake.rest_url, tick_interval_s=0.2, all_symbols=True, refresh_s=0.1,
                              timeout_s=1, max_retries=1, metrics=Metrics(), **FAST)
        await src.start()
        try:
            assert src.symbols == sorted(names[:5])
            fake.list_symbol("DOGEUSDT")
            for _ in range(30):
                await asyncio.sleep(0.1)
                await src.poll()
                if "DOGEUSDT" in caplog.text:
                    break
            assert src.take_joined() == [] and "DOGEUSDT" not in src.symbols
            assert caplog.text.count("New Bybit listing DOGEUSDT not collected") == 1
            assert "--source bybit-ws" in caplog.text
            # a delisting frees room: the next listing check takes it
            fake.delist("ADAUSDT")
            for _ in range(30):
                await asyncio.sleep(0.1)
                await src.poll()
                if "ADAUSDT" in src.dropped:
                    break
            assert "ADAUSDT" in src.dropped
            for _ in range(30):
                if "DOGEUSDT" in src.symbols:
                    break
                await asyncio.sleep(0.1)
                await src.poll()
            assert src.take_joined() == ["DOGEUSDT"] and len(src.active_symbols()) == 5
        finally:
            await src.close()


def test_fake_exchange_command_line_lists_and_delists_on_a_schedule(tmp_path):
    """The fake's process form (for runs outside a test's event loop): ``--unlisted`` symbols are listed
    ``--list-after`` seconds in, ``--delist-after S:SYMS`` delists; instruments-info pages follow."""
    import json
    import signal
    import subprocess
    import time
    import urllib.request

    port_file = tmp_path / "fake.json"
    proc = subprocess.Popen([sys.executable, "-m", "backend.testing.fake_bybit", "--symbols", "BTCUSDT,ETHUSDT,SOLUSDT",
                             "--unlisted", "SOLUSDT", "--list-after", "3", "--delist-after", "3:ETHUSDT",
                             "--port-file", str(port_file)], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)

    def listed(limit: int = 2) -> list[str]:
        out, cursor = [], ""
        while True:
            url = f"{info['rest_url']}/v5/market/instruments-info?category=linear&limit={limit}&cursor={cursor}"
            result = json.loads(urllib.request.urlopen(url, timeout=5).read())["result"]
            out += [r["symbol"] for r in result["list"] if r["quoteCoin"] == "USDT"
                    and r["contractType"] == "LinearPerpetual" and r["status"] == "Trading"]
            cursor = result["nextPageCursor"]
            if not cursor:
                return out

    try:
        deadline = time.monotonic() + 20
        while not port_file.exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()
            time.sleep(0.05)
        info = json.loads(port_file.read_text())
        assert listed() == ["BTCUSDT", "ETHUSDT"]
        time.sleep(3.5)
        assert listed() == ["BTCUSDT", "SOLUSDT"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
