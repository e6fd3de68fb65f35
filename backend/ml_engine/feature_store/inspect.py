"""What is in the feature store, without loading it: the web app's Data panel.

``StoreInspector(root).audit(group)`` answers, for one feature group:

* rows per symbol per UTC day (the heat map), files and bytes on disk;
* gaps: consecutive samples of one symbol further apart than ``gap_factor`` (default 2)
  sampling intervals, where a symbol's sampling interval is the median of its positive
  timestamp steps;
* label coverage per horizon (share of rows whose ``future_direction_<h>s`` is set) and
  the class balance per horizon per day (DOWN / NEUTRAL / UP / unlabelled counts);
* the feature versions present, from the ``feature_version`` column's row-group statistics;
* the files skipped, each with the reason: every file's footer is checked against the
  group's schema first (``file_check``, as every other store reader does), and a file that
  cannot be read or interpreted (truncated, foreign columns, integer or zone-less
  timestamps, wrong dtypes) counts no rows; it is named, never guessed at.

Only the parquet footer and the columns ``timestamp``, ``symbol`` (read dictionary-encoded)
and ``future_direction_<h>s`` are read, never the 110 features. What one file yields is
cached in memory keyed by (path, size, mtime), so a second audit reads only files that
are new or were rewritten (e.g. by the labeller), and an audit of an unchanged group
costs one directory listing. New files are read in one ``pyarrow.dataset`` scan (Arrow's
thread pool, GIL released). Reading a file is bound by parquet footer decoding (about
1 ms of CPU per file of 120 columns), so the per-file summaries are also kept on disk
(``<root>/.cache/audit_<group>.arrow``, see ``save_summaries``): a restarted web app
reads that one file instead of every footer. An entry is used only while its file has
the same size and ``mtime_ns``; a changed file is read again, a damaged cache file is
ignored (and rewritten), a cache that cannot be written (read-only store) is skipped.

Pure apart from reading files: no settings, no globals; safe to call from a worker thread
while the event loop serves requests (the cache is guarded by a lock).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from backend.contracts.labels import direction_column
from backend.ml_engine.feature_store.feature_schema import HORIZONS_S, schema_for_group
from backend.ml_engine.feature_store.file_check import check_file
from backend.ml_engine.feature_store.feature_store import DAY_MS, FeatureStore

__all__ = [
    "CacheError", "FileSummary", "Gap", "StoreAudit", "StoreInspector", "cache_path", "load_summaries", "read_file_summary",
    "save_summaries",
]

log = logging.getLogger(__name__)

#: class codes of ``future_direction_<h>s``; index 3 of a balance row counts unlabelled rows
CLASS_NAMES = ("DOWN", "NEUTRAL", "UP")
_UNLABELLED = 3


@dataclass(frozen=True)
class FileSummary:
    """The few columns of one parquet file the audit needs.

    ``ts_ms``: int64 event times (ms since epoch, UTC); ``symbol_codes``: int16 indexes into
    ``symbols``; ``directions``: horizon (s) -> int8 class per row, -1 where unlabelled
    (absent for groups without label columns); ``feature_versions``: versions seen in the
    file's statistics.
    """

    path: str
    size: int
    mtime_ns: int
    rows: int
    ts_ms: np.ndarray
    symbols: tuple[str, ...]
    symbol_codes: np.ndarray
    directions: dict[int, np.ndarray]
    feature_versions: frozenset[int]


@dataclass(frozen=True)
class Gap:
    """Two consecutive samples of ``symbol`` at ``start_ms`` and ``end_ms`` (ms, UTC),
    further apart than the gap threshold; ``interval_s`` is the symbol's sampling interval."""

    symbol: str
    start_ms: int
    end_ms: int
    interval_s: float

    @property
    def seconds(self) -> float:
        """Length of the gap in seconds."""
        return (self.end_ms - self.start_ms) / 1000.0

    def as_dict(self) -> dict:
        """The gap as JSON-ready values (ISO times, seconds)."""
        return {
            "symbol": self.symbol,
            "start": _iso(self.start_ms),
            "end": _iso(self.end_ms),
            "seconds": self.seconds,
            "missing_samples": max(int(round(self.seconds / self.interval_s)) - 1, 0) if self.interval_s > 0 else None,
        }


@dataclass
class StoreAudit:
    """The audit of one group; ``as_dict()`` is the JSON of ``GET /api/data``.

    ``rows[symbol][day]`` counts rows per UTC day (``YYYY-MM-DD``); ``class_balance[h][day]``
    is ``[down, neutral, up, unlabelled]``; ``label_coverage[h]`` is the labelled share in
    [0, 1] (``None`` without rows); ``gaps`` are the largest first, ``gap_count`` is the full
    count; ``interval_s[symbol]`` is the sampling interval used for the gap threshold;
    ``skipped`` lists the files not counted as ``(path, reason)``, by path (``files`` and
    ``bytes`` still count them: they are on disk).
    """

    group: str
    files: int = 0
    bytes: int = 0
    total_rows: int = 0
    days: list[str] = field(default_factory=list)
    symbols: list[str] = field(default_factory=list)
    rows: dict[str, dict[str, int]] = field(default_factory=dict)
    interval_s: dict[str, float] = field(default_factory=dict)
    gap_factor: float = 2.0
    gaps: list[Gap] = field(default_factory=list)
    gap_count: int = 0
    label_coverage: dict[int, float | None] = field(default_factory=dict)
    class_balance: dict[int, dict[str, list[int]]] = field(default_factory=dict)
    feature_versions: list[int] = field(default_factory=list)
    first: str | None = None
    last: str | None = None
    seconds: float = 0.0
    files_read: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def as_dict(self) -> dict:
        """The audit as JSON-ready values for ``GET /api/data``."""
        return {
            "group": self.group,
            "files": self.files,
            "bytes": self.bytes,
            "total_rows": self.total_rows,
            "first": self.first,
            "last": self.last,
            "days": self.days,
            "symbols": self.symbols,
            "rows": self.rows,
            "interval_s": self.interval_s,
            "gap_factor": self.gap_factor,
            "gaps": [g.as_dict() for g in self.gaps],
            "gap_count": self.gap_count,
            "label_coverage": {str(h): v for h, v in self.label_coverage.items()},
            "class_balance": {str(h): v for h, v in self.class_balance.items()},
            "class_names": list(CLASS_NAMES) + ["unlabelled"],
            "feature_versions": self.feature_versions,
            "seconds": round(self.seconds, 4),
            "files_read": self.files_read,
            "skipped_files": [{"path": p, "reason": r} for p, r in self.skipped],
        }


def _iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def read_file_summary(path: Path, size: int, mtime_ns: int) -> FileSummary:
    """Read the footer and the audit's columns of one parquet file.

    Raises:
        OSError, pyarrow.ArrowInvalid: the file cannot be read as parquet.
        ValueError: the file has no ``timestamp`` column, or it is not a timestamp type.
    """
    pf = pq.ParquetFile(path, read_dictionary=["symbol"])
    names = set(pf.schema_arrow.names)
    if "timestamp" not in names:
        raise ValueError(f"{path}: no 'timestamp' column; not a feature-store file")
    label_cols = {h: direction_column(h) for h in HORIZONS_S if direction_column(h) in names}
    cols = [c for c in ("timestamp", "symbol", "feature_version") if c in names] + list(label_cols.values())
    return _summary_of(str(path), size, mtime_ns, pf.read(columns=cols, use_threads=False), label_cols)


def scan_summaries(stats: list[tuple[str, int, int]]) -> list[FileSummary]:
    """``FileSummary`` of many files of one group in one ``pyarrow.dataset`` scan.

    The scan decodes footers and columns on Arrow's own thread pool, about twice as fast
    as reading file by file; batches are tagged with their file, so each file keeps its
    own summary (and its cache entry). ``stats``: ``(path, size, mtime_ns)`` per file.

    Raises:
        FileNotFoundError: a file disappeared during the scan.
        pyarrow.ArrowInvalid: a file is not parquet or its schema differs from the first's.
    """
    if not stats:
        return []
    schema = pq.read_schema(stats[0][0])
    names = set(schema.names)
    if "timestamp" not in names:
        raise ValueError(f"{stats[0][0]}: no 'timestamp' column; not a feature-store file")
    dict_cols = {"symbol"} if "symbol" in names and pa.types.is_string(schema.field("symbol").type) else set()
    if dict_cols:
        i = schema.get_field_index("symbol")
        schema = schema.set(i, schema.field(i).with_type(pa.dictionary(pa.int32(), pa.string())))
    label_cols = {h: direction_column(h) for h in HORIZONS_S if direction_column(h) in names}
    cols = [c for c in ("timestamp", "symbol", "feature_version") if c in names] + list(label_cols.values())
    fmt = ds.ParquetFileFormat(read_options=ds.ParquetReadOptions(dictionary_columns=dict_cols))
    dataset = ds.dataset([p for p, _, _ in stats], schema=schema, format=fmt)
    parts: dict[str, list[pa.RecordBatch]] = {p: [] for p, _, _ in stats}
    for tagged in dataset.scanner(columns=cols, batch_readahead=16, fragment_readahead=8).scan_batches():
        parts[tagged.fragment.path].append(tagged.record_batch)
    out = []
    for p, size, mtime in stats:
        batches = parts.get(p) or []
        table = pa.Table.from_batches(batches, schema=pa.schema([dataset.schema.field(c) for c in cols])) if batches else None
        out.append(_summary_of(p, size, mtime, table, label_cols))
    return out


def _summary_of(path: str, size: int, mtime_ns: int, table: pa.Table | None, label_cols: dict[int, str]) -> FileSummary:
    if table is None or table.num_rows == 0:
        empty = np.zeros(0, np.int64)
        return FileSummary(path, size, mtime_ns, 0, empty, ("",), empty.astype(np.int16), {}, frozenset())
    ts = table.column("timestamp")
    if not pa.types.is_timestamp(ts.type):  # never guessed (seconds? ms?); the footer check keeps such files out
        raise ValueError(f"{path}: 'timestamp' is {ts.type}, not a timestamp type; its unit cannot be known")
    unit = ts.type.unit
    ts_ms = ts.cast(pa.int64()).to_numpy()
    ts_ms = {"us": ts_ms // 1000, "ns": ts_ms // 1_000_000, "s": ts_ms * 1000}.get(unit, ts_ms)
    if "symbol" in table.column_names:
        sym = table.column("symbol").combine_chunks()
        if not pa.types.is_dictionary(sym.type):
            sym = sym.dictionary_encode()
        symbols = tuple(str(s) for s in sym.dictionary.to_pylist())
        codes = sym.indices.to_numpy(zero_copy_only=False).astype(np.int16)
    else:
        symbols, codes = ("",), np.zeros(len(ts_ms), np.int16)
    directions = {
        h: table.column(name).combine_chunks().fill_null(-1).cast(pa.int8()).to_numpy(zero_copy_only=False)
        for h, name in label_cols.items()
    }
    versions: frozenset[int] = frozenset()
    if "feature_version" in table.column_names:
        v = table.column("feature_version").combine_chunks()
        versions = frozenset(int(x) for x in pc.unique(v).to_pylist() if x is not None)
    return FileSummary(path, size, mtime_ns, table.num_rows, ts_ms, symbols, codes, directions, versions)


# --- the on-disk cache of file summaries ---------------------------------------------------
CACHE_FORMAT = 2  # 2: only files that pass the footer check are summarised (format 1 could hold guessed ones)
_CACHE_KEY = b"lobbot_audit_cache"


def cache_path(root: Path, group: str) -> Path:
    """Where the audit's per-file summaries of ``group`` are kept: ``<root>/.cache/audit_<group>.arrow``
    (a dot folder: never taken for a group, never read as store data)."""
    return Path(root) / ".cache" / f"audit_{group}.arrow"


def save_summaries(path: Path, root: str, summaries: list[FileSummary]) -> None:
    """Write ``summaries`` (files under ``root``) to ``path`` atomically.

    One Arrow IPC file, zstd: the rows of every file one after the other (``ts_ms``
    int64, ``symbol`` int16 code, ``dir_<h>`` int8 per horizon, -1 unlabelled or absent)
    and, in the schema's metadata, a JSON index with one entry per file: path relative to
    ``root``, size, ``mtime_ns``, rows, symbol names, feature versions, horizons present,
    and a BLAKE2b digest of the index and every column, checked on load. Written to a
    temporary file in the same folder, fsynced, then renamed over ``path``,
    so a reader sees the old cache or the new one, never a part.

    Raises:
        OSError: the folder or the file cannot be written.
    """
    prefix = str(root).rstrip(os.sep) + os.sep
    index, ts, codes = [], [], []
    dirs: dict[int, list[np.ndarray]] = {h: [] for h in HORIZONS_S}
    for f in summaries:
        if not f.path.startswith(prefix):
            continue
        index.append({"p": f.path[len(prefix):], "s": f.size, "m": f.mtime_ns, "n": f.rows, "sym": list(f.symbols),
                      "v": sorted(f.feature_versions), "h": sorted(f.directions)})
        ts.append(np.asarray(f.ts_ms, np.int64))
        codes.append(np.asarray(f.symbol_codes, np.int16))
        for h in HORIZONS_S:
            d = f.directions.get(h)
            dirs[h].append(np.asarray(d, np.int8) if d is not None else np.full(f.rows, -1, np.int8))

    def cat(parts, dtype):
        return np.concatenate(parts) if parts else np.zeros(0, dtype)

    arrays = {"ts_ms": cat(ts, np.int64), "symbol": cat(codes, np.int16)}
    arrays.update({f"dir_{h}": cat(dirs[h], np.int8) for h in HORIZONS_S})
    meta = {"format": CACHE_FORMAT, "horizons": list(HORIZONS_S), "files": index, "digest": _digest(index, arrays)}
    columns = {k: pa.array(v) for k, v in arrays.items()}
    table = pa.table(columns).replace_schema_metadata({_CACHE_KEY: json.dumps(meta, separators=(",", ":")).encode()})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with pa.OSFile(str(tmp), "wb") as sink:
            with ipc.new_file(sink, table.schema, options=ipc.IpcWriteOptions(compression="zstd")) as writer:
                writer.write_table(table)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _digest(index: list, arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.blake2b(json.dumps(index, separators=(",", ":"), sort_keys=True).encode(), digest_size=16)
    for name in sorted(arrays):
        h.update(name.encode())
        h.update(np.ascontiguousarray(arrays[name]).tobytes())
    return h.hexdigest()


class CacheError(ValueError):
    """The cache file is not a valid audit cache (damaged, truncated, another format)."""


def load_summaries(path: Path, root: str) -> list[FileSummary]:
    """The summaries ``save_summaries`` wrote to ``path``, their paths under ``root`` again.

    Every entry is returned as it was written; the caller uses one only while its file
    still has that size and ``mtime_ns``. Returns ``[]`` when there is no cache file.

    Raises:
        CacheError: the file is damaged or is not an audit cache of this format.
    """
    path = Path(path)
    if not path.exists():
        return []
    try:
        with pa.OSFile(str(path), "rb") as src:
            table = ipc.open_file(src).read_all()
        meta = json.loads((table.schema.metadata or {})[_CACHE_KEY])
    except (OSError, pa.ArrowException, KeyError, ValueError) as exc:
        raise CacheError(f"{path}: {type(exc).__name__}: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != CACHE_FORMAT or meta.get("horizons") != list(HORIZONS_S):
        raise CacheError(f"{path}: not an audit cache of format {CACHE_FORMAT}")
    want = {"ts_ms": pa.int64(), "symbol": pa.int16(), **{f"dir_{h}": pa.int8() for h in HORIZONS_S}}
    for name, typ in want.items():
        if name not in table.column_names or table.schema.field(name).type != typ or table.column(name).null_count:
            raise CacheError(f"{path}: column {name} missing or of the wrong type")
    files = meta.get("files")
    try:
        rows = np.array([int(f["n"]) for f in files], np.int64)
    except (TypeError, KeyError, ValueError):
        raise CacheError(f"{path}: damaged file index") from None
    if rows.size and (rows.min() < 0 or int(rows.sum()) != table.num_rows):
        raise CacheError(f"{path}: the index counts {int(rows.sum())} rows, the table has {table.num_rows}")
    ts = table.column("ts_ms").combine_chunks().to_numpy()
    sym = table.column("symbol").combine_chunks().to_numpy()
    dirs = {h: table.column(f"dir_{h}").combine_chunks().to_numpy() for h in HORIZONS_S}
    arrays = {"ts_ms": ts, "symbol": sym, **{f"dir_{h}": d for h, d in dirs.items()}}
    try:
        digest_ok = meta.get("digest") == _digest(files, arrays)
    except (TypeError, ValueError):
        digest_ok = False
    if not digest_ok:
        raise CacheError(f"{path}: its digest does not match its contents")
    if any(d.size and (d.min() < -1 or d.max() > 2) for d in dirs.values()):
        raise CacheError(f"{path}: a label class outside -1..2")
    prefix = str(root).rstrip(os.sep) + os.sep
    out, start = [], 0
    try:
        for f, n in zip(files, rows.tolist()):
            end = start + n
            symbols = tuple(str(x) for x in f["sym"])
            codes = sym[start:end]
            if n and (not symbols or codes.min() < 0 or codes.max() >= len(symbols)):
                raise CacheError(f"{path}: a symbol code outside the file's symbols")
            rel = str(f["p"])
            if rel.startswith(("/", "..")) or "/../" in rel:
                raise CacheError(f"{path}: a path outside the store: {rel!r}")
            horizons = [int(h) for h in f["h"]]
            out.append(FileSummary(prefix + rel, int(f["s"]), int(f["m"]), n, ts[start:end], symbols, codes,
                                   {h: dirs[h][start:end] for h in horizons if h in dirs},
                                   frozenset(int(v) for v in f["v"])))
            start = end
    except (TypeError, KeyError, ValueError) as exc:
        raise CacheError(f"{path}: damaged file index ({type(exc).__name__})") from None
    return out


class StoreInspector:
    """Audits of the groups under one store root, with a per-file cache.

    ``max_gaps`` bounds the gap list returned (the largest are kept; ``gap_count`` still
    counts all). ``disk_cache``: keep the per-file summaries in ``cache_path(root, group)``
    across restarts (read at the first audit of a group, rewritten when what it holds
    differs from the files listed).
    """

    def __init__(self, root: Path, *, max_gaps: int = 200, disk_cache: bool = True) -> None:
        self.store = FeatureStore(Path(root))
        self.max_gaps = max_gaps
        self.disk_cache = disk_cache
        self._cache: dict[str, FileSummary] = {}
        self._last: dict[str, tuple[tuple, StoreAudit]] = {}
        self._lock = threading.Lock()
        self._disk_lock = threading.Lock()
        # group -> the (path, size, mtime_ns) the cache file holds, once read or written
        self._on_disk: dict[str, frozenset] = {}
        # path -> (size, mtime_ns, reason) of files whose footer check failed (checked again when they change)
        self._rejected: dict[str, tuple[int, int, str]] = {}

    def groups(self) -> list[str]:
        """Names of the groups present under the root, sorted."""
        root = self.store.root
        if not root.is_dir():
            return []
        return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))

    def audit(self, group: str, *, gap_factor: float = 2.0) -> StoreAudit:
        """Audit ``group`` (see the module docstring). An absent group gives an empty audit.

        Raises:
            FeatureStoreError: ``group`` is not a valid group name.
            ValueError: ``gap_factor`` is not > 1.
        """
        if not gap_factor > 1:
            raise ValueError(f"gap_factor must be > 1, got {gap_factor}")
        t0 = time.perf_counter()
        stats = self._list(group)
        key = (group, gap_factor, tuple(stats))
        with self._lock:
            last = self._last.get(group)
        if last is not None and last[0] == key:  # nothing changed on disk since the last audit
            audit = last[1]
            audit.files_read = 0
        else:
            summaries, read, skipped = self._summaries(group, stats)
            audit = _aggregate(group, summaries, gap_factor, self.max_gaps)
            audit.skipped = skipped
            audit.bytes = sum(s for _, s, _ in stats)
            audit.files = len(stats)
            audit.files_read = read
            with self._lock:
                self._last[group] = (key, audit)
        audit.seconds = time.perf_counter() - t0
        return audit

    def _list(self, group: str) -> list[tuple[str, int, int]]:
        """(path, size, mtime_ns) of the group's complete parquet files, by date then name."""
        out = []
        for part in self.store.partition_dirs(group):
            try:
                entries = sorted(os.scandir(part), key=lambda e: e.name)
            except FileNotFoundError:
                continue
            for e in entries:
                if not e.name.endswith(".parquet") or e.name.startswith((".", "_")):
                    continue
                try:
                    st = e.stat()
                except FileNotFoundError:  # replaced between listing and stat: the next audit sees it
                    continue
                out.append((e.path, st.st_size, st.st_mtime_ns))
        return out

    def _load_disk(self, group: str) -> None:
        """Fill the memory cache from the group's cache file, once per group."""
        with self._disk_lock:
            if group in self._on_disk:
                return
            path = cache_path(self.store.root, group)
            try:
                loaded = load_summaries(path, str(self.store.root))
            except CacheError as exc:
                log.warning("data audit: ignoring the damaged cache (it is rebuilt): %s", exc)
                loaded = []
            self._on_disk[group] = frozenset((f.path, f.size, f.mtime_ns) for f in loaded)
        with self._lock:
            for f in loaded:  # an entry is used only while its file still matches (see _summaries)
                self._cache.setdefault(f.path, f)

    def _save_disk(self, group: str, stats: list[tuple[str, int, int]], summaries: list[FileSummary]) -> None:
        """Rewrite the group's cache file when it does not hold exactly these files."""
        now = frozenset((f.path, f.size, f.mtime_ns) for f in summaries)
        with self._disk_lock:
            if self._on_disk.get(group) == now:
                return
            try:
                save_summaries(cache_path(self.store.root, group), str(self.store.root), summaries)
            except OSError as exc:  # a read-only store: audits still work, restarts are slower
                log.info("data audit: cannot write the cache %s: %s", cache_path(self.store.root, group), exc)
            self._on_disk[group] = now

    def _rejected_now(self, group: str, todo: list[tuple[str, int, int]]) -> dict[str, str]:
        """path -> reason for the files of ``todo`` whose footer does not pass ``check_file``."""
        schema = schema_for_group(group)
        out = {}
        for p, s, m in todo:
            with self._lock:
                known = self._rejected.get(p)
            if known is not None and known[:2] == (s, m):
                out[p] = known[2]
                continue
            check = check_file(Path(p), schema)
            with self._lock:
                if check.ok:
                    self._rejected.pop(p, None)
                else:
                    self._rejected[p] = (s, m, check.reason)
            if not check.ok:
                out[p] = check.reason
                if known is None or known[:2] != (s, m):
                    log.warning("data audit: skipped %s: %s; the file is left untouched", p, check.reason)
        return out

    def _summaries(self, group: str, stats: list[tuple[str, int, int]]) -> tuple[list[FileSummary], int, list[tuple[str, str]]]:
        if self.disk_cache and group not in self._on_disk:
            self._load_disk(group)
        with self._lock:
            cached = {p: self._cache.get(p) for p, _, _ in stats}
        todo = [(p, s, m) for p, s, m in stats if not (cached[p] and cached[p].size == s and cached[p].mtime_ns == m)]
        rejected = self._rejected_now(group, todo)
        todo = [t for t in todo if t[0] not in rejected]
        if todo:
            try:
                fresh = scan_summaries(todo)
            except FileNotFoundError:  # a file went away (rewritten by the labeller): one by one
                fresh = []
                for p, s, m in todo:
                    try:
                        fresh.append(read_file_summary(Path(p), s, m))
                    except FileNotFoundError:
                        continue
            for f in fresh:
                cached[f.path] = f
            with self._lock:
                live = {p for p, _, _ in stats}
                for p in [p for p in self._cache if p not in live and p.startswith(str(self.store.root))]:
                    # a file that disappeared (rewritten under another name, deleted)
                    if not os.path.exists(p):
                        del self._cache[p]
                self._cache.update({f.path: f for f in fresh})
        out = [cached[p] for p, _, _ in stats if cached.get(p) is not None and p not in rejected]
        if self.disk_cache:
            self._save_disk(group, stats, out)
        return out, len(todo), sorted(rejected.items())


def _aggregate(group: str, summaries: list[FileSummary], gap_factor: float, max_gaps: int) -> StoreAudit:
    audit = StoreAudit(group=group, gap_factor=gap_factor)
    summaries = [s for s in summaries if s.rows]
    horizons = sorted({h for s in summaries for h in s.directions})
    audit.label_coverage = {h: None for h in horizons}
    audit.class_balance = {h: {} for h in horizons}
    audit.feature_versions = sorted({v for s in summaries for v in s.feature_versions})
    if not summaries:
        return audit
    # global symbol ids; files in time order so each symbol's rows come out nearly sorted
    summaries.sort(key=lambda s: int(s.ts_ms[0]))
    names: dict[str, int] = {}
    code_parts, ts_parts = [], []
    for s in summaries:
        mapping = np.array([names.setdefault(n, len(names)) for n in s.symbols], dtype=np.int16)
        code_parts.append(mapping[s.symbol_codes])
        ts_parts.append(s.ts_ms)
    sym = np.concatenate(code_parts)
    ts = np.concatenate(ts_parts)
    dirs = {
        h: np.concatenate([s.directions[h] if h in s.directions else np.full(s.rows, -1, np.int8) for s in summaries])
        for h in horizons
    }
    order = np.argsort(sym, kind="stable")  # radix sort on int16
    sym, ts = sym[order], ts[order]
    same = sym[1:] == sym[:-1]
    steps = np.diff(ts)
    if np.any(steps[same] < 0):  # files of one symbol overlap in time: sort properly
        order2 = np.lexsort((ts, sym))
        sym, ts, order = sym[order2], ts[order2], order[order2]
        same = sym[1:] == sym[:-1]
        steps = np.diff(ts)
    dirs = {h: d[order] for h, d in dirs.items()}

    symbol_names = [None] * len(names)
    for n, i in names.items():
        symbol_names[i] = n
    day = ts // DAY_MS
    day0, day1 = int(day.min()), int(day.max())
    ndays = day1 - day0 + 1
    per = np.bincount(sym.astype(np.int64) * ndays + (day - day0), minlength=len(names) * ndays).reshape(len(names), ndays)
    present_days = np.flatnonzero(per.sum(axis=0))
    day_names = [(dt.date(1970, 1, 1) + dt.timedelta(days=day0 + int(d))).isoformat() for d in range(ndays)]
    audit.days = [day_names[d] for d in present_days]
    audit.symbols = sorted(symbol_names)
    audit.rows = {
        symbol_names[i]: {day_names[d]: int(per[i, d]) for d in np.flatnonzero(per[i])} for i in range(len(names))
    }
    audit.total_rows = int(ts.size)
    audit.first, audit.last = _iso(int(ts.min())), _iso(int(ts.max()))

    # sampling interval and gaps, per symbol
    positive = same & (steps > 0)
    interval = np.zeros(len(names))
    for i in range(len(names)):
        st = steps[positive & (sym[1:] == i)]
        interval[i] = float(np.median(st)) if st.size else 0.0
    audit.interval_s = {symbol_names[i]: float(interval[i] / 1000.0) for i in range(len(names))}
    limit = gap_factor * interval[sym[1:]]
    is_gap = same & (interval[sym[1:]] > 0) & (steps > limit)
    where = np.flatnonzero(is_gap)
    audit.gap_count = int(where.size)
    if where.size:
        biggest = where[np.argsort(steps[where], kind="stable")[::-1][:max_gaps]]
        audit.gaps = [
            Gap(symbol_names[int(sym[k])], int(ts[k]), int(ts[k + 1]), interval[int(sym[k])] / 1000.0) for k in biggest
        ]

    # labels
    for h, d in dirs.items():
        cls = np.where(d < 0, _UNLABELLED, d).astype(np.int64)
        audit.label_coverage[h] = float(np.count_nonzero(d >= 0) / d.size)
        counts = np.bincount((day - day0) * 4 + cls, minlength=ndays * 4).reshape(ndays, 4)
        audit.class_balance[h] = {day_names[k]: [int(x) for x in counts[k]] for k in present_days}
    return audit
