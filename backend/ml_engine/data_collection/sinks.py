"""Where flushed rows go: the parquet feature store and the legacy batch format, behind one interface.

A sink's ``write(spec, parts, flush_id)`` writes the rows of one flush job and returns
the number of files it created. It is idempotent by ``flush_id``: writing the same job
again (a retry, or crash recovery re-running an unfinished flush) creates nothing new,
because both stores derive file identity from the flush id (DESIGN.md §3.2, §3.3).
Sinks run on the collector's flush thread and raise whatever their store raises
(``OSError`` for a full or read-only disk, ``ValueError`` for rows the store rejects).
"""

from __future__ import annotations

from typing import Protocol

from backend.ml_engine.data_collection.buffers import Columns
from backend.ml_engine.data_collection.records import StreamKey
from backend.ml_engine.data_collection.streams import StreamSpec
from backend.ml_engine.feature_store.feature_store import FeatureStore
from backend.ml_engine.feature_store.legacy_format import LegacyBatchWriter


class Sink(Protocol):
    """One destination of flushed rows."""

    name: str

    def write(self, spec: StreamSpec, parts: dict[StreamKey, Columns], flush_id: str) -> int:
        """Write the rows of one flush; returns files created (0 when this flush id is already stored)."""
        ...


class ParquetSink:
    """Writes a stream's rows to its feature-store group, one file per UTC date, named by the flush id."""

    name = "parquet"

    def __init__(self, store: FeatureStore):
        self.store = store

    def write(self, spec: StreamSpec, parts: dict[StreamKey, Columns], flush_id: str) -> int:
        """Build the group's Arrow table with ``spec.to_table`` and write it; returns files created."""
        written = self.store.write_offline_features(spec.group, spec.to_table(parts), file_id=flush_id)
        return sum(1 for w in written if w.created)


class LegacySink:
    """Writes samples as legacy ``.npy`` + JSON batches, one batch per symbol and UTC date.

    Only for streams whose rows carry the feature vector, an int ``ts`` and a float ``mid``.
    """

    name = "legacy"

    def __init__(self, writer: LegacyBatchWriter):
        self.writer = writer

    def write(self, spec: StreamSpec, parts: dict[StreamKey, Columns], flush_id: str) -> int:
        """Write each symbol's rows as its own batch(es); returns metadata files created."""
        files = 0
        for key, cols in parts.items():
            written = self.writer.write_batch(
                key.symbol, cols.matrix, cols.ints["ts"], cols.floats["mid"], key.source, flush_id=flush_id
            )
            files += len(written)
        return files
