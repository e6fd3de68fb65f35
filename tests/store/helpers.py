"""Synthetic frames that satisfy the store's group schemas."""

from __future__ import annotations

import numpy as np
import pandas as pd

from backend.ml_engine.feature_store.feature_schema import FEATURE_NAMES, FEATURE_SCHEMA_VERSION


def training_frame(n: int, start: str = "2025-11-07 10:00:00", symbol: str = "BTCUSDT", step_s: float = 30.0, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    ts = pd.Timestamp(start, tz="UTC") + pd.to_timedelta(np.arange(n) * step_s, unit="s")
    meta = pd.DataFrame(
        {
            "timestamp": ts,
            "symbol": symbol,
            "mid_price": 90_000 + rng.normal(0, 10, n).cumsum(),
            "source": "sim",
            "feature_version": FEATURE_SCHEMA_VERSION,
            "collected_at": ts,
        }
    )
    feats = pd.DataFrame(rng.normal(size=(n, len(FEATURE_NAMES))).astype(np.float32), columns=list(FEATURE_NAMES))
    return pd.concat([meta, feats], axis=1)


def price_tape_frame(n: int, start: str = "2025-11-07 10:00:00", symbol: str = "BTCUSDT") -> pd.DataFrame:
    ts = pd.Timestamp(start, tz="UTC") + pd.to_timedelta(np.arange(n) * 3, unit="s")
    mid = 100 + np.arange(n) * 0.01
    return pd.DataFrame({"timestamp": ts, "symbol": symbol, "mid_price": mid, "best_bid": mid - 0.005, "best_ask": mid + 0.005})


def candle_frame(n: int, start: str = "2025-11-07 10:00:00", symbol: str = "BTCUSDT") -> pd.DataFrame:
    ts = pd.Timestamp(start, tz="UTC") + pd.to_timedelta(np.arange(n), unit="min")
    close = 100 + np.sin(np.arange(n))
    return pd.DataFrame(
        {"timestamp": ts, "symbol": symbol, "open": close - 0.1, "high": close + 0.5, "low": close - 0.5,
         "close": close, "volume": np.full(n, 10.0), "turnover": close * 10}
    )
