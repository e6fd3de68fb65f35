"""Store files that are not the store's own: each kind a reader must name and leave untouched."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from backend.ml_engine.feature_store.feature_schema import FEATURE_NAMES, TRAINING_SCHEMA


def good_table(n: int, start_ms: int, symbol: str = "BTCUSDT", step_ms: int = 30_000) -> pa.Table:
    """``n`` rows of the training schema, unlabelled, 30 s apart from ``start_ms``."""
    ts = start_ms + np.arange(n, dtype=np.int64) * step_ms
    rng = np.random.default_rng(start_ms % 1000)
    cols = {
        "timestamp": pa.array(ts).cast(TRAINING_SCHEMA.field("timestamp").type),
        "symbol": pa.array([symbol] * n),
        "mid_price": pa.array(100.0 + np.arange(n) * 0.05),
        "source": pa.array(["sim"] * n),
        "feature_version": pa.array(np.ones(n, np.int16)),
        "collected_at": pa.array(ts).cast(TRAINING_SCHEMA.field("collected_at").type),
    }
    feats = rng.normal(size=(n, len(FEATURE_NAMES))).astype(np.float32)
    for i, name in enumerate(FEATURE_NAMES):
        cols[name] = pa.array(feats[:, i])
    for f in TRAINING_SCHEMA:
        if f.name not in cols:
            cols[f.name] = pa.nulls(n, f.type)
    return pa.Table.from_arrays([cols[f.name] for f in TRAINING_SCHEMA], schema=TRAINING_SCHEMA)


def _replace(table: pa.Table, name: str, arr: pa.Array) -> pa.Table:
    return table.set_column(table.schema.get_field_index(name), name, arr)


def write_bad_files(day_dir: Path, start_ms: int) -> dict[str, Path]:
    """One file of each bad kind in a ``date=`` folder; returns kind -> path."""
    day_dir.mkdir(parents=True, exist_ok=True)
    base = good_table(20, start_ms)
    out: dict[str, Path] = {}

    def put(kind: str, table: pa.Table) -> None:
        path = day_dir / f"features_000000_{kind}.parquet"
        pq.write_table(table, path)
        out[kind] = path

    ms = base.column("timestamp").cast(pa.int64())
    put("int_seconds", _replace(base, "timestamp", pa.compute.divide(ms, 1000)))
    put("naive_ns", _replace(base, "timestamp", pa.compute.multiply(ms, 1_000_000).cast(pa.timestamp("ns"))))
    put("float64_column", _replace(base, FEATURE_NAMES[3], base.column(FEATURE_NAMES[3]).cast(pa.float64())))
    put("missing_column", base.drop_columns([FEATURE_NAMES[7]]))
    put("foreign", pa.table({"time": pa.array([1, 2, 3]), "price": pa.array([1.0, 2.0, 3.0]), "venue": ["x", None, "y"]}))
    put("zero_rows", pa.table({"a": pa.array([], pa.int64())}))
    truncated = day_dir / "features_000000_truncated.parquet"
    pq.write_table(base, truncated)
    data = truncated.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    out["truncated"] = truncated
    return out


def snapshot(paths) -> dict[Path, tuple[bytes, int]]:
    """Bytes and mtime of each file, to prove nothing was rewritten."""
    return {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in paths}
