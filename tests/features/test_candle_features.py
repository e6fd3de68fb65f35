"""Candle features against hand computations on small, known bar windows."""

from __future__ import annotations

import math

import numpy as np
import pytest

from backend.ml_engine.feature_store.feature_schema import CANDLE_FEATURES
from backend.ml_engine.features.candle_features import CANDLE_LOOKBACK, candle_features


def features(o, h, l, c, v):
    w = np.array([o, h, l, c, v], dtype=np.float64)[None]
    return dict(zip(CANDLE_FEATURES, candle_features(w)[0]))


def known_bars():
    n = CANDLE_LOOKBACK
    i = np.arange(n)
    c = 100.0 * (1.0 + 0.001 * np.sin(i / 3.0)) * (1.0 + 0.0002 * i)
    o = np.r_[100.0, c[:-1]]
    h = np.maximum(o, c) + 0.05
    l = np.minimum(o, c) - 0.03
    v = 10.0 + (i % 7)
    return o, h, l, c, v


def test_returns_and_volatility_by_hand():
    o, h, l, c, v = known_bars()
    f = features(o, h, l, c, v)
    for k in (1, 5, 15, 30, 60):
        assert f[f"candle_ret_{k}m"] == pytest.approx(math.log(c[-1] / c[-1 - k]), rel=1e-12)
    r = [math.log(c[j] / c[j - 1]) for j in range(1, len(c))]
    rv15 = math.sqrt(sum(x * x for x in r[-15:]))
    rv60 = math.sqrt(sum(x * x for x in r))
    assert f["candle_rvol_15m"] == pytest.approx(rv15, rel=1e-12)
    assert f["candle_rvol_60m"] == pytest.approx(rv60, rel=1e-12)
    assert f["candle_rvol_ratio_15_60"] == pytest.approx(rv15 / (rv60 * 0.5), rel=1e-12)
    park = math.sqrt(sum(math.log(h[j] / l[j]) ** 2 for j in range(-15, 0)) / 15 / (4 * math.log(2)))
    assert f["candle_parkinson_vol_15m"] == pytest.approx(park, rel=1e-12)
    gk = sum(0.5 * math.log(h[j] / l[j]) ** 2 - (2 * math.log(2) - 1) * math.log(c[j] / o[j]) ** 2 for j in range(-15, 0)) / 15
    assert f["candle_garman_klass_vol_15m"] == pytest.approx(math.sqrt(gk), rel=1e-12)
    mean = sum(r) / 60
    m2 = sum((x - mean) ** 2 for x in r) / 60
    m3 = sum((x - mean) ** 3 for x in r) / 60
    m4 = sum((x - mean) ** 4 for x in r) / 60
    assert f["candle_ret_skew_60m"] == pytest.approx(m3 / m2 ** 1.5, rel=1e-9)
    assert f["candle_ret_kurt_60m"] == pytest.approx(m4 / m2 ** 2 - 3, rel=1e-9)


def test_last_bar_shape_range_volume_and_position():
    o, h, l, c, v = known_bars()
    o[-1], h[-1], l[-1], c[-1] = 100.0, 100.5, 99.0, 100.2
    v[-1], v[-2] = 30.0, 9.0
    f = features(o, h, l, c, v)
    assert f["candle_body_ratio"] == pytest.approx(0.2 / 1.5)
    assert f["candle_upper_wick_ratio"] == pytest.approx(0.3 / 1.5)
    assert f["candle_lower_wick_ratio"] == pytest.approx(1.0 / 1.5)
    assert f["candle_range_bps"] == pytest.approx(1.5 / 100.2 * 1e4)
    assert f["candle_range_mean_15m_bps"] == pytest.approx(np.mean((h[-15:] - l[-15:]) / c[-15:]) * 1e4)
    hh, ll = h[-15:].max(), l[-15:].min()
    assert f["candle_close_pos_15m"] == pytest.approx((100.2 - ll) / (hh - ll))
    v60 = v[-60:]
    assert f["candle_volume_z_60m"] == pytest.approx((30 - v60.mean()) / v60.std())
    assert f["candle_volume_ratio_5_60"] == pytest.approx(v[-5:].mean() / v60.mean())
    assert f["candle_log_volume_change"] == pytest.approx(math.log(31 / 10))
    assert f["candle_up_bar_share_15m"] == pytest.approx(np.mean(c[-15:] > o[-15:]))
    tp = (h[-15:] + l[-15:] + c[-15:]) / 3
    vwap = (tp * v[-15:]).sum() / v[-15:].sum()
    assert f["candle_vwap_dev_15m_bps"] == pytest.approx((100.2 - vwap) / 100.2 * 1e4)
    assert f["candle_high_dist_60m_bps"] == pytest.approx((h[-60:].max() - 100.2) / 100.2 * 1e4)
    assert f["candle_low_dist_60m_bps"] == pytest.approx((100.2 - l[-60:].min()) / 100.2 * 1e4)


def test_flat_bars_without_volume_get_the_documented_neutral_values():
    n = CANDLE_LOOKBACK
    flat = np.full(n, 0.004)
    f = features(flat, flat, flat, flat, np.zeros(n))
    assert all(math.isfinite(x) for x in f.values())
    assert f["candle_close_pos_15m"] == 0.5
    assert f["candle_volume_ratio_5_60"] == 1.0 and f["candle_rvol_ratio_15_60"] == 1.0
    assert f["candle_body_ratio"] == 0.0 and f["candle_volume_z_60m"] == 0.0
    assert f["candle_ret_skew_60m"] == 0.0 and f["candle_ret_kurt_60m"] == 0.0
    assert f["candle_vwap_dev_15m_bps"] == pytest.approx(0.0, abs=1e-9) and f["candle_rvol_15m"] == 0.0


def test_rows_are_independent_in_a_batch():
    a = np.array(known_bars())
    b = a.copy()
    b[:4] *= 3.0
    both = candle_features(np.stack([a, b]))
    assert np.array_equal(both[0], candle_features(a[None])[0])
    with pytest.raises(ValueError, match="candle windows"):
        candle_features(a[None, :, :10])
