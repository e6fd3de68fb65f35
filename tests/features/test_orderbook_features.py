"""Order-book features against values worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from backend.ml_engine.feature_store.feature_schema import FEATURE_INDEX, ORDERBOOK_FEATURES
from backend.ml_engine.features import FeaturePipeline
from backend.ml_engine.features.book_arrays import stack_books
from backend.ml_engine.features.orderbook_features import snapshot_features
from tests.features.helpers import T0, book

BIDS = [(100.0, 2.0), (99.9, 3.0), (99.8, 5.0)]
ASKS = [(100.1, 1.0), (100.2, 4.0), (100.3, 2.0)]


def snap(bids, asks, depth=50):
    f = snapshot_features(stack_books([book(bids, asks)], depth), depth)
    return {k: float(v[0]) for k, v in f.items()}


def test_spread_microprice_and_weighted_mid():
    f = snap(BIDS, ASKS)
    mid = 100.05
    assert f["ob_spread_bps"] == pytest.approx(0.1 / mid * 1e4, rel=1e-12)
    micro = (100.1 * 2 + 100.0 * 1) / 3  # ask1*B1 + bid1*A1 over B1 + A1
    assert f["ob_microprice_dev_bps"] == pytest.approx((micro - mid) / mid * 1e4, rel=1e-12)
    vw_b = (100 * 2 + 99.9 * 3 + 99.8 * 5) / 10
    vw_a = (100.1 * 1 + 100.2 * 4 + 100.3 * 2) / 7
    assert f["ob_weighted_mid_dev_5_bps"] == pytest.approx(((vw_b + vw_a) / 2 - mid) / mid * 1e4, rel=1e-9)


def test_imbalance_at_1_5_10_20_levels():
    bids = [(100.0 - 0.1 * i, float(i + 1)) for i in range(25)]  # sizes 1..25
    asks = [(100.1 + 0.1 * i, 2.0) for i in range(25)]
    f = snap(bids, asks)
    for k in (1, 5, 10, 20):
        sb = k * (k + 1) / 2
        sa = 2.0 * k
        assert f[f"ob_imbalance_{k}"] == pytest.approx((sb - sa) / (sb + sa), rel=1e-12), k
    sb, sa = 25 * 26 / 2, 50.0
    assert f["ob_imbalance_50"] == pytest.approx((sb - sa) / (sb + sa), rel=1e-12)


def test_imbalance_of_a_thin_book_uses_the_levels_that_exist():
    f = snap(BIDS, ASKS)
    assert f["ob_imbalance_1"] == pytest.approx((2 - 1) / 3)
    for k in (5, 10, 20, 50):
        assert f[f"ob_imbalance_{k}"] == pytest.approx((10 - 7) / 17)


def test_depth_within_bps_bands():
    # mid 100, levels every 5 bps: bid at 5, 10, 15, ... 60 bps; 10 bps sits exactly on the edge
    bids = [(100.0 * (1 - 5e-4 * (i + 1)), float(i + 1)) for i in range(12)]
    asks = [(100.0 * (1 + 5e-4 * (i + 1)), 1.0) for i in range(12)]
    f = snap(bids, asks)
    total = sum(range(1, 13)) + 12.0
    # every level is within 50 bps of this mid only up to level 10
    assert f["ob_depth_bid_10bps"] == pytest.approx((1 + 2) / total)
    assert f["ob_depth_ask_10bps"] == pytest.approx(2 / total)
    assert f["ob_depth_bid_25bps"] == pytest.approx(sum(range(1, 6)) / total)
    assert f["ob_depth_ask_25bps"] == pytest.approx(5 / total)
    assert f["ob_depth_bid_50bps"] == pytest.approx(sum(range(1, 11)) / total)
    assert f["ob_depth_ask_50bps"] == pytest.approx(10 / total)
    assert f["ob_depth_imbalance_10bps"] == pytest.approx((3 - 2) / 5)
    assert f["ob_depth_imbalance_50bps"] == pytest.approx((55 - 10) / 65)


def test_depth_imbalance_is_zero_when_nothing_is_inside_the_band():
    f = snap([(99.0, 1.0)], [(101.0, 3.0)])  # 100 bps half-spread
    assert f["ob_depth_bid_10bps"] == 0.0 and f["ob_depth_ask_50bps"] == 0.0
    assert f["ob_depth_imbalance_10bps"] == 0.0


def test_level_distances_slope_and_concentration():
    bids = [(100.0 - 0.1 * i, 1.0 + i) for i in range(20)]
    asks = [(100.1 + 0.1 * i, 2.0) for i in range(20)]
    f = snap(bids, asks)
    mid = 100.05
    for k in (5, 10, 20):
        assert f[f"ob_bid_dist_{k}_bps"] == pytest.approx((mid - (100.0 - 0.1 * (k - 1))) / mid * 1e4, rel=1e-9)
        assert f[f"ob_ask_dist_{k}_bps"] == pytest.approx(((100.1 + 0.1 * (k - 1)) - mid) / mid * 1e4, rel=1e-9)
    total = sum(1.0 + i for i in range(20)) + 40.0
    slope_b = (sum(1.0 + i for i in range(10)) / total) / f["ob_bid_dist_10_bps"]
    slope_a = (20.0 / total) / f["ob_ask_dist_10_bps"]
    assert f["ob_slope_bid"] == pytest.approx(slope_b)
    assert f["ob_slope_ask"] == pytest.approx(slope_a)
    assert f["ob_slope_log_ratio"] == pytest.approx(math.log(slope_b / slope_a))
    assert f["ob_bid_conc_1_5"] == pytest.approx(1 / 15)
    assert f["ob_ask_conc_1_5"] == pytest.approx(0.2)
    assert f["ob_bid_conc_5_20"] == pytest.approx(15 / 210)
    assert f["ob_log_depth_ratio"] == pytest.approx(math.log(210 / 40))
    sizes = np.arange(1.0, 11.0)
    assert f["ob_bid_size_cv_10"] == pytest.approx(sizes.std() / sizes.mean())
    assert f["ob_ask_size_cv_10"] == 0.0
    assert f["ob_bid_levels_filled"] == pytest.approx(20 / 50)


def test_thin_book_falls_back_to_its_deepest_level():
    f = snap(BIDS, [(100.1, 1.0)])
    mid = 100.05
    for k in (5, 10, 20):
        assert f[f"ob_bid_dist_{k}_bps"] == pytest.approx((mid - 99.8) / mid * 1e4)
        assert f[f"ob_ask_dist_{k}_bps"] == pytest.approx((100.1 - mid) / mid * 1e4)
    assert f["ob_ask_size_cv_10"] == 0.0  # one level: no dispersion
    assert f["ob_ask_levels_filled"] == pytest.approx(1 / 50)
    assert all(math.isfinite(v) for v in f.values())


def test_book_deeper_than_the_pipeline_depth_is_cut():
    bids = [(100.0 - 0.1 * i, 1.0) for i in range(30)]
    asks = [(100.1 + 0.1 * i, 1.0) for i in range(30)]
    f = snap(bids, asks, depth=10)
    assert f["ob_bid_levels_filled"] == 1.0
    assert f["ob_bid_dist_20_bps"] == pytest.approx(f["ob_bid_dist_10_bps"])


def _ofi(prev, cur):
    """Features of ``cur`` after ``prev`` through the pipeline (OFI needs two books)."""
    pipe = FeaturePipeline(["BTCUSDT"])
    b0 = pipe.update({"BTCUSDT": book(*prev, ts_ms=T0)})
    assert np.isnan(b0.features[0, FEATURE_INDEX["ob_ofi_1"]])
    assert b0.not_warm["BTCUSDT"].count("order-flow needs a previous book") == 1
    b1 = pipe.update({"BTCUSDT": book(*cur, ts_ms=T0 + 3000)})
    return {k: float(b1.features[0, FEATURE_INDEX[k]]) for k in ORDERBOOK_FEATURES}


@pytest.mark.parametrize(
    "cur_bid, cur_ask, e1",
    [
        ((100.0, 7.0), (100.1, 4.0), 7.0 - 5.0),  # same prices: change of bid size minus change of ask size
        ((100.0, 5.0), (100.1, 1.0), 0.0 + 3.0),  # ask size 4 -> 1 is buying pressure
        ((100.05, 3.0), (100.1, 4.0), 3.0),  # bid improved: the whole new bid counts
        ((99.95, 6.0), (100.1, 4.0), -5.0),  # bid fell: the whole old bid left
        ((100.0, 5.0), (100.08, 2.0), -2.0),  # ask improved: new ask is selling pressure
        ((100.0, 5.0), (100.15, 9.0), 4.0),  # ask lifted: the old ask is gone
    ],
)
def test_order_flow_imbalance_level_1_follows_cont_kukanov_stoikov(cur_bid, cur_ask, e1):
    prev = ([(100.0, 5.0)], [(100.1, 4.0)])
    f = _ofi(prev, ([cur_bid], [cur_ask]))
    depth = ((5.0 + 4.0) + (cur_bid[1] + cur_ask[1])) / 2
    assert f["ob_ofi_1"] == pytest.approx(e1 / depth, rel=1e-6)  # float32 output
    changed = (cur_bid[0] != 100.0) + (cur_ask[0] != 100.1)
    assert f["ob_best_price_changed"] == changed


def test_multi_level_ofi_sums_levels_and_counts_vanished_levels():
    prev = ([(100.0, 5.0), (99.9, 2.0)], [(100.1, 4.0), (100.2, 1.0)])
    cur = ([(100.0, 6.0)], [(100.1, 4.0), (100.2, 3.0), (100.3, 1.0)])
    f = _ofi(prev, cur)
    # level 1: +1 bid; level 2: bid level vanished (-2), ask 1 -> 3 (-2); level 3: new ask (-1)
    e = [1.0, -2.0 - 2.0, -1.0]
    d5_prev, d5_cur = 5 + 2 + 4 + 1, 6 + 4 + 3 + 1
    assert f["ob_ofi_1"] == pytest.approx(1.0 / ((9 + 10) / 2))
    assert f["ob_ofi_5"] == pytest.approx(sum(e) / ((d5_prev + d5_cur) / 2))
    assert f["ob_ofi_10"] == pytest.approx(f["ob_ofi_5"])
