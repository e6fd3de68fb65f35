"""MLDataCollector: buffers samples, the price tape and candles; flushes them to both formats.

Life of a sample::

    collect_sample()  -> spool append (kernel has it: survives kill -9) -> RAM buffer
    maybe_flush()     -> at max_samples_per_file, or the memory cap (largest buffer first):
                         INTENT in the spool, then a worker thread writes parquet + legacy
    worker            -> both sinks written (atomic files) -> DONE in the spool
    sink failure      -> the job keeps its rows and is retried later; nothing partial is left
    start-up          -> recover(): unfinished intents re-run with the same flush id
                         (sinks skip names they hold), other spooled rows are flushed

All public methods except ``recover``/``close_sync`` are called from the event loop;
file I/O happens on one worker thread, so the loop never waits for a parquet write.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
import uuid
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa

from backend.venues.types import Candle
from backend.ml_engine.data_collection.buffers import Columns, RowBuffer
from backend.ml_engine.data_collection.spool import ROW_LAYOUT, Spool, SpooledRow, StreamKey
from backend.ml_engine.feature_store.feature_schema import (
    FEATURE_COUNT,
    FEATURE_FIELDS,
    FEATURE_SCHEMA_VERSION,
    TIMESTAMP_TYPE,
    TRAINING_SCHEMA,
)
from backend.ml_engine.feature_store.feature_store import FeatureStore
from backend.ml_engine.feature_store.legacy_format import LegacyBatchWriter
from backend.symbols import validate_symbol

log = logging.getLogger("backend.ml_engine.data_collection")

PACKAGE_DIR = Path(__file__).resolve().parents[2]  # backend/
SPOOL_SEGMENT_LIMIT = 64 * 1024 * 1024
GIL_SWITCH_INTERVAL_S = 0.001


@dataclass
class FlushJob:
    flush_id: str
    stream: str
    parts: dict[StreamKey, Columns]
    sinks_done: set[str] = field(default_factory=set)
    future: Future | None = None
    attempts: int = 0
    retry_at: float = 0.0
    last_error: str | None = None
    files_written: int = 0

    @property
    def rows(self) -> int:
        return sum(len(c) for c in self.parts.values())

    @property
    def nbytes(self) -> int:
        total = 0
        for c in self.parts.values():
            total += c.seq.nbytes + sum(a.nbytes for a in c.ints.values()) + sum(a.nbytes for a in c.floats.values())
            total += c.matrix.nbytes if c.matrix is not None else 0
        return total

    def ranges(self) -> list[tuple[StreamKey, int, int]]:
        return [(k, int(c.seq[0]), int(c.seq[-1])) for k, c in self.parts.items() if len(c)]


@dataclass
class CollectorStats:
    collected: int = 0
    flushed: int = 0
    files: int = 0
    skipped: int = 0
    recovered: int = 0
    flush_failures: int = 0
    skip_reasons: Counter = field(default_factory=Counter)


class MLDataCollector:
    def __init__(
        self,
        storage_path: str | Path = "../data/ml_training",
        max_samples_per_file: int = 2000,
        collection_interval: int = 10,
        max_buffer_memory_mb: float = 200,
        enable_feature_store: bool = True,
        use_legacy_format: bool = True,
        feature_store_group: str = "training_features",
        *,
        source: str = "bybit",
        feature_store: FeatureStore | None = None,
        spool_dir: Path | None = None,
        fsync: bool = True,
        retry_delay_s: float = 5.0,
    ):
        storage = Path(storage_path).expanduser()
        # The guide writes storage_path relative to backend/ ("../data/ml_training").
        self.storage_path = storage if storage.is_absolute() else (PACKAGE_DIR / storage).resolve()
        data_root = self.storage_path.parent
        if max_samples_per_file < 1 or collection_interval < 1 or max_buffer_memory_mb <= 0:
            raise ValueError("max_samples_per_file and collection_interval must be >= 1, max_buffer_memory_mb > 0")
        self.max_samples_per_file = int(max_samples_per_file)
        self.collection_interval = int(collection_interval)
        self.max_buffer_bytes = int(max_buffer_memory_mb * 1024 * 1024)
        self.enable_feature_store = enable_feature_store
        self.use_legacy_format = use_legacy_format
        self.feature_store_group = feature_store_group
        self.source = source
        self.retry_delay_s = retry_delay_s
        # The tape and candles always go to the store: labels and audits need them.
        self.store = feature_store or FeatureStore(data_root / "feature_store" / "offline")
        self.legacy = LegacyBatchWriter(self.storage_path, fsync=fsync) if use_legacy_format else None
        self.spool = Spool(spool_dir or data_root / "spool", fsync=fsync)
        self.tape_rows_per_flush = self.max_samples_per_file * self.collection_interval
        self.stats = CollectorStats()
        self._buffers: dict[StreamKey, RowBuffer] = {}
        self._seq: dict[StreamKey, int] = {}
        self._jobs: list[FlushJob] = []
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ml-flush")
        # The flush thread also runs Python code (legacy JSON, Arrow assembly). With the
        # default 5 ms GIL switch interval it can hold the event loop for 5 ms at a time;
        # 1 ms keeps the loop's lag during a flush near 1 ms.
        if sys.getswitchinterval() > GIL_SWITCH_INTERVAL_S:
            sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
        self._last_candle: dict[str, int] = {}
        self._run_id = uuid.uuid4().hex[:10]
        self._job_counter = 0
        self._opened = False

    # --- start-up --------------------------------------------------------------------
    def recover(self) -> int:
        """Flush whatever an earlier process left in the spool; returns the samples recovered.

        Must run before the first tick. Rows of unfinished flushes are written with
        their original flush id (exactly once); the rest are flushed anew.
        """
        rec = self.spool.recover()
        self.spool.open_new_segment()
        self._opened = True
        for key, rows in rec.rows.items():
            self._seq[key] = max(self._seq.get(key, 0), max(rows) + 1)
        recovered_samples = 0
        for flush_id, ranges in rec.pending_intents().items():
            parts = {key: _columns_from_rows(key, rec.rows_in(key, lo, hi)) for key, lo, hi in ranges}
            parts = {k: c for k, c in parts.items() if len(c)}
            if not parts:
                continue
            job = FlushJob(flush_id, ranges[0][0].stream, parts)
            recovered_samples += job.rows if job.stream == "sample" else 0
            self._jobs.append(job)
        for key, rows in rec.unflushed_rows().items():
            cols = _columns_from_rows(key, rows)
            if key.stream == "sample":
                recovered_samples += len(cols)
                for start in range(0, len(cols), self.max_samples_per_file):
                    self._new_job("sample", {key: _slice(cols, start, start + self.max_samples_per_file)})
            else:
                self._new_job(key.stream, {key: cols})
        self.stats.collected += recovered_samples
        self.stats.recovered = recovered_samples
        self._load_last_candles(rec)
        for job in list(self._jobs):
            self._run_job_now(job)
        self.checkpoint()
        if rec.segments:
            log.info(
                "Spool recovery: %d samples recovered from %d segment(s)%s",
                recovered_samples,
                len(rec.segments),
                f", {rec.torn_records} torn record(s) ignored" if rec.torn_records else "",
            )
        return recovered_samples

    def _ensure_open(self) -> None:
        if not self._opened:
            self.recover()

    def _load_last_candles(self, rec) -> None:
        """Candles already stored or spooled are not written again after a restart."""
        try:
            # the newest partitions hold the last stored bars (sim dates need not be today)
            parts = self.store.partition_dirs("candles")[-2:]
            start = parts[0].name[5:] if parts else None
            table = self.store.read_offline_table("candles", start_date=start, columns=["timestamp", "symbol"]) if parts else None
            if table is not None and table.num_rows:
                ts = table.column("timestamp").cast(pa.int64()).to_numpy()
                syms = table.column("symbol").to_numpy(zero_copy_only=False)
                for sym in np.unique(syms):
                    self._last_candle[str(sym)] = max(self._last_candle.get(str(sym), -1), int(ts[syms == sym].max()))
        except Exception as exc:  # an unreadable candle file must not stop collection
            log.warning("Could not read stored candles to de-duplicate: %s", exc)
        for key, rows in rec.rows.items():
            if key.stream == "candle" and rows:
                last = max(r.ints[0] for r in rows.values())
                self._last_candle[key.symbol] = max(self._last_candle.get(key.symbol, -1), last)

    # --- loop-facing API -------------------------------------------------------------------
    def should_collect(self, iteration: int) -> bool:
        return iteration % self.collection_interval == 0

    def collect_sample(self, symbol: str, features: np.ndarray, timestamp_ms: int, mid_price: float) -> bool:
        """Accept one sample (110 float32 features at the book's event time).

        Returns False, counting a skip, for a malformed sample. On True the sample is
        already in the spool.
        """
        self._ensure_open()
        vec = np.asarray(features, dtype=np.float32)
        if vec.shape != (FEATURE_COUNT,) or not np.isfinite(vec).all() or not (mid_price > 0):
            self.skip(symbol, "invalid_sample")
            return False
        self._append("sample", symbol, (int(timestamp_ms), int(time.time() * 1000)), (float(mid_price),), vec)
        self.stats.collected += 1
        return True

    def add_tape(self, symbol: str, ts_ms: int, mid: float, bid: float, ask: float) -> None:
        self._append("tape", symbol, (int(ts_ms),), (float(mid), float(bid), float(ask)))

    def add_candles(self, symbol: str, candles: Sequence[Candle]) -> int:
        """Closed bars; each bar is stored once even if a source repeats it."""
        last = self._last_candle.get(symbol, -1)
        added = 0
        for c in candles:
            if c.start_ms <= last:
                continue
            self._append("candle", symbol, (int(c.start_ms),), (c.open, c.high, c.low, c.close, c.volume, c.turnover))
            last = c.start_ms
            added += 1
        self._last_candle[symbol] = last
        return added

    def _append(self, stream: str, symbol: str, ints: tuple, floats: tuple, vector: np.ndarray | None = None) -> None:
        """Spool first (the row survives a crash from here on), then the RAM buffer."""
        self._ensure_open()
        key = StreamKey(stream, symbol, self.source)
        buf = self._buffers.get(key)
        if buf is None:
            validate_symbol(symbol)
            buf = self._buffers[key] = RowBuffer(*ROW_LAYOUT[stream])
        seq = self._seq.get(key, 0)
        self._seq[key] = seq + 1
        self.spool.append_row(key, seq, ints, floats, vector)
        buf.append(seq, ints, floats, vector)

    def skip(self, symbol: str, reason: str) -> None:
        self.stats.skipped += 1
        self.stats.skip_reasons[reason] += 1

    def sync(self) -> None:
        """Group commit of the spool (called once per tick, off the loop)."""
        self.spool.sync()

    # --- flushing ----------------------------------------------------------------------------
    def maybe_flush(self) -> None:
        """Start flushes that are due and reap finished ones. Cheap; call every tick."""
        self._reap()
        for key, buf in list(self._buffers.items()):
            if key.stream == "sample" and len(buf) >= self.max_samples_per_file:
                self._dispatch_buffers([key])
        if any(len(b) >= self.tape_rows_per_flush for k, b in self._buffers.items() if k.stream == "tape"):
            self._dispatch_stream("tape")
        if any(len(b) >= self.max_samples_per_file for k, b in self._buffers.items() if k.stream == "candle"):
            self._dispatch_stream("candle")
        # in-flight jobs are not counted here: flushing more cannot free them sooner
        while sum(b.nbytes for b in self._buffers.values()) > self.max_buffer_bytes:
            nonempty = [(b.nbytes, k) for k, b in self._buffers.items() if len(b)]
            if not nonempty:
                break
            _, largest = max(nonempty, key=lambda t: t[0])
            if largest.stream == "sample":
                self._dispatch_buffers([largest])
            else:
                self._dispatch_stream(largest.stream)
        now = time.monotonic()
        for job in self._jobs:
            if job.future is None and job.retry_at <= now:
                self._submit(job)
        if self.spool.segment_bytes > SPOOL_SEGMENT_LIMIT:
            self.checkpoint()

    def flush_all(self) -> None:
        """Dispatch every buffer (shutdown); does not wait."""
        self._reap()
        for key in [k for k, b in self._buffers.items() if k.stream == "sample" and len(b)]:
            self._dispatch_buffers([key])
        for stream in ("tape", "candle"):
            self._dispatch_stream(stream)
        for job in self._jobs:
            if job.future is None:
                self._submit(job)

    async def close(self, timeout_s: float = 60.0) -> bool:
        """Flush everything and wait; returns True when nothing is left unflushed.

        Whatever could not be written stays in the spool and is recovered next start.
        """
        self.flush_all()
        deadline = time.monotonic() + timeout_s
        while self._jobs and time.monotonic() < deadline:
            futures = [j.future for j in self._jobs if j.future is not None]
            if futures:
                await asyncio.wait([asyncio.wrap_future(f) for f in futures], timeout=max(0.0, deadline - time.monotonic()))
            self._reap()
            pending = [j for j in self._jobs if j.future is None]
            if pending:
                if all(j.attempts >= 3 for j in pending):
                    break
                await asyncio.sleep(min(self.retry_delay_s, max(0.0, deadline - time.monotonic())))
                for job in pending:
                    self._submit(job)
        return self._finish_close()

    def close_sync(self) -> bool:
        """``close`` for code without an event loop (tests, tools)."""
        self.flush_all()
        for job in list(self._jobs):
            if job.future is not None:
                job.future.result()
        self._reap()
        return self._finish_close()

    def _finish_close(self) -> bool:
        clean = not self._jobs and not any(len(b) for b in self._buffers.values())
        if clean:
            self.checkpoint()  # leaves an empty spool segment
        self.spool.close()
        self._executor.shutdown(wait=True)
        for job in self._jobs:
            log.error("Flush %s not written (%s); its rows stay in the spool for the next start", job.flush_id, job.last_error)
        return clean

    def checkpoint(self) -> None:
        """Start a new spool segment holding only what is still unflushed, drop the old ones."""
        self._reap()
        segment = self.spool.open_new_segment()
        for key, buf in self._buffers.items():
            cols = buf.peek()
            self._spool_columns(key, cols)
        for job in self._jobs:
            for key, cols in job.parts.items():
                self._spool_columns(key, cols)
            self.spool.append_intent(job.flush_id, job.ranges())
        self.spool.sync()
        self.spool.drop_segments_before(segment)

    def _spool_columns(self, key: StreamKey, cols: Columns) -> None:
        ints_names, floats_names, _ = ROW_LAYOUT[key.stream]
        self.spool.append_block(
            key,
            cols.seq,
            np.column_stack([cols.ints[n] for n in ints_names]) if len(cols) else np.empty((0, len(ints_names))),
            np.column_stack([cols.floats[n] for n in floats_names]) if len(cols) else np.empty((0, len(floats_names))),
            cols.matrix,
        )

    def _next_flush_id(self) -> str:
        self._job_counter += 1
        return f"{self._run_id}-{self._job_counter:06d}"

    def _new_job(self, stream: str, parts: dict[StreamKey, Columns]) -> FlushJob | None:
        parts = {k: c for k, c in parts.items() if len(c)}
        if not parts:
            return None
        job = FlushJob(self._next_flush_id(), stream, parts)
        # The intent is durable before any sink is touched: recovery re-runs it by id.
        self.spool.append_intent(job.flush_id, job.ranges())
        self._jobs.append(job)
        return job

    def _dispatch_buffers(self, keys: list[StreamKey]) -> None:
        for key in keys:
            job = self._new_job(key.stream, {key: self._buffers[key].take()})
            if job:
                self._submit(job)

    def _dispatch_stream(self, stream: str) -> None:
        parts = {k: b.take() for k, b in self._buffers.items() if k.stream == stream and len(b)}
        job = self._new_job(stream, parts)
        if job:
            self._submit(job)

    def _submit(self, job: FlushJob) -> None:
        job.attempts += 1
        job.future = self._executor.submit(self._write_job, job)

    def _run_job_now(self, job: FlushJob) -> None:
        job.attempts += 1
        try:
            self._write_job(job)
        except Exception as exc:
            job.last_error = f"{type(exc).__name__}: {exc}"
            job.retry_at = time.monotonic() + self.retry_delay_s
            self.stats.flush_failures += 1
            log.warning("Flush %s failed during recovery (%s); will retry", job.flush_id, job.last_error)
        else:
            self._jobs.remove(job)
            self._count_done(job)

    def _reap(self) -> None:
        for job in list(self._jobs):
            fut = job.future
            if fut is None or not fut.done():
                continue
            job.future = None
            exc = fut.exception()
            if exc is None:
                self._jobs.remove(job)
                self._count_done(job)
            else:
                job.last_error = f"{type(exc).__name__}: {exc}"
                job.retry_at = time.monotonic() + self.retry_delay_s
                self.stats.flush_failures += 1
                log.warning(
                    "Flush of %d %s rows failed (%s); rows kept in memory and spool, retry in %.0f s",
                    job.rows, job.stream, job.last_error, self.retry_delay_s,
                )

    def _count_done(self, job: FlushJob) -> None:
        if job.stream == "sample":
            self.stats.flushed += job.rows
        self.stats.files += job.files_written

    # --- worker thread ----------------------------------------------------------------------
    def _write_job(self, job: FlushJob) -> None:
        files = 0
        if job.stream == "sample":
            (key, cols), = job.parts.items()
            if self.enable_feature_store and "parquet" not in job.sinks_done:
                written = self.store.write_offline_features(self.feature_store_group, sample_table(key, cols), file_id=job.flush_id)
                files += sum(w.created for w in written)
                job.sinks_done.add("parquet")
            if self.legacy is not None and "legacy" not in job.sinks_done:
                written = self.legacy.write_batch(
                    key.symbol, cols.matrix, cols.ints["ts"], cols.floats["mid"], key.source, flush_id=job.flush_id
                )
                files += len(written)
                job.sinks_done.add("legacy")
        else:
            group = "price_tape" if job.stream == "tape" else "candles"
            if "parquet" not in job.sinks_done:
                table = tape_table(job.parts) if job.stream == "tape" else candle_table(job.parts)
                self.store.write_offline_features(group, table, file_id=job.flush_id)
                job.sinks_done.add("parquet")
        job.files_written += files
        self.spool.append_done(job.flush_id)

    # --- statistics ---------------------------------------------------------------------------
    @property
    def buffered(self) -> int:
        in_buffers = sum(len(b) for k, b in self._buffers.items() if k.stream == "sample")
        in_jobs = sum(j.rows for j in self._jobs if j.stream == "sample")
        return in_buffers + in_jobs

    @property
    def memory_bytes(self) -> int:
        return sum(b.nbytes for b in self._buffers.values()) + sum(j.nbytes for j in self._jobs)

    def statistics_line(self) -> str:
        s = self.stats
        return (
            f"MLDataCollector statistics: collected={s.collected} buffered={self.buffered} flushed={s.flushed} "
            f"files={s.files} skipped={s.skipped} memory_mb={self.memory_bytes / 1048576:.2f}"
        )


# --- row -> Arrow ------------------------------------------------------------------------------
def _ts_array(ms: np.ndarray) -> pa.Array:
    return pa.array(ms.astype(np.int64, copy=False), type=pa.int64()).cast(TIMESTAMP_TYPE)


def sample_table(key: StreamKey, cols: Columns) -> pa.Table:
    n = len(cols)
    arrays = {
        "timestamp": _ts_array(cols.ints["ts"]),
        "symbol": pa.array([key.symbol] * n, type=pa.string()),
        "mid_price": pa.array(cols.floats["mid"]),
        "source": pa.array([key.source] * n, type=pa.string()),
        "feature_version": pa.array(np.full(n, FEATURE_SCHEMA_VERSION, dtype=np.int16)),
        "collected_at": _ts_array(cols.ints["collected_at"]),
    }
    matrix = np.asfortranarray(cols.matrix)  # column slices become contiguous
    for j, f in enumerate(FEATURE_FIELDS):
        arrays[f.name] = pa.array(matrix[:, j])
    for f in TRAINING_SCHEMA:
        if f.name not in arrays:
            arrays[f.name] = pa.nulls(n, type=f.type)
    return pa.Table.from_arrays([arrays[f.name] for f in TRAINING_SCHEMA], schema=TRAINING_SCHEMA)


def _multi_symbol(parts: dict[StreamKey, Columns], names: tuple[str, ...]) -> dict[str, pa.Array]:
    keys = list(parts)
    ts = np.concatenate([parts[k].ints["ts"] for k in keys])
    symbols = np.concatenate([np.full(len(parts[k]), k.symbol, dtype=object) for k in keys])
    out = {"timestamp": _ts_array(ts), "symbol": pa.array(symbols, type=pa.string())}
    for name in names:
        out[name] = pa.array(np.concatenate([parts[k].floats[name] for k in keys]))
    return out


def tape_table(parts: dict[StreamKey, Columns]) -> pa.Table:
    cols = _multi_symbol(parts, ("mid", "bid", "ask"))
    return pa.table(
        {"timestamp": cols["timestamp"], "symbol": cols["symbol"], "mid_price": cols["mid"], "best_bid": cols["bid"], "best_ask": cols["ask"]}
    )


def candle_table(parts: dict[StreamKey, Columns]) -> pa.Table:
    cols = _multi_symbol(parts, ("open", "high", "low", "close", "volume", "turnover"))
    return pa.table(cols)


def _columns_from_rows(key: StreamKey, rows: list[SpooledRow]) -> Columns:
    ints_names, floats_names, width = ROW_LAYOUT[key.stream]
    buf = RowBuffer(ints_names, floats_names, width)
    for r in rows:
        buf.append(r.seq, r.ints, r.floats, r.vector)
    return buf.take()


def _slice(cols: Columns, lo: int, hi: int) -> Columns:
    return Columns(
        cols.seq[lo:hi],
        {k: v[lo:hi] for k, v in cols.ints.items()},
        {k: v[lo:hi] for k, v in cols.floats.items()},
        None if cols.matrix is None else cols.matrix[lo:hi],
    )
