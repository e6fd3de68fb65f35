"""What a labelling run did: per-symbol counts, class balance, files rewritten and failed.

Counting only; ``backend.apps.label`` prints it in the guide's layout.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from backend.contracts.labels import CLASS_NAMES
from backend.ml_engine.labelling.labels import LabelConfig
from backend.ml_engine.labelling.merge import ColumnLabels

#: a class below this share of a horizon's labels earns a warning (with >= ``RARE_CLASS_MIN_LABELS`` labels)
RARE_CLASS_SHARE = 0.05
RARE_CLASS_MIN_LABELS = 100


@dataclass
class SymbolCounts:
    """Samples of one symbol seen, and how many have every requested horizon labelled."""

    total: int = 0
    labelled: int = 0


@dataclass(frozen=True)
class LabelEvent:
    """Something a run reports as it happens: ``kind`` "failed" (``name`` is the file not
    labelled, ``text`` the reason) or "note" (``text`` only)."""

    kind: str
    text: str
    name: str = ""


@dataclass
class RunSummary:
    """Totals of one labelling run (all fields are counts unless noted).

    ``balance``: per horizon, int64 [DOWN, NEUTRAL, UP, unlabelled]; ``abs_moves``: per
    horizon, float32 arrays of |movement| in percent of the labelled rows.
    """

    config: LabelConfig
    symbols: dict[str, SymbolCounts] = field(default_factory=dict)
    balance: dict[int, np.ndarray] = field(default_factory=dict)
    abs_moves: dict[int, list[np.ndarray]] = field(default_factory=dict)
    files_total: int = 0
    files_changed: int = 0
    files_failed: list[str] = field(default_factory=list)
    kept_existing: int = 0

    def add(self, symbols: np.ndarray, columns: dict[int, ColumnLabels]) -> None:
        """Count final labels of some rows (``symbols``: (n,) one name per row)."""
        if symbols.size == 0:
            return
        all_valid = np.logical_and.reduce([columns[h].direction_valid for h in self.config.horizons_s])
        names, inverse = np.unique(symbols, return_inverse=True)
        totals = np.bincount(inverse, minlength=names.size)
        labelled = np.bincount(inverse, weights=all_valid, minlength=names.size)
        for name, t, lab in zip(names.tolist(), totals, labelled):
            sc = self.symbols.setdefault(str(name), SymbolCounts())
            sc.total += int(t)
            sc.labelled += int(lab)
        for h in self.config.horizons_s:
            col = columns[h]
            counts = np.bincount(col.direction[col.direction_valid].astype(np.int64), minlength=3)[:3]
            row = np.append(counts, int((~col.direction_valid).sum()))
            self.balance[h] = self.balance.get(h, np.zeros(4, np.int64)) + row
            moves = col.movement[col.direction_valid & ~np.isnan(col.movement)]
            self.abs_moves.setdefault(h, []).append(np.abs(moves).astype(np.float32))

    @property
    def total(self) -> int:
        """Samples seen."""
        return sum(s.total for s in self.symbols.values())

    @property
    def labelled(self) -> int:
        """Samples with every requested horizon labelled."""
        return sum(s.labelled for s in self.symbols.values())

    def median_abs_move(self, h: int) -> float | None:
        """Median |movement| (percent) of the labelled rows at horizon ``h``; None without labels."""
        moves = np.concatenate(self.abs_moves.get(h, [np.empty(0, np.float32)]))
        return float(np.median(moves)) if moves.size else None

    def rare_classes(self, h: int) -> list[tuple[str, int, int]]:
        """(class name, count, labelled total) of each class under ``RARE_CLASS_SHARE`` at ``h``."""
        down, neutral, up, _null = (int(x) for x in self.balance.get(h, np.zeros(4)))
        n = down + neutral + up
        if n < RARE_CLASS_MIN_LABELS:
            return []
        return [(name, k, n) for name, k in zip(CLASS_NAMES, (down, neutral, up)) if k < RARE_CLASS_SHARE * n]
