"""The WebSocket client and BybitWsSource against the fake Bybit server, fault by fault."""

import asyncio

import pytest

from backend.engine.tick import TickEngine
from backend.metrics import Metrics
from backend.venues.bybit.source import BybitWsSource
from backend.venues.bybit.ws import BybitWsClient
from backend.venues.orderbook import validate_book
from backend.testing.fake_bybit import FakeBybit

from .helpers import assert_in_sync, wait_for

SYMS = ["BTCUSDT", "4USDT"]


@pytest.fixture
async def fake():
    async with FakeBybit(SYMS, seed=4, push_interval_s=0.05) as f:
        yield f


@pytest.fixture
async def ws(fake):
    invalid = []

    def check(sym, result, local):
        # every state the client can hand out must be a valid book
        book = local.book()
        if book is not None and validate_book(book, book.ts_ms) is not None:
            invalid.append((sym, result, validate_book(book, book.ts_ms)))

    c = BybitWsClient(fake.ws_url, SYMS, ping_interval_s=0.2, backoff_base_s=0.05, backoff_max_s=0.2, on_book=check,
                      metrics=Metrics())
    c.invalid = invalid
    await c.start()
    assert await c.wait_synced(5)
    yield c
    await c.close()
    assert not invalid, invalid


def count(ws, name, **labels):
    """A count of this client in the registry it was given."""
    return ws.metrics.value(name, venue="bybit", **labels)


def faults(ws, reason):
    return count(ws, "lobbot_venue_faults_total", reason=reason)


async def test_subscribes_syncs_and_pings(fake, ws):
    await asyncio.sleep(0.5)
    await assert_in_sync(fake, ws, SYMS)
    assert count(ws, "lobbot_ws_messages_total", kind="pong") >= 1 and fake.counts["pings"] >= 1
    assert count(ws, "lobbot_ws_messages_total", kind="book_applied") > 5
    assert ws.metrics.total("lobbot_venue_faults_total") == 0


@pytest.mark.parametrize("fault, reason", [("u_gap", "sequence_gap"), ("crossed", "crossed_book")])
async def test_gap_or_crossed_book_resyncs_to_the_servers_book(fake, ws, fault, reason):
    fake.inject(fault, symbol="BTCUSDT")
    assert await wait_for(lambda: count(ws, "lobbot_ws_resyncs_total") >= 1, 3)
    assert faults(ws, reason) == 1
    assert await ws.wait_synced(3)
    await assert_in_sync(fake, ws, SYMS)
    assert count(ws, "lobbot_ws_reconnects_total") == 0  # resync by resubscribing, not by reconnecting


async def test_u_equal_1_restart_resets_the_book(fake, ws):
    fake.inject("restart", symbol="4USDT")
    assert await wait_for(lambda: ws.books["4USDT"].update_id is not None and ws.books["4USDT"].update_id < 10 and fake.update_id("4USDT") < 10, 3)
    await assert_in_sync(fake, ws, SYMS)
    assert count(ws, "lobbot_ws_resyncs_total") == 0


async def test_dropped_connection_reconnects_and_resubscribes(fake, ws):
    fake.inject("ws_drop")
    assert await wait_for(lambda: count(ws, "lobbot_ws_reconnects_total") >= 1, 5)
    assert await ws.wait_synced(3)
    await assert_in_sync(fake, ws, SYMS)
    assert faults(ws, "connection_error") + faults(ws, "closed_by_server") >= 1


async def test_malformed_frame_is_counted_and_skipped(fake, ws):
    fake.inject("ws_malformed", symbol="BTCUSDT")
    assert await wait_for(lambda: faults(ws, "malformed") >= 1, 3)
    await assert_in_sync(fake, ws, SYMS)


async def test_ws_source_quiet_books_stay_current_silent_connection_does_not_then_recovers(fake):
    """Liveness, not age: no pushes but pongs keep books current; no pongs make them unusable and reconnect."""
    metrics = Metrics()
    src = BybitWsSource(SYMS, ws_url=fake.ws_url, rest_url=fake.rest_url, timeout_s=1.0,
                        ping_interval_s=0.1, pong_timeout_s=0.3, ws_backoff_base_s=0.05, ws_backoff_max_s=0.2,
                        backoff_base_s=0.01, backoff_max_s=0.05, metrics=metrics)
    engine = TickEngine(SYMS, max_age_ms=400, metrics=metrics)
    await src.start()
    try:
        assert len(src.initial_candles("BTCUSDT")) == src.history_candles
        snaps = await src.poll()
        assert all(s.book is not None and s.reason is None and s.live for s in snaps.values()), snaps
        assert engine.step(snaps, src.clock.now_ms(), collect=True).rejected == {}
        # a quiet market: nothing pushed for longer than max_age, pings answered -> still current
        fake.quiet = set(SYMS)
        stamps = []
        for _ in range(8):
            await asyncio.sleep(0.15)
            snaps = await src.poll()
            out = engine.step(snaps, src.clock.now_ms(), collect=True)
            assert out.rejected == {} and set(out.tape) == set(SYMS), (out.rejected, snaps)
            stamps.append(out.tape["BTCUSDT"].ts_ms)
        assert all(b > a for a, b in zip(stamps, stamps[1:])), stamps  # as-of stamps move with exchange time
        # a silent connection: no pong within 0.3 s -> no book (ws_silent), then a reconnect
        fake.silent = True
        assert await wait_for(lambda: src.ws.status("BTCUSDT")[0] == "ws_silent", 3)
        snaps = await src.poll()
        assert snaps["BTCUSDT"].book is None and snaps["BTCUSDT"].reason == "ws_silent", snaps["BTCUSDT"]
        assert await wait_for(lambda: metrics.value("lobbot_ws_disconnects_total", venue="bybit",
                                                    reason="ws_silent") >= 1, 3)
        fake.silent = False
        fake.quiet = set()
        outs = []

        async def accepted() -> bool:
            outs.append(engine.step(await src.poll(), src.clock.now_ms(), collect=False))
            return outs[-1].rejected == {} and set(outs[-1].tape) == set(SYMS)

        for _ in range(40):
            if await accepted():
                break
            await asyncio.sleep(0.1)
        assert outs[-1].rejected == {} and set(outs[-1].tape) == set(SYMS), outs[-1]
        assert metrics.total("lobbot_books_rejected_total") == 0
    finally:
        await src.close()


async def test_ws_source_under_random_faults_hands_out_only_valid_books():
    async with FakeBybit(SYMS, seed=5, push_interval_s=0.05, fault_rate=1.0) as fake:
        metrics = Metrics()
        src = BybitWsSource(SYMS, ws_url=fake.ws_url, rest_url=fake.rest_url, timeout_s=0.5, max_retries=3,
                            ping_interval_s=0.2, ws_backoff_base_s=0.05, ws_backoff_max_s=0.2, backoff_base_s=0.01,
                            backoff_max_s=0.05, metrics=metrics)
        await src.start()
        good = 0
        for _ in range(60):
            await asyncio.sleep(0.05)
            for sym, snap in (await src.poll()).items():
                if snap.book is None:
                    assert snap.error and snap.reason in ("resync_pending", "ws_disconnected", "ws_silent"), snap
                    continue
                good += 1
                assert validate_book(snap.book, snap.book.recv_ms, max_age_ms=15_000) is None
                assert snap.book.depth <= 50
        await src.close()
        injected = {k: v for k, v in fake.counts.items() if k.startswith("fault_")}
        counted = metrics.by_label("lobbot_venue_faults_total", "reason")
        assert good >= 30, (good, counted)
        assert sum(injected.values()) >= 3, injected
        # every injected fault the client can see was counted in the registry
        seen = {"fault_ws_malformed": "malformed", "fault_u_gap": "sequence_gap", "fault_crossed": "crossed_book"}
        for fault, reason in seen.items():
            if injected.get(fault):
                assert counted.get(reason, 0) >= 1, (fault, counted)
