"""The legacy training-data format (DESIGN §3.3), kept for compatibility.

Layout under ``<DATA_DIR>/ml_training``::

    <SYMBOL>/features/YYYY-MM-DD_batch_NNNN.npy    float32 (n, 110), never pickled
    <SYMBOL>/labels/YYYY-MM-DD_batch_NNNN.json     list of n dicts: six label keys (null until
                                                   labelled), current_mid_price, timestamp (ms)
    <SYMBOL>/metadata/YYYY-MM-DD_batch_NNNN.json   symbol, batch_number, date, sample_count,
                                                   feature_count, feature_names, feature_version,
                                                   timestamps (ms), source, created_at [, flush_id]
                                                   [, lobbot.label_provenance]

The metadata file is written last and is the commit marker of a batch: a features
or labels file without it is the remains of an interrupted write. Batch numbers are
per symbol, continue after restarts (max existing + 1) and never reuse a name, so
nothing is ever overwritten. The reader is strict: every inconsistency raises
``LegacyFormatError`` naming the file and the problem.

The labeller replaces a labels file in place and records how the labels were made
(``backend.contracts.labels.LABEL_PROVENANCE_KEY``) as an extra metadata key; older
readers, which check only the keys above, still read such batches.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import math
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from backend.contracts.labels import DIRECTION_COLUMNS, LABEL_COLUMNS, MOVEMENT_COLUMNS
from backend.ml_engine.feature_store import atomic
from backend.ml_engine.feature_store.feature_schema import FEATURE_COUNT, FEATURE_NAMES, FEATURE_SCHEMA_VERSION
from backend.symbols import InvalidSymbolError, validate_symbol

DAY_MS = 86_400_000
FEATURES_DIR, LABELS_DIR, METADATA_DIR = "features", "labels", "metadata"
BATCH_RE = re.compile(r"^(\d{4}-\d{2}-\d{2})_batch_(\d{4,})\Z")
LABEL_KEYS: tuple[str, ...] = LABEL_COLUMNS
ROW_KEYS: tuple[str, ...] = LABEL_KEYS + ("current_mid_price", "timestamp")
METADATA_KEYS: tuple[str, ...] = (
    "symbol",
    "batch_number",
    "date",
    "sample_count",
    "feature_count",
    "feature_names",
    "feature_version",
    "timestamps",
    "source",
    "created_at",
)


class LegacyFormatError(ValueError):
    """A legacy batch file is missing, unreadable or inconsistent; the message names the file."""

    def __init__(self, path: Path | str, problem: str):
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


def batch_stem(date: dt.date | str, number: int) -> str:
    """File name stem of batch ``number`` of ``date``: ``YYYY-MM-DD_batch_NNNN``."""
    return f"{date if isinstance(date, str) else date.isoformat()}_batch_{number:04d}"


@dataclass(frozen=True)
class LegacyBatchRef:
    """Where one batch lives; the files need not exist (the reader checks)."""

    root: Path
    symbol: str
    date: str
    number: int

    @property
    def stem(self) -> str:
        """``YYYY-MM-DD_batch_NNNN``."""
        return batch_stem(self.date, self.number)

    @property
    def features_path(self) -> Path:
        """``<root>/<SYMBOL>/features/<stem>.npy``."""
        return self.root / self.symbol / FEATURES_DIR / f"{self.stem}.npy"

    @property
    def labels_path(self) -> Path:
        """``<root>/<SYMBOL>/labels/<stem>.json``."""
        return self.root / self.symbol / LABELS_DIR / f"{self.stem}.json"

    @property
    def metadata_path(self) -> Path:
        """``<root>/<SYMBOL>/metadata/<stem>.json``."""
        return self.root / self.symbol / METADATA_DIR / f"{self.stem}.json"

    @classmethod
    def from_features_path(cls, features_path: Path) -> "LegacyBatchRef":
        """The batch a features path names; raises ``LegacyFormatError`` for a path that is not one."""
        features_path = Path(features_path)
        m = BATCH_RE.match(features_path.stem)
        if features_path.suffix != ".npy" or not m:
            raise LegacyFormatError(features_path, "not a legacy batch name (expected YYYY-MM-DD_batch_NNNN.npy)")
        if features_path.parent.name != FEATURES_DIR:
            raise LegacyFormatError(features_path, f"expected the file inside a '{FEATURES_DIR}/' folder")
        symbol = features_path.parent.parent.name
        try:
            validate_symbol(symbol)
        except InvalidSymbolError as exc:
            raise LegacyFormatError(features_path, str(exc)) from None
        return cls(features_path.parent.parent.parent, symbol, m.group(1), int(m.group(2)))


@dataclass
class LegacyBatch:
    """One batch as read and checked by ``read_batch``.

    ``features``: float32 (n, 110), None when read with ``load_features=False``;
    ``labels``: the n label rows; ``metadata``: the metadata object; ``timestamps_ms``:
    int64 (n,); ``mid_prices``: float64 (n,); ``labels_stat`` / ``metadata_stat``:
    ``(size, mtime_ns)`` of those files as read, for refusing stale rewrites.
    """

    ref: LegacyBatchRef
    features: np.ndarray | None
    labels: list[dict[str, Any]]
    metadata: dict[str, Any]
    timestamps_ms: np.ndarray
    mid_prices: np.ndarray
    labels_stat: tuple[int, int] = field(default=(0, 0))
    metadata_stat: tuple[int, int] = field(default=(0, 0))

    @property
    def sample_count(self) -> int:
        """Samples in the batch (n)."""
        return int(self.timestamps_ms.size)


# --- writing -----------------------------------------------------------------------------
def _utc_day(ts_ms: int) -> str:
    return (dt.date(1970, 1, 1) + dt.timedelta(days=int(ts_ms) // DAY_MS)).isoformat()


def _json_number(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _json_direction(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    out = int(value)
    if out not in (0, 1, 2):
        raise ValueError(f"direction label must be 0, 1, 2 or null, got {value!r}")
    return out


def label_rows(
    timestamps_ms: np.ndarray, mid_prices: np.ndarray, labels: Sequence[dict[str, Any]] | None
) -> list[dict[str, Any]]:
    """The labels-file rows: the six label keys (null unless given), current_mid_price, timestamp."""
    n = len(timestamps_ms)
    if labels is not None and len(labels) != n:
        raise ValueError(f"labels has {len(labels)} entries for {n} samples")
    rows = []
    ts_list = np.asarray(timestamps_ms, dtype=np.int64).tolist()
    mid_list = np.asarray(mid_prices, dtype=np.float64).tolist()
    for i in range(n):
        given = labels[i] if labels is not None else {}
        row: dict[str, Any] = {}
        for key in DIRECTION_COLUMNS:
            row[key] = _json_direction(given.get(key))
        for key in MOVEMENT_COLUMNS:
            row[key] = _json_number(given.get(key))
        row["current_mid_price"] = mid_list[i]
        row["timestamp"] = ts_list[i]
        rows.append({k: row[k] for k in ROW_KEYS})
    return rows


def _dump_json(obj: Any) -> bytes:
    # allow_nan=False: NaN is not JSON and other readers would choke on it.
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode("utf-8")


def _npy_bytes(features: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(features, dtype=np.float32), allow_pickle=False)
    return buf.getvalue()


class LegacyBatchWriter:
    """Writes legacy batches; safe to call from several threads.

    ``write_batch`` with a ``flush_id`` is idempotent: a (flush_id, date) already
    committed by an earlier call or an earlier process is not written again, which
    lets crash recovery re-flush the same samples safely.
    """

    def __init__(self, root: Path, *, fsync: bool = True):
        self.root = Path(root)
        self.fsync = fsync
        self._lock = threading.Lock()
        self._symbol_locks: dict[str, threading.Lock] = {}
        self._next_number: dict[str, int] = {}
        self._flush_ids: dict[str, set[tuple[str, str]]] = {}

    def _symbol_lock(self, symbol: str) -> threading.Lock:
        with self._lock:
            return self._symbol_locks.setdefault(symbol, threading.Lock())

    def _scan(self, symbol: str) -> None:
        """Learn the highest batch number and the committed flush ids of ``symbol`` from disk."""
        base = self.root / symbol
        highest = 0
        flush_ids: set[tuple[str, str]] = set()
        for sub in (FEATURES_DIR, LABELS_DIR, METADATA_DIR):
            folder = base / sub
            if not folder.is_dir():
                continue
            for path in folder.iterdir():
                m = BATCH_RE.match(path.stem)
                if not m or path.name.startswith("."):
                    continue
                highest = max(highest, int(m.group(2)))
                if sub == METADATA_DIR and path.suffix == ".json":
                    flush_id = _read_flush_id(path)
                    if flush_id is not None:
                        flush_ids.add((flush_id, m.group(1)))
        self._next_number[symbol] = highest + 1
        self._flush_ids[symbol] = flush_ids
        self._quarantine_uncommitted(symbol)

    def _quarantine_uncommitted(self, symbol: str) -> None:
        """Move features/labels files without metadata (a write killed mid-batch) out of the way.

        Metadata is the commit marker, so such files were never part of the data set; the
        collector re-writes their rows from its spool under a new batch number. They are
        kept in ``<SYMBOL>/.incomplete/`` rather than deleted, and their numbers stay used.
        """
        base = self.root / symbol
        committed = {p.stem for p in (base / METADATA_DIR).glob("*.json")} if (base / METADATA_DIR).is_dir() else set()
        for sub in (FEATURES_DIR, LABELS_DIR):
            folder = base / sub
            if not folder.is_dir():
                continue
            for path in folder.iterdir():
                if path.name.startswith(".") or not BATCH_RE.match(path.stem) or path.stem in committed:
                    continue
                target = base / ".incomplete" / sub / path.name
                target.parent.mkdir(parents=True, exist_ok=True)
                path.replace(target)

    def write_batch(
        self,
        symbol: str,
        features: np.ndarray,
        timestamps_ms: np.ndarray,
        mid_prices: np.ndarray,
        source: str,
        labels: list[dict] | None = None,
        flush_id: str | None = None,
    ) -> list[Path]:
        """Write the samples as one batch per UTC date; returns the metadata paths written."""
        symbol = validate_symbol(symbol)
        features = np.asarray(features)
        timestamps_ms = np.asarray(timestamps_ms)
        mid_prices = np.asarray(mid_prices, dtype=np.float64)
        n = features.shape[0] if features.ndim >= 1 else 0
        if features.ndim != 2 or features.shape[1] != FEATURE_COUNT:
            raise ValueError(f"features must have shape (n, {FEATURE_COUNT}), got {features.shape}")
        if features.dtype.kind != "f":
            raise ValueError(f"features must be float32, got {features.dtype}")
        if timestamps_ms.shape != (n,) or mid_prices.shape != (n,):
            raise ValueError(
                f"{n} feature rows but {timestamps_ms.shape} timestamps and {mid_prices.shape} mid prices"
            )
        if timestamps_ms.dtype.kind not in "iu":
            raise ValueError(f"timestamps_ms must be integer milliseconds, got {timestamps_ms.dtype}")
        if labels is not None and len(labels) != n:
            raise ValueError(f"labels has {len(labels)} entries for {n} samples")
        if not isinstance(source, str) or not source:
            raise ValueError("source must be a non-empty string")
        if n == 0:
            return []
        features32 = features.astype(np.float32, copy=False)
        if not np.isfinite(features32).all():
            bad = np.argwhere(~np.isfinite(features32))[0]
            raise ValueError(f"non-finite feature value at row {bad[0]}, column {FEATURE_NAMES[bad[1]]}")
        if not (np.isfinite(mid_prices).all() and (mid_prices > 0).all()):
            raise ValueError("mid prices must be finite and positive")
        timestamps_ms = timestamps_ms.astype(np.int64, copy=False)

        days = timestamps_ms // DAY_MS
        written: list[Path] = []
        with self._symbol_lock(symbol):
            if symbol not in self._next_number:
                self._scan(symbol)
            for day in np.unique(days):
                idx = np.flatnonzero(days == day)
                date = _utc_day(int(day) * DAY_MS)
                if flush_id is not None and (flush_id, date) in self._flush_ids[symbol]:
                    continue
                part_labels = [labels[i] for i in idx] if labels is not None else None
                path = self._write_one(
                    symbol, date, features32[idx], timestamps_ms[idx], mid_prices[idx], source, part_labels, flush_id
                )
                written.append(path)
                if flush_id is not None:
                    self._flush_ids[symbol].add((flush_id, date))
        return written

    def _write_one(
        self,
        symbol: str,
        date: str,
        features: np.ndarray,
        ts: np.ndarray,
        mids: np.ndarray,
        source: str,
        labels: list[dict] | None,
        flush_id: str | None,
    ) -> Path:
        npy = _npy_bytes(features)
        rows = _dump_json(label_rows(ts, mids, labels))
        while True:
            ref = LegacyBatchRef(self.root, symbol, date, self._next_number[symbol])
            self._next_number[symbol] += 1
            # write_new refuses an existing name (another process may share the folder): take the next number.
            if not atomic.write_new(ref.features_path, lambda fh: fh.write(npy), fsync=self.fsync):
                continue
            if not atomic.write_new(ref.labels_path, lambda fh: fh.write(rows), fsync=self.fsync):
                continue
            meta: dict[str, Any] = {
                "symbol": symbol,
                "batch_number": ref.number,
                "date": date,
                "sample_count": int(ts.size),
                "feature_count": FEATURE_COUNT,
                "feature_names": list(FEATURE_NAMES),
                "feature_version": FEATURE_SCHEMA_VERSION,
                "timestamps": ts.tolist(),
                "source": source,
                "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds"),
            }
            if flush_id is not None:
                meta["flush_id"] = flush_id
            payload = _dump_json(meta)
            if not atomic.write_new(ref.metadata_path, lambda fh: fh.write(payload), fsync=self.fsync):
                continue
            return ref.metadata_path


def _read_flush_id(path: Path) -> str | None:
    try:
        meta = _read_json_bounded(path)
    except (OSError, ValueError):  # unreadable metadata: the reader names it; the writer carries on
        return None
    value = meta.get("flush_id") if isinstance(meta, dict) else None
    return value if isinstance(value, str) else None


# --- listing -----------------------------------------------------------------------------
def list_symbols(root: Path) -> tuple[list[str], list[str]]:
    """(valid symbol folders, ignored folder names) under the legacy root, sorted."""
    root = Path(root)
    if not root.is_dir():
        return [], []
    good, bad = [], []
    for entry in sorted(root.iterdir()):
        if not entry.is_dir() or entry.name.startswith("."):
            continue
        try:
            good.append(validate_symbol(entry.name))
        except InvalidSymbolError:
            bad.append(entry.name)
    return good, bad


def list_batches(root: Path, symbol: str) -> list[LegacyBatchRef]:
    """Every batch of ``symbol`` that has a features or a metadata file, ordered by number.

    Half-present batches are listed too, so that a reader reports them instead of
    silently ignoring data.
    """
    symbol = validate_symbol(symbol)
    base = Path(root) / symbol
    found: set[tuple[int, str]] = set()
    for sub, suffix in ((FEATURES_DIR, ".npy"), (METADATA_DIR, ".json")):
        folder = base / sub
        if not folder.is_dir():
            continue
        for path in folder.iterdir():
            m = BATCH_RE.match(path.stem)
            if m and path.suffix == suffix and not path.name.startswith("."):
                found.add((int(m.group(2)), m.group(1)))
    return [LegacyBatchRef(Path(root), symbol, date, number) for number, date in sorted(found)]


# --- reading -----------------------------------------------------------------------------
def _read_npy_header(path: Path) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """(shape, fortran_order, dtype, data offset) from an .npy header, without loading data."""
    try:
        with open(path, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
            else:
                raise LegacyFormatError(path, f"unsupported .npy format version {version}")
            return shape, fortran, dtype, fh.tell()
    except LegacyFormatError:
        raise
    except FileNotFoundError:
        raise LegacyFormatError(path, "features file missing") from None
    except (ValueError, OSError, EOFError) as exc:
        raise LegacyFormatError(path, f"not a valid .npy file (truncated or corrupt header): {exc}") from None


def check_features_file(path: Path) -> tuple[int, int]:
    """Validate an .npy features file's header and size; returns (rows, data offset)."""
    shape, _fortran, dtype, offset = _read_npy_header(path)
    if dtype.hasobject:
        raise LegacyFormatError(path, "contains a pickled object array; refused (allow_pickle=False)")
    if dtype != np.dtype(np.float32):
        raise LegacyFormatError(path, f"dtype {dtype}, expected float32")
    if len(shape) != 2 or shape[1] != FEATURE_COUNT:
        raise LegacyFormatError(path, f"shape {shape}, expected (n, {FEATURE_COUNT})")
    expected = offset + shape[0] * shape[1] * dtype.itemsize
    size = path.stat().st_size
    if size < expected:
        raise LegacyFormatError(path, f"truncated: {size} bytes, expected {expected} for shape {shape}")
    if size > expected:
        raise LegacyFormatError(path, f"{size - expected} unexpected trailing bytes after the array")
    return shape[0], offset


def _load_features(path: Path) -> np.ndarray:
    rows, _ = check_features_file(path)
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise LegacyFormatError(path, f"cannot load array: {exc}") from None
    if arr.shape != (rows, FEATURE_COUNT):
        raise LegacyFormatError(path, f"shape {arr.shape}, expected ({rows}, {FEATURE_COUNT})")
    finite = np.isfinite(arr)
    if not finite.all():
        row, col = np.argwhere(~finite)[0]
        count = int(arr.size - np.count_nonzero(finite))
        raise LegacyFormatError(
            path, f"{count} non-finite feature values, first at row {row}, column {FEATURE_NAMES[col]}"
        )
    return arr


def _reject_constant(token: str) -> Any:
    raise ValueError(f"{token} is not valid JSON")


#: a batch of 2,000 samples writes ~0.5 MB of labels; anything past this is not ours
MAX_JSON_BYTES = 64 * 1024 * 1024


class JsonLimitError(ValueError):
    """A JSON file larger or more deeply nested than a legacy batch file can be."""


def parse_json_bounded(raw: bytes, *, parse_constant=None) -> Any:
    """``json.loads`` bounded in size (``MAX_JSON_BYTES``) and depth.

    Python's parser recurses once per nesting level; a file nested 200,000 deep would end
    in ``RecursionError``. That is caught and reported as ``JsonLimitError`` (a
    ``ValueError``), so every caller that handles bad JSON handles this too.
    """
    if len(raw) > MAX_JSON_BYTES:
        raise JsonLimitError(f"{len(raw):,} bytes, more than the {MAX_JSON_BYTES:,} a legacy batch file can hold")
    try:
        return json.loads(raw, parse_constant=parse_constant)
    except RecursionError:
        raise JsonLimitError("nested too deeply to be a legacy batch file (arrays or objects inside each other)") from None


def _read_json_bounded(path: Path) -> Any:
    if path.stat().st_size > MAX_JSON_BYTES:
        raise JsonLimitError(f"{path.stat().st_size:,} bytes, more than {MAX_JSON_BYTES:,}")
    return parse_json_bounded(path.read_bytes())


def _load_json(path: Path, what: str) -> tuple[Any, tuple[int, int]]:
    try:
        stat = atomic.file_stat(path)
        if stat[0] > MAX_JSON_BYTES:
            raise LegacyFormatError(path, f"{what} file has {stat[0]:,} bytes, more than {MAX_JSON_BYTES:,}: not a legacy batch file")
        raw = path.read_bytes()
    except FileNotFoundError:
        raise LegacyFormatError(path, f"{what} file missing") from None
    except OSError as exc:
        raise LegacyFormatError(path, f"cannot read {what} file: {exc}") from None
    try:
        return parse_json_bounded(raw, parse_constant=_reject_constant), stat
    except (ValueError, UnicodeDecodeError) as exc:
        raise LegacyFormatError(path, f"invalid JSON in {what} file: {exc}") from None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_label_rows(path: Path, rows: Any, n: int) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(rows, list):
        raise LegacyFormatError(path, f"expected a JSON list of {n} label objects, got {type(rows).__name__}")
    if len(rows) != n:
        raise LegacyFormatError(path, f"{len(rows)} label entries but the batch has {n} samples")
    ts = np.empty(n, dtype=np.int64)
    mids = np.empty(n, dtype=np.float64)
    for i, row in enumerate(rows):
        # Per-row checks are unavoidable for JSON objects; they run once per batch read.
        if not isinstance(row, dict):
            raise LegacyFormatError(path, f"entry {i} is not an object")
        missing = [k for k in ROW_KEYS if k not in row]
        if missing:
            raise LegacyFormatError(path, f"entry {i} lacks keys {missing}")
        for key in DIRECTION_COLUMNS:
            v = row[key]
            if v is not None and not (_is_int(v) and v in (0, 1, 2)):
                raise LegacyFormatError(path, f"entry {i}: {key}={v!r}, expected 0, 1, 2 or null")
        for key in MOVEMENT_COLUMNS:
            v = row[key]
            if v is not None and not _is_number(v):
                raise LegacyFormatError(path, f"entry {i}: {key}={v!r}, expected a number or null")
        mid, stamp = row["current_mid_price"], row["timestamp"]
        if not _is_number(mid) or mid <= 0:
            raise LegacyFormatError(path, f"entry {i}: current_mid_price={mid!r}, expected a positive number")
        if not _is_int(stamp):
            raise LegacyFormatError(path, f"entry {i}: timestamp={stamp!r}, expected integer milliseconds")
        ts[i] = stamp
        mids[i] = mid
    return ts, mids


def parse_created_at(value: Any) -> int | None:
    """``created_at`` as ms since epoch (naive times are taken as UTC), or None if unparseable."""
    try:
        stamp = dt.datetime.fromisoformat(str(value))
    except ValueError:
        return None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=dt.timezone.utc)
    return int(stamp.timestamp() * 1000)


def _check_metadata(path: Path, meta: Any, ref: LegacyBatchRef, n: int | None) -> np.ndarray:
    if not isinstance(meta, dict):
        raise LegacyFormatError(path, "metadata is not a JSON object")
    missing = [k for k in METADATA_KEYS if k not in meta]
    if missing:
        raise LegacyFormatError(path, f"metadata lacks keys {missing}")
    checks = (
        ("symbol", ref.symbol),
        ("batch_number", ref.number),
        ("date", ref.date),
        ("feature_count", FEATURE_COUNT),
    )
    for key, expected in checks:
        if meta[key] != expected:
            raise LegacyFormatError(path, f"metadata {key}={meta[key]!r} but the file name/folder says {expected!r}")
    if n is not None and meta["sample_count"] != n:
        raise LegacyFormatError(path, f"metadata sample_count={meta['sample_count']!r} but the features have {n} rows")
    names = meta["feature_names"]
    if names != list(FEATURE_NAMES):
        if isinstance(names, list) and len(names) == FEATURE_COUNT and set(names) == set(FEATURE_NAMES):
            raise LegacyFormatError(path, "feature_names are in a different order than the schema's canonical order")
        raise LegacyFormatError(path, "feature_names differ from the 110 names of the feature schema")
    if not _is_int(meta["feature_version"]):
        raise LegacyFormatError(path, f"feature_version={meta['feature_version']!r}, expected an integer")
    if not isinstance(meta["source"], str) or not meta["source"]:
        raise LegacyFormatError(path, "source must be a non-empty string")
    if parse_created_at(meta["created_at"]) is None:
        raise LegacyFormatError(path, f"created_at={meta['created_at']!r} is not an ISO timestamp")
    stamps = meta["timestamps"]
    if not isinstance(stamps, list) or not all(_is_int(s) for s in stamps):
        raise LegacyFormatError(path, "timestamps must be a list of integer milliseconds")
    if len(stamps) != meta["sample_count"]:
        raise LegacyFormatError(path, f"{len(stamps)} timestamps but sample_count={meta['sample_count']}")
    try:
        ts = np.asarray(stamps, dtype=np.int64)
    except OverflowError:
        raise LegacyFormatError(path, "timestamps beyond 64-bit integers") from None
    day = (dt.date.fromisoformat(ref.date) - dt.date(1970, 1, 1)).days
    if ts.size and ((ts // DAY_MS) != day).any():
        raise LegacyFormatError(path, f"timestamps fall outside the batch date {ref.date} (UTC)")
    return ts


def read_batch(features_path: Path | LegacyBatchRef, *, load_features: bool = True) -> LegacyBatch:
    """Read and check one batch; raises ``LegacyFormatError`` naming the bad file.

    ``load_features=False`` checks the features file's header and size but does not
    load the array (labelling needs only labels and metadata).
    """
    ref = features_path if isinstance(features_path, LegacyBatchRef) else LegacyBatchRef.from_features_path(features_path)
    if not ref.metadata_path.exists():
        if ref.features_path.exists():
            raise LegacyFormatError(
                ref.metadata_path, "metadata file missing (the batch was never committed, or the file was deleted)"
            )
        raise LegacyFormatError(ref.features_path, "features file missing")
    if load_features:
        features = _load_features(ref.features_path)
        n = features.shape[0]
    else:
        features = None
        n, _ = check_features_file(ref.features_path)
    meta, metadata_stat = _load_json(ref.metadata_path, "metadata")
    meta_ts = _check_metadata(ref.metadata_path, meta, ref, n)
    rows, labels_stat = _load_json(ref.labels_path, "labels")
    ts, mids = _check_label_rows(ref.labels_path, rows, n)
    if not np.array_equal(ts, meta_ts):
        i = int(np.flatnonzero(ts != meta_ts)[0])
        raise LegacyFormatError(
            ref.labels_path, f"entry {i}: timestamp {ts[i]} differs from the metadata's {meta_ts[i]}"
        )
    return LegacyBatch(ref, features, rows, meta, ts, mids, labels_stat, metadata_stat)


def rewrite_labels(path: Path, rows: list[dict[str, Any]], expected_stat: tuple[int, int] | None) -> None:
    """Atomically replace a labels file; refuses (``FileChangedError``) if it changed since read."""
    payload = _dump_json(rows)
    atomic.replace_existing(Path(path), lambda fh: fh.write(payload), expected_stat=expected_stat)


def rewrite_metadata(path: Path, metadata: dict[str, Any], expected_stat: tuple[int, int] | None) -> tuple[int, int]:
    """Atomically replace a metadata file (e.g. to record label provenance); returns its new stat.

    Refuses (``FileChangedError``) if the file changed since it was read. Raises
    ``ValueError`` when a required key is missing, so a batch is never uncommitted by it.
    """
    missing = [k for k in METADATA_KEYS if k not in metadata]
    if missing:
        raise ValueError(f"{path}: metadata lacks keys {missing}; not written")
    payload = _dump_json(metadata)
    atomic.replace_existing(Path(path), lambda fh: fh.write(payload), expected_stat=expected_stat)
    return atomic.file_stat(Path(path))
