"""Counting and printing what a labelling run did (the guide's console layout)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from backend.ml_engine.labelling import console as c
from backend.ml_engine.labelling.labels import LabelConfig
from backend.ml_engine.labelling.merge import ColumnLabels

CLASS_NAMES = ("DOWN", "NEUTRAL", "UP")
RARE_CLASS_SHARE = 0.05


@dataclass
class SymbolCounts:
    total: int = 0
    labelled: int = 0  # every requested horizon labelled


@dataclass
class RunSummary:
    config: LabelConfig
    symbols: dict[str, SymbolCounts] = field(default_factory=dict)
    balance: dict[int, np.ndarray] = field(default_factory=dict)  # h -> [down, neutral, up, null]
    abs_moves: dict[int, list[np.ndarray]] = field(default_factory=dict)
    files_total: int = 0
    files_changed: int = 0
    files_failed: list[str] = field(default_factory=list)
    kept_existing: int = 0

    def add(self, symbols: np.ndarray, columns: dict[int, ColumnLabels]) -> None:
        """Count final labels of some rows (``symbols``: one name per row)."""
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
        return sum(s.total for s in self.symbols.values())

    @property
    def labelled(self) -> int:
        return sum(s.labelled for s in self.symbols.values())


def print_symbol_sections(summary: RunSummary) -> None:
    for name in sorted(summary.symbols):
        sc = summary.symbols[name]
        c.section(f"Processing {name}")
        c.out(f"  Samples: {sc.total:,}")
        c.out(f"  {c.OK} Labelled: {sc.labelled:,}/{sc.total:,} samples ({c.pct(sc.labelled, sc.total)})")


def print_totals(summary: RunSummary, title: str, *, dry_run: bool, unit: str = "files") -> None:
    cfg = summary.config
    c.out()
    c.header(title)
    c.out(f"{c.OK} Samples processed: {summary.total:,}")
    c.out(f"{c.OK} Future labels added: {summary.labelled:,}")
    c.out(f"  Label percentage: {c.pct(summary.labelled, summary.total)}")
    verb = "would be rewritten" if dry_run else "rewritten"
    c.out(f"  {unit.capitalize()} {verb}: {summary.files_changed:,} of {summary.files_total:,} (others unchanged)")
    if summary.kept_existing:
        c.out(f"  Existing labels kept where no price was found now: {summary.kept_existing:,}")
    if summary.files_failed:
        c.out(f"{c.FAIL} {unit.capitalize()} skipped with errors: {len(summary.files_failed):,} (see above)")
    c.out()
    c.out(
        f"Class balance (threshold ±{cfg.threshold_pct:g}%, tolerance {cfg.tolerance_s:g} s; "
        "0=DOWN 1=NEUTRAL 2=UP):"
    )
    warnings = []
    for h in cfg.horizons_s:
        down, neutral, up, null = (int(x) for x in summary.balance.get(h, np.zeros(4)))
        n = down + neutral + up
        moves = np.concatenate(summary.abs_moves.get(h, [np.empty(0, np.float32)]))
        median = f"{float(np.median(moves)):.4f}%" if moves.size else "n/a"
        c.out(
            f"  {h:>4}s: DOWN {down:,} ({c.pct(down, n)})  NEUTRAL {neutral:,} ({c.pct(neutral, n)})  "
            f"UP {up:,} ({c.pct(up, n)})  unlabelled {null:,}  median |move| {median}"
        )
        if n >= 100:
            for name, count in zip(CLASS_NAMES, (down, neutral, up)):
                if count < RARE_CLASS_SHARE * n:
                    warnings.append(f"{h}s {name} is only {c.pct(count, n)} of labels")
    for w in warnings:
        c.out(f"  WARNING: {w}; consider --threshold near the median |move| printed above")
    c.footer()
