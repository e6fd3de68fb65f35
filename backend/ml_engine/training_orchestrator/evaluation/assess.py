"""From each fold's test predictions to the whole assessment: intervals, verdicts, calibration.

Data flow:

    per fold: labels, predictions of the model and every baseline, model probabilities,
              end times and symbols of the test sequences
      -> time order within the fold; the folds' test windows follow each other in time,
         so their concatenation is the pooled test set, also in time order
      -> one block length from the pooled end times (``bootstrap.block_length``)
      -> bootstrap per fold and pooled (``bootstrap.compare``): scores at ``level`` (95 %),
         paired differences at the family-wise level over the m baselines (Bonferroni,
         ``verdict.bonferroni_level``: 98.33 % for three) -> verdicts on the pooled one
      -> confusion matrices, per-class precision/recall, Brier score and reliability on the pooled set.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

from backend.ml_engine.training_orchestrator.evaluation import bootstrap, calibration, metrics
from backend.ml_engine.training_orchestrator.evaluation.verdict import (
    DEFAULT_METRIC,
    MIN_BLOCKS,
    Verdict,
    bonferroni_level,
    persistence_warning,
    verdicts,
)


@dataclass
class FoldOutcome:
    """One fold's test set as the orchestrator has it; samples in any order, all arrays of length n."""

    y_true: np.ndarray  # (n,) classes 0..2
    predictions: Mapping[str, np.ndarray]  # name -> (n,) classes; the model's key and every baseline's
    end_ms: np.ndarray  # (n,) int64 end time of each test sequence
    symbol_codes: np.ndarray  # (n,) int symbol of each test sequence
    probs: np.ndarray | None = None  # (n, 3) model class probabilities (softmax of the logits)

    def ordered(self) -> "FoldOutcome":
        """This fold's test samples sorted by (time, symbol), the order the block bootstrap cuts blocks in."""
        o = bootstrap.time_order(self.end_ms, self.symbol_codes)
        probs = None if self.probs is None else np.asarray(self.probs)[o]
        preds = {k: np.asarray(v)[o] for k, v in self.predictions.items()}
        return FoldOutcome(np.asarray(self.y_true)[o], preds, np.asarray(self.end_ms)[o], np.asarray(self.symbol_codes)[o], probs)


@dataclass
class FoldAssessment:
    """One fold's test window: its time span, sample count, bootstrap comparison and verdicts."""
    index: int  # 0-based
    start_ms: int  # first and last test end time
    end_ms: int
    comparison: bootstrap.Comparison
    verdicts: dict[str, Verdict]


@dataclass
class Assessment:
    """The whole evaluation: per-fold and pooled comparisons, verdicts per baseline, the persistence warning, confusion matrices, Brier score and reliability."""
    model: str
    metric: str  # the verdict's metric
    dependence_ms: int
    folds: list[FoldAssessment]
    overall: bootstrap.Comparison
    verdicts: dict[str, Verdict]
    confusion: dict[str, np.ndarray]  # name -> (3, 3) pooled, rows = true
    warning: str | None
    brier: float | None = None
    reliability: calibration.Reliability | None = None
    facts: dict = field(default_factory=dict)

    def precision_recall(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(3,) precision and (3,) recall of ``name`` on the pooled test set."""
        p, r, _ = metrics.per_class(self.confusion[name])
        return p, r


def assess(
    folds: list[FoldOutcome],
    *,
    dependence_ms: int,
    model: str = "model",
    resamples: int = bootstrap.DEFAULT_RESAMPLES,
    level: float = bootstrap.DEFAULT_LEVEL,
    diff_level: float | None = None,
    seed: int = 0,
    block_factor: float = bootstrap.DEFAULT_BLOCK_FACTOR,
    metric: str = DEFAULT_METRIC,
    min_blocks: float = MIN_BLOCKS,
    reliability_bins: int = 10,
) -> Assessment:
    """Bootstrap every fold and the pooled test set, judge the model against each baseline.

    Args:
        folds: one outcome per walk-forward fold, in time order; every fold must hold the
            same classifier names.
        dependence_ms: one sequence span plus the horizon (``Split.purge_ms``); blocks cover
            ``block_factor`` times this.
        level: two-sided coverage of every score interval (accuracy, macro-F1 of each classifier).
        diff_level: coverage of each paired-difference interval, which the verdicts read; None
            (the default) takes ``bonferroni_level(level, m)`` for m baselines, so that all m
            verdicts hold together with probability >= ``level``.
        seed: the bootstrap seed; the pooled set uses ``seed``, fold k ``seed + 1 + k`` (with one
            fold, the fold is the pooled set).

    Raises:
        ValueError: no folds, an empty fold, or folds with different classifier names.
    """
    if not folds:
        raise ValueError("no folds to assess")
    names = list(folds[0].predictions)
    if any(list(f.predictions) != names for f in folds):
        raise ValueError("every fold must hold the same classifiers, in the same order")
    if diff_level is None:
        diff_level = bonferroni_level(level, max(1, len(names) - 1))
    ordered = [f.ordered() for f in folds]
    pooled_ms = np.concatenate([f.end_ms for f in ordered])
    block = bootstrap.block_length(pooled_ms, dependence_ms, block_factor)
    kw = dict(block=block, model=model, resamples=resamples, level=level, diff_level=diff_level)

    y = np.concatenate([f.y_true for f in ordered])
    preds = {name: np.concatenate([f.predictions[name] for f in ordered]) for name in names}
    overall = bootstrap.compare(y, preds, seed=seed, **kw)

    fold_results = []
    for k, f in enumerate(ordered):
        # One fold is the pooled set: the same resamples, so the report shows one set of intervals.
        comp = overall if len(ordered) == 1 else bootstrap.compare(f.y_true, f.predictions, seed=seed + 1 + k, **kw)
        fold_results.append(FoldAssessment(k, int(f.end_ms[0]), int(f.end_ms[-1]), comp, verdicts(comp, metric, min_blocks)))
    found = verdicts(overall, metric, min_blocks)
    out = Assessment(
        model,
        metric,
        int(dependence_ms),
        fold_results,
        overall,
        found,
        {name: metrics.confusion(y, p) for name, p in preds.items()},
        persistence_warning(found),
        facts={"block_samples": block, "block_factor": block_factor, "blocks": round(overall.n_blocks, 1)},
    )
    if all(f.probs is not None for f in ordered):
        probs = np.concatenate([f.probs for f in ordered])
        out.brier = calibration.brier_score(probs, y)
        out.reliability = calibration.reliability(probs, y, reliability_bins)
    return out
