"""The engine side of ``--source replay`` (DESIGN.md §6.4): one feature version per group, and its tick loop.

A replay writes rows with this build's feature version. A group holding rows of another
version would mix two incompatible feature sets under one name (training on it would
silently combine them), so the replay refuses unless told (``--allow-mixed-versions``).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import AsyncIterator

import pyarrow.parquet as pq

from backend.ml_engine.feature_store.feature_schema import FEATURE_SCHEMA_VERSION
from backend.engine.scheduler import Scheduler
from backend.metrics import Metrics
from backend.ml_engine.feature_store.feature_store import FeatureStore
from backend.venues.source import Clock

__all__ = ["ReplayScheduler", "group_feature_versions", "mixed_version_problem"]


def group_feature_versions(store: FeatureStore, group: str) -> set[int]:
    """The feature versions of the rows stored in ``group`` (from file footers: no data is read)."""
    versions: set[int] = set()
    for path in store.list_files(group):
        meta = pq.ParquetFile(path).metadata
        names = meta.schema.names
        if "feature_version" not in names:
            continue
        col = names.index("feature_version")
        for rg in range(meta.num_row_groups):
            stats = meta.row_group(rg).column(col).statistics
            if stats is None or not stats.has_min_max:
                versions.add(-1)  # unknown: treat as different
                continue
            versions.update({int(stats.min), int(stats.max)})
    return versions


def mixed_version_problem(store_root: Path, group: str, allow_mixed: bool) -> str | None:
    """Why a replay must not write into ``group``, or None when it may."""
    if allow_mixed:
        return None
    other = sorted(v for v in group_feature_versions(FeatureStore(store_root), group) if v != FEATURE_SCHEMA_VERSION)
    if not other:
        return None
    shown = ", ".join("unknown" if v < 0 else str(v) for v in other)
    return (f"feature group {group!r} already holds rows of feature version {shown}, and this replay writes version "
            f"{FEATURE_SCHEMA_VERSION}: choose another group with --feature-store-group (e.g. {group}_v"
            f"{FEATURE_SCHEMA_VERSION}), or pass --allow-mixed-versions to mix them on purpose")


class ReplayScheduler(Scheduler):
    """Yields one tick per recorded tick of a ``ReplaySource`` until it is exhausted, as fast as the CPU allows.

    The source moves the virtual clock to each recorded tick time when it is polled, so
    no fixed-rate schedule applies (a live recording's ticks are not on a grid).
    """

    def __init__(self, clock: Clock, source, *, metrics: Metrics | None = None, stop: asyncio.Event | None = None,
                 max_ticks: int | None = None):
        super().__init__(clock, 1.0, metrics=metrics, stop=stop, max_ticks=max_ticks)
        self.source = source

    async def __aiter__(self) -> AsyncIterator[int]:
        while (not self.stop.is_set() and (self.max_ticks is None or self.ticks < self.max_ticks)
               and not self.source.exhausted):
            self.metrics.ticks.inc()
            yield self.ticks
            self.ticks += 1
            await asyncio.sleep(0)  # let signals and flush reaping run
