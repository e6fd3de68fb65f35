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

``--loop-lag``: the event loop's lag with the model loaded. A real-time simulated bot
(``--lag-interval`` s ticks, a sample every tick) runs twice per universe size, without
and with the ``--model`` service (the same random-weight model, predicting every tick on
its worker thread, paper trading every tick); a probe task sleeps 10 ms in a loop and
records how late it wakes, from the first tick with a prediction (without a model: the
same tick) for ``--lag-seconds``. Reported: probe lag p99 and max, and the bot's tick
duration p99, with and without the model. The features warm up for 60 s of wall time
first, so one run takes about 60 s + (sequence length + lag seconds) x interval.

    .venv/bin/python bench/inference_bench.py --loop-lag --lag-symbols 3 50 --symbols
"""

from __future__ import annotations

import argparse
import dataclasses
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


def make_live_model(seq_len: int, symbols: list[str], interval_s: float):
    """A ``LiveModel`` of the random-weight default model whose spec says the symbols were sampled every ``interval_s``."""
    from backend.ml_engine.live.model_loader import LiveModel

    module, spec = make_model(seq_len)
    intervals = {s: int(round(interval_s * 1000)) for s in symbols}
    return LiveModel(module, dataclasses.replace(spec, interval_ms=intervals), "bench")


def loop_lag(n_symbols: int, seq_len: int, with_model: bool, seconds: float, interval_s: float) -> dict:
    """Probe lag (ms) of a real-time simulated bot with or without the model service (see the module docstring)."""
    import asyncio
    import tempfile

    from backend.config import Settings
    from backend.engine.bot import Bot, first_sample_tick
    from backend.ml_engine.live.service import LiveModelService

    symbols = [f"S{i:04d}USDT" for i in range(n_symbols)]
    start_tick = first_sample_tick(1, interval_s) + seq_len
    ticks = start_tick + int(seconds / interval_s)
    with tempfile.TemporaryDirectory(prefix="inference_bench_") as tmp:
        settings = Settings(data_dir=Path(tmp) / "data", source="sim", symbols=symbols, interval=interval_s,
                            collection_interval=1, max_iterations=ticks, seed=1, stats_interval=10**6,
                            use_legacy_format=False)
        service = None
        if with_model:
            service = LiveModelService(make_live_model(seq_len, symbols, interval_s), symbols, PaperConfig(horizon_s=60))
        bot = Bot(settings, services=(service,) if service else ())
        durations: list[float] = []
        orig = bot._tick

        async def timed_tick(*a, **kw):
            t = time.perf_counter()
            try:
                return await orig(*a, **kw)
            finally:
                if bot.ticks >= start_tick:
                    durations.append(time.perf_counter() - t)

        bot._tick = timed_tick
        lags: list[float] = []

        async def probe(stop: asyncio.Event) -> None:
            loop = asyncio.get_running_loop()
            while not stop.is_set():
                t = loop.time()
                await asyncio.sleep(0.010)
                if bot.ticks > start_tick:
                    lags.append(loop.time() - t - 0.010)

        async def main() -> int:
            stop = asyncio.Event()
            task = asyncio.create_task(probe(stop))
            try:
                return await bot.run()
            finally:
                stop.set()
                await task

        rc = asyncio.run(main())
    lag = np.array(lags) * 1000
    d = np.array(durations) * 1000
    # a run that ended before the measured window (rc != 0, or stopped) has no probes: say so, not a traceback
    pct = lambda a, q: float(np.percentile(a, q)) if a.size else float("nan")  # noqa: E731
    return {"symbols": n_symbols, "model": with_model, "rc": rc, "probes": lag.size, "ticks": bot.ticks,
            "lag_p99_ms": pct(lag, 99), "lag_max_ms": pct(lag, 100),
            "tick_p99_ms": pct(d, 99), "predictions": service.predictions if service else 0}


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
    ap.add_argument("--symbols", type=int, nargs="*", default=[3, 50, 500])
    ap.add_argument("--seq-len", type=int, default=30)
    ap.add_argument("--ticks", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--loop-lag", action="store_true", help="also measure the loop lag of a real-time bot with and without the model")
    ap.add_argument("--lag-symbols", type=int, nargs="+", default=[3, 50])
    ap.add_argument("--lag-seconds", type=float, default=30.0)
    ap.add_argument("--lag-interval", type=float, default=1.0)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.loop_lag:
        print(f"loop lag of a real-time simulated bot, {args.lag_interval:g} s ticks, a sample and a prediction every tick, "
              f"{args.lag_seconds:g} s measured")
        print(f"{'symbols':>8} {'model':>6} {'probe lag p99 ms':>17} {'max ms':>8} {'tick p99 ms':>12} {'predictions':>12}")
        for n in args.lag_symbols:
            for with_model in (False, True):
                r = loop_lag(n, args.seq_len, with_model, args.lag_seconds, args.lag_interval)
                print(f"{n:>8} {'yes' if with_model else 'no':>6} {r['lag_p99_ms']:>17.2f} {r['lag_max_ms']:>8.1f} "
                      f"{r['tick_p99_ms']:>12.1f} {r['predictions']:>12}"
                      + ("" if r["probes"] else f"   (no probe in the window: exit {r['rc']} after {r['ticks']} ticks)"))
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
