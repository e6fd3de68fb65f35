"""Moving-block bootstrap intervals for accuracy and macro-F1, and for paired differences.

Why blocks: consecutive test sequences of one symbol share rows of their input windows
(for ``sequence_length`` samples) and their labels share future prices (for the
horizon), so their errors are correlated. Resampling single samples would treat them
as independent and give intervals that are too narrow. The moving-block bootstrap
(Kunsch 1989, "The jackknife and the bootstrap for general stationary observations",
Ann. Statist. 17(3)) resamples runs of ``block`` consecutive samples instead; when the
block is longer than the dependence, each run carries its dependence with it.

Ordering, with several symbols: the test samples are put in time order (ties broken
by symbol) and blocks are runs of that one time-ordered sequence, i.e. stretches of
time holding every symbol's samples. Symbols traded at the same instant move together
(BTC and ETH), so resampling each symbol's stream on its own would break that
cross-symbol correlation and understate the variance. The block length is therefore
counted in samples of the merged sequence: ``block_length`` returns how many samples
the busiest stretch of ``factor x (sequence span + horizon)`` holds, which is
``factor x (span + horizon) / interval`` samples per symbol times the number of symbols.

Each resample concatenates ``ceil(n / block)`` blocks whose starts are uniform on
``0 .. n - 1``, a block that runs past the end wrapping to the start (the circular
variant, Politis & Romano 1992, "A circular block-resampling procedure for stationary
data", so both ends of the test set are drawn as often as its middle), and keeps the
first n samples. Its confusion matrix is the sum of
its blocks' confusion matrices, and each block's is a difference of prefix sums of
one-hot cell codes, so a resample costs O(n / block), not O(n). The interval is the
percentile interval (Efron 1979) of the resampled metric at ``(1 - level) / 2`` and
``(1 + level) / 2``. A paired difference (model - baseline) uses the same resampled
blocks for both, so what they share (hard stretches of the market) cancels; its
interval may have its own level (``diff_level``): the verdicts read these intervals,
one per baseline, and ``assess`` widens them to a family-wise level (Bonferroni).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

from backend.ml_engine.training_orchestrator.evaluation.metrics import METRICS, N_CLASSES, confusion, confusion_codes

DEFAULT_RESAMPLES = 1000
DEFAULT_LEVEL = 0.95
# Blocks of exactly the dependence length undercount the variance (lags near the block's
# length are only partly inside a block): bench/eval_bench.py measured 86 % coverage of
# nominal 95 % intervals at factor 1 and 89-94 % at factor 2 (more with more blocks);
# longer blocks gained little, since they leave fewer blocks to estimate the spread from.
DEFAULT_BLOCK_FACTOR = 2.0
# Gathered block counts per chunk of resamples: bounds memory at ~ this x 8 bytes x k^2.
_CHUNK_ELEMENTS = 2_000_000


def time_order(end_ms: np.ndarray, symbol_codes: np.ndarray | None = None) -> np.ndarray:
    """(n,) int64 permutation that sorts samples by time, then symbol (stable)."""
    end_ms = np.asarray(end_ms)
    if symbol_codes is None:
        return np.argsort(end_ms, kind="stable")
    return np.lexsort((np.asarray(symbol_codes), end_ms))


def block_length(end_ms: np.ndarray, dependence_ms: int, factor: float = DEFAULT_BLOCK_FACTOR) -> int:
    """Samples in the busiest stretch of ``factor * dependence_ms`` of the time-ordered test set (>= 1).

    Args:
        end_ms: (n,) end times of the test sequences, all symbols together, any order.
        dependence_ms: how far apart two sequences can still share data: one sequence
            span plus the horizon (the purge gap, ``Split.purge_ms``).
        factor: multiple of the dependence a block covers (>= 1).

    Raises:
        ValueError: for factor < 1 or a negative dependence.
    """
    if factor < 1:
        raise ValueError(f"factor must be >= 1, got {factor}")
    if dependence_ms < 0:
        raise ValueError(f"dependence_ms must be >= 0, got {dependence_ms}")
    t = np.sort(np.asarray(end_ms, dtype=np.int64))
    if t.size == 0:
        return 1
    span = int(math.ceil(factor * dependence_ms))
    counts = np.searchsorted(t, t + span, side="left") - np.arange(t.size)
    return max(1, int(counts.max()))


def block_starts(n: int, block: int, resamples: int, rng: np.random.Generator, circular: bool = True) -> np.ndarray:
    """(resamples, ceil(n / block)) int64 block starts.

    circular: starts uniform on ``0 .. n - 1``, a block running past the end wrapping to the
    start (Politis & Romano 1992), so every sample is drawn equally often; otherwise uniform
    on ``0 .. n - block`` (Kunsch 1989), which under-draws both ends of the test set.
    """
    if n < 1 or block < 1 or resamples < 1:
        raise ValueError(f"n, block and resamples must be >= 1, got {n}, {block}, {resamples}")
    block = min(block, n)
    high = n if circular else n - block + 1
    return rng.integers(0, high, size=(resamples, -(-n // block)), dtype=np.int64)


def resampled_confusions(codes: np.ndarray, starts: np.ndarray, block: int, k: int = N_CLASSES) -> np.ndarray:
    """(B, k, k) confusion matrix of each resample.

    Args:
        codes: (n,) cell codes ``true * k + pred`` of the time-ordered samples (``confusion_codes``).
        starts: (B, m) block starts in ``0 .. n - 1`` from ``block_starts`` (a block that runs
            past the end wraps to the start); every block has ``block`` samples but
            the last of each resample, which is cut so the resample has exactly n.
        block: the block length in samples.
    """
    n = codes.shape[0]
    block = min(block, n)
    # Prefix sums over the samples followed by the first block again, so wrapped blocks are one slice.
    wrapped = np.concatenate([codes, codes[:block]])
    cum = np.zeros((n + block + 1, k * k), dtype=np.int64)
    np.cumsum(np.eye(k * k, dtype=np.int64)[wrapped], axis=0, out=cum[1:])
    lengths = np.full(starts.shape[1], block, dtype=np.int64)
    lengths[-1] = n - block * (starts.shape[1] - 1)
    out = np.empty((starts.shape[0], k * k), dtype=np.int64)
    step = max(1, _CHUNK_ELEMENTS // (starts.shape[1] * k * k))
    for lo in range(0, starts.shape[0], step):
        s = starts[lo : lo + step]
        out[lo : lo + step] = (cum[s + lengths] - cum[s]).sum(axis=1)
    return out.reshape(-1, k, k)


@dataclass(frozen=True)
class Interval:
    """A point estimate on the whole test set and its bootstrap percentile interval."""

    estimate: float
    low: float
    high: float

    def contains(self, value: float) -> bool:
        """True when ``value`` lies in [low, high]."""
        return self.low <= value <= self.high


@dataclass
class Comparison:
    """Bootstrap results of one test set: each classifier's metrics and the model's paired differences."""

    n: int  # test samples
    block: int  # block length in samples of the time-ordered set
    resamples: int
    level: float  # two-sided coverage of every score interval
    model: str
    scores: dict[str, dict[str, Interval]] = field(default_factory=dict)  # classifier -> metric -> interval
    diffs: dict[str, dict[str, Interval]] = field(default_factory=dict)  # baseline -> metric -> model - baseline
    diff_level: float | None = None  # coverage of each ``diffs`` interval; None: the same as ``level``

    @property
    def difference_level(self) -> float:
        """Two-sided coverage of each paired-difference interval."""
        return self.level if self.diff_level is None else self.diff_level

    @property
    def n_blocks(self) -> float:
        """How many independent stretches the test set holds (n / block); few means a rough interval."""
        return self.n / max(self.block, 1)


def compare(
    y_true: np.ndarray,
    predictions: Mapping[str, np.ndarray],
    *,
    block: int,
    model: str = "model",
    resamples: int = DEFAULT_RESAMPLES,
    level: float = DEFAULT_LEVEL,
    diff_level: float | None = None,
    seed: int = 0,
    metrics: tuple[str, ...] = ("accuracy", "macro_f1"),
) -> Comparison:
    """Moving-block bootstrap of every classifier's metrics and of model - baseline, on shared resamples.

    Args:
        y_true: (n,) true classes 0..2, samples in time order (see ``time_order``).
        predictions: name -> (n,) predicted classes in the same order; must include ``model``;
            every other entry is a baseline.
        block: block length in samples (``block_length``).
        resamples: B bootstrap resamples; the same B index sets serve every classifier.
        level: two-sided coverage of the percentile intervals of the scores.
        diff_level: two-sided coverage of the paired-difference intervals; None uses ``level``.
        seed: seeds the block starts; the same seed and inputs give the same intervals.
        metrics: names in ``metrics.METRICS``.

    Raises:
        ValueError: empty test set, ``model`` missing, shapes or classes wrong, level not in (0, 1).
    """
    if model not in predictions:
        raise ValueError(f"predictions must include {model!r}, got {sorted(predictions)}")
    for name, lv in (("level", level), ("diff_level", level if diff_level is None else diff_level)):
        if not 0 < lv < 1:
            raise ValueError(f"{name} must be in (0, 1), got {lv}")
    y_true = np.asarray(y_true)
    n = int(y_true.shape[0])
    if n == 0:
        raise ValueError("cannot bootstrap an empty test set")
    starts = block_starts(n, block, resamples, np.random.default_rng(seed))
    d_level = level if diff_level is None else diff_level
    point: dict[str, dict[str, float]] = {}
    dist: dict[str, dict[str, np.ndarray]] = {}
    for name, pred in predictions.items():
        codes = confusion_codes(y_true, pred)
        cms = resampled_confusions(codes, starts, block)
        full = confusion(y_true, pred)
        point[name] = {m: float(METRICS[m](full)) for m in metrics}
        dist[name] = {m: METRICS[m](cms) for m in metrics}

    def interval(estimate: float, values: np.ndarray, lv: float) -> Interval:
        low, high = np.quantile(values, [(1 - lv) / 2, (1 + lv) / 2])
        return Interval(estimate, float(low), float(high))

    out = Comparison(n, min(block, n), resamples, level, model, diff_level=diff_level)
    for name in predictions:
        out.scores[name] = {m: interval(point[name][m], dist[name][m], level) for m in metrics}
    for name in predictions:
        if name != model:
            out.diffs[name] = {
                m: interval(point[model][m] - point[name][m], dist[model][m] - dist[name][m], d_level) for m in metrics
            }
    return out
