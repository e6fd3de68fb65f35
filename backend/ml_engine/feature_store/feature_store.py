"""The offline feature store: hive-partitioned parquet under ``data/feature_store/offline``.

Layout (DESIGN §3.2)::

    <root>/<group>/date=YYYY-MM-DD/features_HHMMSS_<unique>.parquet

* The partition value lives only in the folder name; files carry no ``date`` column.
* Every file of a group has exactly the group's Arrow schema (see ``feature_schema``),
  so pandas, DuckDB, polars, Spark and Feast read the store without conversion.
* Rows are split at midnight UTC by their own ``timestamp``.
* Writes are atomic and never replace a file (``atomic.write_new``); temp files start
  with ``.`` so no reader sees them.
* Float columns are written without dictionary encoding: it makes float feature files
  larger and about twice as slow to write.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import threading
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from backend.contracts.groups import RAW_EVENTS, InvalidGroupError, validate_group_name
from backend.contracts.labels import LABEL_PROVENANCE_KEY, Provenance, decode_provenance
from backend.ml_engine.feature_store import atomic
from backend.ml_engine.feature_store.feature_schema import (
    GROUP_SCHEMAS,
    SchemaValidationError,
    schema_for_group,
    validate,
)
from backend.ml_engine.feature_store.file_check import BadStoreFileWarning, FileCheck, check_file

log = logging.getLogger(__name__)

FILE_PREFIX = "features_"
DAY_MS = 86_400_000
_FILE_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,80}")
_STRING_COLUMNS = ("symbol", "source")

DateLike = str | dt.date | dt.datetime | pd.Timestamp | None
# Pre-buffering coalesces a file's column-chunk reads into few large ones: ~25 % faster
# on many small files of 100+ columns.
_PARQUET_FORMAT = ds.ParquetFileFormat(default_fragment_scan_options=ds.ParquetFragmentScanOptions(pre_buffer=True))


class FeatureStoreError(ValueError):
    """An invalid group name, file id, date or column list; the message says which."""


@dataclass(frozen=True)
class WrittenFile:
    """One file a write produced: its path, its rows, and ``created`` (False when a file
    with the same ``file_id`` had already been written, so nothing was written now)."""

    path: Path
    rows: int
    created: bool


def _check_group(group: str) -> str:
    try:
        return validate_group_name(group)
    except InvalidGroupError as exc:
        raise FeatureStoreError(str(exc)) from None


def _to_date(value: DateLike, what: str) -> dt.date | None:
    if value is None:
        return None
    if isinstance(value, pd.Timestamp):
        return value.date()
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value)[:10])
    except ValueError:
        raise FeatureStoreError(f"invalid {what} {value!r}: expected YYYY-MM-DD") from None


def partition_dir_date(name: str) -> dt.date | None:
    """The date of a ``date=YYYY-MM-DD`` folder name; None for any other name."""
    if not name.startswith("date="):
        return None
    try:
        return dt.date.fromisoformat(name[5:])
    except ValueError:
        return None


def parquet_write_options(group: str | None = None) -> dict:
    """Keyword arguments of ``pyarrow.parquet.write_table`` for every store file.

    ``raw_events`` files are zstd-compressed, their float lists stored byte-stream-split
    and their strings dictionary-encoded: they are the bulk of a raw recording.
    """
    if group == RAW_EVENTS:
        return dict(compression="zstd", compression_level=6, use_dictionary=["symbol", "venue", "source", "kind", "reason"],
                    use_byte_stream_split=["price.list.element", "size.list.element"], write_statistics=True,
                    row_group_size=65_536, coerce_timestamps="ms", allow_truncated_timestamps=True)
    return dict(
        compression="snappy",
        use_dictionary=list(_STRING_COLUMNS),
        write_statistics=True,
        # files of a multi-symbol flush are sorted by symbol: row groups of 16,384 rows
        # (~7 MB of samples) carry tight symbol min/max statistics, so one symbol's filter
        # skips most of a 500-symbol file
        row_group_size=16_384,
        # Spark and older readers want ms/us timestamps, never ns.
        coerce_timestamps="ms",
        allow_truncated_timestamps=True,
    )


def to_group_table(group: str, data: pd.DataFrame | pa.Table) -> pa.Table:
    """Normalise ``data`` to the group's exact schema (column order, dtypes, null labels).

    Raises ``SchemaValidationError`` with a readable report when the data does not fit.
    """
    schema = schema_for_group(group)
    report = validate(data, schema)
    # Label columns may be absent on write: they are filled with nulls.
    missing_required = [c for c in report.missing_columns if not schema.field(c).nullable]
    if missing_required or report.extra_columns or report.wrong_dtypes or report.non_finite or report.null_metadata or (
        schema is GROUP_SCHEMAS["training_features"] and report.feature_count != 110
    ):
        report.missing_columns = missing_required
        raise SchemaValidationError(report, where=f"feature group {group!r}")
    if isinstance(data, pa.Table) and data.schema.equals(schema, check_metadata=False):
        return data.replace_schema_metadata(schema.metadata)
    n = len(data)
    present = report_columns(data)
    arrays = []
    for field in schema:
        if field.name not in present:
            arrays.append(pa.nulls(n, type=field.type))
            continue
        arrays.append(_column_as(data, field))
    return pa.Table.from_arrays(arrays, schema=schema)


def report_columns(data) -> set[str]:
    """Column names of a pandas DataFrame or Arrow table."""
    return set(data.column_names) if isinstance(data, pa.Table) else {str(c) for c in data.columns}


def _column_as(data, field: pa.Field) -> pa.Array:
    if isinstance(data, pa.Table):
        col = data.column(field.name)
        arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    else:
        series = data[field.name]
        if pa.types.is_timestamp(field.type):
            values = pd.to_datetime(series, utc=True)
            # int64 ms since epoch avoids a pandas unit round trip
            ms = values.astype("datetime64[ms, UTC]").to_numpy(dtype="datetime64[ms]").astype(np.int64)
            return pa.array(ms, type=pa.int64()).cast(field.type)
        if pa.types.is_floating(field.type) and series.dtype.kind == "f":
            return pa.array(series.to_numpy(dtype=field.type.to_pandas_dtype(), copy=False))
        arr = pa.array(series, from_pandas=True)
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    if arr.type.equals(field.type):
        return arr
    if pa.types.is_timestamp(field.type):
        return pc.cast(arr, field.type, safe=False)
    if pa.types.is_int8(field.type) and pa.types.is_floating(arr.type):
        # nullable direction labels arriving as float with NaN
        arr = pc.if_else(pc.is_nan(arr), pa.scalar(None, arr.type), arr)
    return pc.cast(arr, field.type)


def _with_provenance(table: pa.Table, label_provenance: str | None) -> pa.Table:
    """``table`` whose schema metadata also carries the labels' provenance record (if any)."""
    if label_provenance is None:
        return table
    meta = dict(table.schema.metadata or {})
    meta[LABEL_PROVENANCE_KEY.encode()] = label_provenance.encode()
    return table.replace_schema_metadata(meta)


class FeatureStore:
    """The offline store rooted at ``root`` (``<DATA_DIR>/feature_store/offline``); see the module docstring.

    Groups are folder names (lower-case letters, digits, ``_``); dates are UTC.
    Thread-safe: writes never replace a file another writer created.
    """

    def __init__(self, root: Path):
        self.root = Path(root)

    # --- paths ---------------------------------------------------------------------
    def group_dir(self, group: str) -> Path:
        """``<root>/<group>``; raises ``FeatureStoreError`` for an invalid group name."""
        return self.root / _check_group(group)

    def partition_dirs(self, group: str, start_date: DateLike = None, end_date: DateLike = None) -> list[Path]:
        """Existing ``date=`` folders of ``group`` within [start_date, end_date], oldest first."""
        lo, hi = _to_date(start_date, "start_date"), _to_date(end_date, "end_date")
        base = self.group_dir(group)
        if not base.is_dir():
            return []
        out = []
        for entry in base.iterdir():
            day = partition_dir_date(entry.name)
            if day is None or not entry.is_dir():
                continue
            if (lo and day < lo) or (hi and day > hi):
                continue
            out.append((day, entry))
        return [p for _, p in sorted(out)]

    def list_files(self, group: str, start_date: DateLike = None, end_date: DateLike = None) -> list[Path]:
        """Complete parquet files (temp files excluded), ordered by date then name."""
        files: list[Path] = []
        for part in self.partition_dirs(group, start_date, end_date):
            files.extend(sorted(p for p in part.iterdir() if p.suffix == ".parquet" and not p.name.startswith((".", "_"))))
        return files

    def check_file(self, path: Path, group: str) -> FileCheck:
        """Footer check of one file against ``group``'s schema (``file_check.check_file``)."""
        return check_file(path, schema_for_group(group))

    def checked_files(
        self, group: str, start_date: DateLike = None, end_date: DateLike = None
    ) -> tuple[list[Path], list[FileCheck]]:
        """(usable files, checks of the files that cannot be used) of ``group`` in the date range."""
        good: list[Path] = []
        bad: list[FileCheck] = []
        schema = schema_for_group(group)
        for path in self.list_files(group, start_date, end_date):
            result = check_file(path, schema)
            (good.append(path) if result.ok else bad.append(result))
        return good, bad

    # --- writing ---------------------------------------------------------------------
    def write_offline_features(
        self,
        group: str,
        df: pd.DataFrame | pa.Table,
        *,
        file_id: str | None = None,
        fsync: bool = True,
        label_provenance: str | None = None,
        extra_metadata: dict[str, str] | None = None,
    ) -> list[WrittenFile]:
        """Write ``df`` to ``group``, one new file per UTC date it spans.

        ``file_id`` makes the file names deterministic: writing the same batch again
        with the same id writes nothing (used by crash recovery to stay exactly-once).
        ``label_provenance`` (``backend.contracts.labels.encode_provenance`` text) is
        stored in each file's key-value metadata when the rows carry labels;
        ``extra_metadata`` (``lobbot.*`` keys, e.g. how migration read an old batch) too.
        Raises ``SchemaValidationError`` when ``df`` does not fit the group's schema,
        ``FeatureStoreError`` for a bad group or file id, ``OSError`` on I/O failure.
        """
        if file_id is not None and not _FILE_ID_RE.fullmatch(file_id):
            raise FeatureStoreError(f"invalid file_id {file_id!r}")
        table = _with_provenance(to_group_table(group, df), label_provenance)
        if extra_metadata:
            meta = dict(table.schema.metadata or {})
            meta.update({k.encode(): v.encode() for k, v in extra_metadata.items()})
            table = table.replace_schema_metadata(meta)
        if table.num_rows == 0:
            return []
        unique = file_id or uuid.uuid4().hex[:16]
        out = []
        for day_ms, part in split_by_utc_day(table):
            first_ms = int(part.column("timestamp").cast(pa.int64())[0].as_py())
            hhmmss = dt.datetime.fromtimestamp(first_ms / 1000, dt.timezone.utc).strftime("%H%M%S")
            day = dt.date(1970, 1, 1) + dt.timedelta(days=day_ms)
            path = self.group_dir(group) / f"date={day.isoformat()}" / f"{FILE_PREFIX}{hhmmss}_{unique}.parquet"
            created = atomic.write_new(
                path, path_writer=lambda tmp, t=part: pq.write_table(t, str(tmp), **parquet_write_options(group)),
                fsync=fsync
            )
            out.append(WrittenFile(path, part.num_rows, created))
        return out

    def rewrite_file(
        self,
        path: Path,
        table: pa.Table,
        expected_stat: tuple[int, int] | None,
        group: str,
        *,
        label_provenance: str | None = None,
        extra_metadata: dict[str, str] | None = None,
    ) -> None:
        """Atomically replace one file of ``group`` (e.g. with labels filled in).

        ``expected_stat`` comes from ``atomic.file_stat`` taken when the file was read;
        ``label_provenance`` is stored in the file's key-value metadata (None stores
        none: the caller vouches for how the labels it writes were made). Raises
        ``atomic.FileChangedError`` when the file changed since, ``SchemaValidationError``
        when ``table`` does not fit the group.
        """
        table = _with_provenance(to_group_table(group, table), label_provenance)
        if extra_metadata:
            meta = dict(table.schema.metadata or {})
            meta.update({k.encode(): v.encode() for k, v in extra_metadata.items()})
            table = table.replace_schema_metadata(meta)
        atomic.replace_existing(
            Path(path), lambda fh: pq.write_table(table, fh, **parquet_write_options()), expected_stat=expected_stat
        )

    # --- reading ---------------------------------------------------------------------
    def label_provenance(self, path: Path) -> Provenance:
        """The labels' provenance recorded in one file's footer; ``{}`` when it records none.

        Reads only the footer. Raises ``ProvenanceError`` for a malformed record and
        ``OSError`` when the file cannot be read.
        """
        try:
            meta = pq.read_schema(path).metadata or {}
        except pa.ArrowException as exc:
            raise OSError(f"{path}: unreadable parquet footer ({exc})") from None
        return decode_provenance(meta.get(LABEL_PROVENANCE_KEY.encode()))

    def read_file(
        self, path: Path, group: str, columns: Sequence[str] | None = None, dictionary_columns: Sequence[str] = ()
    ) -> pa.Table:
        """One file of ``group``; ``dictionary_columns`` (e.g. ``symbol``) come back dictionary-encoded."""
        return pq.read_table(
            path,
            columns=list(columns) if columns else None,
            schema=_with_dictionaries(schema_for_group(group), dictionary_columns),
            read_dictionary=list(dictionary_columns) or None,
        )

    def dataset(self, group: str) -> ds.Dataset:
        """The whole group as a ``pyarrow.dataset`` with a typed ``date`` partition column."""
        return ds.dataset(
            self.group_dir(group),
            format="parquet",
            partitioning=ds.partitioning(pa.schema([("date", pa.date32())]), flavor="hive"),
            schema=schema_for_group(group).append(pa.field("date", pa.date32())),
        )

    def read_offline_table(
        self,
        group: str,
        start_date: DateLike = None,
        end_date: DateLike = None,
        symbols: Iterable[str] | None = None,
        columns: Sequence[str] | None = None,
        filter: ds.Expression | None = None,
        dictionary_columns: Sequence[str] = (),
        on_bad_file: Callable[[FileCheck], None] | None = None,
    ) -> pa.Table:
        """Rows of ``group`` between two UTC dates (inclusive) as an Arrow table.

        Date folders outside the range are never opened (partition pruning); the
        symbol filter is pushed down to parquet row-group statistics.
        ``dictionary_columns`` are read as the dictionary-encoded pages they are stored
        in (several times cheaper than materialising strings, and integer codes for free).

        Each file's footer is checked first (``file_check``): a file that cannot be read
        or interpreted (truncated, foreign columns, integer or zone-less timestamps, wrong
        dtypes) is skipped and handed to ``on_bad_file``; without a callback it is named
        in a ``BadStoreFileWarning`` and a log warning. The other files are read.
        """
        schema = schema_for_group(group)
        if columns is not None:
            unknown = [c for c in columns if c not in schema.names]
            if unknown:
                raise FeatureStoreError(f"unknown columns for group {group!r}: {unknown}")
        schema = _with_dictionaries(schema, dictionary_columns)
        files, bad = self.checked_files(group, start_date, end_date)
        for result in bad:
            (on_bad_file or warn_bad_file)(result)
        if not files:
            return schema.empty_table() if columns is None else schema.empty_table().select(list(columns))
        fmt = _PARQUET_FORMAT
        if dictionary_columns:
            fmt = ds.ParquetFileFormat(
                read_options=ds.ParquetReadOptions(dictionary_columns=set(dictionary_columns)),
                default_fragment_scan_options=ds.ParquetFragmentScanOptions(pre_buffer=True),
            )
        dataset = ds.dataset([str(f) for f in files], schema=schema, format=fmt)
        expr = filter
        if symbols is not None:
            sym_expr = ds.field("symbol").isin(list(symbols))
            expr = sym_expr if expr is None else (expr & sym_expr)
        return dataset.to_table(columns=list(columns) if columns else None, filter=expr)

    def read_offline_features(
        self,
        group: str,
        start_date: DateLike = None,
        end_date: DateLike = None,
        symbols: Iterable[str] | None = None,
        columns: Sequence[str] | None = None,
    ) -> pd.DataFrame:
        """Like ``read_offline_table`` but as pandas; nullable labels become ``Int8``."""
        table = self.read_offline_table(group, start_date, end_date, symbols, columns)
        return table_to_pandas(table)


def warn_bad_file(result: FileCheck) -> None:
    """Default ``on_bad_file``: name the skipped file and why in a warning and the log."""
    text = f"skipped {result.path}: {result.reason}; the file is left untouched"
    if log.hasHandlers():  # without any, logging's last resort would print the warning's text a second time
        log.warning("%s", text)
    warnings.warn(text, BadStoreFileWarning, stacklevel=4)


def _with_dictionaries(schema: pa.Schema, names: Sequence[str]) -> pa.Schema:
    for name in names:
        i = schema.get_field_index(name)
        if i < 0 or not pa.types.is_string(schema.field(i).type):
            raise FeatureStoreError(f"only string columns can be read as dictionaries, not {name!r}")
        schema = schema.set(i, schema.field(i).with_type(pa.dictionary(pa.int32(), pa.string())))
    return schema


def table_to_pandas(table: pa.Table) -> pd.DataFrame:
    """Nullable labels become ``Int8``; strings become plain Python objects.

    Object strings keep ``df["symbol"].unique()`` a NumPy array that prints on one
    line, as the user guide's data-check snippet expects (pandas 3's Arrow-backed
    string arrays print as a multi-line block).
    """
    mapping = {pa.int8(): pd.Int8Dtype(), pa.int16(): pd.Int16Dtype()}
    df = table.to_pandas(types_mapper=mapping.get)
    for field in table.schema:
        if pa.types.is_string(field.type) or pa.types.is_large_string(field.type):
            df[field.name] = df[field.name].astype(object)
    return df


def split_by_utc_day(table: pa.Table) -> list[tuple[int, pa.Table]]:
    """Split rows by the UTC day of ``timestamp`` (days since epoch), keeping row order."""
    ts = table.column("timestamp").cast(pa.int64()).to_numpy()
    days = ts // DAY_MS
    if days.size == 0:
        return []
    first, last = days.min(), days.max()
    if first == last:
        return [(int(first), table)]
    out = []
    for day in np.unique(days):
        idx = np.flatnonzero(days == day)
        out.append((int(day), table.take(pa.array(idx))))
    return out


_store_lock = threading.Lock()
_store: FeatureStore | None = None  # the process-wide store; settings may change (tests, --data-dir)
# The settings object ``_store`` was built from. ``backend.config.configure`` replaces the
# settings object, so comparing identities notices a new DATA_DIR without config having
# to import (and reset) this module, which would make the two import each other.
_store_settings: object | None = None


def get_feature_store() -> FeatureStore:
    """The process-wide store rooted at ``<DATA_DIR>/feature_store/offline``.

    Built on first use and rebuilt whenever ``backend.config.configure`` has replaced the
    settings since, so it always follows the current ``data_dir``.
    """
    global _store, _store_settings
    from backend.config import get_settings

    settings = get_settings()
    with _store_lock:
        if _store is None or _store_settings is not settings:
            _store = FeatureStore(settings.feature_store_root)
            _store_settings = settings
        return _store


def reset_feature_store() -> None:
    """Forget the process-wide store, so the next ``get_feature_store`` follows the current settings."""
    global _store
    with _store_lock:
        _store = None
