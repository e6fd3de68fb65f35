"""The WebSocket client and BybitWsSource against the fake Bybit server, fault by fault."""

import asyncio

import pytest

from backend.venues.bybit.ws import BybitWsClient
from backend.venues.local_book import ApplyResult
from backend.venues.orderbook import books_equal, validate_book
from backend.venues.sources import BybitWsSource
from backend.testing.fake_bybit import FakeBybit

from .helpers import wait_for

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

    c = BybitWsClient(fake.ws_url, SYMS, ping_interval_s=0.2, backoff_base_s=0.05, backoff_max_s=0.2, on_book=check)
    c.invalid = invalid
    await c.start()
    assert await c.wait_synced(5)
    yield c
    await c.close()
    assert not invalid, invalid


async def assert_in_sync(fake, ws):
    fake.pause()
    try:
        ok = await wait_for(lambda: all(ws.books[s].ready and ws.books[s].last_u == fake.update_id(s) for s in SYMS), 5)
        assert ok, {s: (ws.books[s].last_u, fake.update_id(s)) for s in SYMS}
        for s in SYMS:
            assert books_equal(ws.books[s].book(), fake.book(s)), s  # level by level
    finally:
        fake.resume()


async def test_subscribes_syncs_and_pings(fake, ws):
    await asyncio.sleep(0.5)
    await assert_in_sync(fake, ws)
    assert ws.counts["pongs"] >= 1 and fake.counts["pings"] >= 1
    assert ws.counts["book_applied"] > 5


@pytest.mark.parametrize("fault, counter", [("u_gap", "book_gap"), ("crossed", "book_crossed")])
async def test_gap_or_crossed_book_resyncs_to_the_servers_book(fake, ws, fault, counter):
    fake.inject(fault, symbol="BTCUSDT")
    assert await wait_for(lambda: ws.counts["resyncs"] >= 1, 3)
    assert ws.counts[counter] == 1
    assert await ws.wait_synced(3)
    await assert_in_sync(fake, ws)
    assert ws.counts["reconnects"] == 0  # resync by resubscribing, not by reconnecting


async def test_u_equal_1_restart_resets_the_book(fake, ws):
    fake.inject("restart", symbol="4USDT")
    assert await wait_for(lambda: ws.books["4USDT"].last_u is not None and ws.books["4USDT"].last_u < 10 and fake.update_id("4USDT") < 10, 3)
    await assert_in_sync(fake, ws)
    assert ws.counts["resyncs"] == 0


async def test_dropped_connection_reconnects_and_resubscribes(fake, ws):
    fake.inject("ws_drop")
    assert await wait_for(lambda: ws.counts["connects"] >= 2, 5)
    assert await ws.wait_synced(3)
    await assert_in_sync(fake, ws)
    assert ws.counts["reconnects"] >= 1


async def test_malformed_frame_is_counted_and_skipped(fake, ws):
    fake.inject("ws_malformed", symbol="BTCUSDT")
    assert await wait_for(lambda: ws.counts["malformed"] >= 1, 3)
    await assert_in_sync(fake, ws)


async def test_ws_source_delay_gives_stale_error_then_recovers(fake):
    src = BybitWsSource(SYMS, ws_url=fake.ws_url, rest_url=fake.rest_url, timeout_s=1.0, max_book_age_s=0.4,
                        ping_interval_s=0.2, ws_backoff_base_s=0.05, ws_backoff_max_s=0.2, backoff_base_s=0.01,
                        backoff_max_s=0.05)
    await src.start()
    assert len(src.initial_candles("BTCUSDT")) == src.history_candles
    snaps = await src.poll()
    assert all(s.book is not None and s.error is None for s in snaps.values()), snaps
    fake.inject("ws_delay", seconds=1.2)
    await asyncio.sleep(0.9)
    snaps = await src.poll()
    assert snaps["BTCUSDT"].book is None and "stale" in snaps["BTCUSDT"].error
    await asyncio.sleep(0.8)
    snaps = await src.poll()
    assert all(s.book is not None for s in snaps.values()), {k: s.error for k, s in snaps.items()}
    await src.close()


async def test_ws_source_under_random_faults_hands_out_only_valid_books():
    async with FakeBybit(SYMS, seed=5, push_interval_s=0.05, fault_rate=1.0) as fake:
        src = BybitWsSource(SYMS, ws_url=fake.ws_url, rest_url=fake.rest_url, timeout_s=0.5, max_retries=3,
                            ping_interval_s=0.2, ws_backoff_base_s=0.05, ws_backoff_max_s=0.2, backoff_base_s=0.01,
                            backoff_max_s=0.05)
        await src.start()
        good = 0
        for _ in range(60):
            await asyncio.sleep(0.05)
            for sym, snap in (await src.poll()).items():
                if snap.book is None:
                    assert snap.error
                    continue
                good += 1
                assert validate_book(snap.book, snap.book.recv_ms, max_age_ms=15_000) is None
                assert snap.book.depth <= 50
        stats = src.stats()
        await src.close()
        injected = {k: v for k, v in fake.counts.items() if k.startswith("fault_")}
        assert good >= 30, (good, stats)
        assert sum(injected.values()) >= 3, injected
