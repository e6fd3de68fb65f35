"""Buffered rows -> Arrow tables in the store's group schemas (DESIGN.md §3.2).

Each function takes ``{StreamKey: Columns}`` (one or many symbols of one stream) and
returns a ``pyarrow.Table`` with exactly the columns and dtypes of its group's schema
(``feature_schema.GROUP_SCHEMAS``); timestamps are int64 ms since the epoch, cast to the
schema's UTC timestamp type. Rows are sorted by symbol (then kept oldest first within a
symbol), so a file holding many symbols has tight per-row-group ``symbol`` statistics and
a reader filtering on one symbol skips the row groups of the others.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from backend.ml_engine.data_collection.buffers import Columns
from backend.ml_engine.data_collection.records import StreamKey
from backend.ml_engine.feature_store.feature_schema import (
    CANDLE_SCHEMA,
    FEATURE_FIELDS,
    FEATURE_SCHEMA_VERSION,
    PRICE_TAPE_SCHEMA,
    TIMESTAMP_TYPE,
    TRAINING_SCHEMA,
)


def _by_symbol(parts: dict[StreamKey, Columns]) -> dict[StreamKey, Columns]:
    """The parts ordered by symbol (then source): a file's rows sorted by symbol and time."""
    if len(parts) < 2:
        return parts
    return {k: parts[k] for k in sorted(parts, key=lambda k: (k.symbol, k.source))}


def _ts_array(ms: np.ndarray) -> pa.Array:
    return pa.array(ms.astype(np.int64, copy=False), type=pa.int64()).cast(TIMESTAMP_TYPE)


def _strings(parts: dict[StreamKey, Columns], attr: str) -> pa.Array:
    # codes + a dictionary, decoded by Arrow: no Python string object per row (a tape flush
    # of 40 symbols has ~1M rows, and building them would hold the GIL for ~100 ms)
    lengths = [len(c) for c in parts.values()]
    codes = np.repeat(np.arange(len(lengths), dtype=np.int32), lengths)
    names = pa.array([getattr(k, attr) for k in parts], type=pa.string())
    return pa.DictionaryArray.from_arrays(pa.array(codes), names).cast(pa.string())


def sample_table(parts: dict[StreamKey, Columns]) -> pa.Table:
    """Samples -> ``TRAINING_SCHEMA``: metadata, the float32 features, null label columns."""
    parts = _by_symbol(parts)
    keys = list(parts)
    n = sum(len(parts[k]) for k in keys)
    matrix = np.concatenate([parts[k].matrix for k in keys]) if len(keys) > 1 else parts[keys[0]].matrix
    arrays = {
        "timestamp": _ts_array(np.concatenate([parts[k].ints["ts"] for k in keys])),
        "symbol": _strings(parts, "symbol"),
        "mid_price": pa.array(np.concatenate([parts[k].floats["mid"] for k in keys])),
        "source": _strings(parts, "source"),
        "feature_version": pa.array(np.full(n, FEATURE_SCHEMA_VERSION, dtype=np.int16)),
        "collected_at": _ts_array(np.concatenate([parts[k].ints["collected_at"] for k in keys])),
    }
    matrix = np.asfortranarray(matrix)  # column slices become contiguous
    for j, f in enumerate(FEATURE_FIELDS):
        arrays[f.name] = pa.array(matrix[:, j])
    for f in TRAINING_SCHEMA:
        if f.name not in arrays:
            arrays[f.name] = pa.nulls(n, type=f.type)
    return pa.Table.from_arrays([arrays[f.name] for f in TRAINING_SCHEMA], schema=TRAINING_SCHEMA)


def _market_table(parts: dict[StreamKey, Columns], schema: pa.Schema, fields: dict[str, str]) -> pa.Table:
    parts = _by_symbol(parts)
    keys = list(parts)
    arrays = {"timestamp": _ts_array(np.concatenate([parts[k].ints["ts"] for k in keys])), "symbol": _strings(parts, "symbol")}
    for column, field in fields.items():
        arrays[column] = pa.array(np.concatenate([parts[k].floats[field] for k in keys]))
    return pa.table({f.name: arrays[f.name] for f in schema})


def tape_table(parts: dict[StreamKey, Columns]) -> pa.Table:
    """Tape rows -> ``PRICE_TAPE_SCHEMA`` (timestamp, symbol, mid_price, best_bid, best_ask)."""
    return _market_table(parts, PRICE_TAPE_SCHEMA, {"mid_price": "mid", "best_bid": "bid", "best_ask": "ask"})


def candle_table(parts: dict[StreamKey, Columns]) -> pa.Table:
    """Closed 1-minute bars -> ``CANDLE_SCHEMA`` (timestamp = bar open time)."""
    names = ("open", "high", "low", "close", "volume", "turnover")
    return _market_table(parts, CANDLE_SCHEMA, {n: n for n in names})
