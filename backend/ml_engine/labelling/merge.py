"""Combine freshly computed labels with the labels a file already holds, and their provenance.

A label that cannot be computed now (its price rows were deleted, or it was
carried over from a legacy batch whose price data is gone) is kept rather than
erased: labelling never loses information. Everything computable is replaced, so
a new threshold re-labels the whole range and an unchanged one rewrites nothing.
Because kept labels may come from other settings, the provenance of a horizon is
the current setting plus, where labels were kept, the settings the file recorded
before (``None``, i.e. unknown, when it recorded none).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from backend.contracts.labels import LabelSetting, Provenance
from backend.ml_engine.labelling.labels import HorizonLabels


@dataclass
class ColumnLabels:
    """The label columns of one horizon as stored: ``direction`` (n,) int8, meaningful where
    ``direction_valid`` (n,) bool; ``movement`` (n,) float64 percent, NaN for null."""

    direction: np.ndarray
    direction_valid: np.ndarray
    movement: np.ndarray


@dataclass
class Merged:
    """Result of ``merge``: the columns to store, whether any value differs from the file's,
    how many existing labels were kept (in all and per horizon), and changed rows per horizon."""

    columns: dict[int, ColumnLabels]
    changed: bool
    kept: int = 0
    per_horizon_changed: dict[int, int] = field(default_factory=dict)
    per_horizon_kept: dict[int, int] = field(default_factory=dict)


def merge(computed: dict[int, HorizonLabels], existing: dict[int, ColumnLabels]) -> Merged:
    """New labels where computable, existing ones elsewhere; ``existing`` must hold every horizon of ``computed``."""
    out: dict[int, ColumnLabels] = {}
    changed = False
    per_h: dict[int, int] = {}
    kept_h: dict[int, int] = {}
    for h, new in computed.items():
        old = existing[h]
        valid = new.valid | old.direction_valid
        direction = np.where(new.valid, new.direction, old.direction).astype(np.int8)
        movement = np.where(new.valid, new.movement, old.movement)
        kept_h[h] = int((~new.valid & old.direction_valid).sum())
        dir_diff = (valid != old.direction_valid) | (valid & (direction != old.direction))
        old_null, new_null = np.isnan(old.movement), np.isnan(movement)
        mov_diff = (old_null != new_null) | (~new_null & ~old_null & (movement != old.movement))
        n_diff = int((dir_diff | mov_diff).sum())
        per_h[h] = n_diff
        changed |= n_diff > 0
        out[h] = ColumnLabels(direction, valid, movement)
    return Merged(out, changed, sum(kept_h.values()), per_h, kept_h)


def updated_provenance(existing: Provenance, merged: Merged, setting: LabelSetting) -> Provenance:
    """The provenance to store with ``merged``'s columns.

    Per horizon labelled now: ``{setting}`` when any label is present, plus the
    file's earlier settings (``{None}`` if it recorded none) when labels were kept;
    no entry when the column is all null. Horizons not labelled now keep their entry.
    """
    out = dict(existing)
    for h, col in merged.columns.items():
        if not col.direction_valid.any():
            out.pop(h, None)
            continue
        settings = {setting}
        if merged.per_horizon_kept.get(h, 0):
            settings |= set(existing.get(h) or {None})
        if merged.per_horizon_kept.get(h, 0) == int(col.direction_valid.sum()):
            settings.discard(setting)  # every present label was kept: none was made now
        out[h] = frozenset(settings)
    return out
