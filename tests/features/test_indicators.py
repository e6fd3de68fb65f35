"""Indicator features equal TA-Lib on the same closed bars, and the window has converged."""

from __future__ import annotations

import numpy as np
import pytest
import talib

from backend.venues.types import CANDLE_MS
from backend.ml_engine.feature_store.feature_schema import FEATURE_INDEX, INDICATOR_FEATURES
from backend.ml_engine.features import MIN_CANDLES, FeaturePipeline
from backend.ml_engine.features.indicator_features import indicator_features
from tests.features.helpers import T0, bars_array, book, random_bars


def talib_reference(w: np.ndarray) -> dict[str, float]:
    """Each indicator straight from TA-Lib on the whole window, as the schema states it."""
    o, h, l, c, v = (np.ascontiguousarray(x) for x in w)
    close = c[-1]
    macd, sig, hist = talib.MACD(c, fastperiod=12, slowperiod=26, signalperiod=9)
    up, mid, lo = talib.BBANDS(c, timeperiod=20, nbdevup=2, nbdevdn=2, matype=0)
    k, d = talib.STOCH(h, l, c, fastk_period=14, slowk_period=3, slowk_matype=0, slowd_period=3, slowd_matype=0)
    srk, _ = talib.STOCHRSI(c, timeperiod=14, fastk_period=5, fastd_period=3, fastd_matype=0)
    obv = talib.OBV(c, v)[-20:]
    ema = {p: talib.EMA(c, timeperiod=p)[-1] for p in (9, 21, 50)}
    bps = 1e4 / close
    return {
        "ind_rsi_14": talib.RSI(c, timeperiod=14)[-1],
        "ind_rsi_6": talib.RSI(c, timeperiod=6)[-1],
        "ind_macd_bps": macd[-1] * bps,
        "ind_macd_signal_bps": sig[-1] * bps,
        "ind_macd_hist_bps": hist[-1] * bps,
        "ind_bb_pctb_20": (close - lo[-1]) / (up[-1] - lo[-1]),
        "ind_bb_width_20": (up[-1] - lo[-1]) / mid[-1],
        "ind_atr_pct_14": talib.NATR(h, l, c, timeperiod=14)[-1],
        "ind_stoch_k": k[-1],
        "ind_stoch_d": d[-1],
        "ind_stochrsi_k": srk[-1],
        "ind_adx_14": talib.ADX(h, l, c, timeperiod=14)[-1],
        "ind_plus_di_14": talib.PLUS_DI(h, l, c, timeperiod=14)[-1],
        "ind_minus_di_14": talib.MINUS_DI(h, l, c, timeperiod=14)[-1],
        "ind_cci_20": talib.CCI(h, l, c, timeperiod=20)[-1],
        "ind_willr_14": talib.WILLR(h, l, c, timeperiod=14)[-1],
        "ind_mfi_14": talib.MFI(h, l, c, v, timeperiod=14)[-1],
        "ind_roc_10": talib.ROC(c, timeperiod=10)[-1],
        "ind_mom_10_bps": talib.MOM(c, timeperiod=10)[-1] * bps,
        "ind_ema_dev_9_bps": (close - ema[9]) * bps,
        "ind_ema_dev_21_bps": (close - ema[21]) * bps,
        "ind_ema_dev_50_bps": (close - ema[50]) * bps,
        "ind_sma_dev_20_bps": (close - talib.SMA(c, timeperiod=20)[-1]) * bps,
        "ind_ema_cross_9_21_bps": (ema[9] - ema[21]) * bps,
        "ind_aroonosc_25": talib.AROONOSC(h, l, timeperiod=25)[-1],
        "ind_ultosc": talib.ULTOSC(h, l, c, timeperiod1=7, timeperiod2=14, timeperiod3=28)[-1],
        "ind_obv_z_20": (obv[-1] - obv.mean()) / obv.std(),
        "ind_bop": talib.BOP(o, h, l, c)[-1],
        "ind_trix_15": talib.TRIX(c, timeperiod=15)[-1],
        "ind_ppo": talib.PPO(c, fastperiod=12, slowperiod=26, matype=1)[-1],
        "ind_cmo_14": talib.CMO(c, timeperiod=14)[-1],
        "ind_dx_14": talib.DX(h, l, c, timeperiod=14)[-1],
        "ind_linreg_slope_14_bps": talib.LINEARREG_SLOPE(c, timeperiod=14)[-1] * bps,
        "ind_kama_dev_bps": (close - talib.KAMA(c, timeperiod=30)[-1]) * bps,
        "ind_sar_dev_bps": (close - talib.SAR(h, l, acceleration=0.02, maximum=0.2)[-1]) * bps,
    }


def test_reference_covers_every_indicator_feature():
    w = bars_array(random_bars(MIN_CANDLES, start_ms=T0))
    assert set(talib_reference(w)) == set(INDICATOR_FEATURES)


@pytest.mark.parametrize("seed, p0, vol", [(0, 100.0, 1e-3), (1, 90_000.0, 5e-4), (2, 0.004, 3e-3)])
def test_indicator_features_equal_talib_on_the_same_window(seed, p0, vol):
    w = bars_array(random_bars(MIN_CANDLES, start_ms=T0, p0=p0, seed=seed, vol=vol))
    got = indicator_features(w)
    ref = talib_reference(w)
    for i, name in enumerate(INDICATOR_FEATURES):
        assert got[i] == pytest.approx(ref[name], rel=1e-6, abs=1e-9), name


def test_pipeline_indicators_equal_talib_on_the_bars_closed_by_each_tick():
    bars = random_bars(MIN_CANDLES + 40, start_ms=T0 - MIN_CANDLES * CANDLE_MS, p0=250.0, seed=7)
    pipe = FeaturePipeline(["SOLUSDT"])
    pipe.add_candles("SOLUSDT", bars)  # 40 of them close only later
    all_w = bars_array(bars)
    cols = [FEATURE_INDEX[n] for n in INDICATOR_FEATURES]
    for minute in (0, 1, 17, 39):
        ts = T0 + minute * CANDLE_MS + 1_500
        b = pipe.update({"SOLUSDT": book([(250.0, 1.0)], [(250.1, 1.0)], ts_ms=ts, symbol="SOLUSDT")})
        n_closed = MIN_CANDLES + minute
        ref = talib_reference(all_w[:, n_closed - MIN_CANDLES : n_closed].copy())
        got = b.features[0, cols].astype(np.float64)
        for j, name in enumerate(INDICATOR_FEATURES):
            # float32 output: ~6e-8 relative; the bar is 1e-6 relative
            assert got[j] == pytest.approx(ref[name], rel=1e-6, abs=1e-6), (minute, name)


@pytest.mark.parametrize("seed", [0, 1])
def test_window_is_long_enough_for_recursive_smoothings_to_converge(seed):
    """Same indicators from the MIN_CANDLES window and from 3000 bars of history."""
    w = bars_array(random_bars(3000, start_ms=T0, seed=seed, vol=2e-3))
    full = indicator_features(w)
    window = indicator_features(w[:, -MIN_CANDLES:].copy())
    for i, name in enumerate(INDICATOR_FEATURES):
        # 0.1 % (EMA(50) and KAMA(30) are the slowest; Wilder RSI/ADX agree to ~1e-7)
        assert abs(full[i] - window[i]) <= 1e-3 * (1 + abs(full[i])), name
    wilder = [INDICATOR_FEATURES.index(n) for n in ("ind_rsi_14", "ind_adx_14", "ind_atr_pct_14", "ind_plus_di_14")]
    assert np.allclose(full[wilder], window[wilder], rtol=1e-6, atol=1e-6)


def test_flat_market_without_volume_is_finite():
    n = MIN_CANDLES
    w = np.vstack([np.full((4, n), 5.0), np.zeros((1, n))])
    got = indicator_features(w)
    assert np.isfinite(got).all()
    assert got[INDICATOR_FEATURES.index("ind_bb_pctb_20")] == 0.5
    assert got[INDICATOR_FEATURES.index("ind_obv_z_20")] == 0.0
