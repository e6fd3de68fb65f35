"""Live inference cost per collection tick: one batched forward pass vs a per-symbol loop.

    .venv/bin/python bench/inference_bench.py                 # 3, 50, 500 symbols, 1 thread
    .venv/bin/python bench/inference_bench.py --threads 4 --seq-len 30 --ticks 50

Model: the training code's default architecture (``LOBSequenceClassifier`` 110 -> 32
conv channels -> LSTM 48, inside ``NormalizedModel``) with random weights; weights do not
change the cost. Each timed tick is what the bot does per collection tick with
``LivePredictor.step``: push one sample per symbol into the rings (gap rule included),
gather the (S, L, 110) windows, one forward pass, softmax. The baseline does the same
work one symbol at a time (push, window, forward pass of batch 1). The paper trader's
per-tick decision (no fills) is timed beside it. Results agree between the two paths
(checked). Reported: median and p99 milliseconds per tick. Goal from issue 17: move
inference off the event loop when it costs more than 1 ms per tick.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from backend.ml_engine.feature_store.feature_schema import FEATURE_NAMES, FEATURE_SCHEMA_VERSION  # noqa: E402
from backend.ml_engine.live.inference import LivePredictor  # noqa: E402
from backend.ml_engine.live.model_loader import build_module, spec_from_logged  # noqa: E402
from backend.ml_engine.live.paper import PaperConfig, PaperTrader  # noqa: E402
from backend.ml_engine.training_orchestrator.model import LOBSequenceClassifier  # noqa: E402

F = len(FEATURE_NAMES)
T0 = 1_700_000_000_000
INTERVAL = 30_000


def make_model(seq_len: int):
    """Random-weight default model and its spec, as a logged run would give them."""
    params = {"sequence_length": str(seq_len), "horizon_s": "60", "gap_factor": "2.0", "clip": "10.0", "conv_channels": "32",
              "hidden_size": "48", "dropout": "0.2", "data_label_thresholds_pct": "0.02", "data_sampling_interval_s": ""}
    norm = {"features": list(FEATURE_NAMES), "mean": [0.0] * F, "std": [1.0] * F, "clip": 10.0}
    spec = spec_from_logged("models:/bench/1", "bench", params, norm, {"features": list(FEATURE_NAMES), "feature_schema_version": FEATURE_SCHEMA_VERSION})
    torch.manual_seed(0)
    return build_module(spec, LOBSequenceClassifier(F, 32, 48, 0.2).state_dict()), spec


def run(n_symbols: int, seq_len: int, ticks: int) -> dict:
    """Time ``ticks`` ticks of batched and per-symbol inference for ``n_symbols`` after warm-up."""
    module, spec = make_model(seq_len)
    symbols = [f"S{i:04d}USDT" for i in range(n_symbols)]
    rng = np.random.default_rng(0)
    batched = LivePredictor(module, spec, symbols, sample_interval_ms=INTERVAL)
    single = LivePredictor(module, spec, symbols, sample_interval_ms=INTERVAL)
    trader = PaperTrader(symbols, PaperConfig())
    feats = rng.normal(size=(seq_len + ticks, n_symbols, F)).astype(np.float32)
    t_batch, t_loop, t_policy = [], [], []
    for k in range(seq_len + ticks):
        ts = np.full(n_symbols, T0 + k * INTERVAL, dtype=np.int64)
        t0 = time.perf_counter()
        out = batched.step(symbols, ts, feats[k])
        t1 = time.perf_counter()
        probs = [single.step([s], ts[j : j + 1], feats[k, j : j + 1]).prob for j, s in enumerate(symbols)]
        t2 = time.perf_counter()
        # Decision only (books absent: no fills), the per-tick policy work over all symbols.
        trader.step(int(ts[0]), {}, out)
        t3 = time.perf_counter()
        if k >= seq_len:
            t_batch.append(t1 - t0)
            t_loop.append(t2 - t1)
            t_policy.append(t3 - t2)
            assert len(out) == n_symbols
            np.testing.assert_allclose(np.concatenate(probs), out.prob, atol=1e-5)
    ms = lambda xs, q: 1000 * float(np.quantile(xs, q))  # noqa: E731
    return {
        "symbols": n_symbols,
        "batched_ms": ms(t_batch, 0.5), "batched_p99_ms": ms(t_batch, 0.99),
        "loop_ms": ms(t_loop, 0.5), "loop_p99_ms": ms(t_loop, 0.99),
        "policy_ms": ms(t_policy, 0.5),
    }


def main(argv=None) -> int:
    """Print one line per universe size."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--symbols", type=int, nargs="+", default=[3, 50, 500])
    ap.add_argument("--seq-len", type=int, default=30)
    ap.add_argument("--ticks", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), sequence length {args.seq_len}, {args.ticks} timed ticks")
    print(f"{'symbols':>8} {'batched ms':>11} {'p99':>7} {'per-symbol loop ms':>19} {'p99':>8} {'speed-up':>9} {'policy ms':>10}  off-loop?")
    for n in args.symbols:
        r = run(n, args.seq_len, args.ticks)
        print(
            f"{n:>8} {r['batched_ms']:>11.2f} {r['batched_p99_ms']:>7.2f} {r['loop_ms']:>19.2f} {r['loop_p99_ms']:>8.2f} "
            f"{r['loop_ms'] / r['batched_ms']:>8.1f}x {r['policy_ms']:>10.3f}  {'yes' if r['batched_p99_ms'] > 1.0 else 'no'}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
