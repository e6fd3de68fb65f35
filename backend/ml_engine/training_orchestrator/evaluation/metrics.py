"""Accuracy and macro-F1 from confusion matrices, for one matrix or a stack of them.

The bootstrap scores thousands of resamples at once; each is a (k, k) confusion
matrix (rows = true class, columns = predicted), so every metric here works on
arrays of shape (..., k, k) and returns arrays of shape (...).

Macro-F1 is the unweighted mean over the k classes of F1 = 2PR / (P + R), with a
class never predicted (P undefined) or never present (R undefined) scoring 0, as
``evaluate.score`` and scikit-learn's ``zero_division=0`` do.
"""

from __future__ import annotations

import numpy as np

N_CLASSES = 3


def confusion_codes(y_true: np.ndarray, y_pred: np.ndarray, k: int = N_CLASSES) -> np.ndarray:
    """(n,) int64 cell index ``true * k + pred`` of each sample in a flattened (k, k) confusion matrix.

    Raises:
        ValueError: when the arrays differ in length or hold a class outside 0..k-1.
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"labels {y_true.shape} and predictions {y_pred.shape} differ in shape")
    for name, y in (("labels", y_true), ("predictions", y_pred)):
        if y.size and (y.min() < 0 or y.max() >= k):
            raise ValueError(f"{name} must be classes 0..{k - 1}, got values in [{y.min()}, {y.max()}]")
    return y_true * k + y_pred


def confusion(y_true: np.ndarray, y_pred: np.ndarray, k: int = N_CLASSES) -> np.ndarray:
    """(k, k) int64 confusion matrix via one ``np.bincount``."""
    return np.bincount(confusion_codes(y_true, y_pred, k), minlength=k * k).reshape(k, k)


def accuracy(cm: np.ndarray) -> np.ndarray:
    """(...) share of samples on the diagonal of (..., k, k) matrices; 0 for an empty matrix."""
    cm = np.asarray(cm, dtype=np.float64)
    n = cm.sum(axis=(-2, -1))
    diag = np.trace(cm, axis1=-2, axis2=-1)
    return np.divide(diag, n, out=np.zeros_like(n), where=n > 0)


def per_class(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision, recall and F1 per class, each (..., k), from (..., k, k) matrices (undefined -> 0)."""
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diagonal(cm, axis1=-2, axis2=-1)
    predicted = cm.sum(axis=-2)
    actual = cm.sum(axis=-1)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, actual, out=np.zeros_like(tp), where=actual > 0)
    pr = precision + recall
    f1 = np.divide(2 * precision * recall, pr, out=np.zeros_like(tp), where=pr > 0)
    return precision, recall, f1


def macro_f1(cm: np.ndarray) -> np.ndarray:
    """(...) unweighted mean of the per-class F1 of (..., k, k) matrices."""
    return per_class(cm)[2].mean(axis=-1)


METRICS = {"accuracy": accuracy, "macro_f1": macro_f1}
