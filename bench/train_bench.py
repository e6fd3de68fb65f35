"""Training throughput and peak memory: windows as views over one array vs materialised windows.

    .venv/bin/python bench/train_bench.py            # 100k samples x sequence length 60 (a few minutes here)
    .venv/bin/python bench/train_bench.py --full     # 1M samples x 60, the issue's size

Each variant runs in its own process so peak RSS is its own:
* view:         the orchestrator's way: one (n, 110) float32 matrix, batches gathered by end index.
* materialise:  the common way: all windows copied into an (n, L, 110) array, then a DataLoader.
The materialised variant is skipped (and its memory need printed) when it would not fit in RAM.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

N_FEATURES = 110


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _available_mb() -> float:
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    return float("inf")


def run_variant(variant: str, n: int, L: int, batches: int, batch_size: int, threads: int) -> dict:
    import numpy as np
    import torch

    from backend.ml_engine.training_orchestrator.model import LOBSequenceClassifier
    from backend.ml_engine.training_orchestrator.sequences import gather_windows

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    X = rng.standard_normal((n, N_FEATURES), dtype=np.float32)
    y = torch.from_numpy(rng.integers(0, 3, n))
    ends = np.arange(L - 1, n)
    base_rss = _peak_rss_mb()
    if variant == "view":
        Xt = torch.from_numpy(X)
        ends_t = torch.from_numpy(ends)

        def batch_iter():
            order = ends_t[torch.randperm(ends_t.shape[0])]
            for b in range(0, order.shape[0], batch_size):
                e = order[b : b + batch_size]
                yield gather_windows(Xt, e, L), y[e]
    else:
        windows = np.lib.stride_tricks.sliding_window_view(X, L, axis=0).transpose(0, 2, 1).copy()  # (n-L+1, L, F)
        del X
        ds = torch.utils.data.TensorDataset(torch.from_numpy(windows), y[L - 1 :])
        loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=True)

        def batch_iter():
            yield from loader

    prep_s = time.perf_counter() - t0
    model = LOBSequenceClassifier(N_FEATURES)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    model.train()
    done, seen = 0, 0
    it = batch_iter()
    # One warm-up batch so allocator and kernel set-up do not count.
    xb, yb = next(it)
    loss_fn(model(xb), yb).backward()
    t1 = time.perf_counter()
    for xb, yb in it:
        opt.zero_grad(set_to_none=True)
        loss_fn(model(xb), yb).backward()
        opt.step()
        done += 1
        seen += xb.shape[0]
        if done >= batches:
            break
    train_s = time.perf_counter() - t1
    return {
        "variant": variant,
        "samples": n,
        "seq_len": L,
        "prep_s": prep_s,
        "samples_per_s": seen / train_s,
        "peak_rss_mb": _peak_rss_mb(),
        "rss_after_data_mb": base_rss,
        "feature_matrix_mb": n * N_FEATURES * 4 / 2**20,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=100_000, help="samples (rows) in the feature matrix (default 100k)")
    ap.add_argument("--full", action="store_true", help="the issue's size: 1,000,000 samples")
    ap.add_argument("--seq-len", type=int, default=60, help="sequence length (default 60)")
    ap.add_argument("--batches", type=int, default=40, help="training batches timed per variant (default 40)")
    ap.add_argument("--batch-size", type=int, default=256, help="batch size (default 256)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads per variant (default 1)")
    ap.add_argument("--variant", choices=("view", "materialise"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    n = 1_000_000 if args.full else args.samples
    if args.variant:
        print(json.dumps(run_variant(args.variant, n, args.seq_len, args.batches, args.batch_size, args.threads)))
        return 0

    print(f"train_bench: {n:,} samples x sequence length {args.seq_len} x {N_FEATURES} features, "
          f"{args.batches} batches of {args.batch_size}, {args.threads} thread(s)")
    results = {}
    for variant in ("view", "materialise"):
        need_mb = (n - args.seq_len + 1) * args.seq_len * N_FEATURES * 4 / 2**20 if variant == "materialise" else 0
        if need_mb > 0.8 * _available_mb():
            print(f"  {variant:<12} skipped: the windows alone need {need_mb / 1024:,.1f} GiB, "
                  f"{_available_mb() / 1024:,.1f} GiB available")
            continue
        cmd = [sys.executable, __file__, "--variant", variant, "--samples", str(n), "--seq-len", str(args.seq_len),
               "--batches", str(args.batches), "--batch-size", str(args.batch_size), "--threads", str(args.threads)]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
        if proc.returncode != 0:
            print(f"  {variant:<12} failed (exit {proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}")
            continue
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        results[variant] = r
        print(f"  {variant:<12} prep {r['prep_s']:6.2f} s   train {r['samples_per_s']:9,.0f} samples/s   "
              f"peak RSS {r['peak_rss_mb']:8,.0f} MiB   (feature matrix {r['feature_matrix_mb']:,.0f} MiB)")
    if len(results) == 2:
        v, m = results["view"], results["materialise"]
        print(f"view vs materialise: {v['samples_per_s'] / m['samples_per_s']:.2f}x throughput, "
              f"{m['peak_rss_mb'] / v['peak_rss_mb']:.1f}x less peak memory, {m['prep_s'] / max(v['prep_s'], 1e-9):.1f}x faster set-up")
    elif "view" in results:
        v = results["view"]
        print(f"view: peak RSS {v['peak_rss_mb']:,.0f} MiB = feature matrix {v['feature_matrix_mb']:,.0f} MiB "
              f"+ {v['peak_rss_mb'] - v['feature_matrix_mb']:,.0f} MiB (interpreter, torch, model, batches)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
