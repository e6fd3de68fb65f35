"""Calibration of the model's class probabilities: Brier score and the reliability diagram's bins.

* Brier score (Brier 1950, "Verification of forecasts expressed in terms of probability",
  Monthly Weather Review 78(1)), in its original multi-class form: the mean over samples
  of sum_k (p_k - [y = k])^2. 0 is perfect; always saying 1/3 for each of three classes
  scores 2/3; a confident wrong answer scores 2.
* Reliability diagram (top-label form, as in DeGroot & Fienberg 1983 and Guo et al. 2017):
  samples binned by the probability of the predicted class; in each bin the mean of that
  probability (confidence) against the share of samples whose prediction was right
  (accuracy). A calibrated model sits on the diagonal. The expected calibration error
  is the sample-weighted mean gap |accuracy - confidence| over the bins.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def softmax(logits: np.ndarray) -> np.ndarray:
    """(n, k) probabilities from (n, k) logits (shifted by the row maximum so exp cannot overflow)."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _check(probs: np.ndarray, y_true: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    probs = np.asarray(probs, dtype=np.float64)
    y_true = np.asarray(y_true, dtype=np.int64)
    if probs.ndim != 2 or probs.shape[0] != y_true.shape[0]:
        raise ValueError(f"probabilities must be (n, k) for n={y_true.shape[0]} labels, got {probs.shape}")
    if y_true.size and (y_true.min() < 0 or y_true.max() >= probs.shape[1]):
        raise ValueError(f"labels must be classes 0..{probs.shape[1] - 1}")
    if probs.size and not np.allclose(probs.sum(axis=1), 1.0, atol=1e-4):
        raise ValueError("each row of probabilities must sum to 1 (pass softmax(logits), not logits)")
    return probs, y_true


def brier_score(probs: np.ndarray, y_true: np.ndarray) -> float:
    """Multi-class Brier score (Brier 1950) of (n, k) probabilities against (n,) classes; range 0 .. 2.

    Raises:
        ValueError: shapes disagree, a label is out of range, rows do not sum to 1, or n = 0.
    """
    probs, y_true = _check(probs, y_true)
    if y_true.size == 0:
        raise ValueError("no samples to score")
    onehot = np.zeros_like(probs)
    onehot[np.arange(y_true.size), y_true] = 1.0
    return float(((probs - onehot) ** 2).sum(axis=1).mean())


@dataclass(frozen=True)
class Reliability:
    """A reliability diagram: per confidence bin, mean confidence, accuracy and count, plus the expected calibration error."""
    edges: np.ndarray  # (bins + 1,) confidence bin edges on [0, 1]
    confidence: np.ndarray  # (bins,) mean top-class probability per bin; NaN where empty
    accuracy: np.ndarray  # (bins,) share correct per bin; NaN where empty
    count: np.ndarray  # (bins,) int64 samples per bin
    ece: float  # expected calibration error

    def rows(self) -> list[tuple[float, float, float, float, int]]:
        """Non-empty bins as (low edge, high edge, confidence, accuracy, count)."""
        return [
            (float(self.edges[i]), float(self.edges[i + 1]), float(self.confidence[i]), float(self.accuracy[i]), int(self.count[i]))
            for i in np.flatnonzero(self.count)
        ]


def reliability(probs: np.ndarray, y_true: np.ndarray, bins: int = 10) -> Reliability:
    """Top-label reliability bins of equal width on [0, 1], and the expected calibration error.

    A confidence exactly on an inner edge falls in the upper bin; 1.0 falls in the last.

    Raises:
        ValueError: as ``brier_score``, or bins < 1.
    """
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    probs, y_true = _check(probs, y_true)
    conf = probs.max(axis=1)
    right = (probs.argmax(axis=1) == y_true).astype(np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    idx = np.clip(np.searchsorted(edges, conf, side="right") - 1, 0, bins - 1)
    count = np.bincount(idx, minlength=bins)
    conf_sum = np.bincount(idx, weights=conf, minlength=bins)
    right_sum = np.bincount(idx, weights=right, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.where(count > 0, conf_sum / count, np.nan)
        mean_acc = np.where(count > 0, right_sum / count, np.nan)
    n = max(int(count.sum()), 1)
    ece = float(np.abs(right_sum - conf_sum).sum() / n)
    return Reliability(edges, mean_conf, mean_acc, count.astype(np.int64), ece)
