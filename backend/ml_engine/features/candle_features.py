"""The 25 candle features, vectorised over many symbols' bar windows at once.

Input: OHLCV of the last ``CANDLE_LOOKBACK`` closed bars per symbol, shape
(n, 5, CANDLE_LOOKBACK) with rows open, high, low, close, volume; the last column
is the most recent bar closed at or before the sample time. Output: (n, 25) in
``CANDLE_FEATURES`` order. Degenerate windows (flat prices, no volume, zero
variance) get the neutral values the schema documents, never NaN.

Sources: realized volatility is the square root of summed squared log-returns
(Andersen & Bollerslev 1998); the range estimators are Parkinson (1980, "The Extreme
Value Method for Estimating the Variance of the Rate of Return") and Garman & Klass
(1980, "On the Estimation of Security Price Volatilities from Historical Data");
skewness and excess kurtosis are the population moment ratios m3/m2^1.5, m4/m2^2 - 3.
The schema's formula strings are the definitions the tests check.
"""

from __future__ import annotations

import math

import numpy as np

from backend.ml_engine.feature_store.feature_schema import CANDLE_FEATURES

CANDLE_LOOKBACK = 61  # 60 one-bar returns need 61 closes
_LN2 = math.log(2.0)
_MOMENT_FLOOR = 1e-20  # variance of 1-bar log-returns below (1e-10)^2 is a flat market
_REL_STD_FLOOR = 1e-9


def candle_features(w: np.ndarray) -> np.ndarray:
    """The 25 candle features for each of n symbols' bar windows.

    Args:
        w: (n, 5, >= CANDLE_LOOKBACK) float64 OHLCV, rows open, high, low, close,
            volume; prices positive, oldest bar first. Only the last
            ``CANDLE_LOOKBACK`` bars are used.

    Returns:
        (n, 25) float64 in ``CANDLE_FEATURES`` order: log-returns, volatilities in
        log-return units, ratios, z-scores and distances in bps of the last close.

    Raises:
        ValueError: ``w`` is not (n, 5, >= CANDLE_LOOKBACK).
    """
    if w.ndim != 3 or w.shape[1] != 5 or w.shape[2] < CANDLE_LOOKBACK:
        raise ValueError(f"candle windows must be (n, 5, >= {CANDLE_LOOKBACK}), got {w.shape}")
    w = w[:, :, -CANDLE_LOOKBACK:]
    o, h, l, c, v = w[:, 0], w[:, 1], w[:, 2], w[:, 3], w[:, 4]
    c_last = c[:, -1]
    r = np.log(c[:, 1:] / c[:, :-1])  # (n, 60) one-bar log-returns
    f: dict[str, np.ndarray] = {}

    for k in (1, 5, 15, 30, 60):
        f[f"candle_ret_{k}m"] = np.log(c_last / c[:, -1 - k])
    rvol15 = np.sqrt(np.sum(r[:, -15:] ** 2, axis=1))
    rvol60 = np.sqrt(np.sum(r ** 2, axis=1))
    f["candle_rvol_15m"] = rvol15
    f["candle_rvol_60m"] = rvol60

    hl15 = np.log(h[:, -15:] / l[:, -15:])
    co15 = np.log(c[:, -15:] / o[:, -15:])
    f["candle_parkinson_vol_15m"] = np.sqrt(np.mean(hl15 ** 2, axis=1) / (4 * _LN2))
    gk = np.mean(0.5 * hl15 ** 2 - (2 * _LN2 - 1) * co15 ** 2, axis=1)
    f["candle_garman_klass_vol_15m"] = np.sqrt(np.maximum(gk, 0.0))

    o1, h1, l1 = o[:, -1], h[:, -1], l[:, -1]
    rng = h1 - l1
    has_rng = rng > 0
    safe_rng = np.where(has_rng, rng, 1.0)
    f["candle_body_ratio"] = np.where(has_rng, (c_last - o1) / safe_rng, 0.0)
    f["candle_upper_wick_ratio"] = np.where(has_rng, (h1 - np.maximum(o1, c_last)) / safe_rng, 0.0)
    f["candle_lower_wick_ratio"] = np.where(has_rng, (np.minimum(o1, c_last) - l1) / safe_rng, 0.0)
    f["candle_range_bps"] = rng / c_last * 1e4
    f["candle_range_mean_15m_bps"] = np.mean((h[:, -15:] - l[:, -15:]) / c[:, -15:], axis=1) * 1e4
    hh15, ll15 = h[:, -15:].max(axis=1), l[:, -15:].min(axis=1)
    span15 = hh15 - ll15
    f["candle_close_pos_15m"] = np.where(span15 > 0, (c_last - ll15) / np.where(span15 > 0, span15, 1.0), 0.5)

    v60 = v[:, -60:]
    vmean60 = v60.mean(axis=1)
    vstd60 = v60.std(axis=1)
    vflat = vstd60 <= _REL_STD_FLOOR * vmean60
    f["candle_volume_z_60m"] = np.where(vflat, 0.0, (v[:, -1] - vmean60) / np.where(vflat, 1.0, vstd60))
    vmean5 = v[:, -5:].mean(axis=1)
    f["candle_volume_ratio_5_60"] = np.where(vmean60 > 0, vmean5 / np.where(vmean60 > 0, vmean60, 1.0), 1.0)
    f["candle_log_volume_change"] = np.log((v[:, -1] + 1.0) / (v[:, -2] + 1.0))

    d = r - r.mean(axis=1, keepdims=True)
    m2 = np.mean(d ** 2, axis=1)
    ok = m2 > _MOMENT_FLOOR
    m2s = np.where(ok, m2, 1.0)
    f["candle_ret_skew_60m"] = np.where(ok, np.mean(d ** 3, axis=1) / m2s ** 1.5, 0.0)
    f["candle_ret_kurt_60m"] = np.where(ok, np.mean(d ** 4, axis=1) / m2s ** 2 - 3.0, 0.0)

    f["candle_up_bar_share_15m"] = np.mean(c[:, -15:] > o[:, -15:], axis=1)
    tp15 = (h[:, -15:] + l[:, -15:] + c[:, -15:]) / 3.0
    v15 = v[:, -15:]
    sv15 = v15.sum(axis=1)
    vwap15 = np.where(sv15 > 0, (tp15 * v15).sum(axis=1) / np.where(sv15 > 0, sv15, 1.0), tp15.mean(axis=1))
    f["candle_vwap_dev_15m_bps"] = (c_last - vwap15) / c_last * 1e4
    f["candle_high_dist_60m_bps"] = (h[:, -60:].max(axis=1) - c_last) / c_last * 1e4
    f["candle_low_dist_60m_bps"] = (c_last - l[:, -60:].min(axis=1)) / c_last * 1e4
    scaled60 = rvol60 * math.sqrt(15 / 60)
    f["candle_rvol_ratio_15_60"] = np.where(rvol60 > 0, rvol15 / np.where(rvol60 > 0, scaled60, 1.0), 1.0)

    return np.stack([f[name] for name in CANDLE_FEATURES], axis=1)
