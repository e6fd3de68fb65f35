"""Walk-forward folds: K consecutive test windows in time, each with its own purged train/val split.

All boundaries are instants (ms), not row counts, so every symbol is cut at the same
moment. Within one fold the time line reads

    [train ........ train_end] purge [val_start .. val_end] purge [test_start .. test_end]

where ``purge`` is one sequence span plus the label horizon: no validation or test
window shares a row with a training window, and no training label looks at a price
that a later window reads. Fold k+1's test window starts the instant after fold k's
ends, so the test windows tile the tail of the data. Training is "expanding" (every
sequence up to ``train_end``) or "rolling" (only the last ``window_ms`` of them).

With ``folds=1`` the boundaries are exactly those of ``sequences.purged_split``
(same arithmetic, same rounding), so K=1 is today's chronological split.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from backend.ml_engine.training_orchestrator.errors import TrainingDataError


@dataclass(frozen=True)
class Fold:
    """One walk-forward fold. Index arrays are positions into the ``end_ms`` given to ``walk_forward``, ascending."""

    index: int  # 0-based, in time order
    train: np.ndarray  # (n_train,) int64
    val: np.ndarray  # (n_val,) int64
    test: np.ndarray  # (n_test,) int64
    train_start_ms: int  # first end time allowed in training (the data's start when expanding)
    train_end_ms: int  # last end time allowed in training
    val_start_ms: int
    val_end_ms: int
    test_start_ms: int
    test_end_ms: int  # inclusive

    def sizes(self) -> dict[str, int]:
        """Number of sequences in the train, validation and test parts."""
        return {"train": int(self.train.size), "val": int(self.val.size), "test": int(self.test.size)}


def default_test_fraction(folds: int, per_fold: float = 0.15, cap: float = 0.5) -> float:
    """Share of the usable time line covered by all test windows together: ``per_fold`` x K, at most ``cap``.

    K=1 gives 0.15 (today's split); K=5 gives 0.5, i.e. five windows of 10 % each, the first
    fold training on the earliest ~35 % and the last on ~75 %.
    """
    if folds < 1:
        raise ValueError(f"folds must be >= 1, got {folds}")
    return per_fold if folds == 1 else min(per_fold * folds, cap)


def walk_forward(
    end_ms: np.ndarray,
    *,
    folds: int = 1,
    purge_ms: int,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    window_ms: int | None = None,
    min_sequences: int = 1,
) -> list[Fold]:
    """Cut sequence end times into ``folds`` walk-forward folds.

    Args:
        end_ms: (n,) int64 end timestamps of the candidate sequences (any order; several
            symbols may share a timestamp).
        folds: K >= 1 consecutive test windows.
        purge_ms: gap between train and val and between val and test; pass one sequence
            span plus the horizon (``Split.purge_ms``).
        val_fraction: length of each fold's validation window, as a share of the usable
            time (the data's span less two purges), as in ``purged_split``.
        test_fraction: share of the usable time covered by all K test windows together
            (see ``default_test_fraction``); each window gets 1/K of it.
        window_ms: rolling training window: train on end times in
            ``[train_end - window_ms, train_end]``; None trains on everything before (expanding).
        min_sequences: every train, val and test set must hold at least this many sequences.

    Returns:
        K folds in time order.

    Raises:
        ValueError: on arguments out of range.
        TrainingDataError: when the data is too short for the purges, or a fold's
            train, val or test set has fewer than ``min_sequences`` sequences (the message names the fold).
    """
    if folds < 1:
        raise ValueError(f"folds must be >= 1, got {folds}")
    if purge_ms < 0:
        raise ValueError(f"purge_ms must be >= 0, got {purge_ms}")
    if not (0 < val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 0.9):
        raise ValueError("val_fraction and test_fraction must be in (0, 1) and leave >= 10% for training")
    if window_ms is not None and window_ms <= 0:
        raise ValueError(f"window_ms must be > 0, got {window_ms}")
    t = np.asarray(end_ms, dtype=np.int64)
    if t.size == 0:
        raise TrainingDataError("Insufficient data: no sequences to split into folds.")
    lo, hi = int(t.min()), int(t.max())
    usable = hi - lo - 2 * purge_ms
    if usable <= 0:
        raise TrainingDataError(
            f"Insufficient data: the data spans {(hi - lo) / 1000:.0f} s, less than the two purge gaps of {purge_ms / 1000:.0f} s."
        )
    # The first fold's boundaries are purged_split's, to the millisecond.
    first_train_end = lo + int(usable * (1 - val_fraction - test_fraction))
    val_len = int(usable * val_fraction)
    first_test_start = first_train_end + purge_ms + 1 + val_len + purge_ms + 1
    test_total = hi - first_test_start + 1
    starts = [first_test_start + (k * test_total) // folds for k in range(folds)] + [hi + 1]

    out: list[Fold] = []
    for k in range(folds):
        test_start, test_end = starts[k], starts[k + 1] - 1
        val_end = test_start - purge_ms - 1
        val_start = val_end - val_len
        train_end = val_start - purge_ms - 1
        train_start = lo if window_ms is None else max(lo, train_end - window_ms)
        fold = Fold(
            k,
            np.flatnonzero((t >= train_start) & (t <= train_end)),
            np.flatnonzero((t >= val_start) & (t <= val_end)),
            np.flatnonzero((t >= test_start) & (t <= test_end)),
            train_start,
            train_end,
            val_start,
            val_end,
            test_start,
            test_end,
        )
        short = {name: n for name, n in fold.sizes().items() if n < min_sequences}
        if short:
            sizes = ", ".join(f"{name}={n}" for name, n in fold.sizes().items())
            raise TrainingDataError(
                f"Insufficient data for {folds} walk-forward folds: fold {k + 1} has {sizes} sequences "
                f"(each needs >= {min_sequences}). Collect longer, use fewer --folds or a shorter --sequence-length."
            )
        out.append(fold)
    return out


def rows_read_mask(ends: np.ndarray, sequence_length: int, n_rows: int) -> np.ndarray:
    """(n_rows,) bool: rows read by any window ending at ``ends`` (rows ``end - L + 1 .. end``).

    Used to fit each fold's normaliser on its training rows only. Difference-array trick:
    +1 at each window's first row, -1 after its last, cumulative sum > 0.
    """
    ends = np.asarray(ends, dtype=np.int64)
    diff = np.zeros(n_rows + 1, dtype=np.int32)
    np.add.at(diff, ends - (sequence_length - 1), 1)
    np.add.at(diff, ends + 1, -1)
    return np.cumsum(diff[:-1]) > 0
