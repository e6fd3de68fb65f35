"""The engine side of ``--source replay`` (DESIGN.md §6.4): one feature version per group, no row twice, and its tick loop.

A replay writes rows with this build's feature version. A group holding rows of another
version would mix two incompatible feature sets under one name (training on it would
silently combine them), so the replay refuses unless told (``--allow-mixed-versions``).
A group already holding rows of this version for the replayed symbols and time range
(the recorded run's own group, or an earlier replay) would get every sample twice, so
the replay refuses that always (``duplicate_problem``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from typing import Sequence
from typing import AsyncIterator

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from backend.ml_engine.feature_store.feature_schema import FEATURE_SCHEMA_VERSION, schema_for_group
from backend.config import Settings
from backend.engine.scheduler import Scheduler
from backend.metrics import Metrics
from backend.ml_engine.feature_store.feature_store import FeatureStore
from backend.venues.replay.source import recorded_span
from backend.venues.source import Clock

__all__ = ["ReplayScheduler", "duplicate_problem", "group_feature_versions", "mixed_version_problem",
           "replay_problem"]


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


def _utc(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _day(ms: int) -> dt.date:
    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).date()


def duplicate_problem(store_root: Path, group: str, symbols: Sequence[str], span: tuple[int, int] | None,
                      before_ms: int = 0, after_ms: int = 0) -> str | None:
    """Why a replay of ``symbols`` over ``span`` (first, last recorded tick time, ms) must not write into ``group``.

    It must not when the group already holds rows of this build's feature version for one
    of the symbols with a timestamp in ``[first - before_ms, last + after_ms]`` (a sample's
    time is its book's time, which may precede its tick by the book age allowed, or
    follow it by the clock skew allowed): the replay would store them a second time.
    None when it may (nothing recorded, or no such rows).
    """
    if span is None or "feature_version" not in schema_for_group(group).names:
        return None
    lo, hi = span[0] - before_ms, span[1] + after_ms
    store = FeatureStore(store_root)
    if not store.list_files(group, _day(lo), _day(hi)):
        return None
    table = store.read_offline_table(group, _day(lo), _day(hi), symbols=list(symbols),
                                     columns=["timestamp", "symbol", "feature_version"], on_bad_file=lambda _: None)
    ts = table.column("timestamp").cast(pa.int64())
    mask = pc.and_(pc.and_(pc.greater_equal(ts, lo), pc.less_equal(ts, hi)),
                   pc.equal(table.column("feature_version"), FEATURE_SCHEMA_VERSION))
    hits = table.filter(mask)
    if not hits.num_rows:
        return None
    names = ", ".join(sorted(hits.column("symbol").unique().to_pylist()))
    return (f"feature group {group!r} already holds {hits.num_rows} rows of feature version {FEATURE_SCHEMA_VERSION} "
            f"for {names} between {_utc(lo)} and {_utc(hi)} UTC (the recorded run's own rows, or an earlier replay): "
            f"replaying into it would store them twice; choose another group with --feature-store-group "
            f"(e.g. {group}_replay)")


def replay_problem(settings: Settings, symbols: Sequence[str]) -> str | None:
    """Why ``--source replay`` with ``settings`` must not start (checked before anything is written), or None."""
    s = settings
    return mixed_version_problem(s.feature_store_root, s.feature_store_group, s.allow_mixed_versions) or \
        duplicate_problem(s.feature_store_root, s.feature_store_group, symbols,
                          recorded_span(s.feature_store_root, s.replay_from, s.replay_to),
                          before_ms=int(s.max_book_age_s * 1000), after_ms=int(s.max_clock_skew_s * 1000))


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
