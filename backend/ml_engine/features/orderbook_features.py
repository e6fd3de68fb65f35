"""Order-book features of one snapshot and order-flow between two, batched over books.

Everything here is a pure function of stacked ``BookArrays`` (see book_arrays.py):
one numpy pass over (n_books, depth) arrays, no per-book Python. Prices only
enter as ratios to the mid, so every feature is scale-free.

Conventions for thin books (documented in the schema): "up to k levels" sums the
levels that exist; "level k" falls back to the deepest level on that side.

Sources: order-flow imbalance (OFI) is Cont, Kukanov & Stoikov (2014, "The Price
Impact of Order Book Events", J. Financial Econometrics 12(1)) at the best level,
summed over deeper levels as in Xu, Gould & Howison (2019, "Multi-Level Order-Flow
Imbalance in a Limit Order Book"); ``ob_microprice_dev_bps`` uses the imbalance-weighted
mid, the first-order micro-price of Stoikov (2018, "The micro-price: a
high-frequency estimator of future prices", Quantitative Finance 18(12)). The other
features (spread, depth imbalance, book slope, level concentration) are plain ratios
whose exact formulas are the schema's.
"""

from __future__ import annotations

import numpy as np

from backend.ml_engine.features.book_arrays import BookArrays

IMBALANCE_LEVELS = (1, 5, 10, 20)
DEPTH_BANDS_BPS = (10, 25, 50)
DIST_LEVELS = (5, 10, 20)
OFI_LEVELS = (1, 5, 10)
# A price exactly on a band edge must not fall in or out depending on the price
# scale (rounding of p/1e4 vs p), so band tests get a tolerance far below one tick.
_BAND_EPS_BPS = 1e-7


def _first_k(cum: np.ndarray, k: int) -> np.ndarray:
    return cum[:, min(k, cum.shape[1]) - 1]


def _level_price(px: np.ndarray, n_levels: np.ndarray, k: int) -> np.ndarray:
    li = np.minimum(k, n_levels) - 1
    return np.take_along_axis(px, li[:, None], axis=1)[:, 0]


def _safe_ratio(num: np.ndarray, den: np.ndarray, empty: float = 0.0) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), empty)


def snapshot_features(b: BookArrays, book_depth: int) -> dict[str, np.ndarray]:
    """The 35 features that need only the current book, for n books at once.

    Args:
        b: the stacked books; each must have at least one level on both sides.
        book_depth: levels kept per side by the sources (the denominator of
            ``ob_*_levels_filled``), at least ``b.depth``.

    Returns:
        Feature name -> (n,) float64, names as in ``ORDERBOOK_FEATURES``: spreads and
        distances in bps of the mid, imbalances and shares as ratios, slopes in 1/bps.
    """
    bp, bs, ap, as_ = b.bid_px, b.bid_sz, b.ask_px, b.ask_sz
    bid1, ask1 = bp[:, 0], ap[:, 0]
    B1, A1 = bs[:, 0], as_[:, 0]
    mid = (bid1 + ask1) * 0.5
    inv_mid_bps = 1e4 / mid
    f: dict[str, np.ndarray] = {}

    f["ob_spread_bps"] = (ask1 - bid1) * inv_mid_bps
    micro = (ask1 * B1 + bid1 * A1) / (B1 + A1)
    f["ob_microprice_dev_bps"] = (micro - mid) * inv_mid_bps

    cum_b = np.cumsum(bs, axis=1)
    cum_a = np.cumsum(as_, axis=1)
    tot_b, tot_a = cum_b[:, -1], cum_a[:, -1]
    total = tot_b + tot_a

    k5 = min(5, bp.shape[1])
    vw_b = np.nansum(bp[:, :k5] * bs[:, :k5], axis=1) / cum_b[:, k5 - 1]
    vw_a = np.nansum(ap[:, :k5] * as_[:, :k5], axis=1) / cum_a[:, k5 - 1]
    f["ob_weighted_mid_dev_5_bps"] = ((vw_b + vw_a) * 0.5 - mid) * inv_mid_bps

    for k in IMBALANCE_LEVELS:
        sb, sa = _first_k(cum_b, k), _first_k(cum_a, k)
        f[f"ob_imbalance_{k}"] = (sb - sa) / (sb + sa)
    f["ob_imbalance_50"] = (tot_b - tot_a) / total

    # distance of every level from mid in bps; NaN for missing levels compares False
    dist_b = (mid[:, None] - bp) * inv_mid_bps[:, None]
    dist_a = (ap - mid[:, None]) * inv_mid_bps[:, None]
    for n_bps in DEPTH_BANDS_BPS:
        with np.errstate(invalid="ignore"):
            db = np.sum(bs * (dist_b <= n_bps + _BAND_EPS_BPS), axis=1)
            da = np.sum(as_ * (dist_a <= n_bps + _BAND_EPS_BPS), axis=1)
        f[f"ob_depth_bid_{n_bps}bps"] = db / total
        f[f"ob_depth_ask_{n_bps}bps"] = da / total
        f[f"ob_depth_imbalance_{n_bps}bps"] = _safe_ratio(db - da, db + da)

    dists = {}
    for k in DIST_LEVELS:
        dists[("b", k)] = (mid - _level_price(bp, b.n_bid, k)) * inv_mid_bps
        dists[("a", k)] = (_level_price(ap, b.n_ask, k) - mid) * inv_mid_bps
    slope_b = (_first_k(cum_b, 10) / total) / dists[("b", 10)]
    slope_a = (_first_k(cum_a, 10) / total) / dists[("a", 10)]
    f["ob_slope_bid"] = slope_b
    f["ob_slope_ask"] = slope_a
    f["ob_slope_log_ratio"] = np.log(slope_b / slope_a)
    for k in DIST_LEVELS:
        f[f"ob_bid_dist_{k}_bps"] = dists[("b", k)]
        f[f"ob_ask_dist_{k}_bps"] = dists[("a", k)]

    f["ob_bid_conc_1_5"] = B1 / _first_k(cum_b, 5)
    f["ob_ask_conc_1_5"] = A1 / _first_k(cum_a, 5)
    f["ob_bid_conc_5_20"] = _first_k(cum_b, 5) / _first_k(cum_b, 20)
    f["ob_ask_conc_5_20"] = _first_k(cum_a, 5) / _first_k(cum_a, 20)
    f["ob_log_depth_ratio"] = np.log(tot_b / tot_a)

    f["ob_bid_size_cv_10"] = _size_cv(bs, b.n_bid, 10)
    f["ob_ask_size_cv_10"] = _size_cv(as_, b.n_ask, 10)
    f["ob_bid_levels_filled"] = b.n_bid / book_depth
    f["ob_ask_levels_filled"] = b.n_ask / book_depth
    return f


def _size_cv(sizes: np.ndarray, n_levels: np.ndarray, k: int) -> np.ndarray:
    """Population std / mean of the sizes of the first k levels that exist."""
    s = sizes[:, : min(k, sizes.shape[1])]
    cnt = np.minimum(k, n_levels).astype(np.float64)
    mean = s.sum(axis=1) / cnt
    present = np.arange(s.shape[1])[None, :] < cnt[:, None]
    dev = np.where(present, s - mean[:, None], 0.0)
    return np.sqrt((dev * dev).sum(axis=1) / cnt) / mean


def order_flow_per_level(
    prev_bid_px: np.ndarray,
    prev_bid_sz: np.ndarray,
    prev_ask_px: np.ndarray,
    prev_ask_sz: np.ndarray,
    bid_px: np.ndarray,
    bid_sz: np.ndarray,
    ask_px: np.ndarray,
    ask_sz: np.ndarray,
) -> np.ndarray:
    """Cont-Kukanov-Stoikov (2014) order-flow e_i per level, (n, L) for L given levels.

    Every argument is (n, L) float64: prices (NaN where a level is missing) and sizes
    (0 where missing) of the previous and the current book. The result is in size
    units (base currency), positive for net buying pressure.

    e = 1{Pb >= Pb'} qb - 1{Pb <= Pb'} qb' - 1{Pa <= Pa'} qa + 1{Pa >= Pa'} qa'
    (primes: previous book). A missing level is a bid at -inf / ask at +inf of size
    0, so a level that vanished counts as its previous size removed and a level that
    appeared as its new size added.
    """
    pbp = np.where(np.isnan(prev_bid_px), -np.inf, prev_bid_px)
    cbp = np.where(np.isnan(bid_px), -np.inf, bid_px)
    pap = np.where(np.isnan(prev_ask_px), np.inf, prev_ask_px)
    cap = np.where(np.isnan(ask_px), np.inf, ask_px)
    e_bid = np.where(cbp >= pbp, bid_sz, 0.0) - np.where(cbp <= pbp, prev_bid_sz, 0.0)
    e_ask = np.where(cap <= pap, ask_sz, 0.0) - np.where(cap >= pap, prev_ask_sz, 0.0)
    return e_bid - e_ask


def normalised_ofi(e: np.ndarray, prev_depth_cum: np.ndarray, depth_cum: np.ndarray, k: int) -> np.ndarray:
    """sum_{i<=k} e_i / mean over both books of sum_{i<=k} (B_i + A_i): a unitless ratio.

    Args:
        e: (n, L) per-level order flow from ``order_flow_per_level``.
        prev_depth_cum, depth_cum: (n, L) cumulative bid + ask size per level of the
            previous and current book.
        k: levels summed (capped at L).

    Returns:
        (n,) float64. Dividing by depth, as Cont-Kukanov-Stoikov (2014) do when they
        relate price changes to OFI, makes it comparable across symbols of any size.
    """
    kk = min(k, e.shape[1])
    num = e[:, :kk].sum(axis=1)
    den = 0.5 * (prev_depth_cum[:, kk - 1] + depth_cum[:, kk - 1])
    return num / den
