"""Sequences, the purged chronological split and train-only normalisation.

A sequence is identified by the row index of its last sample (``end``); its rows
are ``end - L + 1 .. end`` of the one contiguous feature matrix, so no window is
ever materialised: batches gather rows on the fly (see ``gather_windows``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from backend.ml_engine.training_orchestrator.config import DataConfig
from backend.ml_engine.training_orchestrator.data import LoadedData
from backend.ml_engine.training_orchestrator.errors import TrainingDataError
from backend.ml_engine.training_orchestrator.evaluation.folds import default_test_fraction, rows_read_mask, walk_forward


@dataclass
class Segments:
    """Gap-free runs of one symbol: per row (n,) its segment id and position inside it; the
    median sampling interval (ms) per symbol; the number of segments."""

    segment_id: np.ndarray  # (n,) int64: rows with the same id are one symbol, no gap between them
    position: np.ndarray  # (n,) int64: index of the row inside its segment
    interval_ms: dict[str, int]  # median sampling interval per symbol
    count: int


def sampling_intervals(data: LoadedData) -> dict[str, int]:
    """Median spacing of consecutive samples per symbol (the collector's interval x collection-interval)."""
    out: dict[str, int] = {}
    ts, codes = data.timestamps_ms, data.symbol_codes
    bounds = np.flatnonzero(np.diff(codes)) + 1
    for code, (lo, hi) in enumerate(zip(np.r_[0, bounds], np.r_[bounds, ts.shape[0]])):
        diffs = np.diff(ts[lo:hi])
        sym = data.symbols[int(codes[lo])] if hi > lo else data.symbols[code]
        out[sym] = int(np.median(diffs)) if diffs.size else 0
    return out


def find_segments(data: LoadedData, gap_factor: float) -> Segments:
    """Split rows into runs that never cross a symbol boundary or a gap > gap_factor x the symbol's interval."""
    ts, codes = data.timestamps_ms, data.symbol_codes
    intervals = sampling_intervals(data)
    per_code = np.array([intervals.get(s, 0) for s in data.symbols], dtype=np.int64)
    n = ts.shape[0]
    new = np.ones(n, dtype=bool)
    if n > 1:
        limit = gap_factor * np.maximum(per_code[codes[1:]], 1)
        new[1:] = (codes[1:] != codes[:-1]) | ((ts[1:] - ts[:-1]) > limit)
    seg = np.cumsum(new) - 1
    starts = np.flatnonzero(new)
    position = np.arange(n) - starts[seg]
    return Segments(seg, position, intervals, int(starts.shape[0]))


@dataclass
class Split:
    """A time split of sequences, each named by its end row: train / val / test end rows,
    the boundary times (ms), the purge gap (one sequence span plus the horizon, ms) and
    the rows any training sequence reads (normalisation is fitted on these only)."""

    train: np.ndarray  # end-row indices of sequences, chronological within each symbol
    val: np.ndarray
    test: np.ndarray
    train_end_ms: int  # last end timestamp of a training sequence
    val_start_ms: int  # first end timestamp allowed in validation
    val_end_ms: int
    test_start_ms: int
    purge_ms: int
    span_ms: int
    train_rows_mask: np.ndarray  # rows that any training sequence reads: normalisation is fitted on these

    def sizes(self) -> dict[str, int]:
        """Sequences per split."""
        return {"train": int(self.train.size), "val": int(self.val.size), "test": int(self.test.size)}


def sequence_ends(data: LoadedData, segments: Segments, sequence_length: int) -> np.ndarray:
    """Rows that end a full window inside one segment and carry a label."""
    ok = (segments.position >= sequence_length - 1) & data.labelled
    return np.flatnonzero(ok)


def purged_split(data: LoadedData, cfg: DataConfig, segments: Segments | None = None) -> Split:
    """Chronological train/val/test split on sequence end times with a purge gap between splits.

    The purge is one sequence span plus the horizon: no validation window shares a row
    with a training window, and no training label looks at prices a validation window sees.
    """
    segments = segments or find_segments(data, cfg.gap_factor)
    L = cfg.sequence_length
    ends = sequence_ends(data, segments, L)
    interval = max(segments.interval_ms.values()) if segments.interval_ms else 0
    span_ms = L * interval
    purge_ms = span_ms + cfg.horizon_s * 1000
    labelled = int(data.labelled.sum())
    if ends.size == 0:
        raise _insufficient(labelled, 0, cfg, segments.count, purge_ms, interval, {})
    t_end = data.timestamps_ms[ends]
    # Boundaries are times, not row counts, so every symbol is cut at the same instant.
    lo, hi = int(t_end.min()), int(t_end.max())
    usable = hi - lo - 2 * purge_ms
    train_end = lo + int(usable * (1 - cfg.val_fraction - cfg.test_fraction))
    val_start = train_end + purge_ms + 1
    val_end = val_start + int(usable * cfg.val_fraction)
    test_start = val_end + purge_ms + 1
    train = ends[t_end <= train_end]
    val = ends[(t_end >= val_start) & (t_end <= val_end)]
    test = ends[t_end >= test_start]
    sizes = {"train": train.size, "val": val.size, "test": test.size}
    if usable <= 0 or min(sizes.values()) < cfg.min_split_sequences:
        raise _insufficient(labelled, ends.size, cfg, segments.count, purge_ms, interval, sizes)

    # Mark every row read by a training window: +1 at the window start, -1 after its end.
    diff = np.zeros(data.n + 1, dtype=np.int32)
    np.add.at(diff, train - (L - 1), 1)
    np.add.at(diff, train + 1, -1)
    rows_mask = np.cumsum(diff[:-1]) > 0
    return Split(train, val, test, train_end, val_start, val_end, test_start, purge_ms, span_ms, rows_mask)


def walk_forward_splits(data: LoadedData, cfg: DataConfig, segments: Segments | None = None) -> list[Split]:
    """``cfg.folds`` purged splits in time order, one per walk-forward fold (``evaluation.folds``).

    K=1 is ``purged_split`` itself. K>1 first runs ``purged_split`` (the guide's "Insufficient
    data" check and the purge gap), then cuts K consecutive test windows covering
    ``default_test_fraction(K, cfg.test_fraction)`` of the time line, each with its own
    validation window and purges, trained on everything before it or on the last
    ``cfg.window_s`` seconds. Each split's ``train_rows_mask`` marks the rows its training
    sequences read, so each fold's normaliser sees its own training rows only.

    Raises:
        TrainingDataError: too little data overall, or a fold whose train, val or test set
            holds fewer than ``cfg.min_split_sequences`` sequences (the message names the fold).
    """
    segments = segments or find_segments(data, cfg.gap_factor)
    first = purged_split(data, cfg, segments)
    if cfg.folds == 1:
        return [first]
    L = cfg.sequence_length
    ends = sequence_ends(data, segments, L)
    folds = walk_forward(
        data.timestamps_ms[ends],
        folds=cfg.folds,
        purge_ms=first.purge_ms,
        val_fraction=cfg.val_fraction,
        test_fraction=default_test_fraction(cfg.folds, per_fold=cfg.test_fraction),
        window_ms=None if cfg.window_s is None else int(cfg.window_s * 1000),
        min_sequences=cfg.min_split_sequences,
    )
    return [
        Split(
            ends[f.train], ends[f.val], ends[f.test], f.train_end_ms, f.val_start_ms, f.val_end_ms, f.test_start_ms,
            first.purge_ms, first.span_ms, rows_read_mask(ends[f.train], L, data.n),
        )
        for f in folds
    ]


def _insufficient(labelled: int, usable: int, cfg: DataConfig, n_segments: int, purge_ms: int, interval_ms: int, sizes) -> TrainingDataError:
    purge_rows = math.ceil(purge_ms / interval_ms) if interval_ms else 0
    lost = n_segments * (cfg.sequence_length - 1) + 2 * purge_rows
    smallest = min(cfg.val_fraction, cfg.test_fraction, 1 - cfg.val_fraction - cfg.test_fraction)
    need = max(cfg.min_samples, lost + math.ceil(cfg.min_split_sequences / smallest))
    per_split = ", ".join(f"{k}={v}" for k, v in sizes.items()) if sizes else "none"
    return TrainingDataError(
        f"Insufficient data: {labelled} samples, need at least {need} for sequence_length={cfg.sequence_length}: "
        f"after the window warm-up of {cfg.sequence_length - 1} samples in each of {n_segments} gap-free segments "
        f"and two purge gaps of {purge_ms / 1000:.0f} s, {usable} sequences remain ({per_split}; each split needs "
        f">= {cfg.min_split_sequences}).\n"
        "Let the bot collect longer or lower --sequence-length."
    )


@dataclass
class Normalizer:
    """Per-feature z-score: mean and std (F,) float32 from the training rows, then clip to ±clip."""

    mean: np.ndarray  # (F,) float32
    std: np.ndarray  # (F,) float32
    clip: float
    fitted_rows: int

    def to_dict(self, feature_names) -> dict:
        """JSON-ready form logged as ``normalization.json``."""
        return {
            "method": "z-score fitted on the rows read by training sequences, then clipped",
            "clip": self.clip,
            "fitted_rows": self.fitted_rows,
            "features": list(feature_names),
            "mean": self.mean.astype(float).tolist(),
            "std": self.std.astype(float).tolist(),
        }


def fit_normalizer(features: np.ndarray, rows_mask: np.ndarray, clip: float) -> Normalizer:
    """Mean and std (float64 accumulation) of ``features`` (n, F) over ``rows_mask`` (n,) bool;
    a constant feature gets std 1 (centred, not scaled)."""
    rows = features[rows_mask]
    mean = rows.mean(axis=0, dtype=np.float64)
    std = rows.std(axis=0, dtype=np.float64)
    # A constant feature would divide by zero; leave it centred and unscaled.
    std = np.where(std > 1e-12, std, 1.0)
    return Normalizer(mean.astype(np.float32), std.astype(np.float32), float(clip), int(rows.shape[0]))


def apply_normalizer_inplace(features: np.ndarray, norm: Normalizer, chunk: int = 65536) -> None:
    """Normalise in place, in chunks, so memory stays at one feature matrix."""
    for lo in range(0, features.shape[0], chunk):
        block = features[lo : lo + chunk]
        block -= norm.mean
        block /= norm.std
        np.clip(block, -norm.clip, norm.clip, out=block)


def gather_windows(features, ends, sequence_length: int):
    """(B, L, F) windows for ``ends`` from a (n, F) numpy array or torch tensor; copies only the batch."""
    offsets = np.arange(-(sequence_length - 1), 1)
    if isinstance(features, np.ndarray):
        return features[np.asarray(ends)[:, None] + offsets]
    import torch

    idx = ends[:, None] + torch.as_tensor(offsets, device=ends.device)
    return features[idx]
