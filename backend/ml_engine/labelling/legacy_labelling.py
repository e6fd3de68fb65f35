"""Label legacy batches (labels JSON files) with the same core and price rows as the store.

Price rows are the store's ``price_tape`` of the symbol plus the legacy samples
themselves, exactly as for the parquet store, so both scripts give identical labels
on the same samples. Each labels file whose labels change is replaced atomically
(refusing if it changed since it was read); the .npy and metadata are never touched.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from pathlib import Path

import numpy as np
import pyarrow as pa

from backend.ml_engine.feature_store import atomic
from backend.ml_engine.feature_store.feature_store import FeatureStore
from backend.ml_engine.feature_store.legacy_format import (
    LegacyBatch,
    LegacyFormatError,
    list_batches,
    read_batch,
    rewrite_labels,
)
from backend.ml_engine.labelling import console as c
from backend.ml_engine.labelling.labels import HorizonLabels, LabelConfig, PriceRows, compute_labels
from backend.ml_engine.labelling.merge import ColumnLabels, merge
from backend.ml_engine.labelling.store_labelling import DAY_MS, PRICE_COLUMNS, TAPE_GROUP, ts_ms
from backend.ml_engine.labelling.summary import RunSummary


def existing_from_rows(rows: list[dict], config: LabelConfig) -> dict[int, ColumnLabels]:
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


def _date(s: str) -> dt.date:
    return dt.date.fromisoformat(s)


def label_symbol(
    legacy_root: Path,
    store: FeatureStore,
    symbol: str,
    config: LabelConfig,
    summary: RunSummary,
    start_date: dt.date | None = None,
    end_date: dt.date | None = None,
    *,
    dry_run: bool = False,
    progress: bool = True,
) -> None:
    ahead_days = -(-config.reach_ms // DAY_MS)
    last_needed = end_date + dt.timedelta(days=ahead_days) if end_date else None
    by_date: dict[dt.date, list[LegacyBatch]] = defaultdict(list)
    refs = [
        r
        for r in list_batches(legacy_root, symbol)
        if (start_date is None or _date(r.date) >= start_date) and (last_needed is None or _date(r.date) <= last_needed)
    ]
    in_range = lambda d: end_date is None or d <= end_date  # noqa: E731
    for ref in c.progress(refs, desc=f"reading {symbol}", unit="batch", enabled=progress):
        try:
            by_date[_date(ref.date)].append(read_batch(ref, load_features=False))
        except LegacyFormatError as exc:
            if in_range(_date(ref.date)):
                summary.files_total += 1
                summary.files_failed.append(str(exc.path))
                c.out(f"  {c.FAIL} {exc}")
            else:
                c.out(f"  note: look-ahead batch not used as a price source: {exc}")

    tape_cache: dict[dt.date, pa.Table] = {}
    for day in sorted(d for d in by_date if in_range(d)):
        ahead = [day + dt.timedelta(days=i) for i in range(1, ahead_days + 1)]
        for d in [d for d in tape_cache if d < day]:
            del tape_cache[d]
        for d in [day, *ahead]:
            if d not in tape_cache:
                tape_cache[d] = store.read_offline_table(TAPE_GROUP, d, d, symbols=[symbol], columns=PRICE_COLUMNS)
        tape = pa.concat_tables([tape_cache[d] for d in [day, *ahead]])
        batches = by_date[day]
        samples = _rows([b for b in batches])
        extra = [_rows(by_date[d]) for d in ahead if by_date.get(d)]
        tape_rows = PriceRows(ts_ms(tape), np.zeros(tape.num_rows, np.int32), tape.column("mid_price").to_numpy())
        computed = compute_labels(samples, tape_rows if tape.num_rows else None, config, n_codes=1, extra_prices=extra)
        offset = 0
        for b in batches:
            n = b.sample_count
            part = {
                h: HorizonLabels(lab.direction[offset : offset + n], lab.movement[offset : offset + n], lab.valid[offset : offset + n])
                for h, lab in computed.items()
            }
            offset += n
            merged = merge(part, existing_from_rows(b.labels, config))
            summary.files_total += 1
            summary.kept_existing += merged.kept
            summary.add(np.full(n, symbol, dtype=object), merged.columns)
            if not merged.changed:
                continue
            summary.files_changed += 1
            if dry_run:
                continue
            try:
                rewrite_labels(b.ref.labels_path, apply_to_rows(b.labels, merged.columns, config), b.labels_stat)
            except (atomic.FileChangedError, OSError, ValueError) as exc:
                summary.files_changed -= 1
                summary.files_failed.append(str(b.ref.labels_path))
                c.out(f"  {c.FAIL} {b.ref.labels_path}: {exc}")


def _rows(batches: list[LegacyBatch]) -> PriceRows:
    ts = np.concatenate([b.timestamps_ms for b in batches]) if batches else np.empty(0, np.int64)
    mid = np.concatenate([b.mid_prices for b in batches]) if batches else np.empty(0)
    return PriceRows(ts, np.zeros(ts.size, np.int32), mid)
