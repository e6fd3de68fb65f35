"""Synthetic samples and tape in the store and the legacy format, with exact timestamps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from backend.ml_engine.feature_store.feature_schema import FEATURE_NAMES, FEATURE_SCHEMA_VERSION
from backend.ml_engine.feature_store.feature_store import FeatureStore
from backend.ml_engine.feature_store.legacy_format import LegacyBatchWriter


def to_ts(ms) -> pd.Series:
    return pd.Series(pd.to_datetime(np.asarray(ms, dtype=np.int64), unit="ms", utc=True))


def sample_frame(symbol: str, ts_ms, mids, seed: int = 0) -> pd.DataFrame:
    ts_ms = np.asarray(ts_ms, dtype=np.int64)
    n = ts_ms.size
    rng = np.random.default_rng(seed)
    meta = pd.DataFrame(
        {
            "timestamp": to_ts(ts_ms),
            "symbol": symbol,
            "mid_price": np.asarray(mids, dtype=np.float64),
            "source": "sim",
            "feature_version": FEATURE_SCHEMA_VERSION,
            "collected_at": to_ts(ts_ms),
        }
    )
    feats = pd.DataFrame(rng.normal(size=(n, 110)).astype(np.float32), columns=list(FEATURE_NAMES))
    return pd.concat([meta, feats], axis=1)


def tape_frame(symbol: str, ts_ms, mids) -> pd.DataFrame:
    mids = np.asarray(mids, dtype=np.float64)
    return pd.DataFrame(
        {"timestamp": to_ts(ts_ms), "symbol": symbol, "mid_price": mids, "best_bid": mids - 0.005, "best_ask": mids + 0.005}
    )


def write_samples(store: FeatureStore, symbol: str, ts_ms, mids, legacy: Path | None = None) -> None:
    df = sample_frame(symbol, ts_ms, mids)
    store.write_offline_features("training_features", df, fsync=False)
    if legacy is not None:
        LegacyBatchWriter(legacy, fsync=False).write_batch(
            symbol, df[list(FEATURE_NAMES)].to_numpy(np.float32), np.asarray(ts_ms, np.int64), np.asarray(mids), "sim"
        )


def write_tape(store: FeatureStore, symbol: str, ts_ms, mids) -> None:
    store.write_offline_features("price_tape", tape_frame(symbol, ts_ms, mids), fsync=False)
