"""Read what older bots wrote: legacy batches whose form differs from today's writer.

``read_interpreted(ref)`` first tries the strict reader (``legacy_format.read_batch``). When
that refuses a batch, the batch is read again, accepting each form of a field that has one
unambiguous meaning, and every interpretation made is returned as one line of text:

* ``feature_version`` as a string or number (``"1"``, ``1.0``): read as the integer it
  names; the original is kept as text in the interpretations;
* ``timestamps`` in seconds, milliseconds, microseconds or nanoseconds (told apart by
  magnitude: one unit for the whole batch) or ISO 8601 strings; every one must fall on the
  date in the file name;
* ``feature_names`` absent while the array has exactly 110 columns: the canonical names in
  order, recorded as assumed;
* ``feature_names`` other than ours, only with an explicit name map (``load_name_map``, the
  command line's ``--map NAMES.json``): each name is renamed through the map and, when the
  result is exactly our 110 names in any order, the columns are reordered to the canonical
  order by name (values unchanged); the renames used are kept in the metadata under
  ``NAME_MAP_KEY`` and listed in the interpretations;
* float64 arrays: converted to float32 when every value is finite and within float32 range
  (the conversion then changes each value by at most float32 rounding);
* label rows with missing label keys or NaN: null labels; label rows without timestamps:
  the metadata's;
* ``created_at`` or ``source`` absent: the batch's last timestamp and ``legacy``.

What has no unambiguous reading is refused with ``LegacyFormatError`` naming the file:
other feature names (listed as missing / unknown, after the map when one is given), disagreeing counts, pickled or
truncated arrays, other shapes, timestamps off the file's date or of mixed units.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import numpy as np

from backend.contracts.labels import DIRECTION_COLUMNS, MOVEMENT_COLUMNS
from backend.ml_engine.feature_store.feature_schema import FEATURE_COUNT, FEATURE_NAMES
from backend.ml_engine.feature_store.legacy_format import (
    DAY_MS,
    LegacyBatch,
    LegacyBatchRef,
    LegacyFormatError,
    _read_npy_header,
    atomic,
    parse_created_at,
    parse_json_bounded,
    read_batch,
)

#: key of the interpreted metadata holding the renames ``{legacy name: our name}`` a map applied
NAME_MAP_KEY = "feature_name_map"
#: a name map file is a list of at most a few hundred names: far below the batch files' bound
MAX_NAME_MAP_BYTES = 1024 * 1024


class NameMapError(ValueError):
    """A feature name map file that cannot be used; the message names the file and the reason."""


def load_name_map(path) -> dict[str, str]:
    """The feature name map in ``path``: a JSON object ``{"legacy name": "our name", ...}``.

    Every target must be one of our feature names and no two sources may name the same
    target; the file is bounded in size and depth like the batch files. Raises
    ``NameMapError`` (naming the file) otherwise.
    """
    try:
        size = path.stat().st_size
        if size > MAX_NAME_MAP_BYTES:
            raise NameMapError(f"{path}: {size:,} bytes, more than the {MAX_NAME_MAP_BYTES:,} a feature name map can hold")
        raw = path.read_bytes()
    except FileNotFoundError:
        raise NameMapError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise NameMapError(f"{path}: is a folder, not a JSON file") from None
    except OSError as exc:
        raise NameMapError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        value = parse_json_bounded(raw)
    except UnicodeDecodeError as exc:
        raise NameMapError(f"{path}: not UTF-8 text: {exc}") from None
    except ValueError as exc:
        raise NameMapError(f"{path}: invalid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise NameMapError(
            f"{path}: expected a JSON object {{\"legacy name\": \"our name\", ...}}, got a JSON {type(value).__name__}"
        )
    ours = set(FEATURE_NAMES)
    by_target: dict[str, str] = {}
    for source, target in value.items():
        if not source:
            raise NameMapError(f"{path}: an empty legacy name (\"\") is mapped to {target!r}")
        if not isinstance(target, str):
            raise NameMapError(f"{path}: {source!r} is mapped to {target!r}, expected one of our feature names (text)")
        if target not in ours:
            raise NameMapError(f"{path}: {source!r} is mapped to {target!r}, which is not one of our {FEATURE_COUNT} feature names")
        if target in by_target:
            raise NameMapError(f"{path}: {by_target[target]!r} and {source!r} are both mapped to {target!r}")
        by_target[target] = source
    return dict(value)


#: magnitude of "now" in each unit (ms since epoch ~1.7e12): the unit whose range holds the median
_UNITS = (("s", 1e9, 1e10, 1000.0), ("ms", 1e12, 1e13, 1.0), ("us", 1e15, 1e16, 1e-3), ("ns", 1e18, 1e19, 1e-6))
_F32_MAX = float(np.finfo(np.float32).max)


def read_interpreted(
    ref: LegacyBatchRef, *, strict: bool = False, name_map: dict[str, str] | None = None
) -> tuple[LegacyBatch, list[str]]:
    """The batch and the interpretations made to read it (empty when today's reader accepts it).

    ``name_map`` (from ``load_name_map``): renames applied to a batch whose feature names
    differ from ours; unused with ``strict`` and for batches today's reader accepts.
    Raises ``LegacyFormatError`` naming the file when the batch cannot be read unambiguously
    (or, with ``strict``, when today's reader refuses it).
    """
    try:
        return read_batch(ref), []
    except LegacyFormatError:
        if strict:
            raise
    notes: list[str] = []
    features = _features(ref, notes)
    n = features.shape[0]
    meta, meta_stat = _json(ref.metadata_path, "metadata", notes)
    if not isinstance(meta, dict):
        raise LegacyFormatError(ref.metadata_path, "metadata is not a JSON object")
    _check_identity(ref, meta)
    count = meta.get("sample_count", n)
    if not _int_like(count) or int(count) != n:
        raise LegacyFormatError(ref.metadata_path, f"sample_count={count!r} but the features have {n} rows")
    order, renames = _check_names(ref, meta, notes, name_map)
    if order is not None:
        features = np.ascontiguousarray(features[:, order])
    version = _version(ref, meta, notes)
    rows, labels_stat = _json(ref.labels_path, "labels", notes)
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise LegacyFormatError(ref.labels_path, f"expected a JSON list of {n} label objects")
    if len(rows) != n:
        raise LegacyFormatError(ref.labels_path, f"{len(rows)} label entries but the batch has {n} samples")
    stamps = meta.get("timestamps")
    if stamps is None:
        stamps = [r.get("timestamp") for r in rows]
        notes.append("metadata has no timestamps: taken from the labels file")
    ts = _timestamps(ref, ref.metadata_path, stamps, n, notes)
    if all("timestamp" in r for r in rows):
        label_ts = _timestamps(ref, ref.labels_path, [r["timestamp"] for r in rows], n, [])
        if not np.array_equal(label_ts, ts):
            i = int(np.flatnonzero(label_ts != ts)[0])
            raise LegacyFormatError(ref.labels_path, f"entry {i}: timestamp differs from the metadata's")
    mids = np.array([_finite(r.get("current_mid_price")) for r in rows], dtype=np.float64)
    if np.isnan(mids).any() or (mids <= 0).any():
        i = int(np.flatnonzero(~(mids > 0))[0])
        raise LegacyFormatError(ref.labels_path, f"entry {i}: current_mid_price missing or not a positive number")
    labels = _labels(ref, rows, notes)
    clean = dict(meta)
    clean["feature_version"] = version
    clean["feature_names"] = list(FEATURE_NAMES)
    if renames is not None:
        clean[NAME_MAP_KEY] = renames
    clean["timestamps"] = ts.tolist()
    if parse_created_at(meta.get("created_at")) is None:
        clean["created_at"] = dt.datetime.fromtimestamp(int(ts.max()) / 1000, dt.timezone.utc).isoformat()
        notes.append(f"created_at {meta.get('created_at')!r} unusable: collected_at set to the batch's last timestamp")
    if not isinstance(meta.get("source"), str) or not meta.get("source"):
        clean["source"] = "legacy"
        notes.append("source absent: 'legacy'")
    batch = LegacyBatch(ref, features, labels, clean, ts, mids, labels_stat, meta_stat)
    return batch, notes


def _features(ref: LegacyBatchRef, notes: list[str]) -> np.ndarray:
    path = ref.features_path
    shape, _fortran, dtype, offset = _read_npy_header(path)
    if dtype.hasobject:
        raise LegacyFormatError(path, "contains a pickled object array; refused (allow_pickle=False)")
    if dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise LegacyFormatError(path, f"dtype {dtype}, expected float32 (or float64)")
    if len(shape) != 2 or shape[1] != FEATURE_COUNT:
        raise LegacyFormatError(path, f"shape {shape}, expected (n, {FEATURE_COUNT})")
    expected = offset + shape[0] * shape[1] * dtype.itemsize
    size = path.stat().st_size
    if size != expected:
        raise LegacyFormatError(path, f"{size} bytes, expected {expected} for shape {shape} (truncated or padded)")
    arr = np.load(path, allow_pickle=False)
    if not np.isfinite(arr).all():
        raise LegacyFormatError(path, "non-finite feature values")
    if arr.dtype == np.float64:
        if (np.abs(arr) > _F32_MAX).any():
            raise LegacyFormatError(path, "float64 values beyond float32 range; cannot be stored as float32")
        out = arr.astype(np.float32)
        worst = float(np.max(np.abs(out.astype(np.float64) - arr), initial=0.0))
        notes.append(f"features float64 converted to float32 (largest change {worst:.3g}, float32 rounding)")
        return out
    return arr


def _json(path, what: str, notes: list[str]) -> tuple[Any, tuple[int, int]]:
    try:
        stat = atomic.file_stat(path)
        raw = path.read_bytes()
    except FileNotFoundError:
        raise LegacyFormatError(path, f"{what} file missing") from None
    except OSError as exc:
        raise LegacyFormatError(path, f"cannot read {what} file: {exc}") from None
    nan_seen: list[str] = []

    def constant(token: str) -> float:
        nan_seen.append(token)
        return float("nan")

    try:
        value = parse_json_bounded(raw, parse_constant=constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise LegacyFormatError(path, f"invalid JSON in {what} file: {exc}") from None
    if nan_seen:
        notes.append(f"{what} file holds {len(nan_seen)} NaN/Infinity value(s): read as null")
    return value, stat


def _int_like(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    if isinstance(value, float):
        return math.isfinite(value) and value.is_integer()
    if isinstance(value, str):
        try:
            return float(value.strip()).is_integer()
        except ValueError:
            return False
    return False


def _check_identity(ref: LegacyBatchRef, meta: dict) -> None:
    for key, expected in (("symbol", ref.symbol), ("date", ref.date), ("batch_number", ref.number)):
        value = meta.get(key)
        if value is None:
            continue
        same = int(float(value)) == expected if key == "batch_number" and _int_like(value) else str(value) == str(expected)
        if not same:
            raise LegacyFormatError(ref.metadata_path, f"metadata {key}={value!r} but the file name/folder says {expected!r}")
    count = meta.get("feature_count", FEATURE_COUNT)
    if not _int_like(count) or int(float(count)) != FEATURE_COUNT:
        raise LegacyFormatError(ref.metadata_path, f"feature_count={count!r}, expected {FEATURE_COUNT}")


def _listed(names: list[str]) -> str:
    return f"{names[:10]}{' ...' if len(names) > 10 else ''}"


def _check_names(
    ref: LegacyBatchRef, meta: dict, notes: list[str], name_map: dict[str, str] | None
) -> tuple[np.ndarray | None, dict[str, str] | None]:
    """Check the batch's feature names; with a map, the column order that gives our canonical
    order and the renames used (``(None, None)`` when the names are already ours)."""
    names = meta.get("feature_names")
    if names is None:
        notes.append(f"feature_names absent: assumed the {FEATURE_COUNT} canonical names in canonical order")
        return None, None
    if names == list(FEATURE_NAMES):
        return None, None
    if not isinstance(names, list) or not all(isinstance(x, str) for x in names):
        raise LegacyFormatError(ref.metadata_path, "feature_names is not a list of names")
    if len(names) != FEATURE_COUNT:
        raise LegacyFormatError(ref.metadata_path, f"{len(names)} feature_names but the features have {FEATURE_COUNT} columns")
    renamed = names if name_map is None else [name_map.get(x, x) for x in names]
    missing = [x for x in FEATURE_NAMES if x not in renamed]
    unknown = [x for x in renamed if x not in FEATURE_NAMES]
    after = "" if name_map is None else " after the --map renames"
    if name_map is None:
        if not missing and not unknown:
            raise LegacyFormatError(
                ref.metadata_path,
                "feature_names are in another order than the schema's canonical order (--map with an empty object {} "
                "reorders columns by name)",
            )
        raise LegacyFormatError(
            ref.metadata_path,
            f"feature_names differ from the schema: missing {_listed(missing)}, unknown {_listed(unknown)} "
            "(--map NAMES.json renames them explicitly)",
        )
    if missing or unknown:
        raise LegacyFormatError(
            ref.metadata_path,
            f"feature_names differ from the schema{after}: missing {_listed(missing)}, unknown {_listed(unknown)}",
        )
    position = {name: i for i, name in enumerate(renamed)}
    if len(position) != FEATURE_COUNT:  # cannot happen with no missing names and 110 entries; kept as a guard
        raise LegacyFormatError(ref.metadata_path, f"feature_names{after} repeat a name")
    order = np.array([position[name] for name in FEATURE_NAMES], dtype=np.intp)
    renames = {old: new for old, new in zip(names, renamed) if old != new}
    moved = int((order != np.arange(FEATURE_COUNT)).sum())
    notes.append(
        f"feature_names renamed through --map ({len(renames)} renamed: "
        + (", ".join(f"{a!r}->{b!r}" for a, b in list(renames.items())[:10]) or "none")
        + (" ..., all recorded in the file's metadata" if len(renames) > 10 else "")
        + f"); {moved} column(s) reordered to the canonical order by name"
    )
    return order, renames


def _version(ref: LegacyBatchRef, meta: dict, notes: list[str]) -> int:
    value = meta.get("feature_version")
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if not _int_like(value):
        raise LegacyFormatError(ref.metadata_path, f"feature_version={value!r} names no integer version")
    notes.append(f"feature_version {value!r} ({type(value).__name__}) read as {int(float(value))}")
    return int(float(value))


def _timestamps(ref: LegacyBatchRef, path, stamps: Any, n: int, notes: list[str]) -> np.ndarray:
    if not isinstance(stamps, list) or len(stamps) != n:
        raise LegacyFormatError(path, f"expected {n} timestamps, got {len(stamps) if isinstance(stamps, list) else type(stamps).__name__}")
    if n and all(isinstance(s, str) for s in stamps):
        try:
            parsed = [dt.datetime.fromisoformat(s.replace("Z", "+00:00")) for s in stamps]
        except ValueError as exc:
            raise LegacyFormatError(path, f"timestamps are neither numbers nor ISO 8601: {exc}") from None
        naive = any(p.tzinfo is None for p in parsed)
        ms = np.array([int((p if p.tzinfo else p.replace(tzinfo=dt.timezone.utc)).timestamp() * 1000) for p in parsed], np.int64)
        notes.append("timestamps as ISO 8601 text" + (" (no zone: read as UTC)" if naive else ""))
        return _on_date(ref, path, ms)
    if not all(isinstance(s, (int, float)) and not isinstance(s, bool) and math.isfinite(s) for s in stamps):
        raise LegacyFormatError(path, "timestamps must all be numbers or all ISO 8601 text")
    values = np.asarray(stamps, dtype=np.float64)
    if values.size == 0:
        return values.astype(np.int64)
    exact = np.asarray(stamps, dtype=np.int64) if all(isinstance(s, int) for s in stamps) else None
    for unit, lo, hi, to_ms in _UNITS:
        if ((values >= lo) & (values < hi)).all():
            if to_ms >= 1:
                ms = exact * int(to_ms) if exact is not None else np.round(values * to_ms).astype(np.int64)
            else:
                div = int(round(1 / to_ms))
                ms = exact // div if exact is not None else np.floor(values / div).astype(np.int64)
            if unit != "ms":
                notes.append(f"timestamps in {unit} (by magnitude), converted to ms")
            return _on_date(ref, path, ms)
    raise LegacyFormatError(path, "timestamps are of no single unit (s, ms, us, ns) by magnitude")


def _on_date(ref: LegacyBatchRef, path, ms: np.ndarray) -> np.ndarray:
    day = (dt.date.fromisoformat(ref.date) - dt.date(1970, 1, 1)).days
    if ms.size and ((ms // DAY_MS != day).any()):
        raise LegacyFormatError(path, f"timestamps fall outside the batch date {ref.date} (UTC)")
    return ms


def _finite(value: Any) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return float("nan")


def _labels(ref: LegacyBatchRef, rows: list[dict], notes: list[str]) -> list[dict]:
    out, missing = [], 0
    for i, row in enumerate(rows):
        clean: dict[str, Any] = {}
        for key in DIRECTION_COLUMNS:
            v = row.get(key)
            missing += key not in row
            if isinstance(v, float) and math.isnan(v):
                v = None
            if v is not None and not (_int_like(v) and int(float(v)) in (0, 1, 2)):
                raise LegacyFormatError(ref.labels_path, f"entry {i}: {key}={v!r}, expected 0, 1, 2 or null")
            clean[key] = None if v is None else int(float(v))
        for key in MOVEMENT_COLUMNS:
            v = row.get(key)
            missing += key not in row
            if v is not None and not isinstance(v, (int, float)) or isinstance(v, bool):
                raise LegacyFormatError(ref.labels_path, f"entry {i}: {key}={v!r}, expected a number or null")
            clean[key] = None if v is None or not math.isfinite(v) else float(v)
        out.append(clean)
    if missing:
        notes.append(f"labels file lacks {missing} label key(s): read as null")
    return out
