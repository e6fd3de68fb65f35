"""Synthetic labelled stores with a learnable signal, written through the real FeatureStore."""

from __future__ import annotations

import numpy as np
import pandas as pd

from backend.ml_engine.feature_store.feature_schema import FEATURE_NAMES, FEATURE_SCHEMA_VERSION, HORIZONS_S
from backend.ml_engine.feature_store.feature_store import FeatureStore

T0_MS = 1_762_473_600_000  # 2025-11-07 00:00:00 UTC
SIGNAL = "ob_imbalance_1"
THRESHOLD = 0.02


def make_samples(
    symbol: str,
    n: int,
    *,
    seed: int = 0,
    interval_ms: int = 30_000,
    t0_ms: int = T0_MS,
    gaps: dict[int, int] | None = None,
    threshold: float = THRESHOLD,
    label_fraction: float = 1.0,
    signal: float = 0.0004,
) -> pd.DataFrame:
    """``n`` samples whose future move follows the SIGNAL feature (AR(1)); ``gaps`` maps row -> extra ms before it.

    ``signal``: log move per unit of the feature; 0 makes prices (and labels) independent of every feature.
    """
    rng = np.random.default_rng(seed)
    steps = np.full(n, interval_ms, dtype=np.int64)
    steps[0] = 0
    for row, extra in (gaps or {}).items():
        steps[row] += extra
    ts = t0_ms + np.cumsum(steps)
    sig = np.zeros(n)
    shocks = rng.normal(size=n)
    for i in range(1, n):
        sig[i] = 0.5 * sig[i - 1] + shocks[i]
    ret = signal * sig + rng.normal(scale=0.0001 if signal else 0.0004, size=n)  # ret[i]: log move from sample i to i+1
    mid = 100.0 * np.exp(np.concatenate([[0.0], np.cumsum(ret[:-1])]))
    feats = rng.normal(size=(n, len(FEATURE_NAMES))).astype(np.float32)
    feats[:, FEATURE_NAMES.index(SIGNAL)] = sig.astype(np.float32)
    df = pd.DataFrame(feats, columns=list(FEATURE_NAMES))
    df.insert(0, "timestamp", pd.to_datetime(ts, unit="ms", utc=True))
    df.insert(1, "symbol", symbol)
    df.insert(2, "mid_price", mid)
    df.insert(3, "source", "sim")
    df.insert(4, "feature_version", np.int16(FEATURE_SCHEMA_VERSION))
    df.insert(5, "collected_at", df["timestamp"])
    for h in HORIZONS_S:
        mv, dirn = label(ts, mid, h * 1000, threshold)
        if label_fraction < 1.0:
            cut = int(n * label_fraction)
            mv[cut:] = np.nan
            dirn[cut:] = np.nan
        df[f"future_direction_{h}s"] = pd.array(np.where(np.isnan(dirn), None, dirn), dtype="Int8")
        df[f"future_movement_{h}s"] = mv
    return df


def label(ts: np.ndarray, mid: np.ndarray, h_ms: int, threshold: float, tol_ms: int = 30_000):
    """First sample at or after t+h (within tol) -> movement %, direction; NaN where not covered."""
    idx = np.searchsorted(ts, ts + h_ms, side="left")
    ok = idx < ts.size
    idx_c = np.minimum(idx, ts.size - 1)
    ok &= ts[idx_c] <= ts + h_ms + tol_ms
    mv = np.where(ok, (mid[idx_c] / mid - 1) * 100, np.nan)
    d = np.where(mv > threshold, 2.0, np.where(mv < -threshold, 0.0, 1.0))
    d[~ok] = np.nan
    return mv, d


def write_store(root, frames: list[pd.DataFrame], tape: bool = True) -> FeatureStore:
    store = FeatureStore(root)
    for df in frames:
        store.write_offline_features("training_features", df, fsync=False)
        if tape:
            store.write_offline_features(
                "price_tape",
                pd.DataFrame(
                    {
                        "timestamp": df["timestamp"],
                        "symbol": df["symbol"],
                        "mid_price": df["mid_price"],
                        "best_bid": df["mid_price"] * 0.9999,
                        "best_ask": df["mid_price"] * 1.0001,
                    }
                ),
                fsync=False,
            )
    return store
