"""The ``predictions`` and ``paper_trades`` groups (DESIGN.md §6.6): Arrow schemas and tables.

The schemas live with the other group schemas (``feature_schema.GROUP_SCHEMAS``), so the
collector (a lower layer) writes these groups through its spool like samples; they are
re-exported here. Columns follow §6.6 exactly; ``timestamp`` uses the store's type (ms, UTC), like every
group. ``predictions`` ends with the six label columns (null until the labeller fills them,
as for samples). ``horizon_s`` is int16, like ``feature_version``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from backend.contracts.groups import PAPER_TRADES, PREDICTIONS
from backend.ml_engine.feature_store.feature_schema import (
    LABEL_FIELDS,
    PAPER_TRADES_SCHEMA,
    PREDICTIONS_SCHEMA,
    TIMESTAMP_TYPE,
)

__all__ = ["PAPER_TRADES", "PAPER_TRADES_SCHEMA", "PREDICTIONS", "PREDICTIONS_SCHEMA", "column_numpy", "prediction_table",
           "trade_table"]


def prediction_table(batches: Sequence) -> pa.Table:
    """``PredictionBatch``es -> one table in ``PREDICTIONS_SCHEMA`` (label columns null)."""
    ts = np.concatenate([b.ts_ms for b in batches]) if batches else np.zeros(0, dtype=np.int64)
    prob = np.concatenate([b.prob for b in batches]) if batches else np.zeros((0, 3), dtype=np.float32)
    n = ts.shape[0]
    cols = {
        "timestamp": pa.array(ts.astype(np.int64), pa.int64()).cast(TIMESTAMP_TYPE),
        "symbol": pa.array([s for b in batches for s in b.symbols], pa.string()),
        "model_uri": pa.array([b.model_uri for b in batches for _ in b.symbols], pa.string()),
        "horizon_s": pa.array(np.concatenate([np.full(len(b), b.horizon_s, np.int16) for b in batches]) if batches else [], pa.int16()),
        "prob_down": pa.array(prob[:, 0].astype(np.float32)),
        "prob_neutral": pa.array(prob[:, 1].astype(np.float32)),
        "prob_up": pa.array(prob[:, 2].astype(np.float32)),
        "predicted_direction": pa.array(
            np.concatenate([b.predicted_direction for b in batches]).astype(np.int8) if batches else np.zeros(0, np.int8)
        ),
    }
    for f in LABEL_FIELDS:
        cols[f.name] = pa.nulls(n, f.type)
    return pa.table(cols, schema=PREDICTIONS_SCHEMA)


def trade_table(trades: Sequence) -> pa.Table:
    """``PaperTrade``s -> one table in ``PAPER_TRADES_SCHEMA``."""
    cols = {
        "timestamp": pa.array([t.timestamp for t in trades], pa.int64()).cast(TIMESTAMP_TYPE),
        "symbol": pa.array([t.symbol for t in trades], pa.string()),
        "side": pa.array([t.side for t in trades], pa.string()),
        "qty": pa.array([t.qty for t in trades], pa.float64()),
        "price": pa.array([t.price for t in trades], pa.float64()),
        "fee": pa.array([t.fee for t in trades], pa.float64()),
        "reason": pa.array([t.reason for t in trades], pa.string()),
        "model_uri": pa.array([t.model_uri for t in trades], pa.string()),
    }
    return pa.table(cols, schema=PAPER_TRADES_SCHEMA)


def column_numpy(table: pa.Table, name: str) -> np.ndarray:
    """A column of a stored predictions/paper_trades table as numpy: timestamps as int64 ms
    since the epoch, dictionary-encoded strings as plain strings (object array)."""
    col = table.column(name)
    if pa.types.is_timestamp(col.type):
        col = col.cast(pa.int64())
    if pa.types.is_dictionary(col.type):
        col = pc.cast(col, pa.string())
    return col.to_numpy(zero_copy_only=False)
