"""Evaluation checks that need many repetitions, and the cost of folds + bootstrap.

    .venv/bin/python bench/eval_bench.py            # ~1-2 minutes on one core
    .venv/bin/python bench/eval_bench.py --quick    # fewer repetitions, for a smoke run
    .venv/bin/python bench/eval_bench.py --run-overhead [--sim-dir D]   # only section 4 (minutes)

1. Coverage: test sets whose correctness is a dependent process with a known mean
   (errors correlated over m samples, the way overlapping windows correlate them); how
   often the 95 % interval for accuracy covers the true mean, over 200 repetitions, for
   several test-set lengths (in units of m) and block factors (block = factor x m).
2. No signal: labels, model, persistence and logreg all independent; verdicts over 20
   seeds (the issue's acceptance) and over 200 seeds (the rate), at the 95 % level and at
   the Bonferroni level for three baselines.
3. Cost: ``assess`` (time order, block length, bootstrap of every fold and of the pooled
   set, verdicts, calibration) on 2,000-10,000 test samples of 3 symbols x model + 3
   baselines, B = 1000; and ``walk_forward`` on a day of sequences. Compare the seconds
   with a 5-epoch training run (bench/train_bench.py or the CLI's "seconds").
4. Overhead on a real run (``--run-overhead``): a simulated day (the simulator, 3 symbols,
   24 h, labelled; built once under ``--sim-dir``), ``train_and_track`` with 5 epochs and
   MLflow (SQLite) as the CLI runs it, with --folds 1 and --folds 5. The orchestrator times
   its parts (``RunSummary.facts["seconds_*"]``): evaluation = assess + report + plots +
   evaluation.md; fold bookkeeping = cutting the folds and re-normalising per fold;
   retraining = fitting one model per fold. Goal: evaluation + bookkeeping <= 20 % of the run.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "training"))

from backend.ml_engine.training_orchestrator.evaluation.assess import FoldOutcome, assess  # noqa: E402
from backend.ml_engine.training_orchestrator.evaluation.bootstrap import compare  # noqa: E402
from backend.ml_engine.training_orchestrator.evaluation.calibration import softmax  # noqa: E402
from backend.ml_engine.training_orchestrator.evaluation.folds import default_test_fraction, walk_forward  # noqa: E402
from backend.ml_engine.training_orchestrator.evaluation.verdict import verdicts  # noqa: E402
from eval_synthetic import classes, known_accuracy, no_signal  # noqa: E402

M = 32  # dependence in samples: 30 samples of sequence span + 60 s horizon at 30 s sampling


def coverage(reps: int, n: int, factor: float, accuracy: float = 0.55) -> float:
    hits = 0
    for r in range(reps):
        y, p = known_accuracy(n, M, accuracy, np.random.default_rng(r))
        c = compare(y, {"model": p}, block=int(factor * M), resamples=1000, seed=r)
        hits += c.scores["model"]["accuracy"].contains(accuracy)
    return hits / reps


def no_signal_verdicts(seeds, n: int, level: float = 0.95) -> dict[str, int]:
    out = {"beats": 0, "not_distinguishable": 0, "worse": 0}
    for seed in seeds:
        y, (model, pers, lr) = no_signal(n, M, np.random.default_rng(10_000 + seed), k=3)
        c = compare(y, {"model": model, "persistence": pers, "logreg": lr}, block=2 * M, seed=seed, level=level)
        for v in verdicts(c).values():
            out[v.outcome] += 1
    return out


def no_signal_assess(seeds, n: int) -> dict[str, int]:
    """Verdicts against persistence and logreg of the real ``assess`` (defaults: Bonferroni over 3 baselines)."""
    out = {"beats": 0, "not_distinguishable": 0, "worse": 0}
    for seed in seeds:
        rng = np.random.default_rng(10_000 + seed)
        y, (model, pers, lr) = no_signal(n, M, rng, k=3)
        t = 1_762_473_600_000 + np.repeat(np.arange(n // 3 + 1), 3)[:n] * 30_000
        codes = np.tile(np.arange(3), n // 3 + 1)[:n]
        preds = {"model": model, "majority": np.ones(n, np.int64), "persistence": pers, "logreg": lr}
        a = assess([FoldOutcome(y, preds, t, codes)], dependence_ms=(M // 3) * 30_000, seed=seed)
        for b in ("persistence", "logreg"):
            out[a.verdicts[b].outcome] += 1
    return out


def cost(n_total: int, folds: int, reps: int) -> float:
    rng = np.random.default_rng(n_total)
    per = n_total // folds
    outcomes = []
    for k in range(folds):
        y = classes(per, M, rng)
        preds = {name: classes(per, M, rng) for name in ("model", "majority", "persistence", "logreg")}
        t = 1_762_473_600_000 + k * 10**8 + np.repeat(np.arange(per // 3 + 1), 3)[:per] * 30_000
        outcomes.append(FoldOutcome(y, preds, t, np.tile(np.arange(3), per // 3 + 1)[:per], softmax(rng.normal(size=(per, 3)))))
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        assess(outcomes, dependence_ms=M * 30_000)
        best = min(best, time.perf_counter() - t0)
    return best


def simulated_day(data_dir: Path) -> Path:
    """A labelled simulated day under ``data_dir`` (built with the real bot and labeller the first time)."""
    import subprocess

    if not (data_dir / "feature_store").exists():
        print(f"   building a simulated day in {data_dir} (bot --source sim --fast --duration 24h, then the labeller) ...", flush=True)
        subprocess.run(
            [sys.executable, "-m", "backend.main", "--source", "sim", "--fast", "--duration", "24h", "--seed", "7",
             "--symbols", "BTCUSDT,ETHUSDT,SOLUSDT", "--data-dir", str(data_dir)],
            cwd=REPO, check=True, capture_output=True,
        )
        subprocess.run(
            [sys.executable, str(REPO / "preprocessing_add_future_labels_parquet.py"), "--data-dir", str(data_dir), "--no-progress"],
            cwd=REPO, check=True, capture_output=True,
        )
    return data_dir


def run_overhead(data_dir: Path, threads: int) -> None:
    from backend.ml_engine.feature_store.feature_store import FeatureStore
    from backend.ml_engine.training_orchestrator.config import DataConfig, TrainConfig
    from backend.ml_engine.training_orchestrator.orchestrator import prepare, train_and_track
    from backend.ml_engine.training_orchestrator.tracking import resolve_tracking

    store = FeatureStore(simulated_day(data_dir) / "feature_store" / "offline")
    tcfg = TrainConfig(epochs=5, patience=5, device="cpu", num_threads=threads, show_progress=False)
    facts = {}
    for k in (1, 5):
        dcfg = DataConfig(folds=k)
        t0 = time.perf_counter()
        prepare(store, dcfg)
        prep = time.perf_counter() - t0
        with tempfile.TemporaryDirectory() as tmp:
            s = train_and_track(store, dcfg, tcfg, resolve_tracking(None, None, Path(tmp)), "bench", out=lambda line: None)
        facts[k] = {**{key[8:]: v for key, v in s.facts.items() if key.startswith("seconds_")}, "total": s.facts["seconds"],
                    "prepare_alone": prep, "rows": s.facts["rows"], "test": s.model_scores.n, "blocks": s.assessment.overall.n_blocks}
        f = facts[k]
        print(f"   --folds {k}: run {f['total']:.1f} s = prepare {f['prepare']:.2f} + re-normalise {f['folds']:.2f} + train {f['train']:.1f} "
              f"+ baselines {f['baselines']:.1f} + evaluation {f['evaluation']:.2f} + the rest (torch import, MLflow logging); "
              f"{f['test']} test sequences, {f['blocks']:.1f} blocks", flush=True)
    one, five = facts[1], facts[5]
    print(f"   K=1: evaluation (bootstrap, verdicts, report, plots) {one['evaluation']:.2f} s = {one['evaluation'] / one['total']:.1%} of the run")
    bookkeeping = five["folds"] + max(0.0, five["prepare_alone"] - one["prepare_alone"])
    print(f"   K=5: retraining {five['train']:.1f} s = {five['train'] / one['train']:.1f}x one split's training "
          f"(+ baselines refit per fold {five['baselines'] - one['baselines']:+.1f} s); "
          f"evaluation {five['evaluation']:.2f} s + fold bookkeeping {bookkeeping:.2f} s = "
          f"{(five['evaluation'] + bookkeeping) / five['total']:.1%} of the K=5 run")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="50 repetitions instead of 200")
    ap.add_argument("--run-overhead", action="store_true", help="only section 4: overhead on a 5-epoch run on a simulated day")
    ap.add_argument("--sim-dir", type=Path, default=Path(tempfile.gettempdir()) / "lobbot_eval_bench_day", help="where the simulated day is built once (default: <tmp>/lobbot_eval_bench_day)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads for section 4 (default 1)")
    args = ap.parse_args()
    if args.run_overhead:
        print("4. Overhead of folds + bootstrap on a 5-epoch run of a simulated day (MLflow in SQLite, CPU)")
        run_overhead(args.sim_dir, args.threads)
        return
    reps = 50 if args.quick else 200

    print(f"1. Coverage of the 95 % accuracy interval, {reps} repetitions, errors dependent over m={M} samples, B=1000")
    print(f"   {'test samples':>12} {'= x m':>6} " + " ".join(f"{f'factor {f:g}':>9}" for f in (1, 2, 3)))
    for n in (1440, 3200, 9600):
        cells = " ".join(f"{coverage(reps, n, f):>9.3f}" for f in (1, 2, 3))
        print(f"   {n:>12} {n / M:>6.0f} {cells}", flush=True)

    print("\n2. No signal (model, persistence, logreg independent of the labels), n=4300, blocks of 2 x m")
    print(f"   20 seeds x 2 baselines:  {no_signal_verdicts(range(20), 4300)}")
    print(f"   {reps} seeds x 2 baselines: {no_signal_verdicts(range(reps), 4300)}", flush=True)
    bonf = 1 - 0.05 / 3
    print(f"   at level {bonf:.3f} (Bonferroni over 3 baselines), 20 seeds: {no_signal_verdicts(range(20), 4300, bonf)}")
    print(f"   at level {bonf:.3f}, {reps} seeds: {no_signal_verdicts(range(reps), 4300, bonf)}", flush=True)
    print(f"   assess() as the run calls it (3 symbols, Bonferroni), 20 seeds: {no_signal_assess(range(20), 4300)}")
    print(f"   assess() as the run calls it, {reps} seeds: {no_signal_assess(range(reps), 4300)}", flush=True)

    print("\n3. Cost of assess() (model + 3 baselines, 3 symbols, B=1000, best of 3), seconds")
    for n in (2000, 5000, 10000):
        print(f"   {n:>6} test samples: 1 fold {cost(n, 1, 3):.3f} s, 5 folds {cost(n, 5, 3):.3f} s", flush=True)
    ends = 1_762_473_600_000 + np.repeat(np.arange(2880), 3) * 30_000  # a day of 3 symbols at 30 s
    t0 = time.perf_counter()
    walk_forward(ends, folds=5, purge_ms=M * 30_000, test_fraction=default_test_fraction(5))
    print(f"   walk_forward on {ends.size:,} sequence ends, 5 folds: {time.perf_counter() - t0:.4f} s")
    train_share = [1 - 0.15 - 0.5 + k * 0.1 for k in range(5)]
    print(
        f"   (retraining is the real cost of folds: 5 expanding folds train on {', '.join(f'{s:.0%}' for s in train_share)} "
        f"of the time line, {sum(train_share) / 0.70:.1f}x the rows of the single 70 % split)"
    )


if __name__ == "__main__":
    main()
