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

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

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
from backend.ml_engine.feature_store.feature_store import FeatureStore, FeatureStoreError
from backend.ml_engine.feature_store.legacy_format import (
    LegacyBatch,
    LegacyBatchRef,
    LegacyFormatError,
    list_batches,
    parse_created_at,
    read_batch,
)


@dataclass
class BatchOutcome:
    """What happened to one batch: ``status`` "migrated", "present" (already in the store) or
    "failed"; ``samples``: rows written (migrated) or found already present; ``error``: why it failed."""

    ref: LegacyBatchRef
    status: str
    samples: int = 0
    error: str = ""


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
    """Migrates the batches of a legacy root into one feature group (``dry_run``: check, write nothing)."""

    def __init__(self, legacy_root: Path, store: FeatureStore, group: str = TRAINING_FEATURES, *, dry_run: bool = False):
        self.legacy_root = Path(legacy_root)
        self.store = store
        self.group = group
        self.dry_run = dry_run
        self._present: dict[tuple[str, str], np.ndarray] = {}

    def batches(self, symbol: str) -> list[LegacyBatchRef]:
        """The batches of ``symbol``, ordered by number."""
        return list_batches(self.legacy_root, symbol)

    def _present_ts(self, symbol: str, date: str) -> np.ndarray:
        """Sorted timestamps (ms) the store already holds for ``symbol`` on ``date``."""
        key = (symbol, date)
        if key not in self._present:
            t = self.store.read_offline_table(self.group, date, date, symbols=[symbol], columns=["timestamp"])
            self._present[key] = np.sort(t.column("timestamp").cast(pa.int64()).to_numpy())
        return self._present[key]

    def migrate_batch(self, ref: LegacyBatchRef) -> BatchOutcome:
        """Read, check and write one batch; never raises for bad data (the outcome says what happened)."""
        try:
            batch = read_batch(ref)
            provenance = batch_provenance(batch)
        except LegacyFormatError as exc:
            return BatchOutcome(ref, "failed", error=str(exc))
        except ProvenanceError as exc:
            return BatchOutcome(ref, "failed", error=f"{ref.metadata_path}: {exc}")
        present = self._present_ts(ref.symbol, ref.date)
        new = ~np.isin(batch.timestamps_ms, present, assume_unique=False)
        if not new.any():
            return BatchOutcome(ref, "present", samples=batch.sample_count)
        table = batch_to_table(batch)
        if not new.all():
            table = table.filter(pa.array(new))
        if self.dry_run:
            return BatchOutcome(ref, "migrated", samples=table.num_rows)
        try:
            written = self.store.write_offline_features(
                self.group, table, file_id=file_id_for(ref), label_provenance=provenance
            )
        except (SchemaValidationError, FeatureStoreError, OSError) as exc:
            return BatchOutcome(ref, "failed", error=f"{ref.features_path}: cannot write to the store: {exc}")
        if not any(w.created for w in written):
            return BatchOutcome(ref, "present", samples=batch.sample_count)
        key = (ref.symbol, ref.date)
        self._present[key] = np.sort(np.concatenate([self._present[key], batch.timestamps_ms[new]]))
        return BatchOutcome(ref, "migrated", samples=sum(w.rows for w in written if w.created))
