"""The REST client and BybitRestSource against the fake Bybit server, fault by fault."""

import asyncio

import numpy as np
import pytest

from backend.metrics import Metrics
from backend.venues.bybit.messages import BybitApiError
from backend.venues.bybit.rest import BybitRequestError, BybitRestClient
from backend.venues.bybit.source import (MAX_SYMBOLS_PER_CONNECTION, MAX_TOPIC_CHARS_PER_CONNECTION,
                                         MAX_WS_CONNECTIONS, BybitRestSource, shard_symbols)
from backend.venues.orderbook import books_equal, validate_book
from backend.venues.source import UnknownSymbolError, VenueConfigError
from backend.venues.types import CANDLE_MS
from backend.testing.fake_bybit import FakeBybit

SYMS = ["BTCUSDT", "4USDT"]
FAST = dict(backoff_base_s=0.01, backoff_max_s=0.05)


@pytest.fixture
async def fake():
    async with FakeBybit(SYMS, seed=2) as f:
        yield f


def client(fake, **kw):
    return BybitRestClient(fake.rest_url, timeout_s=kw.pop("timeout_s", 1.0), max_retries=kw.pop("max_retries", 4),
                           metrics=Metrics(), **FAST, **kw)


def retries(c):
    return c.metrics.value("lobbot_venue_retries_total", venue="bybit")


def faults(m):
    return m.by_label("lobbot_venue_faults_total", "reason", venue="bybit")


async def test_orderbook_equals_server_book(fake):
    async with client(fake) as c:
        for sym in SYMS:
            b = await c.get_orderbook(sym, limit=50)
            assert books_equal(b, fake.market[sym].book_at(b.ts_ms))
            assert b.cts_ms is not None and validate_book(b, b.recv_ms) is None


@pytest.mark.parametrize(
    "fault, params, reason",
    [
        ("http_429", {}, "http_429"),
        ("http_5xx", {"status": 502}, "http_502"),
        ("ret_code", {"code": 10006}, "ret_code_10006"),
        ("ret_code", {"code": 10018}, "ret_code_10018"),
        ("ret_code", {"code": 10016}, "ret_code_10016"),
        ("malformed_json", {}, "malformed_response"),
        ("rest_delay", {"seconds": 0.6}, "timeout"),
        ("rest_drop", {}, "connection_error"),
    ],
)
async def test_transient_faults_are_retried(fake, fault, params, reason):
    fake.inject(fault, symbol="BTCUSDT", count=3, **params)
    async with client(fake, timeout_s=0.3) as c:
        b = await c.get_orderbook("BTCUSDT", limit=50)
        assert books_equal(b, fake.market["BTCUSDT"].book_at(b.ts_ms))
        # aiohttp itself silently re-sends once when a kept-alive connection is dropped
        assert retries(c) >= (1 if fault == "rest_drop" else 2)
        assert faults(c.metrics).get(reason, 0) >= (1 if fault == "rest_drop" else 2), faults(c.metrics)
    assert fake.pending_faults() == 0


async def test_other_ret_codes_fail_at_once_with_a_clear_error(fake):
    fake.inject("ret_code", code=10001, msg="params error: symbol invalid")
    async with client(fake) as c:
        with pytest.raises(BybitApiError, match="10001.*params error"):
            await c.get_orderbook("BTCUSDT")
        assert retries(c) == 0 and faults(c.metrics) == {"ret_code_10001": 1}
        with pytest.raises(BybitApiError, match="symbol invalid"):
            await c.get_orderbook("ETHUSDT")  # the fake does not serve it


async def test_retries_are_bounded(fake):
    fake.inject("http_5xx", count=10)
    async with client(fake, max_retries=2) as c:
        with pytest.raises(BybitRequestError, match="after 3 attempts") as err:
            await c.get_orderbook("BTCUSDT")
        assert err.value.reason == "http_503"
        assert faults(c.metrics) == {"http_503": 3, "request_failed": 1} and retries(c) == 2


async def test_closed_candles_only_and_paging(fake):
    async with client(fake) as c:
        raw, server_ms = await c.get_klines("BTCUSDT", limit=5)
        assert raw[-1].close_ms > server_ms  # the wire includes the forming bar ...
        bars = await c.get_closed_candles("BTCUSDT", count=450)
        assert len(bars) == 450 and bars[-1].close_ms <= server_ms + 5000  # ... the client drops it
        assert np.all(np.diff([b.start_ms for b in bars]) == CANDLE_MS)
        later = await c.get_closed_candles("BTCUSDT", after_ms=bars[-11].start_ms)
        assert [b.start_ms for b in later][:10] == [b.start_ms for b in bars[-10:]]


async def test_rest_source_poll_never_raises_and_isolates_symbols(fake):
    metrics = Metrics()
    src = BybitRestSource(SYMS, rest_url=fake.rest_url, timeout_s=0.5, max_retries=2, metrics=metrics, **FAST)
    await src.start()
    assert len(src.initial_candles("BTCUSDT")) == src.history_candles
    assert faults(metrics) == {}
    fake.inject("http_5xx", symbol="4USDT", count=50)
    snaps = await src.poll()
    assert snaps["BTCUSDT"].book is not None and snaps["BTCUSDT"].error is None and snaps["BTCUSDT"].reason is None
    assert snaps["4USDT"].book is None and "after 3 attempts" in snaps["4USDT"].error
    assert snaps["4USDT"].reason == "http_503"
    fake.clear_faults()
    await asyncio.sleep(0.3)
    snaps2 = await src.poll()
    assert snaps2["4USDT"].book is not None
    # trades: new since the previous poll, each execId once
    trades = snaps["BTCUSDT"].trades + snaps2["BTCUSDT"].trades
    for _ in range(25):  # the simulated tape is random: poll on (bounded) until some trades arrived
        if trades:
            break
        await asyncio.sleep(0.2)
        trades += (await src.poll())["BTCUSDT"].trades
    seen = [(t.ts_ms, t.price, t.size) for t in trades]
    assert len(seen) == len(set(seen)) and len(seen) > 0
    assert faults(metrics)["http_503"] >= 3
    # a symbol Bybit stops knowing during the run is dropped; the others go on
    fake.delist("4USDT")
    snaps3 = await src.poll()
    assert snaps3["4USDT"].reason == "ret_code_10001" and "4USDT" in src.dropped
    snaps4 = await src.poll()
    assert snaps4["4USDT"].reason == "delisted" and snaps4["BTCUSDT"].book is not None
    assert faults(metrics)["delisted"] == 1
    await src.close()


async def test_unknown_symbol_stops_the_start_naming_it(fake):
    src = BybitRestSource(SYMS + ["ETHUSDT"], rest_url=fake.rest_url, timeout_s=0.5, max_retries=1, **FAST)
    with pytest.raises(UnknownSymbolError) as err:
        await src.start()
    await src.close()
    assert err.value.symbols == ["ETHUSDT"]
    assert "unknown symbol ETHUSDT" in str(err.value) and "connection" not in str(err.value)
    assert fake.counts["rest:/v5/market/instruments-info"] == 1
    assert "rest:/v5/market/kline" not in fake.counts  # refused before any back-fill


async def test_rest_source_with_random_faults_hands_out_only_valid_books():
    async with FakeBybit(SYMS, seed=9, fault_rate=0.3) as fake:
        src = BybitRestSource(SYMS, rest_url=fake.rest_url, timeout_s=0.4, max_retries=3, **FAST)
        await src.start()
        books = 0
        for _ in range(15):
            for sym, snap in (await src.poll()).items():
                if snap.book is not None:
                    books += 1
                    # the fake's books are sound: what the venue gave arrives unchanged, trimmed
                    assert validate_book(snap.book, snap.book.recv_ms) is None
                    assert snap.book.depth <= 50
                else:
                    assert isinstance(snap.error, str) and snap.error and snap.reason
        assert books >= 20
        assert sum(v for k, v in fake.counts.items() if k.startswith("fault_")) > 5
        await src.close()


async def test_ban_stops_every_request_then_resumes_by_itself(fake):
    """HTTP 403: one loud line, a counter and a gauge; nothing is sent until the ban ends, then polling resumes."""
    metrics = Metrics()
    src = BybitRestSource(SYMS, rest_url=fake.rest_url, timeout_s=0.5, max_retries=2, metrics=metrics, ban_s=1.0,
                          **FAST)
    await src.start()
    fake.ban(0.5)
    snaps = await src.poll()
    assert {s.reason for s in snaps.values()} == {"banned"}
    sent = fake.counts["rest"]
    assert metrics.value("lobbot_venue_bans_total", venue="bybit") == 1
    assert metrics.value("lobbot_venue_banned_until_seconds", venue="bybit") > 0
    for _ in range(3):  # during the ban: no request at all
        snaps = await src.poll()
        assert {s.reason for s in snaps.values()} == {"banned"} and fake.counts["rest"] == sent
    await asyncio.sleep(1.1)
    snaps = await src.poll()
    assert all(s.book is not None for s in snaps.values()), snaps
    assert metrics.value("lobbot_venue_banned_until_seconds", venue="bybit") == 0
    assert metrics.value("lobbot_venue_bans_total", venue="bybit") == 1
    assert fake.counts.get("rest_banned_late", 0) == 0
    await src.close()


async def test_rest_source_refuses_more_symbols_than_bybits_request_limit_allows(fake):
    syms = [f"S{i}USDT" for i in range(40)]
    src = BybitRestSource(syms, rest_url=fake.rest_url, tick_interval_s=1.0)
    with pytest.raises(VenueConfigError) as err:
        await src.start()
    await src.close()
    assert "600 per IP" in str(err.value) and "--source bybit-ws" in str(err.value)
    assert "rest" not in fake.counts  # refused before sending anything
    assert BybitRestSource(syms[:10], rest_url=fake.rest_url, tick_interval_s=3.0).planned_requests_per_5s() < 300


def test_symbols_are_sharded_over_connections_within_bybits_topic_limit():
    syms = [f"S{i:04d}USDT" for i in range(450)]
    groups = shard_symbols(syms)
    assert [s for g in groups for s in g] == syms
    assert all(len(g) <= MAX_SYMBOLS_PER_CONNECTION for g in groups) and len(groups) == 5
    for g in groups:
        chars = sum(len(t) + 3 for s in g for t in (f"orderbook.50.{s}", f"publicTrade.{s}", f"kline.1.{s}"))
        assert chars <= MAX_TOPIC_CHARS_PER_CONNECTION
    assert shard_symbols(["BTCUSDT"]) == [["BTCUSDT"]]
    with pytest.raises(VenueConfigError):
        shard_symbols([f"S{i:05d}USDT" for i in range(MAX_SYMBOLS_PER_CONNECTION * MAX_WS_CONNECTIONS + 1)])
