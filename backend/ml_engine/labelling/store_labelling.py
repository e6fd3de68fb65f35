"""Parquet adapter of the apply loop: label a feature-store group in place, one UTC day at a time.

Every file's footer is checked first (``feature_store.file_check``): a file that cannot
be read or interpreted, or whose schema is not exactly the store's, is named as a
failure of its day and never read as samples nor rewritten; a bad price-tape file is
named too and its rows are not used. Only the price and label columns are read first (``symbol`` dictionary-encoded); a
file is read in full and rewritten (atomically, refusing if it changed since it was
read) only when its labels or their provenance change, so a second run rewrites
nothing. The provenance is stored in the file's key-value metadata
(``backend.contracts.labels.LABEL_PROVENANCE_KEY``).

A group whose schema has no ``mid_price`` (the ``predictions`` group, DESIGN.md §6.6) is
labelled like samples with the price at each row's time taken from the price tape: a
prediction's timestamp is its sample's, which is the event time of the book that made
both the sample and that tick's tape row, so the tape row with the same symbol and
timestamp holds exactly the sample's mid. A row without such a tape row gets no price
(NaN) and so no label.

Future prices come only from rows of the sample's own source (``sources``): samples
and tape rows are coded per (symbol, source) pair, the tape rows' source recovered
from the samples of the day and the look-ahead days. A prediction has no ``source``
column; predictions form one source of their own, whose tape is the runs holding a
prediction's tick (a simulator run without ``--model`` prices none of them).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from backend.contracts.groups import PRICE_TAPE
from backend.contracts.labels import ProvenanceError
from backend.ml_engine.feature_store import atomic
from backend.ml_engine.feature_store.feature_schema import schema_for_group
from backend.ml_engine.feature_store.feature_store import FeatureStore, partition_dir_date
from backend.ml_engine.labelling.apply import DayInput, LabelUnit, lookahead_days
from backend.ml_engine.labelling.labels import LabelConfig, PriceRows
from backend.ml_engine.labelling.merge import ColumnLabels
from backend.ml_engine.labelling.sources import UNATTRIBUTED, attribute_tape, pair_codes, run_of_file
from backend.ml_engine.labelling.symbol_codes import sorted_universe, symbol_codes

PRICE_COLUMNS = ["timestamp", "symbol", "mid_price"]
RUN_COLUMN = "__run"  # the tape's run (``sources.run_of_file``) as an int32 id, added when the tape is read
_EMPTY_TAPE = pa.schema([
    pa.field("timestamp", pa.timestamp("ms", tz="UTC"), nullable=False),
    pa.field("symbol", pa.dictionary(pa.int32(), pa.string()), nullable=False),
    pa.field("mid_price", pa.float64(), nullable=False),
    pa.field(RUN_COLUMN, pa.int32()),
]).empty_table()
PREDICTIONS_SOURCE = "predictions"  # the one source of a group without a ``source`` column


def ts_ms(table: pa.Table) -> np.ndarray:
    """The ``timestamp`` column as (n,) int64 ms since epoch."""
    return table.column("timestamp").cast(pa.int64()).to_numpy()


def price_rows(table: pa.Table, universe: pa.Array) -> PriceRows:
    """``timestamp``, ``symbol`` and ``mid_price`` of a table as price rows coded in ``universe``."""
    return PriceRows(ts_ms(table), symbol_codes(table.column("symbol"), universe), table.column("mid_price").to_numpy())


def mid_from_tape(table: pa.Table, tape: pa.Table) -> pa.Array:
    """(n,) float64 mid of each row of ``table`` (``timestamp``, ``symbol``) from the ``tape`` row
    with the same symbol and timestamp (the first of repeated tape rows); NaN where there is none."""
    def frame(t: pa.Table, cols: list[str]) -> pd.DataFrame:
        return pd.DataFrame({
            "symbol": pc.cast(t.column("symbol"), pa.string()).to_numpy(zero_copy_only=False),
            "ts": ts_ms(t),
            **{c: t.column(c).to_numpy() for c in cols},
        })

    rows = frame(table, [])
    if tape.num_rows == 0 or rows.empty:
        return pa.array(np.full(len(rows), np.nan), pa.float64())
    prices = frame(tape, ["mid_price"]).drop_duplicates(["symbol", "ts"])
    mid = rows.merge(prices, how="left", on=["symbol", "ts"])["mid_price"].to_numpy(np.float64)
    return pa.array(mid, pa.float64())


def read_tape_day(
    store: FeatureStore, day: dt.date, runs: dict[str, int], on_bad: Callable[[tuple[str, str]], None],
    symbols: list[str] | None = None,
) -> pa.Table:
    """The day's tape rows (``PRICE_COLUMNS``, ``symbol`` dictionary-encoded) plus ``RUN_COLUMN``.

    ``runs`` maps run names (``sources.run_of_file``) to the int32 ids stored in
    ``RUN_COLUMN``; new names are added, so one dict gives one id space over many days.
    A file that cannot be used is passed to ``on_bad`` as (path, reason) and skipped;
    ``symbols`` keeps only their rows.
    """
    files, bad = store.checked_files(PRICE_TAPE, day, day)
    for check in bad:
        on_bad((str(check.path), f"price tape not used: {check.reason}; left untouched"))
    parts = []
    for path in files:
        try:
            t = store.read_file(path, PRICE_TAPE, columns=PRICE_COLUMNS, dictionary_columns=["symbol"])
        except FileNotFoundError:
            continue
        except (OSError, pa.ArrowException) as exc:
            on_bad((str(path), f"price tape not used: {str(exc).splitlines()[0][:200]}; left untouched"))
            continue
        if symbols is not None:
            t = t.filter(pc.is_in(t.column("symbol").cast(pa.string()), value_set=pa.array(symbols, pa.string())))
        run = runs.setdefault(run_of_file(path.name), len(runs))
        parts.append(t.append_column(RUN_COLUMN, pa.repeat(pa.scalar(run, pa.int32()), t.num_rows)))
    return pa.concat_tables(parts) if parts else _EMPTY_TAPE


def attributed_tape(
    rows: PriceRows, runs: np.ndarray, anchor_codes: np.ndarray, anchor_ts: np.ndarray, anchor_src: np.ndarray,
    n_sources: int,
) -> PriceRows | None:
    """The tape ``rows`` whose source is known, coded per (symbol, source) pair; None when none is left.

    ``runs``: (m,) run id of each tape row; ``anchor_*``: symbol codes, ms timestamps and
    source codes of the samples (``sources.attribute_tape``). When no tape row can be
    attributed at all (a tape not written beside these samples: hand-made, migrated) and
    the samples have one source, the whole tape is theirs, as before sources existed; with
    several sources such a tape cannot be told apart and is not used.
    """
    if rows.ts_ms.size == 0:
        return None
    src = attribute_tape(rows.codes, rows.ts_ms, runs.astype(np.int64), anchor_codes, anchor_ts, anchor_src)
    keep = np.flatnonzero(src != UNATTRIBUTED)
    if keep.size == 0:
        return rows if n_sources <= 1 else None
    codes = pair_codes(rows.codes[keep], src[keep], max(n_sources, 1))
    return PriceRows(rows.ts_ms[keep], codes, rows.mid[keep])


def read_existing_labels(table: pa.Table, config: LabelConfig) -> dict[int, ColumnLabels]:
    """The label columns of ``config``'s horizons as stored in ``table`` (nulls -> invalid / NaN)."""
    out = {}
    for h in config.horizons_s:
        d = table.column(config.direction_column(h))
        m = table.column(config.movement_column(h))
        out[h] = ColumnLabels(
            d.fill_null(1).to_numpy().astype(np.int8),
            d.is_valid().to_numpy(zero_copy_only=False),
            m.to_numpy(zero_copy_only=False).astype(np.float64),  # nulls become NaN
        )
    return out


def label_columns_arrow(columns: dict[int, ColumnLabels], config: LabelConfig) -> dict[str, pa.Array]:
    """Arrow arrays (int8 direction, float64 movement; null where invalid/NaN) by column name."""
    out = {}
    for h in config.horizons_s:
        col = columns[h]
        out[config.direction_column(h)] = pa.array(col.direction, type=pa.int8(), mask=~col.direction_valid)
        out[config.movement_column(h)] = pa.array(col.movement, type=pa.float64(), mask=np.isnan(col.movement))
    return out


class StoreAdapter:
    """The apply loop's view of one feature-store group between two dates (inclusive; None = open).

    Raises ``FeatureStoreError`` (from the store) for an invalid group name or date.
    """

    def __init__(self, store: FeatureStore, group: str, config: LabelConfig, start_date=None, end_date=None):
        self.store = store
        self.group = group
        self.config = config
        self.start_date = start_date
        self.end_date = end_date
        self.lookahead_days = lookahead_days(config)
        #: the group stores no price (``predictions``): each row's price comes from the tape (``mid_from_tape``)
        self.price_from_tape = "mid_price" not in schema_for_group(group).names
        self._samples: dict[dt.date, list[tuple[Path, tuple[int, int], pa.Table]]] = {}
        self._tape: dict[dt.date, pa.Table] = {}
        self._refused: dict[dt.date, list[tuple[str, str]]] = {}
        self._pending: list[tuple[str, str]] = []  # bad tape files, reported with the next day loaded
        self._runs: dict[str, int] = {}  # tape run name -> id (``RUN_COLUMN``)

    def count(self) -> tuple[int, list[str]]:
        """Rows and sorted symbols in the range, from the symbol column only (cheap; bad files are named later)."""
        table = self.store.read_offline_table(
            self.group, self.start_date, self.end_date, columns=["symbol"], on_bad_file=lambda _: None
        )
        symbols = pc.unique(table.column("symbol")).to_pylist() if table.num_rows else []
        return table.num_rows, sorted(symbols)

    def days(self) -> list[dt.date]:
        """Days with a partition folder in the range, oldest first."""
        return [partition_dir_date(p.name) for p in self.store.partition_dirs(self.group, self.start_date, self.end_date)]

    # Per-day caches: a day is read once as "today" and again as look-ahead; older days are dropped.
    def _day_samples(self, day: dt.date) -> list[tuple[Path, tuple[int, int], pa.Table]]:
        if day not in self._samples:
            cols = (PRICE_COLUMNS[:2] if self.price_from_tape else PRICE_COLUMNS + ["source"]) + [
                self.config.direction_column(h) for h in self.config.horizons_s]
            cols += [self.config.movement_column(h) for h in self.config.horizons_s]
            rows, refused = [], []
            for path in self.store.list_files(self.group, day, day):
                try:
                    stat = atomic.file_stat(path)  # taken before reading: a later change makes the rewrite refuse
                except FileNotFoundError:
                    continue
                check = self.store.check_file(path, self.group)
                if not check.exact:
                    why = check.reason if not check.ok else f"not the store's own schema ({check.reason})"
                    refused.append((str(path), f"{why}; not labelled, left untouched"))
                    continue
                try:
                    table = self.store.read_file(path, self.group, columns=cols, dictionary_columns=["symbol"])
                except (OSError, pa.ArrowException) as exc:
                    refused.append((str(path), f"cannot read its data ({str(exc).splitlines()[0][:200]}); not labelled, left untouched"))
                    continue
                if self.price_from_tape:
                    table = table.append_column("mid_price", mid_from_tape(table, self._day_tape(day)))
                    table = table.append_column("source", pa.repeat(PREDICTIONS_SOURCE, table.num_rows))
                rows.append((path, stat, table))
            self._samples[day] = rows
            self._refused[day] = refused
        return self._samples[day]

    def _day_tape(self, day: dt.date) -> pa.Table:
        if day not in self._tape:
            self._tape[day] = read_tape_day(self.store, day, self._runs, self._pending.append)
        return self._tape[day]

    def load_day(self, day: dt.date) -> DayInput:
        """The day's files, the look-ahead days' samples and the tape, in one symbol-code space."""
        for cache in (self._samples, self._tape, self._refused):
            for d in [d for d in cache if d < day]:
                del cache[d]
        files = self._day_samples(day)
        ahead = [day + dt.timedelta(days=i) for i in range(1, self.lookahead_days + 1)]
        with_source = PRICE_COLUMNS + ["source"]
        ahead_tables = [t.select(with_source) for d in ahead for _, _, t in self._day_samples(d)]
        tape = pa.concat_tables([self._day_tape(d) for d in [day, *ahead]])
        tables = [t.select(with_source) for _, _, t in files] + ahead_tables
        universe = sorted_universe(*[t.column("symbol") for t in tables + [tape]])
        sources = sorted_universe(*[t.column("source") for t in tables])
        n_src = max(len(sources), 1)
        units, failures = [], list(self._refused.get(day, [])) + self._pending
        self._pending = []
        for path, stat, table in files:
            try:
                provenance = self.store.label_provenance(path)
            except (ProvenanceError, OSError) as exc:
                failures.append((str(path), f"{exc}; re-label after fixing or removing the file"))
                continue
            units.append(
                LabelUnit(
                    name=str(path),
                    rows=table.num_rows,
                    symbols=table.column("symbol").to_numpy(zero_copy_only=False),
                    existing=read_existing_labels(table, self.config),
                    provenance=provenance,
                    handle=(path, stat),
                )
            )
        kept = {u.handle[0] for u in units}
        samples = [self._pair_rows(t, universe, sources) for p, _, t in files if p in kept]
        extra = [self._pair_rows(t, universe, sources) for t in ahead_tables if t.num_rows]
        return DayInput(
            units=units,
            samples=PriceRows.concat(samples),
            tape=self._tape_rows(tape, tables, universe, sources),
            extra=[PriceRows.concat(extra)] if extra else [],
            n_codes=len(universe) * n_src,
            failures=failures,
        )

    @staticmethod
    def _pair_rows(table: pa.Table, universe: pa.Array, sources: pa.Array) -> PriceRows:
        """Sample price rows coded per (symbol, source) pair."""
        rows = price_rows(table, universe)
        src = symbol_codes(table.column("source"), sources)
        return PriceRows(rows.ts_ms, pair_codes(rows.codes, src, max(len(sources), 1)), rows.mid)

    @staticmethod
    def _tape_rows(tape: pa.Table, samples: list[pa.Table], universe: pa.Array, sources: pa.Array) -> PriceRows | None:
        """The tape rows whose source is known, coded per (symbol, source) pair (``attributed_tape``)."""
        if tape.num_rows == 0 or not samples:
            return None
        anchors = pa.concat_tables([t.select(["timestamp", "symbol", "source"]) for t in samples])
        return attributed_tape(
            price_rows(tape, universe),
            tape.column(RUN_COLUMN).to_numpy(),
            symbol_codes(anchors.column("symbol"), universe),
            ts_ms(anchors),
            symbol_codes(anchors.column("source"), sources),
            len(sources),
        )

    def write(self, unit: LabelUnit, columns: dict[int, ColumnLabels], provenance: str) -> None:
        """Rewrite the unit's file with ``columns`` and ``provenance``; refuses if the file changed."""
        path, stat = unit.handle
        full = self.store.read_file(path, self.group)
        if full.num_rows != unit.rows:
            raise atomic.FileChangedError(f"{path}: file changed since it was read; not overwritten")
        for name, arr in label_columns_arrow(columns, self.config).items():
            full = full.set_column(full.schema.get_field_index(name), name, arr)
        self.store.rewrite_file(path, full, stat, self.group, label_provenance=provenance)
