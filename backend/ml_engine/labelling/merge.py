"""Combine freshly computed labels with the labels a file already holds.

A label that cannot be computed now (its price rows were deleted, or it was
carried over from a legacy batch whose price data is gone) is kept rather than
erased: labelling never loses information. Everything computable is replaced, so
a new threshold re-labels the whole range and an unchanged one rewrites nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from backend.ml_engine.labelling.labels import HorizonLabels


@dataclass
class ColumnLabels:
    direction: np.ndarray  # int8
    direction_valid: np.ndarray  # bool
    movement: np.ndarray  # float64, NaN = null


@dataclass
class Merged:
    columns: dict[int, ColumnLabels]
    changed: bool
    kept: int = 0  # existing labels kept because no price was found now
    per_horizon_changed: dict[int, int] = field(default_factory=dict)


def merge(computed: dict[int, HorizonLabels], existing: dict[int, ColumnLabels]) -> Merged:
    out: dict[int, ColumnLabels] = {}
    changed = False
    kept = 0
    per_h: dict[int, int] = {}
    for h, new in computed.items():
        old = existing[h]
        valid = new.valid | old.direction_valid
        direction = np.where(new.valid, new.direction, old.direction).astype(np.int8)
        movement = np.where(new.valid, new.movement, old.movement)
        kept += int((~new.valid & old.direction_valid).sum())
        dir_diff = (valid != old.direction_valid) | (valid & (direction != old.direction))
        old_null, new_null = np.isnan(old.movement), np.isnan(movement)
        mov_diff = (old_null != new_null) | (~new_null & ~old_null & (movement != old.movement))
        n_diff = int((dir_diff | mov_diff).sum())
        per_h[h] = n_diff
        changed |= n_diff > 0
        out[h] = ColumnLabels(direction, valid, movement)
    return Merged(out, changed, kept, per_h)
