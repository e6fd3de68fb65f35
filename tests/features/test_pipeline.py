"""FeaturePipeline: tick history, trades, candles held back until closed, warm-up."""

from __future__ import annotations

import math

import numpy as np
import pytest

from backend.venues.types import CANDLE_MS, Candle, Trade
from backend.ml_engine.feature_store.feature_schema import CANDLE_FEATURES, FEATURE_COUNT, FEATURE_INDEX, INDICATOR_FEATURES
from backend.ml_engine.features import MIN_CANDLES, TICKS_NEEDED, FeaturePipeline
from backend.symbols import InvalidSymbolError
from tests.features.helpers import T0, book, random_bars, random_book

SYM = "BTCUSDT"
TICK_MS = 3000


def col(batch, name, row=0):
    return float(batch.features[row, FEATURE_INDEX[name]])


def simple_book(mid, ts, spread=0.1, b1=1.0, a1=1.0):
    return book([(mid - spread / 2, b1), (mid - spread, 2.0)], [(mid + spread / 2, a1), (mid + spread, 2.0)], ts_ms=ts)


def test_tick_history_features_by_hand():
    rng = np.random.default_rng(1)
    mids = 100 * np.exp(np.cumsum(rng.normal(0, 2e-4, 120)))
    spreads = rng.uniform(0.01, 0.05, 120)
    b1 = rng.uniform(1, 3, 120)
    pipe = FeaturePipeline([SYM])
    batches = [pipe.update({SYM: simple_book(m, T0 + i * TICK_MS, s, b)}) for i, (m, s, b) in enumerate(zip(mids, spreads, b1))]
    last = batches[-1]
    rets = np.log(mids[1:] / mids[:-1]) * 1e4
    assert col(last, "ob_mid_ret_1_bps") == pytest.approx(rets[-1], rel=1e-5)
    assert col(last, "ob_mid_ret_10_bps") == pytest.approx(math.log(mids[-1] / mids[-11]) * 1e4, rel=1e-5)
    assert col(last, "ob_tick_volatility_20_bps") == pytest.approx(np.std(rets[-20:], ddof=1), rel=1e-5)
    spread_bps = spreads / mids * 1e4
    window = spread_bps[-100:]
    assert col(last, "ob_spread_z_100") == pytest.approx((window[-1] - window.mean()) / window.std(), rel=1e-5)
    imb = (b1 - 1.0) / (b1 + 1.0)
    ema = imb[0]
    for x in imb[1:]:
        ema += 2 / 11 * (x - ema)
    assert col(last, "ob_imbalance_1_ema_10") == pytest.approx(ema, rel=1e-5)
    ofi1 = [col(b, "ob_ofi_1") for b in batches[-10:]]
    assert col(last, "ob_ofi_1_sum_10") == pytest.approx(sum(ofi1), rel=1e-4, abs=1e-6)
    # each tick-history feature is NaN until its window is full, never a made-up 0
    assert math.isnan(col(batches[9], "ob_mid_ret_10_bps")) and not math.isnan(col(batches[10], "ob_mid_ret_10_bps"))
    assert math.isnan(col(batches[19], "ob_tick_volatility_20_bps")) and not math.isnan(col(batches[20], "ob_tick_volatility_20_bps"))
    assert math.isnan(col(batches[98], "ob_spread_z_100")) and not math.isnan(col(batches[99], "ob_spread_z_100"))


def test_a_spread_that_never_varies_has_z_score_zero():
    pipe = FeaturePipeline([SYM])
    for i in range(TICKS_NEEDED):
        b = pipe.update({SYM: simple_book(90_000.05, T0 + i * TICK_MS, spread=0.1, b1=1.0 + i % 3)})
    assert col(b, "ob_spread_z_100") == 0.0


def warm_pipeline(symbols=(SYM,), seed=0, p0=100.0):
    """A pipeline fed 400 closed bars and TICKS_NEEDED books per symbol."""
    rng = np.random.default_rng(seed)
    pipe = FeaturePipeline(list(symbols))
    for s in symbols:
        pipe.add_candles(s, random_bars(400, start_ms=T0 - 400 * CANDLE_MS, p0=p0, seed=seed))
    batch = None
    for i in range(TICKS_NEEDED):
        ts = T0 + i * 500  # all inside the first minute after the last bar
        batch = pipe.update({s: random_book(rng, p0, ts, s) for s in symbols})
    return pipe, batch


def test_warm_up_is_explicit_and_ends_with_finite_rows():
    pipe = FeaturePipeline([SYM, "ETHUSDT"])
    b = pipe.update({SYM: simple_book(100, T0)})
    assert b.symbols == [SYM] and not b.warm[0]
    assert b.not_warm[SYM] == "candles 0/300; order-flow needs a previous book; trade window 0/60 s"
    assert pipe.warmup_status(SYM) == b.not_warm[SYM] and not pipe.is_warm(SYM)
    assert pipe.warmup_status("ETHUSDT") == "no book yet"
    # candle/indicator columns are NaN, not zeros that look like data
    assert np.isnan(b.features[0, FEATURE_INDEX[CANDLE_FEATURES[0]] :]).all()

    pipe, b = warm_pipeline()
    assert not b.warm[0]  # the trade feed has been watched for only ~50 s
    assert b.not_warm[SYM].startswith("trade window 49/60 s")
    pipe2, b2 = warm_pipeline(symbols=(SYM, "ETHUSDT"))
    rng = np.random.default_rng(5)
    b2 = pipe2.update({SYM: random_book(rng, 100, T0 + 60_000), "ETHUSDT": random_book(rng, 100, T0 + 60_000, "ETHUSDT")})
    assert b2.warm.all() and b2.not_warm == {}
    assert pipe2.is_warm(SYM) and pipe2.warmup_status(SYM) is None
    assert b2.features.dtype == np.float32 and b2.features.shape == (2, FEATURE_COUNT)
    assert np.isfinite(b2.features).all()
    assert b2.timestamps_ms.dtype == np.int64 and list(b2.timestamps_ms) == [T0 + 60_000] * 2
    assert b2.mid_prices.dtype == np.float64


def test_min_candles_is_covered_by_the_sources_400_bar_backfill():
    assert MIN_CANDLES <= 400
    pipe = FeaturePipeline([SYM])
    pipe.add_candles(SYM, random_bars(MIN_CANDLES - 1, start_ms=T0 - (MIN_CANDLES - 1) * CANDLE_MS))
    b = pipe.update({SYM: simple_book(100, T0)})
    assert b.not_warm[SYM].startswith(f"candles {MIN_CANDLES - 1}/{MIN_CANDLES}")
    pipe.add_candles(SYM, random_bars(1, start_ms=T0, seed=3))
    b = pipe.update({SYM: simple_book(100, T0 + CANDLE_MS)})
    assert "candles" not in b.not_warm[SYM]


def test_a_bar_still_forming_is_never_used():
    bars = random_bars(402, start_ms=T0 - 400 * CANDLE_MS)
    pipe = FeaturePipeline([SYM])
    pipe.add_candles(SYM, bars)  # the last two bars close at T0 + 60 s and T0 + 120 s
    i_ret = FEATURE_INDEX["candle_ret_1m"]
    expected = [math.log(bars[k].close / bars[k - 1].close) for k in (399, 400, 401)]
    for ts, want in ((T0, expected[0]), (T0 + CANDLE_MS - 1, expected[0]), (T0 + CANDLE_MS, expected[1]), (T0 + 2 * CANDLE_MS + 5, expected[2])):
        b = pipe.update({SYM: simple_book(100, ts)})
        assert b.features[0, i_ret] == pytest.approx(want, rel=1e-5), ts


def test_candles_duplicates_bad_bars_and_gaps():
    bars = random_bars(300, start_ms=T0 - 303 * CANDLE_MS)
    pipe = FeaturePipeline([SYM])
    pipe.add_candles(SYM, bars[:200])
    pipe.add_candles(SYM, bars[150:200])  # duplicates: ignored
    bad = Candle(bars[200].start_ms, 100.0, 99.0, 98.0, 100.0, 1.0)  # high below open
    pipe.add_candles(SYM, [bad])
    # bars[201:] after the rejected one: the missing minute is filled flat
    pipe.add_candles(SYM, bars[201:])
    st = pipe.stats()
    assert st["ignored_candles"] == 50 and st["rejected_candles"] == 1 and st["filled_candles"] == 1
    b = pipe.update({SYM: simple_book(100, T0)})
    assert "candles" not in b.not_warm[SYM]
    # a long outage starts a new segment: features never span it
    later = random_bars(5, start_ms=T0 + 60 * CANDLE_MS, seed=9)
    pipe.add_candles(SYM, later)
    b = pipe.update({SYM: simple_book(100, T0 + 70 * CANDLE_MS)})
    assert b.not_warm[SYM].startswith("candles 5/300")
    assert np.isnan(b.features[0, FEATURE_INDEX[INDICATOR_FEATURES[0]]])


def test_trades_in_the_last_60_s_and_none_from_the_future():
    pipe = FeaturePipeline([SYM])
    pipe.add_trades(SYM, [
        Trade(T0 - 61_000, 100.0, 50.0, 1),  # too old
        Trade(T0 - 30_000, 101.0, 2.0, 1),
        Trade(T0 - 1_000, 99.0, 1.0, -1),
        Trade(T0, 100.0, 1.0, -1),
        Trade(T0 + 1_000, 120.0, 9.0, 1),  # after the book: must wait
    ])
    b = pipe.update({SYM: simple_book(100.0, T0)})
    vwap = (101 * 2 + 99 * 1 + 100 * 1) / 4
    assert col(b, "ob_trade_imbalance") == pytest.approx((2 - 2) / 4)
    assert col(b, "ob_trade_intensity_log") == pytest.approx(math.log1p(3))
    assert col(b, "ob_trade_vwap_dev_bps") == pytest.approx((vwap - 100) / 100 * 1e4, rel=1e-5)
    assert col(b, "ob_trade_last_side") == -1.0
    b = pipe.update({SYM: simple_book(100.0, T0 + 2_000)})
    assert col(b, "ob_trade_last_side") == 1.0 and col(b, "ob_trade_intensity_log") == pytest.approx(math.log1p(4))
    b = pipe.update({SYM: simple_book(100.0, T0 + 200_000)})
    assert col(b, "ob_trade_intensity_log") == 0.0 and col(b, "ob_trade_last_side") == 0.0
    pipe.add_trades(SYM, [Trade(T0, float("nan"), 1.0, 1), Trade(T0, 1.0, 1.0, 0)])
    assert pipe.stats()["rejected_trades"] == 2


def test_a_long_gap_between_books_restarts_tick_history():
    pipe = FeaturePipeline([SYM], max_tick_gap_ms=10_000)
    pipe.update({SYM: simple_book(100, T0)})
    b = pipe.update({SYM: simple_book(100, T0 + 3_000)})
    assert "tick history 2/100" in b.not_warm[SYM]
    b = pipe.update({SYM: simple_book(101, T0 + 60_000)})
    assert "order-flow needs a previous book" in b.not_warm[SYM]
    assert math.isnan(col(b, "ob_mid_ret_1_bps"))
    assert pipe.stats()["tick_history_restarts"] == 1


def test_symbols_absent_from_a_tick_are_simply_absent():
    pipe, _ = warm_pipeline(symbols=(SYM, "ETHUSDT"))
    rng = np.random.default_rng(2)
    b = pipe.update({"ETHUSDT": random_book(rng, 100, T0 + 60_000, "ETHUSDT")})
    assert b.symbols == ["ETHUSDT"] and b.features.shape == (1, FEATURE_COUNT)
    assert pipe.update({}).features.shape == (0, FEATURE_COUNT)


def test_bad_arguments_get_clear_errors():
    with pytest.raises(InvalidSymbolError):
        FeaturePipeline(["btc/usdt"])
    with pytest.raises(ValueError, match="duplicate symbols: BTCUSDT"):
        FeaturePipeline([SYM, SYM])
    pipe = FeaturePipeline([SYM])
    with pytest.raises(ValueError, match="unknown symbol 'ETHUSDT'"):
        pipe.update({"ETHUSDT": simple_book(100, T0)})
    with pytest.raises(ValueError, match="unknown symbol"):
        pipe.add_candles("ETHUSDT", [])
    with pytest.raises(ValueError, match="min_candles"):
        FeaturePipeline([SYM], min_candles=10)


def test_late_trades_are_merged_in_time_order():
    rng = np.random.default_rng(4)
    trades = [Trade(T0 - int(x), float(100 + rng.normal()), float(rng.uniform(0.1, 2)), int(rng.choice((-1, 1)))) for x in rng.integers(0, 59_000, 300)]
    in_order = FeaturePipeline([SYM])
    in_order.add_trades(SYM, sorted(trades, key=lambda t: t.ts_ms))
    shuffled = FeaturePipeline([SYM])
    for chunk in np.array_split(np.arange(300), 7):
        shuffled.add_trades(SYM, [trades[i] for i in chunk])  # each chunk reaches back in time
    a = in_order.update({SYM: simple_book(100, T0)})
    b = shuffled.update({SYM: simple_book(100, T0)})
    for name in ("ob_trade_imbalance", "ob_trade_intensity_log", "ob_trade_vwap_dev_bps"):
        assert col(b, name) == pytest.approx(col(a, name), rel=1e-6, abs=1e-9)
    assert col(a, "ob_trade_intensity_log") == pytest.approx(math.log1p(300))
