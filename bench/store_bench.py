"""Feature-store throughput beside raw pyarrow on the same data, in one run.

    .venv/bin/python bench/store_bench.py            # ~1 min: 1 year x 10 symbols at 1 sample / 5 min
    .venv/bin/python bench/store_bench.py --full     # 1 year x 10 symbols at 1 sample / 30 s (~10.5M rows, ~5 GB)

Write: 2000-sample batches (one collector flush) through ``write_offline_features``
(schema check, midnight split, atomic temp+fsync+link) vs ``pyarrow.parquet.write_table``
with its defaults and with the store's options, no fsync.
Read: the whole group, and a 7-day slice, via ``read_offline_table`` vs ``pyarrow.dataset``
(hive) and polars.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backend.ml_engine.feature_store.feature_schema import FEATURE_NAMES, TRAINING_SCHEMA  # noqa: E402
from backend.ml_engine.feature_store.feature_store import FeatureStore, parquet_write_options  # noqa: E402

DAY_MS = 86_400_000
START_MS = 1_735_689_600_000  # 2025-01-01


def make_table(n: int, start_ms: int, step_ms: int, symbol: str, rng: np.random.Generator) -> pa.Table:
    ts = start_ms + np.arange(n, dtype=np.int64) * step_ms
    cols = {
        "timestamp": pa.array(ts).cast(pa.timestamp("ms", tz="UTC")),
        "symbol": pa.array([symbol] * n, pa.string()),
        "mid_price": pa.array(90_000 + rng.normal(0, 5, n).cumsum()),
        "source": pa.array(["sim"] * n, pa.string()),
        "feature_version": pa.array(np.ones(n, np.int16)),
        "collected_at": pa.array(ts).cast(pa.timestamp("ms", tz="UTC")),
    }
    feats = rng.normal(size=(n, len(FEATURE_NAMES))).astype(np.float32)
    for j, name in enumerate(FEATURE_NAMES):
        cols[name] = pa.array(feats[:, j])
    for f in TRAINING_SCHEMA:
        if f.name not in cols:
            cols[f.name] = pa.nulls(n, f.type)
    return pa.table(cols, schema=TRAINING_SCHEMA)


def timed(fn, repeat: int = 1) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def bench_writes(tmp: Path, batches: int, batch_rows: int = 2000) -> None:
    rng = np.random.default_rng(0)
    tables = [make_table(batch_rows, START_MS + i * 3_600_000, 100, "BTCUSDT", rng) for i in range(batches)]
    rows = batch_rows * batches
    tmp = tmp / f"w{batch_rows}"
    tmp.mkdir()
    store = FeatureStore(tmp / "w_store")

    def store_write(fsync: bool):
        for t in tables:
            store.write_offline_features("training_features", t, fsync=fsync)

    def raw_write(opts: dict, name: str):
        d = tmp / name
        d.mkdir(exist_ok=True)
        for i, t in enumerate(tables):
            pq.write_table(t, d / f"{i}.parquet", **opts)

    results = {
        "pq.write_table (pyarrow defaults)": timed(lambda: raw_write({}, "raw_default")),
        "pq.write_table (store's options)": timed(lambda: raw_write(parquet_write_options(), "raw_opts")),
        "store.write_offline_features, fsync": timed(lambda: store_write(True)),
        "store.write_offline_features, no fsync": timed(lambda: store_write(False)),
    }
    base = results["pq.write_table (store's options)"]
    print(f"\nWRITE: {batches} batches x {batch_rows} rows x {len(TRAINING_SCHEMA)} columns")
    for name, sec in results.items():
        print(f"  {name:<42} {rows / sec:>12,.0f} rows/s   {sec / batches * 1000:6.2f} ms/batch   {sec / base:5.2f}x raw(store opts)")
    size_default = sum(p.stat().st_size for p in (tmp / "raw_default").glob("*.parquet")) / batches
    size_opts = sum(p.stat().st_size for p in (tmp / "raw_opts").glob("*.parquet")) / batches
    print(f"  file size per batch: defaults {size_default / 1e6:.2f} MB, store options {size_opts / 1e6:.2f} MB")
    overhead = results["store.write_offline_features, no fsync"] / base - 1
    print(f"  store overhead vs raw write with the same options (no fsync): {overhead * 100:+.1f} % (goal <= 10 %)")
    print(f"  store (with fsync) vs pyarrow defaults: {results['pq.write_table (pyarrow defaults)'] / results['store.write_offline_features, fsync']:.2f}x faster")


def build_year(root: Path, symbols: int, step_s: int) -> int:
    store = FeatureStore(root)
    rng = np.random.default_rng(1)
    per_day = 86_400 // step_s
    total = 0
    t = time.perf_counter()
    for s in range(symbols):
        for day in range(365):
            table = make_table(per_day, START_MS + day * DAY_MS, step_s * 1000, f"SYM{s}USDT", rng)
            store.write_offline_features("training_features", table, fsync=False)
            total += per_day
        print(f"  built symbol {s + 1}/{symbols} ({total:,} rows, {time.perf_counter() - t:.0f} s)", flush=True)
    return total


def bench_reads(root: Path, total: int) -> None:
    store = FeatureStore(root)
    group_dir = root / "training_features"
    hive = ds.partitioning(pa.schema([("date", pa.date32())]), flavor="hive")
    cols = ["timestamp", "symbol", "mid_price"] + list(FEATURE_NAMES)
    lo, hi = "2025-06-01", "2025-06-07"

    def raw_full():
        return ds.dataset(group_dir, format="parquet", partitioning=hive).to_table(columns=cols)

    def raw_slice():
        import datetime as dt

        f = (ds.field("date") >= dt.date(2025, 6, 1)) & (ds.field("date") <= dt.date(2025, 6, 7))
        return ds.dataset(group_dir, format="parquet", partitioning=hive).to_table(columns=cols, filter=f)

    def store_full():
        return store.read_offline_table("training_features", columns=cols)

    def store_slice():
        return store.read_offline_table("training_features", start_date=lo, end_date=hi, columns=cols)

    def polars_slice():
        import polars as pl
        import datetime as dt

        return (
            pl.scan_parquet(f"{group_dir}/**/*.parquet", hive_partitioning=True)
            .filter(pl.col("date").is_between(dt.date(2025, 6, 1), dt.date(2025, 6, 7)))
            .select(cols)
            .collect()
        )

    n_full = store_full().num_rows
    n_slice = store_slice().num_rows
    assert n_full == total and raw_slice().num_rows == n_slice
    r = {
        "full scan, pyarrow.dataset": timed(raw_full, 2),
        "full scan, store.read_offline_table": timed(store_full, 2),
        "7-day slice, pyarrow.dataset + date filter": timed(raw_slice, 3),
        "7-day slice, polars scan + date filter": timed(polars_slice, 3),
        "7-day slice, store.read_offline_table": timed(store_slice, 3),
    }
    print(f"\nREAD: {total:,} rows in {len(store.list_files('training_features')):,} files; 7-day slice {n_slice:,} rows")
    for name, sec in r.items():
        rows = n_full if name.startswith("full") else n_slice
        print(f"  {name:<44} {sec * 1000:9.1f} ms   {rows / sec:>14,.0f} rows/s")
    print(f"  store overhead, full scan: {(r['full scan, store.read_offline_table'] / r['full scan, pyarrow.dataset'] - 1) * 100:+.1f} % (goal <= 10 %)")
    print(f"  7-day slice vs full scan (store): {r['full scan, store.read_offline_table'] / r['7-day slice, store.read_offline_table']:.1f}x faster (goal >= 20x)")
    print(f"  7-day slice, store vs pyarrow.dataset: {r['7-day slice, pyarrow.dataset + date filter'] / r['7-day slice, store.read_offline_table']:.1f}x; "
          f"vs polars: {r['7-day slice, polars scan + date filter'] / r['7-day slice, store.read_offline_table']:.1f}x")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--full", action="store_true", help="1 sample / 30 s for the 1-year store (~10.5M rows, several GB)")
    p.add_argument("--batches", type=int, default=50, help="2000-row batches in the write benchmark")
    p.add_argument("--symbols", type=int, default=10)
    p.add_argument("--keep", type=Path, default=None, help="reuse/keep the 1-year store in this folder")
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="store_bench_"))
    try:
        bench_writes(tmp, args.batches)  # one collector flush per batch
        bench_writes(tmp, max(2, args.batches // 10), 20_000)  # tape flushes, migrations, label rewrites
        root = args.keep or tmp / "year"
        step = 30 if args.full else 300
        if args.keep and (root / "training_features").exists():
            total = FeatureStore(root).read_offline_table("training_features", columns=["symbol"]).num_rows
        else:
            print(f"\nbuilding a 1-year store: {args.symbols} symbols, one sample every {step} s ...")
            total = build_year(root, args.symbols, step)
        os.sync()
        bench_reads(root, total)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
