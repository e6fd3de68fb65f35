"""TickEngine.step: validation once, price tape, features and the sample/skip decision, without I/O."""

import numpy as np
import pytest

from backend.engine.tick import TickEngine
from backend.metrics import Metrics
from backend.ml_engine.features import TICKS_NEEDED
from backend.venues.orderbook import OrderBook
from backend.venues.sim.market import parse_sim_start
from backend.venues.sim.source import SimSource
from backend.venues.source import VirtualClock
from backend.venues.types import MarketSnapshot

SYMS = ["BTCUSDT", "ETHUSDT", "4USDT"]
START = parse_sim_start("2025-11-07T06:00:00Z")


async def sim_ticks(n, seed=7, interval_ms=3000):
    """n ticks of simulator snapshots (and the back-filled history), as the bot would poll them."""
    clock = VirtualClock(START)
    src = SimSource(SYMS, clock, seed=seed)
    await src.start()
    history = {s: src.initial_candles(s) for s in SYMS}
    ticks = []
    for k in range(n):
        await clock.sleep_until(START + k * interval_ms)
        ticks.append((await src.poll(), clock.now_ms()))
    return history, ticks


def engine_for(history, metrics=None):
    eng = TickEngine(SYMS, metrics=metrics)
    for s, candles in history.items():
        eng.add_history(s, candles)
    return eng


async def test_each_book_is_validated_once_and_every_outcome_has_a_reason():
    history, ticks = await sim_ticks(1)
    snaps, now = ticks[0]
    good = snaps["BTCUSDT"].book
    snaps["ETHUSDT"].book = OrderBook.from_levels("ETHUSDT", [[101.0, 1.0]], [[100.0, 1.0]], ts_ms=now, recv_ms=now)
    snaps["4USDT"] = MarketSnapshot("4USDT", None, error="HTTP 429 after 3 attempts", reason="http_429")
    m = Metrics()
    out = engine_for(history, m).step(snaps, now, collect=True)
    assert list(out.tape) == ["BTCUSDT"]
    assert out.tape["BTCUSDT"] == (good.ts_ms, good.mid, good.best_bid, good.best_ask)
    assert {s: r.value for s, r in out.rejected.items()} == {"ETHUSDT": "crossed"}
    assert sorted(out.skips) == [("4USDT", "http_429"), ("BTCUSDT", "warming_up"), ("ETHUSDT", "book_crossed")]
    assert out.samples == []
    assert m.by_label("lobbot_books_rejected_total", "symbol") == {"ETHUSDT": 1.0}
    assert m.value("lobbot_book_age_seconds", symbol="BTCUSDT") == (now - good.ts_ms) / 1000


async def test_not_a_collection_tick_counts_rejections_but_decides_no_samples():
    history, ticks = await sim_ticks(2)
    m = Metrics()
    eng = engine_for(history, m)
    eng.step(*ticks[1], collect=False)
    snaps, now = ticks[0]  # the earlier tick's books arrive after the later ones
    out = eng.step(snaps, now, collect=False)
    assert out.skips == [] and out.samples == [] and out.tape == {}
    assert m.by_label("lobbot_books_rejected_total", "reason") == {"out_of_order": 3.0}


async def test_stale_and_future_books_by_the_configured_limits():
    history, ticks = await sim_ticks(1)
    snaps, now = ticks[0]
    m = Metrics()
    eng = TickEngine(SYMS, max_age_ms=2_000, max_future_ms=1_000, metrics=m)
    out = eng.step(snaps, now + 2_001, collect=False)
    assert {r.value for r in out.rejected.values()} == {"stale"}
    out = eng.step(snaps, now - 1_001, collect=False)
    assert {r.value for r in out.rejected.values()} == {"future_timestamp"}
    assert m.total("lobbot_books_rejected_total") == 6


async def test_warm_symbols_become_samples_with_the_books_time_and_mid():
    history, ticks = await sim_ticks(TICKS_NEEDED + 2)
    eng = engine_for(history)
    outs = [eng.step(snaps, now, collect=True) for snaps, now in ticks]
    assert all(s == "warming_up" for _, s in outs[0].skips)
    last = outs[-1]
    assert last.skips == [] and [s.symbol for s in last.samples] == SYMS
    snaps, now = ticks[-1]
    for sample in last.samples:
        book = snaps[sample.symbol].book
        assert sample.features.shape == (110,) and sample.features.dtype == np.float32
        assert np.isfinite(sample.features).all()
        assert (sample.ts_ms, sample.mid) == (book.ts_ms, pytest.approx(book.mid))
    # closed bars pass through to be stored, each once
    starts = [c.start_ms for o in outs for c in o.candles.get("BTCUSDT", [])]
    assert starts and len(starts) == len(set(starts))


async def test_the_same_inputs_give_the_same_outputs():
    history, ticks = await sim_ticks(TICKS_NEEDED + 1)
    a, b = engine_for(history), engine_for(history)
    for snaps, now in ticks:
        oa, ob = a.step(snaps, now, collect=True), b.step(snaps, now, collect=True)
        assert oa.tape == ob.tape and oa.skips == ob.skips
        assert [s.symbol for s in oa.samples] == [s.symbol for s in ob.samples]
        for x, y in zip(oa.samples, ob.samples):
            assert np.array_equal(x.features, y.features)
    assert oa.samples
