"""Legacy adapter of the apply loop: label one symbol's legacy batches (labels JSON files).

Price rows are the store's ``price_tape`` of the symbol plus the legacy samples
themselves, exactly as for the parquet store, so both scripts give identical labels
on the same samples; as there, a label's price comes only from rows of its batch's
``source`` (metadata), the tape rows' source recovered from the batches' ticks. The .npy files are never touched. A batch whose labels change
is rewritten in three atomic steps, each refusing if its file changed since read:
metadata recording the union of the old and new provenance, the labels file, then
metadata recording the new provenance. A crash between steps leaves metadata that
claims at most a mix of settings, never a wrong single one; the next run repairs it.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pyarrow as pa

from backend.contracts.labels import (
    LABEL_PROVENANCE_KEY,
    Provenance,
    ProvenanceError,
    decode_provenance,
    encode_provenance,
    merge_provenance,
)
from backend.ml_engine.feature_store.feature_store import FeatureStore
from backend.ml_engine.feature_store.legacy_format import (
    LegacyBatch,
    LegacyFormatError,
    list_batches,
    read_batch,
    rewrite_labels,
    rewrite_metadata,
)
from backend.ml_engine.labelling.apply import DayInput, LabelUnit, Progress, lookahead_days, no_progress
from backend.ml_engine.labelling.labels import LabelConfig, PriceRows
from backend.ml_engine.labelling.merge import ColumnLabels
from backend.ml_engine.labelling.store_labelling import RUN_COLUMN, attributed_tape, read_tape_day, ts_ms
from backend.ml_engine.labelling.summary import LabelEvent


def existing_from_rows(rows: list[dict], config: LabelConfig) -> dict[int, ColumnLabels]:
    """The label keys of legacy label rows as columns per horizon (null -> invalid / NaN)."""
    out = {}
    for h in config.horizons_s:
        d = [r.get(config.direction_column(h)) for r in rows]
        m = [r.get(config.movement_column(h)) for r in rows]
        valid = np.array([v is not None for v in d], dtype=bool)
        direction = np.array([1 if v is None else v for v in d], dtype=np.int8)
        movement = np.array([np.nan if v is None else v for v in m], dtype=np.float64)
        out[h] = ColumnLabels(direction, valid, movement)
    return out


def apply_to_rows(rows: list[dict], columns: dict[int, ColumnLabels], config: LabelConfig) -> list[dict]:
    """Copies of ``rows`` with ``columns`` written into their label keys (invalid / NaN -> null)."""
    new_rows = [dict(r) for r in rows]
    for h in config.horizons_s:
        col = columns[h]
        dirs = [int(v) if ok else None for v, ok in zip(col.direction.tolist(), col.direction_valid.tolist())]
        movs = [None if v != v else v for v in col.movement.tolist()]  # NaN -> null
        dk, mk = config.direction_column(h), config.movement_column(h)
        for row, dv, mv in zip(new_rows, dirs, movs):
            row[dk] = dv
            row[mk] = mv
    return new_rows


def _source(batch: LegacyBatch) -> str:
    return str(batch.metadata.get("source") or "")


def _rows(batches: list[LegacyBatch], source_code: dict[str, int]) -> PriceRows:
    """Price rows of ``batches``, coded by their source (the one symbol needs no code)."""
    ts = np.concatenate([b.timestamps_ms for b in batches]) if batches else np.empty(0, np.int64)
    mid = np.concatenate([b.mid_prices for b in batches]) if batches else np.empty(0)
    codes = np.concatenate([np.full(b.timestamps_ms.size, source_code[_source(b)], np.int32) for b in batches]) \
        if batches else np.empty(0, np.int32)
    return PriceRows(ts, codes, mid)


class LegacyAdapter:
    """The apply loop's view of one symbol's legacy batches between two dates (inclusive; None = open).

    Batches are read (labels and metadata; features only checked) when ``days`` is
    first called. An unreadable batch in range becomes a failure of its day; one in
    the look-ahead only is reported as a note through ``on_event``.
    """

    def __init__(
        self,
        legacy_root: Path,
        store: FeatureStore,
        symbol: str,
        config: LabelConfig,
        start_date: dt.date | None = None,
        end_date: dt.date | None = None,
        *,
        on_event: Callable[[LabelEvent], None] | None = None,
        progress: Progress = no_progress,
    ):
        self.legacy_root = Path(legacy_root)
        self.store = store
        self.symbol = symbol
        self.config = config
        self.start_date = start_date
        self.end_date = end_date
        self.on_event = on_event
        self.progress = progress
        self.lookahead_days = lookahead_days(config)
        self._by_date: dict[dt.date, list[LegacyBatch]] | None = None
        self._failures: dict[dt.date, list[tuple[str, str]]] = defaultdict(list)
        self._tape: dict[dt.date, pa.Table] = {}
        self._runs: dict[str, int] = {}  # tape run name -> id (``store_labelling.RUN_COLUMN``)

    def _in_range(self, day: dt.date) -> bool:
        return (self.start_date is None or day >= self.start_date) and (self.end_date is None or day <= self.end_date)

    def _load(self) -> dict[dt.date, list[LegacyBatch]]:
        if self._by_date is not None:
            return self._by_date
        last_needed = self.end_date + dt.timedelta(days=self.lookahead_days) if self.end_date else None
        refs = [
            r
            for r in list_batches(self.legacy_root, self.symbol)
            if (self.start_date is None or dt.date.fromisoformat(r.date) >= self.start_date)
            and (last_needed is None or dt.date.fromisoformat(r.date) <= last_needed)
        ]
        by_date: dict[dt.date, list[LegacyBatch]] = defaultdict(list)
        for ref in self.progress(refs, desc=f"reading {self.symbol}", unit="batch"):
            day = dt.date.fromisoformat(ref.date)
            try:
                by_date[day].append(read_batch(ref, load_features=False))
            except LegacyFormatError as exc:
                if self._in_range(day):
                    self._failures[day].append((str(exc.path), exc.problem))
                elif self.on_event is not None:
                    self.on_event(LabelEvent("note", f"look-ahead batch not used as a price source: {exc}"))
        self._by_date = by_date
        return by_date

    def _bad_tape(self, bad: tuple[str, str]) -> None:
        path, reason = bad
        if self.on_event is not None:
            self.on_event(LabelEvent("note", f"file {path}: {reason}", path))

    def days(self) -> list[dt.date]:
        """Days in range with a batch (readable or not), oldest first."""
        by_date = self._load()
        return sorted(d for d in set(by_date) | set(self._failures) if self._in_range(d))

    def load_day(self, day: dt.date) -> DayInput:
        """The day's batches, the look-ahead days' batches and the symbol's tape (one symbol: code 0)."""
        by_date = self._load()
        ahead = [day + dt.timedelta(days=i) for i in range(1, self.lookahead_days + 1)]
        for d in [d for d in self._tape if d < day]:
            del self._tape[d]
        for d in [day, *ahead]:
            if d not in self._tape:
                self._tape[d] = read_tape_day(self.store, d, self._runs, self._bad_tape, symbols=[self.symbol])
        tape = pa.concat_tables([self._tape[d] for d in [day, *ahead]])
        failures = list(self._failures.get(day, []))
        units, good = [], []
        for b in by_date.get(day, []):
            try:
                provenance = decode_provenance(b.metadata.get(LABEL_PROVENANCE_KEY))
            except ProvenanceError as exc:
                failures.append((str(b.ref.metadata_path), f"{exc}; remove the {LABEL_PROVENANCE_KEY!r} key to re-label"))
                continue
            good.append(b)
            units.append(
                LabelUnit(
                    name=str(b.ref.labels_path),
                    rows=b.sample_count,
                    symbols=np.full(b.sample_count, self.symbol, dtype=object),
                    existing=existing_from_rows(b.labels, self.config),
                    provenance=provenance,
                    handle=b,
                )
            )
        ahead_batches = [b for d in ahead for b in by_date.get(d, [])]
        sources = sorted({_source(b) for b in [*by_date.get(day, []), *ahead_batches]})
        code = {name: i for i, name in enumerate(sources)}
        extra = [_rows(ahead_batches, code)] if ahead_batches else []
        anchors = _rows([*by_date.get(day, []), *ahead_batches], code)
        tape_rows = PriceRows(ts_ms(tape), np.zeros(tape.num_rows, np.int32), tape.column("mid_price").to_numpy())
        return DayInput(
            units=units,
            samples=_rows(good, code),
            tape=attributed_tape(tape_rows, tape.column(RUN_COLUMN).to_numpy(), np.zeros(anchors.ts_ms.size, np.int32),
                                 anchors.ts_ms, anchors.codes, len(sources)),
            extra=extra,
            n_codes=max(len(sources), 1),
            failures=failures,
        )

    def write(self, unit: LabelUnit, columns: dict[int, ColumnLabels], provenance: str) -> None:
        """Rewrite the batch's labels file and record ``provenance`` in its metadata (see module docstring)."""
        b: LegacyBatch = unit.handle
        new = decode_provenance(provenance)
        meta_stat = b.metadata_stat
        if new != unit.provenance:
            both = encode_provenance(merge_provenance(unit.provenance, new))
            meta_stat = rewrite_metadata(b.ref.metadata_path, self._with(b.metadata, both), meta_stat)
        rewrite_labels(b.ref.labels_path, apply_to_rows(b.labels, columns, self.config), b.labels_stat)
        if new != unit.provenance:
            rewrite_metadata(b.ref.metadata_path, self._with(b.metadata, provenance), meta_stat)

    @staticmethod
    def _with(metadata: dict[str, Any], provenance: str) -> dict[str, Any]:
        out = dict(metadata)
        out[LABEL_PROVENANCE_KEY] = json.loads(provenance)  # a JSON object, not a string inside JSON
        return out
