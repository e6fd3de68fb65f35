"""Load the labelled samples of one feature group and check them with the guide's messages.

Only the columns the run needs are read. Each file's footer is checked first (dtypes
by the schema's own ``validate``; the labels' provenance, see ``label_setting``). The
result is one contiguous float32 feature matrix sorted by (symbol, timestamp) plus the
per-row metadata; windows are built over it later without copying (see ``sequences``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from backend.contracts.groups import TRAINING_FEATURES
from backend.contracts.labels import LABEL_PROVENANCE_KEY, ProvenanceError, decode_provenance
from backend.ml_engine.feature_store.feature_schema import (
    FEATURE_NAMES,
    FEATURE_SCHEMA_VERSION,
    TRAINING_SCHEMA,
    validate,
)
from backend.ml_engine.feature_store.feature_store import FeatureStore, FeatureStoreError
from backend.ml_engine.labelling.symbol_codes import sorted_universe, symbol_codes
from backend.ml_engine.training_orchestrator.config import ALLOW_MIXED_SOURCES_FLAG, SOURCES_FLAG, DataConfig
from backend.ml_engine.training_orchestrator.errors import TrainingDataError
from backend.ml_engine.training_orchestrator.label_setting import (
    LABELLER_SCRIPT,
    LabelSettingChoice,
    choose_label_setting,
)
from backend.symbols import validate_symbol


@dataclass
class LoadedData:
    """Samples sorted by (symbol, timestamp); row i of every array is the same sample.

    ``label_setting``: the labels' settings and the persistence baseline's (see
    ``label_setting.choose_label_setting``).
    """

    features: np.ndarray  # (n, 110) float32, C-contiguous
    timestamps_ms: np.ndarray  # (n,) int64
    symbol_codes: np.ndarray  # (n,) int32 index into ``symbols``
    symbols: list[str]
    mid_price: np.ndarray  # (n,) float64
    labels: np.ndarray  # (n,) int8, -1 where unlabelled
    movement: np.ndarray  # (n,) float64, NaN where unlabelled
    total_rows: int
    duplicates_dropped: int = 0
    facts: dict = field(default_factory=dict)
    label_setting: LabelSettingChoice | None = None

    @property
    def n(self) -> int:
        """Number of samples."""
        return int(self.timestamps_ms.shape[0])

    @property
    def labelled(self) -> np.ndarray:
        """(n,) bool: the sample has a label at the trained horizon."""
        return self.labels >= 0

    def content_hash(self) -> str:
        """sha256 of exactly what the model sees: times, symbols, features and labels."""
        h = hashlib.sha256()
        h.update(",".join(self.symbols).encode())
        for arr in (self.timestamps_ms, self.symbol_codes, self.features, self.labels):
            h.update(np.ascontiguousarray(arr).data)
        return h.hexdigest()


def needed_columns(cfg: DataConfig) -> list[str]:
    """The columns a run reads: metadata, the 110 features and the horizon's two label columns."""
    return ["timestamp", "symbol", "mid_price", "feature_version", *FEATURE_NAMES, cfg.direction_column, cfg.movement_column]


def _labelled_rows(meta: pq.FileMetaData, schema: pa.Schema, column: str) -> int:
    """Non-null values of ``column`` from the row-group statistics (all rows when they lack a null count)."""
    j = schema.get_field_index(column)
    if j < 0:
        return 0
    total = 0
    for i in range(meta.num_row_groups):
        rg = meta.row_group(i)
        stats = rg.column(j).statistics
        nulls = stats.null_count if stats is not None and stats.has_null_count else 0
        total += rg.num_rows - nulls
    return total


def _footer_checks(files: list[Path], cfg: DataConfig, columns: list[str]) -> tuple[list[str], list[frozenset]]:
    """Footer-only check of each file, before any data is read.

    Returns (problems, provenance): a wrong dtype or missing column named with its
    file; and, per file holding labels at the horizon, the settings they were made
    with (``{None}`` when the file records none).
    """
    problems: list[str] = []
    provenance: list[frozenset] = []
    wanted = set(columns)
    for path in files:
        try:
            pf = pq.ParquetFile(path)
            schema = pf.schema_arrow
        except (OSError, pa.ArrowException) as exc:
            problems.append(f"{path}: unreadable parquet file ({exc})")
            continue
        report = validate(schema.empty_table(), TRAINING_SCHEMA)
        missing = [c for c in report.missing_columns if c in wanted and not TRAINING_SCHEMA.field(c).nullable]
        wrong = [w for w in report.wrong_dtypes if w.split(":", 1)[0] in wanted]
        if missing:
            problems.append(f"{path}: missing columns {missing[:8]}{' ...' if len(missing) > 8 else ''}")
        if wrong:
            problems.append(f"{path}: wrong dtypes {wrong[:8]}{' ...' if len(wrong) > 8 else ''}")
        if missing or wrong or not _labelled_rows(pf.metadata, schema, cfg.direction_column):
            continue
        try:
            record = decode_provenance((schema.metadata or {}).get(LABEL_PROVENANCE_KEY.encode()))
        except ProvenanceError as exc:
            problems.append(f"{path}: {exc}; re-label it: python {LABELLER_SCRIPT}")
            continue
        provenance.append(record.get(cfg.horizon_s) or frozenset([None]))
    return problems, provenance


def _schema_failed(lines: list[str]) -> TrainingDataError:
    body = "\n".join(f"  - {line}" for line in lines)
    hints = []
    if any(": unreadable parquet file (" in line for line in lines):
        # a damaged file is not a schema question: say what to do with it
        hints.append("An unreadable file is truncated or corrupt: restore it from a backup, or move it out of the "
                     "store (its samples are lost) and train again.")
    if not all(": unreadable parquet file (" in line for line in lines):
        hints.append("Every sample needs the 110 features of backend/ml_engine/feature_store/feature_schema.py "
                     "(float32, finite) plus timestamp, symbol and mid_price.")
    return TrainingDataError("Schema validation failed:\n" + body + "\n" + "\n".join(hints))


def load_training_data(store: FeatureStore, cfg: DataConfig) -> LoadedData:
    """Read, validate and sort the samples of ``cfg``; raises ``TrainingDataError`` with the guide's messages."""
    symbols = [validate_symbol(s) for s in cfg.symbols] if cfg.symbols else None
    columns = needed_columns(cfg)
    where = f"feature group {cfg.feature_group!r} under {store.group_dir(cfg.feature_group)}"
    if cfg.start_date or cfg.end_date:
        where += f" between {cfg.start_date or 'the beginning'} and {cfg.end_date or 'the end'}"
    if symbols:
        where += f" for {', '.join(symbols)}"
    try:
        files = store.list_files(cfg.feature_group, cfg.start_date, cfg.end_date)
    except FeatureStoreError as exc:
        raise TrainingDataError(str(exc)) from None
    if not files:
        raise TrainingDataError(
            f"No training data available: no parquet files in {where}.\n"
            "Start the bot to collect samples: python -m backend.main"
        )
    problems, provenance = _footer_checks(files, cfg, columns)
    if problems:
        raise _schema_failed(problems)
    try:
        sources = _choose_sources(store, cfg, symbols, where)
        table = store.read_offline_table(
            cfg.feature_group, cfg.start_date, cfg.end_date, symbols, columns,
            filter=None if sources is None else ds.field("source").isin(sources),
        )
    except (pa.ArrowException, OSError) as exc:
        raise _schema_failed([f"reading {where}: {exc}"]) from None
    if table.num_rows == 0:
        raise TrainingDataError(
            f"No training data available: {len(files)} files in {where} but no rows match.\n"
            "Check --symbols, --start-date and --end-date, or collect data: python -m backend.main"
        )

    report = validate(table, TRAINING_SCHEMA)
    # Only the columns we asked for matter here; the rest were not read on purpose.
    report.missing_columns = [c for c in report.missing_columns if c in columns]
    if not report.ok:
        raise _schema_failed(report.problems())
    versions = np.unique(table.column("feature_version").to_numpy())
    if versions.size != 1 or int(versions[0]) != FEATURE_SCHEMA_VERSION:
        raise _schema_failed(
            [f"feature_version values {versions.tolist()} in the data, this code expects {FEATURE_SCHEMA_VERSION}"]
        )

    total = table.num_rows
    if total < cfg.min_samples:
        raise TrainingDataError(
            f"Insufficient data: {total} samples, need at least {cfg.min_samples} (in {where}).\n"
            "Let the bot collect longer (python -m backend.main) or widen --start-date/--end-date."
        )
    labels_col = table.column(cfg.direction_column)
    labelled = total - labels_col.null_count
    coverage = labelled / total
    if coverage < cfg.min_label_coverage:
        raise TrainingDataError(
            f"Label coverage too low: only {labelled} of {total} samples ({coverage:.1%}) have "
            f"{cfg.direction_column}; need at least {cfg.min_label_coverage:.0%} "
            f"(Future labels = None for {total - labelled} samples).\n"
            f"Add the future labels first: python {LABELLER_SCRIPT}"
            + (f" --feature-group {cfg.feature_group}" if cfg.feature_group != TRAINING_FEATURES else "")
        )
    if labelled < cfg.min_samples:
        raise TrainingDataError(
            f"Insufficient data: {labelled} samples, need at least {cfg.min_samples} labelled samples (in {where}).\n"
            "Let the bot collect longer or run the labeller once the horizon is covered."
        )
    data = _to_arrays(table, cfg)
    data.label_setting = choose_label_setting(
        provenance, cfg.horizon_s, cfg.threshold_pct, cfg.tolerance_s, allow_mixed=cfg.allow_mixed_label_thresholds
    )
    data.facts = {
        "sources": ",".join(sources) if sources is not None else "all",
        "rows_read": total,
        "label_coverage": round(coverage, 6),
        "files": len(files),
        "feature_schema_version": FEATURE_SCHEMA_VERSION,
    }
    return data


def source_counts(store: FeatureStore, cfg: DataConfig, symbols: list[str] | None = None) -> dict[str, int]:
    """Samples per ``source`` value (``sim``, ``bybit``, ...) in the group, dates and symbols of ``cfg``."""
    table = store.read_offline_table(
        cfg.feature_group, cfg.start_date, cfg.end_date, symbols, ["source"], dictionary_columns=["source"],
        on_bad_file=lambda _: None,  # named by the footer checks already
    )
    if table.num_rows == 0:
        return {}
    counts = pc.value_counts(table.column("source").combine_chunks().cast(pa.string())).to_pylist()
    return {c["values"]: int(c["counts"]) for c in sorted(counts, key=lambda c: c["values"])}


def _choose_sources(store: FeatureStore, cfg: DataConfig, symbols: list[str] | None, where: str) -> list[str] | None:
    """The sources to read (None: every row), or ``TrainingDataError`` for a mix nobody chose."""
    if cfg.allow_mixed_sources and not cfg.sources:
        return None
    counts = source_counts(store, cfg, symbols)
    shown = ", ".join(f"{name} {n:,}" for name, n in counts.items())
    if cfg.sources:
        missing = [s for s in cfg.sources if s not in counts]
        if len(missing) == len(cfg.sources):
            raise TrainingDataError(
                f"No training data available: no samples of source {', '.join(cfg.sources)} in {where} "
                f"(sources present: {shown or 'none'})."
            )
        return list(cfg.sources)
    if len(counts) > 1:
        first = next(iter(counts))
        raise TrainingDataError(
            f"Mixed sources in {where}: {shown} samples; simulated and live markets must not train one model "
            f"unnoticed. Choose with {SOURCES_FLAG} {first} (comma-separated for several) or {ALLOW_MIXED_SOURCES_FLAG}."
        )
    return None


def _to_arrays(table: pa.Table, cfg: DataConfig) -> LoadedData:
    ts = table.column("timestamp").cast(pa.int64()).to_numpy()
    # Symbols in sorted order so codes (and the content hash) do not depend on file order.
    universe = sorted_universe(table.column("symbol"))
    codes = symbol_codes(table.column("symbol"), universe)
    symbols = [str(s) for s in universe.to_pylist()]

    order = np.lexsort((ts, codes))
    ts, codes = ts[order], codes[order]
    # The same sample read twice (e.g. a re-run migration) would bias training and leak across splits.
    dup = np.zeros(ts.shape[0], dtype=bool)
    dup[1:] = (ts[1:] == ts[:-1]) & (codes[1:] == codes[:-1])
    keep = order[~dup]
    n = keep.shape[0]

    features = np.empty((n, len(FEATURE_NAMES)), dtype=np.float32)
    for j, name in enumerate(FEATURE_NAMES):
        features[:, j] = table.column(name).to_numpy()[keep]
    labels_arr = table.column(cfg.direction_column).combine_chunks()
    labels = labels_arr.fill_null(-1).to_numpy().astype(np.int8)[keep]
    bad = (labels < -1) | (labels > 2)
    if bad.any():
        raise _schema_failed([f"{cfg.direction_column} has values outside 0/1/2 in {int(bad.sum())} rows"])
    movement = table.column(cfg.movement_column).combine_chunks().to_numpy(zero_copy_only=False).astype(np.float64)[keep]
    mid = table.column("mid_price").to_numpy()[keep]
    return LoadedData(
        features=features,
        timestamps_ms=ts[~dup],
        symbol_codes=codes[~dup],
        symbols=symbols,
        mid_price=np.ascontiguousarray(mid, dtype=np.float64),
        labels=labels,
        movement=movement,
        total_rows=table.num_rows,
        duplicates_dropped=int(dup.sum()),
    )

