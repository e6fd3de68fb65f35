"""MLDataCollector: collect_sample latency, buffer memory, event-loop lag during a flush.

    .venv/bin/python bench/collector_bench.py [--samples 20000] [--symbols 3]

Baselines in the same run: a list-of-dicts buffer (latency and memory), and the
same 2000-row flush done on the event loop instead of the worker thread.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backend.ml_engine.data_collection import MLDataCollector  # noqa: E402

T0 = 1_762_473_600_000
RAW_BYTES = 110 * 4


def percentiles(values_ns: list[int]) -> tuple[float, float]:
    arr = np.asarray(values_ns, dtype=np.float64) / 1000.0
    return float(np.percentile(arr, 50)), float(np.percentile(arr, 99))


def bench_latency(tmp: Path, n: int, symbols: list[str]) -> None:
    c = MLDataCollector(storage_path=tmp / "lat" / "ml_training", max_samples_per_file=10**9, source="sim", fsync=True)
    c.recover()
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(n, 110)).astype(np.float32)
    lat: list[int] = []
    clock = time.perf_counter_ns
    for i in range(n):
        sym = symbols[i % len(symbols)]
        t = clock()
        c.collect_sample(sym, feats[i], T0 + i * 30_000, 100.0 + i)
        lat.append(clock() - t)
    p50, p99 = percentiles(lat[100:])
    bytes_per = c.memory_bytes / n

    # baseline: a list of dicts per sample (what a naive collector keeps), no spool
    def dict_buffer(timed: bool) -> list[int]:
        buf: dict[str, list[dict]] = {s: [] for s in symbols}
        out: list[int] = []
        for i in range(n):
            sym = symbols[i % len(symbols)]
            t = clock()
            buf[sym].append({"timestamp": T0 + i * 30_000, "mid_price": 100.0 + i, "features": feats[i].tolist()})
            if timed:
                out.append(clock() - t)
        return out

    lat_d = dict_buffer(True)
    tracemalloc.start()
    dict_buffer(False)
    dict_bytes = tracemalloc.get_traced_memory()[1] / n
    tracemalloc.stop()
    d50, d99 = percentiles(lat_d[100:])
    print(f"\ncollect_sample, {n:,} samples over {len(symbols)} symbols (spool append included, fsync per tick not on this path)")
    print(f"  MLDataCollector   p50 {p50:6.2f} us   p99 {p99:6.2f} us   (goal p99 <= 20 us)")
    print(f"  list of dicts     p50 {d50:6.2f} us   p99 {d99:6.2f} us   (no spool: nothing survives a crash)")
    print(f"\nbuffer memory per sample: {bytes_per:,.0f} B = {bytes_per / RAW_BYTES:.3f}x raw float32 ({RAW_BYTES} B; goal <= 1.25x);"
          f" list of dicts {dict_bytes:,.0f} B = {dict_bytes / RAW_BYTES:.1f}x")
    c.close_sync()


async def _measure_lag(run_flush, period_s: float = 0.001) -> tuple[float, float, float]:
    lags: list[float] = []
    stop = asyncio.Event()

    async def ticker():
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            t = loop.time()
            await asyncio.sleep(period_s)
            lags.append((loop.time() - t - period_s) * 1000)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0.05)
    lags.clear()
    t = time.perf_counter()
    await run_flush()
    elapsed = time.perf_counter() - t
    stop.set()
    await task
    return float(np.percentile(lags, 99)) if lags else float("nan"), float(max(lags or [0])), elapsed * 1000


def bench_flush_lag(tmp: Path, symbols: list[str], rows: int = 2000, rounds: int = 5) -> None:
    rng = np.random.default_rng(1)
    feats = rng.normal(size=(rows, 110)).astype(np.float32)

    def filled(name: str) -> MLDataCollector:
        c = MLDataCollector(storage_path=tmp / name / "ml_training", max_samples_per_file=rows, source="sim", fsync=True)
        c.recover()
        for s in symbols:
            for i in range(rows):
                c.collect_sample(s, feats[i], T0 + i * 30_000, 100.0)
        return c

    async def off_loop():
        c = filled(f"off{time.perf_counter_ns()}")

        async def run():
            c.maybe_flush()  # dispatches to the worker thread
            while c._jobs:
                await asyncio.sleep(0.001)
                c._reap()

        out = await _measure_lag(run)
        c.close_sync()
        return out

    async def on_loop():
        c = filled(f"on{time.perf_counter_ns()}")

        async def run():
            for key in [k for k in c._buffers if k.stream == "sample"]:
                job = c._new_job("sample", {key: c._buffers[key].take()})
                c._write_job(job)  # the same writes, on the loop
                c._jobs.remove(job)
            await asyncio.sleep(0)

        out = await _measure_lag(run)
        c.close_sync()
        return out

    res_off = [asyncio.run(off_loop()) for _ in range(rounds)]
    res_on = [asyncio.run(on_loop()) for _ in range(rounds)]
    med = lambda rs, i: float(np.median([r[i] for r in rs]))  # noqa: E731
    print(f"\nevent-loop lag while flushing {len(symbols)} x {rows} samples to parquet + legacy (median of {rounds} rounds)")
    print(f"  flush on the worker thread  lag p99 {med(res_off, 0):7.2f} ms  max {med(res_off, 1):7.2f} ms  flush {med(res_off, 2):6.1f} ms  (goal p99 <= 5 ms)")
    print(f"  same flush on the loop      lag p99 {med(res_on, 0):7.2f} ms  max {med(res_on, 1):7.2f} ms  flush {med(res_on, 2):6.1f} ms")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--samples", type=int, default=20_000, help="samples in the latency benchmark")
    p.add_argument("--symbols", type=int, default=3, help="symbols flushed at once in the lag benchmark")
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="collector_bench_"))
    try:
        symbols = [f"SYM{i}USDT" for i in range(max(1, args.symbols))]
        bench_latency(tmp, args.samples, symbols)
        bench_flush_lag(tmp, symbols)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
