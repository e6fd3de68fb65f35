"""Label a feature-store group in place, one UTC day at a time.

For each day D in the range, the samples of D are labelled from the price tape of
D .. D+k and the samples of D .. D+k (k = the days the longest horizon plus the
tolerance reaches into, i.e. 1), so the look-ahead beyond ``end_date`` is read
but never rewritten. Only the label columns are read first; a file is read in full
and rewritten (atomically, refusing if it changed since it was read) only when its
labels change, so a second run rewrites nothing.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from backend.ml_engine.feature_store import atomic
from backend.ml_engine.feature_store.feature_store import FeatureStore, partition_dir_date
from backend.ml_engine.labelling import console as c
from backend.ml_engine.labelling.labels import LabelConfig, PriceRows, compute_labels
from backend.ml_engine.labelling.merge import ColumnLabels, merge
from backend.ml_engine.labelling.summary import RunSummary

DAY_MS = 86_400_000
PRICE_COLUMNS = ["timestamp", "symbol", "mid_price"]
TAPE_GROUP = "price_tape"


@dataclass
class _FileRows:
    path: Path
    stat: tuple[int, int]
    table: pa.Table  # light columns: timestamp, symbol, mid_price (+ labels for files to label)


def ts_ms(table: pa.Table) -> np.ndarray:
    return table.column("timestamp").cast(pa.int64()).to_numpy()


def symbol_values(symbols: pa.ChunkedArray | pa.Array) -> pa.Array:
    """The distinct symbols of a column, plain or dictionary-encoded (then from the dictionaries only)."""
    chunks = symbols.chunks if isinstance(symbols, pa.ChunkedArray) else [symbols]
    if chunks and pa.types.is_dictionary(chunks[0].type):
        return pc.unique(pa.chunked_array([c.dictionary for c in chunks], type=pa.string()))
    return pc.unique(pa.chunked_array(chunks, type=pa.string()))


def codes_for(symbols: pa.ChunkedArray | pa.Array, universe: pa.Array) -> np.ndarray:
    """Index of each row's symbol in ``universe``.

    Dictionary-encoded columns (how the store reads ``symbol``) only map their small
    dictionaries and gather, instead of hashing every string.
    """
    chunks = symbols.chunks if isinstance(symbols, pa.ChunkedArray) else [symbols]
    if not chunks:
        return np.empty(0, np.int32)
    if pa.types.is_dictionary(chunks[0].type):
        parts = []
        for c in chunks:
            remap = pc.index_in(c.dictionary, value_set=universe).to_numpy(zero_copy_only=False).astype(np.int32)
            parts.append(remap[c.indices.to_numpy(zero_copy_only=False)])
        return np.concatenate(parts)
    return pc.index_in(symbols, value_set=universe).to_numpy(zero_copy_only=False).astype(np.int32)


def read_existing_labels(table: pa.Table, config: LabelConfig) -> dict[int, ColumnLabels]:
    out = {}
    for h in config.horizons_s:
        d = table.column(config.direction_column(h))
        m = table.column(config.movement_column(h))
        valid = d.is_valid().to_numpy(zero_copy_only=False)
        out[h] = ColumnLabels(
            d.fill_null(1).to_numpy().astype(np.int8),
            valid,
            m.to_numpy(zero_copy_only=False).astype(np.float64),  # nulls become NaN
        )
    return out


def label_columns_arrow(columns: dict[int, ColumnLabels], config: LabelConfig) -> dict[str, pa.Array]:
    out = {}
    for h in config.horizons_s:
        col = columns[h]
        out[config.direction_column(h)] = pa.array(col.direction, type=pa.int8(), mask=~col.direction_valid)
        out[config.movement_column(h)] = pa.array(col.movement, type=pa.float64(), mask=np.isnan(col.movement))
    return out


class StoreLabeller:
    def __init__(self, store: FeatureStore, group: str, config: LabelConfig, *, dry_run: bool = False):
        self.store = store
        self.group = group
        self.config = config
        self.dry_run = dry_run
        self.lookahead_days = -(-config.reach_ms // DAY_MS)
        self._samples: dict[dt.date, list[_FileRows]] = {}
        self._tape: dict[dt.date, pa.Table] = {}

    # --- loading (cached per day; days behind the current one are dropped) ---------------
    def _day_samples(self, day: dt.date) -> list[_FileRows]:
        if day not in self._samples:
            cols = PRICE_COLUMNS + [self.config.direction_column(h) for h in self.config.horizons_s]
            cols += [self.config.movement_column(h) for h in self.config.horizons_s]
            rows = []
            for path in self.store.list_files(self.group, day, day):
                stat = atomic.file_stat(path)  # taken before reading: a later change makes the rewrite refuse
                table = self.store.read_file(path, self.group, columns=cols, dictionary_columns=["symbol"])
                rows.append(_FileRows(path, stat, table))
            self._samples[day] = rows
        return self._samples[day]

    def _day_tape(self, day: dt.date) -> pa.Table:
        if day not in self._tape:
            self._tape[day] = self.store.read_offline_table(
                TAPE_GROUP, day, day, columns=PRICE_COLUMNS, dictionary_columns=["symbol"]
            )
        return self._tape[day]

    def _evict_before(self, day: dt.date) -> None:
        for cache in (self._samples, self._tape):
            for d in [d for d in cache if d < day]:
                del cache[d]

    def days(self, start_date=None, end_date=None) -> list[dt.date]:
        return [partition_dir_date(p.name) for p in self.store.partition_dirs(self.group, start_date, end_date)]

    def count(self, start_date=None, end_date=None) -> tuple[int, list[str]]:
        """Rows and symbols in the range, from the symbol column only (cheap)."""
        table = self.store.read_offline_table(self.group, start_date, end_date, columns=["symbol"])
        symbols = pc.unique(table.column("symbol")).to_pylist() if table.num_rows else []
        return table.num_rows, sorted(symbols)

    # --- one day ---------------------------------------------------------------------------
    def label_day(self, day: dt.date, summary: RunSummary) -> None:
        self._evict_before(day)
        files = self._day_samples(day)
        if not files:
            return
        ahead = [day + dt.timedelta(days=i) for i in range(1, self.lookahead_days + 1)]
        sample_tables = [f.table.select(PRICE_COLUMNS) for f in files]
        ahead_tables = [f.table.select(PRICE_COLUMNS) for d in ahead for f in self._day_samples(d)]
        tape = pa.concat_tables([self._day_tape(d) for d in [day, *ahead]])
        samples = pa.concat_tables(sample_tables)
        extra = pa.concat_tables(ahead_tables) if ahead_tables else None
        tables = [samples, tape] + ([extra] if extra is not None else [])
        universe = pc.unique(pa.chunked_array([symbol_values(t.column("symbol")) for t in tables], type=pa.string()))
        universe = universe.combine_chunks() if isinstance(universe, pa.ChunkedArray) else universe

        def rows(t: pa.Table) -> PriceRows:
            return PriceRows(ts_ms(t), codes_for(t.column("symbol"), universe), t.column("mid_price").to_numpy())

        computed = compute_labels(
            rows(samples),
            rows(tape) if tape.num_rows else None,
            self.config,
            n_codes=len(universe),
            extra_prices=[rows(extra)] if extra is not None and extra.num_rows else [],
        )
        offset = 0
        for f in files:
            n = f.table.num_rows
            part = {
                h: type(lab)(lab.direction[offset : offset + n], lab.movement[offset : offset + n], lab.valid[offset : offset + n])
                for h, lab in computed.items()
            }
            offset += n
            merged = merge(part, read_existing_labels(f.table, self.config))
            summary.files_total += 1
            summary.kept_existing += merged.kept
            summary.add(f.table.column("symbol").to_numpy(zero_copy_only=False), merged.columns)
            if not merged.changed:
                continue
            summary.files_changed += 1
            if self.dry_run:
                continue
            try:
                self._rewrite(f, merged.columns)
            except (atomic.FileChangedError, OSError, ValueError) as exc:
                summary.files_changed -= 1
                summary.files_failed.append(str(f.path))
                c.out(f"  {c.FAIL} {f.path}: {exc}")

    def _rewrite(self, f: _FileRows, columns: dict[int, ColumnLabels]) -> None:
        full = self.store.read_file(f.path, self.group)
        if full.num_rows != f.table.num_rows:
            raise atomic.FileChangedError(f"{f.path}: file changed since it was read; not overwritten")
        for name, arr in label_columns_arrow(columns, self.config).items():
            full = full.set_column(full.schema.get_field_index(name), name, arr)
        self.store.rewrite_file(f.path, full, f.stat, self.group)


def run(
    store: FeatureStore,
    group: str,
    config: LabelConfig,
    start_date=None,
    end_date=None,
    *,
    dry_run: bool = False,
    progress: bool = True,
) -> RunSummary:
    labeller = StoreLabeller(store, group, config, dry_run=dry_run)
    summary = RunSummary(config)
    for day in c.progress(labeller.days(start_date, end_date), desc="labelling", unit="day", enabled=progress):
        labeller.label_day(day, summary)
    return summary
