"""Synthetic test sets for the evaluation checks: serially dependent labels and predictions with known truths.

Dependence is built the way overlapping windows build it: a value at t is a moving
sum of the last ``m`` independent shocks, so values less than ``m`` samples apart are
correlated (triangle-shaped autocorrelation) and values further apart are independent.
"""

from __future__ import annotations

import math

import numpy as np

# Class shares of the simulator's labels at 60 s are roughly this.
CLASS_SHARES = (0.3, 0.4, 0.3)


def moving_sum(n: int, m: int, rng: np.random.Generator) -> np.ndarray:
    """(n,) standard-normal values, each the scaled sum of the last ``m`` iid shocks (MA(m-1))."""
    shocks = rng.standard_normal(n + m - 1)
    c = np.concatenate([[0.0], np.cumsum(shocks)])
    return (c[m:] - c[:-m]) / math.sqrt(m)


def _normal_quantile(p: float) -> float:
    # Inverse of the standard normal CDF by bisection on erf: exact enough, no scipy needed.
    lo, hi = -10.0, 10.0
    for _ in range(100):
        mid = (lo + hi) / 2
        if 0.5 * (1 + math.erf(mid / math.sqrt(2))) < p:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def classes(n: int, m: int, rng: np.random.Generator, shares=CLASS_SHARES) -> np.ndarray:
    """(n,) int64 classes 0..2 with the given marginal shares, dependent over ``m`` samples."""
    z = moving_sum(n, m, rng)
    cuts = [_normal_quantile(shares[0]), _normal_quantile(shares[0] + shares[1])]
    return np.searchsorted(cuts, z).astype(np.int64)


def known_accuracy(n: int, m: int, accuracy: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(y_true, y_pred) whose correctness is a dependent process with mean exactly ``accuracy``."""
    y = classes(n, m, rng)
    correct = moving_sum(n, m, rng) < _normal_quantile(accuracy)
    wrong = (y + 1 + rng.integers(0, 2, n)) % 3
    return y, np.where(correct, y, wrong)


def no_signal(n: int, m: int, rng: np.random.Generator, k: int = 2) -> tuple[np.ndarray, list[np.ndarray]]:
    """Labels and ``k`` classifiers, all independent of each other, same marginals, each dependent over ``m``."""
    return classes(n, m, rng), [classes(n, m, rng) for _ in range(k)]


def with_signal(n: int, m: int, rng: np.random.Generator, accuracy: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels, a model right with probability ``accuracy`` (dependent errors) and a no-signal baseline."""
    y, model = known_accuracy(n, m, accuracy, rng)
    return y, model, classes(n, m, rng)
