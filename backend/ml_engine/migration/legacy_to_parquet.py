"""Migrate legacy .npy/.json batches into a feature-store group.

Each good batch becomes the store's columns (labels carried over, ``source`` kept)
and is written with a deterministic ``file_id`` derived from the batch, so a second
run finds the file and writes nothing. Rows whose (symbol, timestamp) the store
already holds (e.g. the collector wrote both formats) are not written again. A bad
batch is reported with its file and reason and skipped; sources are only read.
The labels' provenance recorded in a batch's metadata (see ``backend.contracts.labels``)
goes into the parquet file's key-value metadata; a batch without one migrates
without one (its labels' settings stay unknown).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from backend.contracts.groups import TRAINING_FEATURES
from backend.contracts.labels import (
    DIRECTION_COLUMNS,
    LABEL_PROVENANCE_KEY,
    MOVEMENT_COLUMNS,
    ProvenanceError,
    decode_provenance,
    encode_provenance,
)
from backend.ml_engine.feature_store.feature_schema import FEATURE_NAMES, TRAINING_SCHEMA, SchemaValidationError
from backend.ml_engine.feature_store import atomic
from backend.ml_engine.feature_store.feature_store import FILE_PREFIX, FeatureStore, FeatureStoreError
from backend.ml_engine.feature_store.legacy_format import (
    LegacyBatch,
    LegacyBatchRef,
    LegacyFormatError,
    list_batches,
    parse_created_at,
)
from backend.ml_engine.migration.interpret import NAME_MAP_KEY, read_interpreted

#: parquet key-value metadata key listing how an older batch's fields were read (JSON list of text)
INTERPRETATIONS_KEY = "lobbot.legacy_interpretations"
#: parquet key-value metadata key holding the renames ``{legacy name: our name}`` a ``--map`` applied (JSON object)
FEATURE_NAME_MAP_KEY = "lobbot.legacy_feature_name_map"


@dataclass
class BatchOutcome:
    """What happened to one batch: ``status`` "migrated", "updated" (labels added to the legacy
    batch since its migration were carried over), "present" (already in the store) or "failed";
    ``samples``: rows written, updated or found present; ``error``: why it failed; ``notes``: how
    fields of an older form were read (also stored in the parquet file's metadata)."""

    ref: LegacyBatchRef
    status: str
    samples: int = 0
    error: str = ""
    notes: list[str] = field(default_factory=list)


@dataclass
class MigrationTotals:
    """The outcomes of a run, with counts by status."""

    outcomes: list[BatchOutcome] = field(default_factory=list)

    def count(self, status: str) -> int:
        """Batches with ``status``."""
        return sum(1 for o in self.outcomes if o.status == status)

    def samples(self, status: str) -> int:
        """Samples of the batches with ``status``."""
        return sum(o.samples for o in self.outcomes if o.status == status)


def file_id_for(ref: LegacyBatchRef) -> str:
    """The deterministic store file id of a batch: ``legacy_<SYMBOL>_<stem>``."""
    return f"legacy_{ref.symbol}_{ref.stem}"


def _label_array(rows: list[dict], key: str, typ: pa.DataType) -> pa.Array:
    values = [r[key] for r in rows]
    return pa.array(values, type=typ)  # None -> null


def batch_to_table(batch: LegacyBatch) -> pa.Table:
    """The batch as a table of the training schema (n rows; ``source`` "legacy" when the metadata has none)."""
    n = batch.sample_count
    ts = pa.array(batch.timestamps_ms, type=pa.int64()).cast(TRAINING_SCHEMA.field("timestamp").type)
    created = parse_created_at(batch.metadata["created_at"])
    collected = pa.array(np.full(n, created, dtype=np.int64), type=pa.int64()).cast(
        TRAINING_SCHEMA.field("collected_at").type
    )
    # Column slices of a Fortran-ordered copy are contiguous: one cheap copy for 110 columns.
    feats = np.asfortranarray(batch.features)
    columns: dict[str, pa.Array] = {
        "timestamp": ts,
        "symbol": pa.array([batch.ref.symbol] * n, type=pa.string()),
        "mid_price": pa.array(batch.mid_prices, type=pa.float64()),
        "source": pa.array([batch.metadata.get("source") or "legacy"] * n, type=pa.string()),
        "feature_version": pa.array(np.full(n, int(batch.metadata["feature_version"]), dtype=np.int16)),
        "collected_at": collected,
    }
    for i, name in enumerate(FEATURE_NAMES):
        columns[name] = pa.array(feats[:, i])
    for key in DIRECTION_COLUMNS:
        columns[key] = _label_array(batch.labels, key, pa.int8())
    for key in MOVEMENT_COLUMNS:
        columns[key] = _label_array(batch.labels, key, pa.float64())
    return pa.Table.from_arrays([columns[f.name] for f in TRAINING_SCHEMA], schema=TRAINING_SCHEMA)


def batch_provenance(batch: LegacyBatch) -> str | None:
    """The encoded label provenance of a batch's metadata; None when it records none.

    Raises ``ProvenanceError`` when the record is malformed.
    """
    record = batch.metadata.get(LABEL_PROVENANCE_KEY)
    return None if record is None else encode_provenance(decode_provenance(record))


class Migrator:
    """Migrates the batches of a legacy root into one feature group (``dry_run``: check, write nothing;
    ``name_map``: renames for batches whose feature names differ from ours, see ``load_name_map``)."""

    def __init__(
        self,
        legacy_root: Path,
        store: FeatureStore,
        group: str = TRAINING_FEATURES,
        *,
        dry_run: bool = False,
        strict: bool = False,
        name_map: dict[str, str] | None = None,
    ):
        self.legacy_root = Path(legacy_root)
        self.store = store
        self.group = group
        self.dry_run = dry_run
        self.strict = strict
        #: explicit renames for batches whose feature names differ from ours (``--map``)
        self.name_map = name_map
        #: store files the duplicate check could not read: "path: reason" (named once each)
        self.store_problems: list[str] = []
        self._present: dict[tuple[str, str], np.ndarray] = {}

    def batches(self, symbol: str) -> list[LegacyBatchRef]:
        """The batches of ``symbol``, ordered by number."""
        return list_batches(self.legacy_root, symbol)

    def _present_ts(self, symbol: str, date: str) -> np.ndarray:
        """Sorted timestamps (ms) the store already holds for ``symbol`` on ``date``."""
        key = (symbol, date)
        if key not in self._present:
            t = self.store.read_offline_table(
                self.group, date, date, symbols=[symbol], columns=["timestamp"], on_bad_file=self._bad_store_file
            )
            self._present[key] = np.sort(t.column("timestamp").cast(pa.int64()).to_numpy())
        return self._present[key]

    def _bad_store_file(self, check) -> None:
        line = f"{check.path}: {check.reason} (not used by the duplicate check; left untouched)"
        if line not in self.store_problems:
            self.store_problems.append(line)

    def migrate_batch(self, ref: LegacyBatchRef) -> BatchOutcome:
        """Read, check and write one batch; never raises for bad data (the outcome says what happened)."""
        try:
            batch, notes = read_interpreted(ref, strict=self.strict, name_map=self.name_map)
            provenance = batch_provenance(batch)
        except LegacyFormatError as exc:
            return BatchOutcome(ref, "failed", error=str(exc))
        except ProvenanceError as exc:
            return BatchOutcome(ref, "failed", error=f"{ref.metadata_path}: {exc}")
        extra = {INTERPRETATIONS_KEY: json.dumps(notes)} if notes else None
        renames = batch.metadata.get(NAME_MAP_KEY)
        if renames is not None:
            extra = {**(extra or {}), FEATURE_NAME_MAP_KEY: json.dumps(renames, sort_keys=True)}
        present = self._present_ts(ref.symbol, ref.date)
        new = ~np.isin(batch.timestamps_ms, present, assume_unique=False)
        if not new.any():
            updated = self._update_labels(ref, batch, provenance)
            status = "updated" if updated else "present"
            return BatchOutcome(ref, status, samples=updated or batch.sample_count, notes=notes)
        table = batch_to_table(batch)
        if not new.all():
            table = table.filter(pa.array(new))
        if self.dry_run:
            return BatchOutcome(ref, "migrated", samples=table.num_rows, notes=notes)
        try:
            written = self.store.write_offline_features(
                self.group, table, file_id=file_id_for(ref), label_provenance=provenance, extra_metadata=extra
            )
        except (SchemaValidationError, FeatureStoreError, OSError) as exc:
            return BatchOutcome(ref, "failed", error=f"{ref.features_path}: cannot write to the store: {exc}")
        if not any(w.created for w in written):
            return BatchOutcome(ref, "present", samples=batch.sample_count, notes=notes)
        key = (ref.symbol, ref.date)
        self._present[key] = np.sort(np.concatenate([self._present[key], batch.timestamps_ms[new]]))
        return BatchOutcome(ref, "migrated", samples=sum(w.rows for w in written if w.created), notes=notes)

    def _update_labels(self, ref: LegacyBatchRef, batch: LegacyBatch, provenance: str | None) -> int:
        """Carry labels added to the legacy batch since its migration into the file migration wrote
        for it (never into files written by the collector); returns the rows whose labels changed.

        A label already in the store is kept where the legacy batch has none."""
        fresh = batch_to_table(batch)
        order = np.argsort(batch.timestamps_ms, kind="stable")
        sorted_ts = batch.timestamps_ms[order]
        changed_rows = 0
        pattern = f"date=*/{FILE_PREFIX}*_{file_id_for(ref)}.parquet"
        for path in sorted(self.store.group_dir(self.group).glob(pattern)):
            check = self.store.check_file(path, self.group)
            if not check.exact:
                self._bad_store_file(check)
                continue
            stat = atomic.file_stat(path)
            table = self.store.read_file(path, self.group)
            ts = table.column("timestamp").cast(pa.int64()).to_numpy()
            pos = np.searchsorted(sorted_ts, ts)
            if (pos >= sorted_ts.size).any() or not np.array_equal(sorted_ts[np.minimum(pos, sorted_ts.size - 1)], ts):
                continue  # not this batch's rows (should not happen): leave it alone
            take = pa.array(order[pos])
            diff = np.zeros(table.num_rows, dtype=bool)
            for key in (*DIRECTION_COLUMNS, *MOVEMENT_COLUMNS):
                old = table.column(key)
                merged = pc.coalesce(fresh.column(key).take(take), old)
                diff |= ~pc.fill_null(pc.equal(merged, old), False).to_numpy(zero_copy_only=False) & merged.is_valid().to_numpy(zero_copy_only=False)
                table = table.set_column(table.schema.get_field_index(key), key, merged)
            if not diff.any():
                continue
            changed_rows += int(diff.sum())
            if self.dry_run:
                continue
            meta = pq_metadata(path)
            keep = provenance if provenance is not None else meta.get(LABEL_PROVENANCE_KEY)
            extra = {k: v for k, v in meta.items() if k.startswith("lobbot.") and k != LABEL_PROVENANCE_KEY}
            self.store.rewrite_file(path, table, stat, self.group, label_provenance=keep, extra_metadata=extra or None)
        return changed_rows


def pq_metadata(path: Path) -> dict[str, str]:
    """A parquet file's key-value metadata as text."""
    import pyarrow.parquet as pq

    raw = pq.read_schema(path).metadata or {}
    return {k.decode(): v.decode() for k, v in raw.items()}
