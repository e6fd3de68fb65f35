"""Evaluation checks that need many repetitions, and the cost of folds + bootstrap.

    .venv/bin/python bench/eval_bench.py            # ~1-2 minutes on one core
    .venv/bin/python bench/eval_bench.py --quick    # fewer repetitions, for a smoke run

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
"""

from __future__ import annotations

import argparse
import sys
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="50 repetitions instead of 200")
    args = ap.parse_args()
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
