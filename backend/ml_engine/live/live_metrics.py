"""Realised (live) accuracy and macro-F1 of a model's predictions, once the labeller has labelled them.

A prediction row of the ``predictions`` group carries the predicted class and, after the
labeller ran, the realised class at each horizon; a model is scored at its own horizon
(``horizon_s``). The scores are the training code's (``evaluate.score``: macro-F1 over the
three classes, a class never predicted scoring 0), so live and test numbers compare directly.
Pure: arrays in, scores out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

from backend.ml_engine.training_orchestrator.evaluate import Scores, score


@dataclass
class LiveReport:
    """Live scores of one model beside its test scores: ``live`` (None before any labelled
    prediction), ``labelled``/``predictions`` counts, ``test_accuracy``/``test_macro_f1`` and the
    test-time baselines' macro-F1 (``baselines``) as logged with the model's run."""

    model_uri: str
    live: Scores | None
    labelled: int
    predictions: int
    test_accuracy: float
    test_macro_f1: float
    baselines: dict

    def as_metrics(self) -> dict[str, float]:
        """``live_accuracy``, ``live_macro_f1``, ``live_labelled`` for MLflow (empty before any label)."""
        if self.live is None:
            return {}
        return {"live_accuracy": self.live.accuracy, "live_macro_f1": self.live.macro_f1, "live_labelled": float(self.labelled)}


def live_scores(model_uri: np.ndarray, predicted: np.ndarray, realised: np.ndarray) -> dict[str, tuple[Scores | None, int, int]]:
    """Per model: (scores over its labelled predictions, labelled count, prediction count).

    ``model_uri`` (n,) str; ``predicted`` (n,) int 0/1/2; ``realised`` (n,) the label column of
    each row's horizon: int with -1, or float with NaN, or a masked/nullable array, where not
    yet labelled.
    """
    model_uri = np.asarray(model_uri).astype(str)
    predicted = np.asarray(predicted, dtype=np.int64)
    realised = np.asarray(np.ma.filled(np.ma.masked_invalid(np.asarray(realised, dtype=np.float64)), -1.0))
    labelled = realised >= 0
    out: dict[str, tuple[Scores | None, int, int]] = {}
    models, inverse = np.unique(model_uri, return_inverse=True)
    for k, uri in enumerate(models):
        rows = inverse == k
        sel = rows & labelled
        n = int(sel.sum())
        scores = score(f"live {uri}", realised[sel].astype(np.int64), predicted[sel]) if n else None
        out[str(uri)] = (scores, n, int(rows.sum()))
    return out


def live_report(model_uri: str, scores: tuple[Scores | None, int, int], test_metrics: Mapping[str, float]) -> LiveReport:
    """Join one model's live scores with the test metrics of its run (``ModelSpec.test_metrics``)."""
    live, labelled, n = scores
    baselines = {
        k[len("baseline_") : -len("_macro_f1")]: float(v)
        for k, v in test_metrics.items()
        if k.startswith("baseline_") and k.endswith("_macro_f1")
    }
    return LiveReport(
        model_uri, live, labelled, n,
        float(test_metrics.get("test_accuracy", np.nan)), float(test_metrics.get("test_macro_f1", np.nan)), baselines,
    )


def rolling_macro_f1(y_true: np.ndarray, y_pred: np.ndarray, window: int) -> np.ndarray:
    """(n,) macro-F1 over the last ``window`` labelled predictions ending at each row (NaN before
    ``window`` rows). Inputs (n,) int 0/1/2 in time order; one cumulative sum of the nine
    confusion cells, so the whole curve costs O(n)."""
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    n = y_true.shape[0]
    cells = np.zeros((n + 1, 9), dtype=np.int64)
    cells[np.arange(1, n + 1), y_true * 3 + y_pred] = 1
    cum = np.cumsum(cells, axis=0)
    out = np.full(n, np.nan)
    if n < window:
        return out
    cm = (cum[window:] - cum[:-window]).reshape(-1, 3, 3)  # (n - window + 1, 3, 3)
    tp = np.diagonal(cm, axis1=1, axis2=2).astype(np.float64)
    fp = cm.sum(axis=1) - tp
    fn = cm.sum(axis=2) - tp
    denom = 2 * tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(denom > 0, 2 * tp / np.where(denom > 0, denom, 1), 0.0)
    out[window - 1 :] = f1.mean(axis=1)
    return out


def fills_pnl(symbol: np.ndarray, signed_qty: np.ndarray, price: np.ndarray, fee: np.ndarray,
              last_mid: Mapping[str, float]) -> dict[str, float]:
    """Gross and net PnL (quote) of stored paper fills: cash flows of the fills plus each symbol's
    open position at ``last_mid`` (its last known mid; a symbol missing there counts its open
    position at its last fill price). ``signed_qty`` (n,) base units, + buy / - sell.

    Returns ``gross``, ``fees``, ``net`` (= gross - fees), ``turnover`` (sum of fill notionals) and
    ``fills``; the same definitions as ``PaperTrader.summary``.
    """
    symbol = np.asarray(symbol).astype(str)
    q = np.asarray(signed_qty, dtype=np.float64)
    p = np.asarray(price, dtype=np.float64)
    gross = float(-(q * p).sum())
    for sym in np.unique(symbol):
        rows = symbol == sym
        pos = float(q[rows].sum())
        if abs(pos) > 1e-12:
            gross += pos * float(last_mid.get(str(sym), p[rows][-1]))
    fees = float(np.asarray(fee, dtype=np.float64).sum())
    return {"gross": gross, "fees": fees, "net": gross - fees, "turnover": float(np.abs(q * p).sum()), "fills": float(q.size)}
