"""The one apply loop: label a data set day by day through an adapter (parquet or legacy).

For each UTC day D in range the adapter supplies the files holding samples of D
(with their existing labels and provenance), the price rows of the look-ahead days
D+1 .. D+k (k = days the longest horizon plus the tolerance reaches into) and the
price tape of D .. D+k. The loop computes the labels (``labels.compute_labels``),
merges them with what each file holds (``merge.merge``), counts them and asks the
adapter to rewrite only the files whose labels or provenance change; look-ahead
days are read, never rewritten. The adapter does all I/O; the loop none.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Protocol

import numpy as np

from backend.contracts.labels import Provenance, encode_provenance
from backend.ml_engine.feature_store.atomic import FileChangedError
from backend.ml_engine.labelling.labels import LabelConfig, PriceRows, compute_labels
from backend.ml_engine.labelling.merge import ColumnLabels, merge, updated_provenance
from backend.ml_engine.labelling.summary import LabelEvent, RunSummary

log = logging.getLogger(__name__)
DAY_MS = 86_400_000

#: wraps an iterable with progress display: ``progress(items, desc=..., unit=..., total=...)``
Progress = Callable[..., Iterable]


def no_progress(items: Iterable, **_: Any) -> Iterable:
    """A ``Progress`` that shows nothing."""
    return items


def log_event(event: LabelEvent) -> None:
    """Default event sink: the logging module."""
    log.warning("%s%s", f"{event.name}: " if event.name else "", event.text)


def lookahead_days(config: LabelConfig) -> int:
    """Whole days after a sample's day that its labels may need (ceil(reach / 1 day))."""
    return -(-config.reach_ms // DAY_MS)


@dataclass
class LabelUnit:
    """One file of samples the loop may rewrite.

    ``name``: shown in messages (the path); ``rows``: samples it holds; ``symbols``:
    (rows,) symbol name per row; ``existing``: its label columns per horizon;
    ``provenance``: what it records about how they were made; ``handle``: the
    adapter's own reference, passed back to ``write``.
    """

    name: str
    rows: int
    symbols: np.ndarray
    existing: dict[int, ColumnLabels]
    provenance: Provenance
    handle: Any = None


@dataclass
class DayInput:
    """What the loop needs for one day.

    ``units``: the day's files in order; ``samples``: their price rows concatenated in
    the same order; ``tape``: price-tape rows of the day and the look-ahead days (None
    when there are none); ``extra``: sample price rows of the look-ahead days;
    ``n_codes``: size of the symbol-code space all rows share; ``failures``: files of
    the day that could not be read, as (name, reason).
    """

    units: list[LabelUnit]
    samples: PriceRows
    tape: PriceRows | None
    extra: list[PriceRows]
    n_codes: int
    failures: list[tuple[str, str]] = field(default_factory=list)


class LabelAdapter(Protocol):
    """The I/O side of the apply loop (``store_labelling.StoreAdapter``, ``legacy_labelling.LegacyAdapter``)."""

    def days(self) -> list[dt.date]:
        """Days to label, oldest first."""

    def load_day(self, day: dt.date) -> DayInput:
        """The files of ``day`` and the price rows their labels need."""

    def write(self, unit: LabelUnit, columns: dict[int, ColumnLabels], provenance: str) -> None:
        """Store ``columns`` (and the encoded ``provenance``) in ``unit``'s file.

        Raises ``FileChangedError`` when the file changed since it was read, ``OSError``
        or ``ValueError`` when it cannot be written; the loop reports and goes on.
        """


def apply_labels(
    adapter: LabelAdapter,
    config: LabelConfig,
    summary: RunSummary,
    *,
    dry_run: bool = False,
    on_event: Callable[[LabelEvent], None] = log_event,
    progress: Progress = no_progress,
    desc: str = "labelling",
) -> RunSummary:
    """Label every day ``adapter`` offers; counts go into ``summary`` (returned).

    ``dry_run`` computes and counts without writing. A file that cannot be read or
    written is counted in ``summary.files_failed`` and reported through ``on_event``;
    the other files are still labelled.
    """
    setting = config.setting
    for day in progress(adapter.days(), desc=desc, unit="day"):
        data = adapter.load_day(day)
        for name, reason in data.failures:
            summary.files_total += 1
            summary.files_failed.append(name)
            on_event(LabelEvent("failed", reason, name))
        if not data.units:
            continue
        computed = compute_labels(data.samples, data.tape, config, n_codes=data.n_codes, extra_prices=data.extra)
        offset = 0
        for unit in data.units:
            part = {h: lab.slice(offset, offset + unit.rows) for h, lab in computed.items()}
            offset += unit.rows
            merged = merge(part, unit.existing)
            provenance = updated_provenance(unit.provenance, merged, setting)
            summary.files_total += 1
            summary.kept_existing += merged.kept
            summary.add(unit.symbols, merged.columns)
            if not merged.changed and provenance == unit.provenance:
                continue
            summary.files_changed += 1
            if dry_run:
                continue
            try:
                adapter.write(unit, merged.columns, encode_provenance(provenance))
            except (FileChangedError, OSError, ValueError) as exc:
                summary.files_changed -= 1
                summary.files_failed.append(unit.name)
                on_event(LabelEvent("failed", str(exc), unit.name))
    return summary
