"""The Binance REST client, WebSocket driver and sources against the fake Binance server, fault by fault."""

from __future__ import annotations

import asyncio
import time

import pytest

from backend.engine.tick import TickEngine
from backend.metrics import Metrics
from backend.venues.binance.rest import BinanceBannedError, BinanceRestClient, WeightBudget
from backend.venues.binance.source import BinanceRestSource, BinanceWsSource, shard_symbols
from backend.venues.binance.ws import BinanceWsClient, combined_url
from backend.venues.orderbook import validate_book
from backend.venues.source import UnknownSymbolError, VenueConfigError
from backend.testing.fake_binance import FakeBinance

from ..helpers import assert_in_sync, wait_for

SYMS = ["BTCUSDT", "4USDT"]
FAST = dict(backoff_base_s=0.01, backoff_max_s=0.05)


@pytest.fixture
async def fake():
    async with FakeBinance(SYMS, seed=3, push_interval_s=0.05) as f:
        yield f


def rest(fake, **kw):
    return BinanceRestClient(fake.rest_url, timeout_s=kw.pop("timeout_s", 1.0), max_retries=kw.pop("max_retries", 3),
                             metrics=Metrics(), **FAST, **kw)


def faults(metrics):
    return metrics.by_label("lobbot_venue_faults_total", "reason", venue="binance")


# --- REST ---------------------------------------------------------------------------------------


async def test_depth_snapshot_is_the_true_book_and_weight_is_tracked(fake):
    async with rest(fake) as c:
        fake.pause()
        snap = await c.get_depth("BTCUSDT", 1000)
        fake.resume()
        book = fake.book("BTCUSDT")
        assert snap.last_update_id == book.update_id
        assert snap.bids[:, 0].tolist() == book.bid_prices.tolist() and snap.asks[:, 1].tolist() == book.ask_sizes.tolist()
        assert c.weights.used == fake.used_weight == 20  # our count agrees with X-MBX-USED-WEIGHT-1M
        assert abs(await c.get_server_time() - time.time() * 1000) < 1000
        assert len(await c.get_closed_candles("BTCUSDT", count=30)) == 30


def test_weight_budget_waits_for_the_next_minute_past_its_share():
    w = WeightBudget(limit=100, share=0.5)
    assert w.delay_ms(20, 60_000) == 0
    w.take(20, 60_000)
    w.observe(45, 60_500)  # another program on this IP used more than we did
    assert w.used == 45 and w.delay_ms(10, 61_000) == 60_000 - 1_000 + 50
    assert w.delay_ms(10, 120_000) == 0  # a new minute


async def test_429_pauses_every_request_for_retry_after(fake):
    fake.inject("http_429", retry_after=0.6)
    async with rest(fake) as c:
        t0 = time.monotonic()
        first = asyncio.ensure_future(c.get_depth("BTCUSDT", 50))
        await asyncio.sleep(0.15)
        sent_during_pause = fake.counts["rest"]
        other = await c.get_server_time()  # another request waits out the same pause
        await first
        assert time.monotonic() - t0 >= 0.6 and other > 0
        assert fake.counts["rest"] == sent_during_pause + 2  # nothing was sent while paused
        assert faults(c.metrics) == {"http_429": 1}


async def test_418_ban_stops_every_request_until_retry_after_then_resumes(fake, caplog):
    fake.ban(1.0)
    async with rest(fake) as c:
        with pytest.raises(BinanceBannedError):
            await c.get_depth("BTCUSDT", 50)
        for _ in range(5):
            with pytest.raises(BinanceBannedError, match="paused"):
                await c.get_server_time()  # refused without sending
        assert fake.counts["rest_banned"] == 1 and fake.counts.get("rest_banned_late", 0) == 0
        assert c.metrics.value("lobbot_venue_bans_total", venue="binance") == 1
        assert sum("BINANCE IP BAN" in r.message for r in caplog.records) == 1
        await asyncio.sleep(c.ban.remaining_s(c.clock.now_ms()) + 0.05)
        assert (await c.get_depth("BTCUSDT", 50)).last_update_id > 0  # resumed by itself
        assert fake.counts["rest_banned"] == 1


async def test_unknown_symbol_is_named(fake):
    src = BinanceRestSource(["BTCUSDT", "DOGEUSDT"], rest_url=fake.rest_url, tick_interval_s=1.0, metrics=Metrics())
    with pytest.raises(UnknownSymbolError, match="DOGEUSDT"):
        await src.start()
    await src.close()


def test_rest_budget_and_sharding_limits():
    src = BinanceRestSource(["BTCUSDT"] * 1, rest_url="http://127.0.0.1:9", tick_interval_s=0.01, metrics=Metrics())
    with pytest.raises(VenueConfigError, match="request weight per minute"):
        asyncio.run(src.start())
    groups = shard_symbols([f"S{i}USDT" for i in range(150)])
    assert [len(g) for g in groups] == [66, 66, 18]
    assert combined_url("wss://fstream.binance.com/", ["a@aggTrade", "b@depth@100ms"]) == \
        "wss://fstream.binance.com/stream?streams=a@aggTrade/b@depth@100ms"


async def test_rest_source_polls_books_trades_and_candles(fake):
    metrics = Metrics()
    src = BinanceRestSource(SYMS, rest_url=fake.rest_url, tick_interval_s=0.5, metrics=metrics, **FAST)
    engine = TickEngine(SYMS, metrics=metrics)
    await src.start()
    try:
        assert len(src.initial_candles("BTCUSDT")) == src.history_candles
        snaps = await src.poll()
        out = engine.step(snaps, src.clock.now_ms(), collect=False)
        assert out.rejected == {} and set(out.tape) == set(SYMS)
        # The simulator's trade rate varies; poll on (as the bot would) with a bound rather than
        # betting that one trade lands within a fixed second on a loaded machine.
        deadline = asyncio.get_running_loop().time() + 15
        trades = []
        while not trades and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.5)
            snaps = await src.poll()
            assert snaps["BTCUSDT"].book.update_id is not None
            trades = snaps["BTCUSDT"].trades
        assert trades, "no simulated trade reached the REST source within 15 s of polling"
    finally:
        await src.close()


# --- WebSocket ------------------------------------------------------------------------------------


@pytest.fixture
async def ws(fake):
    invalid = []
    r = rest(fake)

    def check(sym, result, local):
        book = local.book()
        if book is not None and validate_book(book, book.ts_ms) is not None:
            invalid.append((sym, result.value, validate_book(book, book.ts_ms)))

    c = BinanceWsClient(fake.ws_url, SYMS, lambda s: r.get_depth(s, 1000), ping_interval_s=0.2, backoff_base_s=0.05,
                        backoff_max_s=0.2, snapshot_retry_s=0.05, on_book=check, metrics=r.metrics)
    await c.start()
    assert await c.wait_synced(5)
    yield c
    await c.close()
    await r.close()
    assert not invalid, invalid


def count(c, name, **labels):
    return c.metrics.value(name, venue="binance", **labels)


async def test_ws_keeps_the_true_book_and_pings(fake, ws):
    await asyncio.sleep(0.5)
    await assert_in_sync(fake, ws, SYMS)
    assert count(ws, "lobbot_ws_messages_total", kind="pong") >= 1 and fake.counts["pings"] >= 1
    assert count(ws, "lobbot_ws_messages_total", kind="book_applied") > 5
    assert ws.metrics.total("lobbot_venue_faults_total") == 0
    assert fake.counts.get("ws_rate_closed", 0) == 0


async def test_diffs_buffered_while_a_slow_snapshot_loads_are_dropped_or_applied(fake, ws):
    fake.inject("pu_gap", symbol="BTCUSDT")
    fake.inject("snapshot_delay", symbol="BTCUSDT", seconds=0.4)  # ~8 diffs arrive meanwhile
    assert await wait_for(lambda: count(ws, "lobbot_ws_resyncs_total") >= 1, 3)
    assert await ws.wait_synced(3)
    assert count(ws, "lobbot_ws_messages_total", kind="book_not_ready") >= 4
    await assert_in_sync(fake, ws, SYMS)
    assert count(ws, "lobbot_ws_reconnects_total") == 0


async def test_pu_gap_resyncs_from_a_new_snapshot(fake, ws):
    fake.inject("pu_gap", symbol="4USDT")
    assert await wait_for(lambda: count(ws, "lobbot_ws_resyncs_total") >= 1, 3)
    assert faults(ws.metrics) == {"sequence_gap": 1}
    assert await ws.wait_synced(3)
    await assert_in_sync(fake, ws, SYMS)
    assert count(ws, "lobbot_ws_reconnects_total") == 0  # a resync is not a reconnect


async def test_stale_snapshot_is_fetched_again(fake, ws):
    fake.inject("stale_snapshot", symbol="BTCUSDT", events=15)
    fake.inject("pu_gap", symbol="BTCUSDT")
    assert await wait_for(lambda: faults(ws.metrics).get("stale_snapshot", 0) >= 1, 3), faults(ws.metrics)
    assert await ws.wait_synced(3)
    await assert_in_sync(fake, ws, SYMS)
    assert fake.pending_faults() == 0


async def test_dropped_connection_reconnects_and_flapping_backs_off(fake, ws):
    fake.inject("ws_drop")
    assert await wait_for(lambda: count(ws, "lobbot_ws_reconnects_total") >= 1, 5)
    assert await ws.wait_synced(3)
    await assert_in_sync(fake, ws, SYMS)
    fake.close_after_connect = True
    fake.inject("ws_drop")
    before = count(ws, "lobbot_ws_reconnects_total")
    await asyncio.sleep(2.0)
    n = count(ws, "lobbot_ws_reconnects_total") - before
    # delays 0.05 .. 0.2 s plus 0.3 s up each time: a bounded rate, never a tight loop
    assert 3 <= n <= 2.0 / 0.3 + 2, n
    assert ws.policy.attempt >= 3  # the backoff did not reset: no connection stayed up 60 s


async def test_ws_source_quiet_book_stays_current_with_clock_offset():
    async with FakeBinance(SYMS, seed=6, push_interval_s=0.05, clock_offset_ms=4_000, quiet=["BTCUSDT"]) as fake:
        metrics = Metrics()
        src = BinanceWsSource(SYMS, ws_url=fake.ws_url, rest_url=fake.rest_url, timeout_s=1.0, ping_interval_s=0.2,
                              pong_timeout_s=0.5, ws_backoff_base_s=0.05, ws_backoff_max_s=0.2, metrics=metrics,
                              **FAST)
        engine = TickEngine(SYMS, max_age_ms=400, metrics=metrics)
        await src.start()
        try:
            stamps = []
            for _ in range(8):
                await asyncio.sleep(0.15)
                snaps = await src.poll()
                assert abs(snaps["BTCUSDT"].clock_offset_ms - 4_000) < 200
                out = engine.step(snaps, src.clock.now_ms(), collect=False)
                assert out.rejected == {} and set(out.tape) == set(SYMS), (out.rejected, snaps)
                stamps.append(out.tape["BTCUSDT"].ts_ms)
                assert snaps["BTCUSDT"].book.mid == fake.true_mid("BTCUSDT", stamps[-1])
            assert all(b > a for a, b in zip(stamps, stamps[1:]))
            assert metrics.value("lobbot_ws_messages_total", venue="binance", kind="pong") >= 3
            fake.silent = True
            assert await wait_for(lambda: src.ws.status("BTCUSDT")[0] == "ws_silent", 3)
            assert (await src.poll())["BTCUSDT"].reason == "ws_silent"
        finally:
            await src.close()


async def test_fake_runs_as_a_process_and_stops_on_sigterm(tmp_path):
    import json
    import signal
    import sys

    import aiohttp

    port_file, stats = tmp_path / "fake.json", tmp_path / "stats.json"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "backend.testing.fake_binance", "--symbols", "BTCUSDT", "--port-file", str(port_file),
        "--stats-file", str(stats), "--log-level", "WARNING")
    try:
        assert await wait_for(port_file.exists, 30), "the fake did not start"
        info = json.loads(port_file.read_text())
        async with aiohttp.ClientSession() as s:
            async with s.get(info["rest_url"] + "/fapi/v1/depth", params={"symbol": "BTCUSDT", "limit": "5"}) as r:
                body = await r.json()
                assert r.status == 200 and len(body["bids"]) == 5 and r.headers["X-MBX-USED-WEIGHT-1M"] == "2"
            async with s.get(info["rest_url"] + "/fapi/v1/depth", params={"symbol": "NOPEUSDT"}) as r:
                assert r.status == 400 and (await r.json())["code"] == -1121
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 20) == 0
    assert not port_file.exists() and json.loads(stats.read_text())["rest"] == 2
