"""The 35 indicator features of one symbol, computed by TA-Lib on closed 1-minute bars.

Each feature is TA-Lib's value at the last bar of the window (standard
definitions, TA-Lib's default seeding), made scale-free where the schema says so
(divided by the last close, in bps). Recursive smoothings (Wilder RSI/ATR/ADX,
EMAs, KAMA, SAR) run over the whole window, which is long enough for them to
forget their seed (see ``CONVERGENCE`` in pipeline.py and the convergence test);
windowed indicators get only the tail they need, which gives identical values.

Where TA-Lib's value is undefined and it returns 0 by convention (e.g. RSI of a
market that never moved), that convention is kept. Bollinger %B of a flat window
is 0.5 and z-scores of a constant series are 0.

Sources of the definitions (TA-Lib, https://ta-lib.org, is the reference
implementation and computes every one): RSI, ATR, ADX/DX/+DI/-DI and Parabolic SAR,
Wilder (1978, "New Concepts in Technical Trading Systems"); MACD, Appel (1979);
Bollinger Bands, Bollinger (2001, "Bollinger on Bollinger Bands"); Stochastic
%K/%D, Lane (1950s; TA-Lib's STOCH); Stochastic RSI, Chande & Kroll (1994); CCI,
Lambert (1980); Williams %R and the Ultimate Oscillator, Larry Williams; MFI, Quong &
Soudack (1989); Aroon and CMO, Chande; OBV, Granville (1963); KAMA, Kaufman (1995);
TRIX, Hutson (1983).
"""

from __future__ import annotations

import numpy as np
import talib

from backend.ml_engine.feature_store.feature_schema import INDICATOR_FEATURES

# bars a windowed indicator needs (its TA-Lib lookback + 1)
_TAIL = 32


def indicator_features(w: np.ndarray) -> np.ndarray:
    """The 35 indicator features of one symbol at the last bar of its window.

    Args:
        w: (5, n_bars) float64 OHLCV, rows open, high, low, close, volume, oldest
            bar first; ``n_bars`` is at least ``MIN_CANDLES`` (pipeline.py) so the
            recursive smoothings have forgotten their seed. Prices must be positive.

    Returns:
        (35,) float64 in ``INDICATOR_FEATURES`` order; units as the schema says
        (0..100 oscillators, percent, bps of the last close, z-scores).
    """
    o, h, l, c, v = (np.ascontiguousarray(w[i], dtype=np.float64) for i in range(5))
    close = c[-1]
    bps = 1e4 / close
    # windowed indicators only need the last bars; slicing saves TA-Lib work
    ot, ht, lt, ct, vt = o[-_TAIL:], h[-_TAIL:], l[-_TAIL:], c[-_TAIL:], v[-_TAIL:]
    out = np.empty(len(INDICATOR_FEATURES))

    macd, signal, hist = talib.MACD(c, 12, 26, 9)
    upper, middle, lower = talib.BBANDS(ct, 20, 2.0, 2.0, 0)
    band = upper[-1] - lower[-1]
    slowk, slowd = talib.STOCH(ht, lt, ct, 14, 3, 0, 3, 0)
    stochrsi_k, _ = talib.STOCHRSI(c, 14, 5, 3, 0)
    ema9, ema21, ema50 = talib.EMA(c, 9)[-1], talib.EMA(c, 21)[-1], talib.EMA(c, 50)[-1]
    obv = talib.OBV(c[-20:], v[-20:])
    obv_std = obv.std()
    obv_flat = obv_std <= 1e-9 * np.abs(v[-20:]).mean()

    vals = {
        "ind_rsi_14": talib.RSI(c, 14)[-1],
        "ind_rsi_6": talib.RSI(c, 6)[-1],
        "ind_macd_bps": macd[-1] * bps,
        "ind_macd_signal_bps": signal[-1] * bps,
        "ind_macd_hist_bps": hist[-1] * bps,
        "ind_bb_pctb_20": (close - lower[-1]) / band if band > 0 else 0.5,
        "ind_bb_width_20": band / middle[-1],
        "ind_atr_pct_14": talib.NATR(h, l, c, 14)[-1],
        "ind_stoch_k": slowk[-1],
        "ind_stoch_d": slowd[-1],
        "ind_stochrsi_k": stochrsi_k[-1],
        "ind_adx_14": talib.ADX(h, l, c, 14)[-1],
        "ind_plus_di_14": talib.PLUS_DI(h, l, c, 14)[-1],
        "ind_minus_di_14": talib.MINUS_DI(h, l, c, 14)[-1],
        "ind_cci_20": talib.CCI(ht, lt, ct, 20)[-1],
        "ind_willr_14": talib.WILLR(ht, lt, ct, 14)[-1],
        "ind_mfi_14": talib.MFI(ht, lt, ct, vt, 14)[-1],
        "ind_roc_10": talib.ROC(ct, 10)[-1],
        "ind_mom_10_bps": talib.MOM(ct, 10)[-1] * bps,
        "ind_ema_dev_9_bps": (close - ema9) * bps,
        "ind_ema_dev_21_bps": (close - ema21) * bps,
        "ind_ema_dev_50_bps": (close - ema50) * bps,
        "ind_sma_dev_20_bps": (close - talib.SMA(ct, 20)[-1]) * bps,
        "ind_ema_cross_9_21_bps": (ema9 - ema21) * bps,
        "ind_aroonosc_25": talib.AROONOSC(ht, lt, 25)[-1],
        "ind_ultosc": talib.ULTOSC(ht, lt, ct, 7, 14, 28)[-1],
        "ind_obv_z_20": 0.0 if obv_flat else (obv[-1] - obv.mean()) / obv_std,
        "ind_bop": talib.BOP(ot[-1:], ht[-1:], lt[-1:], ct[-1:])[-1],
        "ind_trix_15": talib.TRIX(c, 15)[-1],
        "ind_ppo": talib.PPO(c, 12, 26, 1)[-1],
        "ind_cmo_14": talib.CMO(c, 14)[-1],
        "ind_dx_14": talib.DX(h, l, c, 14)[-1],
        "ind_linreg_slope_14_bps": talib.LINEARREG_SLOPE(ct, 14)[-1] * bps,
        "ind_kama_dev_bps": (close - talib.KAMA(c, 30)[-1]) * bps,
        "ind_sar_dev_bps": (close - talib.SAR(h, l, 0.02, 0.2)[-1]) * bps,
    }
    for i, name in enumerate(INDICATOR_FEATURES):
        out[i] = vals[name]
    return out
