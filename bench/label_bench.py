"""Labelling and migration throughput beside the obvious alternatives, in one run.

    .venv/bin/python bench/label_bench.py            # 1M samples, 10M tape rows (~1-2 min)
    .venv/bin/python bench/label_bench.py --full     # 5M samples, 50M tape rows (issue 6 size; ~8 GB RAM)

Labelling: rows/s for all three horizons (10/30/60 s, tolerance 5 s), samples every
30 s on a 3 s tape, 10 symbols, for
  * the project's core (``compute_labels``: per-symbol np.searchsorted, tape + samples),
  * ``pandas.merge_asof`` (direction=forward, by=symbol, tolerance), one call per horizon,
  * DuckDB ``ASOF JOIN`` (bench-only dependency), one query per horizon,
  * polars ``join_asof`` (forward, by symbol, tolerance) when installed,
  * a naive per-row Python loop (bisect) on a subset.
Peak traced memory (tracemalloc, numpy/pandas allocations) of the core vs merge_asof
is measured in a separate, untimed pass. Results are checked equal to merge_asof's.

Migration: samples/s of ``Migrator`` (strict read, dedup check, store write) beside a
plain ``np.load`` + ``json.load`` + ``pq.write_table`` loop over the same batches.
"""

from __future__ import annotations

import argparse
import bisect
import gc
import json
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from backend.ml_engine.feature_store.feature_schema import FEATURE_NAMES  # noqa: E402
from backend.ml_engine.feature_store.feature_store import FeatureStore  # noqa: E402
from backend.ml_engine.feature_store.legacy_format import LegacyBatchWriter, list_batches  # noqa: E402
from backend.ml_engine.labelling import LabelConfig, PriceRows, compute_labels  # noqa: E402
from backend.ml_engine.migration.legacy_to_parquet import Migrator  # noqa: E402

HORIZONS = (10, 30, 60)
TOL_MS = 5_000
T0 = 1_762_473_600_000


def make_data(n_samples: int, n_symbols: int, seed: int = 0, layout: str = "store"):
    """Tape: one row per symbol every 3 s (with jitter); samples: every 10th tick.

    ``layout="store"``: row order as read back from the store (per-flush symbol runs);
    ``"interleaved"``: time-major with symbols interleaved (the worst case for grouping).
    """
    rng = np.random.default_rng(seed)
    per_sym = n_samples // n_symbols
    ticks = per_sym * 10
    tape_ts = np.empty(ticks * n_symbols, np.int64)
    tape_code = np.empty_like(tape_ts, dtype=np.int32)
    tape_mid = np.empty(ticks * n_symbols)
    for s in range(n_symbols):
        sl = slice(s * ticks, (s + 1) * ticks)
        tape_ts[sl] = T0 + np.arange(ticks, dtype=np.int64) * 3_000 + rng.integers(0, 400, ticks)
        tape_code[sl] = s
        tape_mid[sl] = 100 * (1 + s) * np.exp(np.cumsum(rng.normal(0, 2e-4, ticks)))
    # time-major, symbols interleaved: pick every 10th tick of every symbol as a sample
    order = np.argsort(tape_ts, kind="stable")
    tape_ts, tape_code, tape_mid = tape_ts[order], tape_code[order], tape_mid[order]
    pick = np.flatnonzero(np.arange(tape_ts.size) % (10 * n_symbols) < n_symbols)[: per_sym * n_symbols]
    samples, tape = (tape_ts[pick], tape_code[pick], tape_mid[pick]), (tape_ts, tape_code, tape_mid)
    if layout == "store":
        # as the collector writes them: each flush is one file with one run per symbol
        # (tape: 20,000 ticks per symbol per flush; samples: 2,000 per symbol per file)
        samples = _flush_runs(samples, 2_000 * n_symbols)
        tape = _flush_runs(tape, 20_000 * n_symbols)
    return samples, tape


def _flush_runs(rows, block: int):
    """Reorder time-sorted rows into blocks of ``block`` rows, each grouped by symbol."""
    ts, code, mid = rows
    blk = np.arange(ts.size) // block
    order = np.lexsort((np.arange(ts.size), code, blk))
    return ts[order], code[order], mid[order]


def run_core(samples, tape):
    cfg = LabelConfig(HORIZONS, TOL_MS / 1000, 0.02)
    return compute_labels(PriceRows(*samples), PriceRows(*tape), cfg)


def with_names(rows, names):
    """The same rows with symbol strings, as read from the store (Arrow for the core, pandas for merge_asof)."""
    return rows[0], pa.array(names[rows[1]]), rows[2]


def run_core_str(samples, tape):
    """Symbol strings (plain or dictionary-encoded) -> codes exactly as the parquet labeller does, then the core."""
    from backend.ml_engine.labelling.symbol_codes import sorted_universe, symbol_codes

    universe = sorted_universe(samples[1], tape[1])
    s = (samples[0], symbol_codes(samples[1], universe), samples[2])
    t = (tape[0], symbol_codes(tape[1], universe), tape[2])
    return run_core(s, t)


def with_dictionary(rows, names, chunk: int):
    """Symbols as the store reads them: dictionary-encoded, one chunk per file."""
    codes = rows[1]
    chunks = [
        pa.DictionaryArray.from_arrays(pa.array(codes[i : i + chunk], pa.int32()), pa.array(names.tolist()))
        for i in range(0, codes.size, chunk)
    ]
    return rows[0], pa.chunked_array(chunks), rows[2]


def run_merge_asof_str(samples, tape):
    right = pd.DataFrame({"ts": tape[0], "symbol": tape[1].to_pandas(), "p": tape[2]})
    left_sym = samples[1].to_pandas()
    out = {}
    for h in HORIZONS:
        left = pd.DataFrame({"ts": samples[0] + h * 1000, "symbol": left_sym, "i": np.arange(samples[0].size)})
        m = pd.merge_asof(left, right, on="ts", by="symbol", direction="forward", tolerance=TOL_MS)
        out[h] = (m["p"].to_numpy() / samples[2][m["i"].to_numpy()] - 1) * 100
    return out


def run_merge_asof(samples, tape):
    right = pd.DataFrame({"ts": tape[0], "code": tape[1], "p": tape[2]})
    out = {}
    for h in HORIZONS:
        left = pd.DataFrame({"ts": samples[0] + h * 1000, "code": samples[1], "i": np.arange(samples[0].size)})
        m = pd.merge_asof(left, right, on="ts", by="code", direction="forward", tolerance=TOL_MS, allow_exact_matches=True)
        mov = (m["p"].to_numpy() / samples[2][m["i"].to_numpy()] - 1) * 100
        res = np.empty_like(mov)
        res[m["i"].to_numpy()] = mov
        out[h] = res
    return out


def run_duckdb(samples, tape):
    import duckdb

    con = duckdb.connect()
    con.register("s", pd.DataFrame({"ts": samples[0], "code": samples[1], "p0": samples[2], "i": np.arange(samples[0].size)}))
    con.register("t", pd.DataFrame({"ts": tape[0], "code": tape[1], "p": tape[2]}))
    out = {}
    for h in HORIZONS:
        q = f"""
            SELECT s.i, CASE WHEN t.ts <= s.ts + {h * 1000 + TOL_MS} THEN (t.p / s.p0 - 1) * 100 END AS mov
            FROM s ASOF LEFT JOIN t ON s.code = t.code AND t.ts >= s.ts + {h * 1000}
        """
        df = con.execute(q).df()
        res = np.full(samples[0].size, np.nan)
        res[df["i"].to_numpy()] = df["mov"].to_numpy(dtype=float, na_value=np.nan)
        out[h] = res
    con.close()
    return out


def run_polars(samples, tape):
    import polars as pl

    right = pl.DataFrame({"ts": tape[0], "code": tape[1], "p": tape[2]})
    out = {}
    for h in HORIZONS:
        left = pl.DataFrame({"ts": samples[0] + h * 1000, "code": samples[1], "p0": samples[2]}).sort("ts")
        m = left.join_asof(right.sort("ts"), on="ts", by="code", strategy="forward", tolerance=TOL_MS)
        out[h] = ((m["p"] / m["p0"] - 1) * 100).to_numpy()
    return out


def run_naive(samples, tape, limit: int):
    by_code: dict[int, tuple[list, list]] = {}
    for c in np.unique(tape[1]):
        m = tape[1] == c
        by_code[int(c)] = (tape[0][m].tolist(), tape[2][m].tolist())
    res = {h: [] for h in HORIZONS}
    for t, c, p0 in zip(samples[0][:limit].tolist(), samples[1][:limit].tolist(), samples[2][:limit].tolist()):
        ts, mids = by_code[c]
        for h in HORIZONS:
            j = bisect.bisect_left(ts, t + h * 1000)
            ok = j < len(ts) and ts[j] <= t + h * 1000 + TOL_MS
            res[h].append((mids[j] / p0 - 1) * 100 if ok else float("nan"))
    return res


def timed(fn, *args, repeat: int = 2):
    """Best of ``repeat`` runs: the first run after a large allocation pays page faults."""
    best, out = float("inf"), None
    for _ in range(repeat):
        gc.collect()
        t = time.perf_counter()
        out = fn(*args)
        best = min(best, time.perf_counter() - t)
    return best, out


def peak_mb(fn, *args) -> float:
    gc.collect()
    tracemalloc.start()
    fn(*args)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak / 2**20


def bench_labels(n_samples: int, n_symbols: int, naive_rows: int, skip_duckdb: bool) -> None:
    samples, tape = make_data(n_samples, n_symbols, layout="store")
    n = samples[0].size
    print(f"Labelling {n:,} samples ({n_symbols} symbols, every 30 s) on a {tape[0].size:,}-row 3 s tape, horizons {HORIZONS}")
    print("rows in the store's order (per-flush symbol runs); the core's worst case, symbols interleaved tick by tick, below")
    results = []
    t_core, _ = timed(run_core, samples, tape)
    results.append(("project core (per-symbol searchsorted)", t_core, n))
    store_rows = samples, tape
    # The baselines need time-sorted input: they get it (their sort is not timed), and
    # the core is also run on that order, where its answers are checked against theirs.
    samples, tape = make_data(n_samples, n_symbols, layout="interleaved")
    t_inter, core = timed(run_core, samples, tape)
    results.append(("project core, time-sorted input (symbols interleaved)", t_inter, n))
    t_ma, ma = timed(run_merge_asof, samples, tape)
    results.append(("pandas.merge_asof", t_ma, n))
    for h in HORIZONS:  # same job, same answers
        np.testing.assert_allclose(core[h].movement, ma[h], rtol=0, atol=1e-12, equal_nan=True)
    if not skip_duckdb:
        try:
            t_db, db = timed(run_duckdb, samples, tape)
            for h in HORIZONS:
                np.testing.assert_allclose(core[h].movement, db[h], atol=1e-9, equal_nan=True)
            results.append(("DuckDB ASOF JOIN", t_db, n))
        except ImportError:
            print("  (duckdb not installed: skipped)")
    try:
        t_pl, _ = timed(run_polars, samples, tape)
        results.append(("polars join_asof", t_pl, n))
    except ImportError:
        print("  (polars not installed: skipped)")
    t_nv, nv = timed(run_naive, samples, tape, naive_rows)
    for h in HORIZONS:
        np.testing.assert_allclose(core[h].movement[:naive_rows], nv[h], atol=1e-12, equal_nan=True)
    results.append((f"naive per-row Python loop ({naive_rows:,} rows)", t_nv, naive_rows))
    names = np.array([f"SYM{i}USDT" for i in range(n_symbols)], dtype=object)
    s_str, t_str = with_names(samples, names), with_names(tape, names)
    # the parquet labeller's path: store row order, symbols read dictionary-encoded per file
    s_dict = with_dictionary(store_rows[0], names, 2_000 * n_symbols)
    t_dict = with_dictionary(store_rows[1], names, 20_000 * n_symbols)
    t_cd, _ = timed(run_core_str, s_dict, t_dict)
    t_cs, _ = timed(run_core_str, s_str, t_str)
    t_ms, _ = timed(run_merge_asof_str, s_str, t_str)
    results.append(("project core, symbols as the store reads them", t_cd, n))
    results.append(("project core, plain string symbols", t_cs, n))
    results.append(("pandas.merge_asof, string symbols", t_ms, n))
    base = n / t_ma
    print(f"  {'method':<56} {'seconds':>8} {'rows/s':>14} {'vs merge_asof':>14}")
    for name, secs, rows in results:
        rate = rows / secs
        print(f"  {name:<56} {secs:>8.2f} {rate:>14,.0f} {rate / base:>13.2f}x")
    core_mb, ma_mb = peak_mb(run_core, samples, tape), peak_mb(run_merge_asof, samples, tape)
    print(f"  peak traced memory: core {core_mb:,.0f} MB, merge_asof {ma_mb:,.0f} MB (inputs excluded)")
    print(f"  with symbol strings, as users hold them: core (store path) {t_ms / t_cd:.2f}x merge_asof; "
          f"core from plain strings {t_ms / t_cs:.2f}x")


def bench_migration(batches: int, rows: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "ml_training"
        w = LegacyBatchWriter(root, fsync=False)
        rng = np.random.default_rng(0)
        for b in range(batches):
            sym = ("BTCUSDT", "ETHUSDT")[b % 2]
            ts = T0 + (b // 2) * rows * 30_000 // 4 + np.arange(rows, dtype=np.int64) * 30_000 // 4
            ts = T0 + (ts - T0) % 80_000_000  # stay within one day
            w.write_batch(sym, rng.normal(size=(rows, 110)).astype(np.float32), np.sort(ts) + b, 100 + rng.random(rows), "sim")
        refs = [r for s in ("BTCUSDT", "ETHUSDT") for r in list_batches(root, s)]
        total = sum(rows for _ in refs)

        def plain():
            out = Path(tmp) / "plain"
            out.mkdir(exist_ok=True)
            for r in refs:
                feats = np.load(r.features_path, allow_pickle=False)
                labels = json.loads(r.labels_path.read_bytes())
                cols = {name: feats[:, i] for i, name in enumerate(FEATURE_NAMES)}
                cols["timestamp"] = [x["timestamp"] for x in labels]
                cols["mid_price"] = [x["current_mid_price"] for x in labels]
                pq.write_table(pa.table(cols), out / f"{r.symbol}_{r.stem}.parquet")

        def ours():
            m = Migrator(root, FeatureStore(Path(tmp) / "store"))
            for r in refs:
                o = m.migrate_batch(r)
                assert o.status == "migrated", o

        t_plain, _ = timed(plain, repeat=1)
        t_ours, _ = timed(ours, repeat=1)  # a second run would find everything migrated
        print(f"Migration of {len(refs)} legacy batches x {rows:,} samples ({total:,} samples)")
        print(f"  plain np.load + json + pq.write_table loop: {t_plain:6.2f} s  {total / t_plain:>12,.0f} samples/s")
        print(
            f"  Migrator (strict checks, dedup, atomic store write, fsync): {t_ours:6.2f} s  {total / t_ours:>12,.0f} samples/s"
            f"  ({t_plain / t_ours:.2f}x the plain loop's speed)"
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--samples", type=int, default=1_000_000, help="samples to label (default 1,000,000)")
    p.add_argument("--full", action="store_true", help="issue 6 size: 5,000,000 samples (50M tape rows, ~8 GB RAM)")
    p.add_argument("--symbols", type=int, default=10, help="number of symbols (default 10)")
    p.add_argument("--naive-rows", type=int, default=20_000, help="rows for the per-row Python loop (default 20,000)")
    p.add_argument("--skip-duckdb", action="store_true", help="leave out the DuckDB ASOF JOIN")
    p.add_argument("--batches", type=int, default=20, help="legacy batches to migrate (default 20)")
    p.add_argument("--batch-rows", type=int, default=2000, help="samples per legacy batch (default 2000)")
    args = p.parse_args()
    bench_labels(5_000_000 if args.full else args.samples, args.symbols, args.naive_rows, args.skip_duckdb)
    print()
    bench_migration(args.batches, args.batch_rows)


if __name__ == "__main__":
    main()
