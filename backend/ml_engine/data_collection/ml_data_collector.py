"""MLDataCollector: buffers samples, the price tape and candles; flushes them to both formats.

Life of a row (any stream; see ``streams`` for what differs between them)::

    collect_sample()/add_tape()/add_candles()
                      -> spool append (kernel has it: survives kill -9) -> RAM buffer
    maybe_flush()     -> a buffer at its stream's flush size, or the memory cap (largest
                         buffer first): INTENT in the spool, the worker thread writes the sinks
    wait_for_room()   -> backpressure: while queued flushes hold memory past the cap less
                         one tick's rows, the tick waits for them (the loop runs on)
    worker            -> every sink written (atomic files) -> DONE in the spool
    sink failure      -> the job keeps its rows and is retried later; nothing partial is left
    disk full / I/O   -> collection goes on: rows the spool refuses are held in memory (their
                         flushes wait, undeclared); said once; probed every second; when the
                         spool takes writes again, those rows and their INTENTs are spooled and
                         the flushes run. Past the memory cap during an outage, the oldest
                         queued flushes are dropped and counted (``lobbot_rows_dropped_total``)
    spool rotation    -> past 64 MB a new segment is opened on a maintenance thread; old
                         segments go once their rows are written (no row is rewritten)
    start-up          -> recover(): unfinished intents re-run with the same flush id
                         (sinks skip names they hold), other spooled rows are flushed;
                         a spool of another feature version is set aside intact;
                         on a full disk the old segments stay untouched, the recovered
                         rows wait in memory like any others, and the new segment is
                         written (then the old ones go) when the disk takes writes again

All public methods except ``recover``/``close_sync`` are called from the event loop;
file I/O happens on worker threads, so the loop never waits for a parquet write or an
fsync. Every count lives in the metrics registry (``stats`` and ``statistics_line``
read it back).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import math
import sys
import time
import uuid
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa

from backend.metrics import Metrics, format_reasons
from backend.ml_engine.data_collection.buffers import BlockRows, RowBuffer
from backend.ml_engine.data_collection.flushing import FlushJob, FlushRunner
from backend.ml_engine.data_collection.records import StreamKey
from backend.ml_engine.data_collection.sinks import LegacySink, ParquetSink, Sink
from backend.ml_engine.data_collection.spool import SEGMENT_LIMIT, Spool
from backend.ml_engine.data_collection.spool_recovery import RecoveredSpool
from backend.ml_engine.data_collection.stats import CollectorStats, counter_by
from backend.ml_engine.data_collection.streams import CANDLE, RAW, SAMPLE, TAPE, StreamSpec, default_streams
from backend.ml_engine.feature_store.feature_schema import FEATURE_COUNT
from backend.ml_engine.feature_store.feature_store import FeatureStore
from backend.ml_engine.feature_store.legacy_format import LegacyBatchWriter
from backend.symbols import validate_symbol
from backend.venues.types import Candle

log = logging.getLogger("backend.ml_engine.data_collection")

PACKAGE_DIR = Path(__file__).resolve().parents[2]  # backend/
GIL_SWITCH_INTERVAL_S = 0.001
PROBE_INTERVAL_S = 1.0  # while the spool refuses writes, try it again at most this often
DROP_LOG_PERIOD_S = 60.0  # during an outage, rows dropped past the memory cap are logged at most this often


def errno_name(exc: OSError) -> str:
    """``ENOSPC`` for errno 28, the exception's type name when it has no errno."""
    return errno.errorcode.get(exc.errno, type(exc).__name__) if exc.errno else type(exc).__name__
_ONES = np.ones(FEATURE_COUNT, dtype=np.float32)


class _Lane:
    """One stream key's buffer, spec, next seq and cached counters (event-loop thread only)."""

    __slots__ = ("key", "spec", "buf", "seq", "collected")

    def __init__(self, key: StreamKey, spec: StreamSpec, seq: int, collected):
        self.key, self.spec, self.buf, self.seq, self.collected = key, spec, RowBuffer(spec.layout), seq, collected


class MLDataCollector:
    """Collects samples (110 float32 features), the price tape and candles, and flushes them durably.

    Arguments (the guide's names):

    * ``storage_path``: legacy root; relative paths are relative to ``backend/``, as the
      guide writes them (``../data/ml_training``); its parent is the data folder, holding
      ``feature_store/offline`` and the ``spool``.
    * ``max_samples_per_file`` (>= 1): samples per symbol per flush (legacy batch size).
    * ``collection_interval`` (>= 1): ticks between samples (``should_collect``).
    * ``max_buffer_memory_mb`` (> 0): cap on everything the collector holds (buffers,
      queued flushes, spool bookkeeping: ``memory_bytes``); past it the largest buffers
      flush together, one file per date and stream (see ``_cap_dispatch``), and a tick
      whose flushes are behind waits for them (``wait_for_room``).
    * ``enable_feature_store`` / ``use_legacy_format``: the sample sinks (the tape and
      candles always go to the store: labels and audits need them).
    * ``feature_store_group``: the group samples go to.
    * ``source``: the ``source`` column (``bybit``, ``sim`` ...).
    * ``spool_dir`` (default ``<data>/spool``), ``fsync`` (spool and legacy fsyncs),
      ``spool_segment_bytes`` (rotation size), ``retry_delay_s`` (after a failed flush).
    * ``metrics``: the bot's registry; a private one when None.

    Raises ``ValueError`` for out-of-range sizes and ``SpoolLockedError`` when another
    collector holds the spool.
    """

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
        metrics: Metrics | None = None,
        spool_segment_bytes: int = SEGMENT_LIMIT,
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
        self.metrics = metrics if metrics is not None else Metrics()
        self.streams = default_streams(sample_group=feature_store_group, max_samples_per_file=self.max_samples_per_file,
                                       collection_interval=self.collection_interval)
        self.store = feature_store or FeatureStore(data_root / "feature_store" / "offline")
        self.legacy = LegacyBatchWriter(self.storage_path, fsync=fsync) if use_legacy_format else None
        sinks: dict[str, Sink] = {"parquet": ParquetSink(self.store)}
        if self.legacy is not None:
            sinks["legacy"] = LegacySink(self.legacy)
        self._enabled_sinks = {"parquet", "legacy"} - ({"parquet"} if not enable_feature_store else set()) - (
            {"legacy"} if self.legacy is None else set())
        self.spool = Spool(spool_dir or data_root / "spool", {n: s.layout for n, s in self.streams.items()},
                           fsync=fsync, segment_limit=spool_segment_bytes)
        self._runner = FlushRunner(self.spool, sinks, self.metrics, retry_delay_s)
        self._runner.on_os_error = self._persist_failed
        self._spool_down: str | None = None  # why the spool cannot be written now
        self._unspooled: dict[tuple[str, str], int] = {}  # lane -> first seq the spool refused
        self._next_probe = 0.0
        self._begin_rec: RecoveredSpool | None = None  # recovery whose spool writes wait for disk space
        self._outage: tuple[float, str] | None = None  # (monotonic start, first error) of the current outage
        self.outages: list[tuple[float, str]] = []  #: (seconds, first error) of every outage that ended
        self._drops_unlogged: dict[tuple[str, str], int] = {}  # (stream, reason) -> rows dropped, not yet logged
        self._drops_logged_at: float | None = None  # monotonic time of the last drop log line
        self.metrics.persisting.set(1)
        self._maintenance = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spool-maint")
        self._rotation: Future | None = None
        self.stats = CollectorStats(self.metrics, tuple(n for n, s in self.streams.items() if s.counts_as_samples))
        self._lanes: dict[tuple[str, str], _Lane] = {}
        self._first_seq: dict[StreamKey, int] = {}
        self._due: dict[tuple[str, str], None] = {}  # lanes at their flush size, in the order they got there
        self._buffer_bytes = 0  # running total of every lane's buffer
        self._job_bytes = 0  # running total of queued flush jobs
        self._spool_book = 0  # the spool's bookkeeping bytes, refreshed once per maybe_flush
        self._tick_bytes = 0  # worst-case bytes (``row_cost``) of the rows appended since the last maybe_flush
        self._tick_base = self.max_buffer_bytes  # the target when this tick began (see ``_append``)
        self._recent_ticks: deque[int] = deque(maxlen=self.collection_interval + 1)  # their sizes, last ticks
        self.backpressure_s = 0.0  #: seconds ticks waited in ``wait_for_room`` for flushes to finish
        self.backpressure_waits = 0  #: ticks that waited there
        self._buffered_rows: dict[str, int] = {n: 0 for n in self.streams}  # buffers + queued jobs
        self._skip_counters: dict[tuple[str, str], object] = {}
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

        Must run before the first tick (``collect_sample`` runs it when it was not).
        Rows of unfinished flushes are written with their original flush id (exactly
        once); the rest are flushed anew. Segments of another feature version are moved
        intact to ``<spool>/.incompatible-<time>/`` (logged as a warning naming the
        folder); their tape and candle rows are recovered. A flush that fails here stays
        queued and is retried by ``maybe_flush``. Raises ``OSError`` when the spool
        folder itself cannot be written.
        """
        rec = self.spool.recover()
        try:
            aside = self.spool.begin(rec)
        except OSError as exc:
            # a full disk at start-up: the old segments stay untouched (they hold these rows);
            # the rows are flushed from memory and the new segment is written once the disk
            # takes writes again (``_try_resume``)
            aside = None
            self._begin_rec = rec
            self._spool_failed("spool recovery", exc)
        self._opened = True
        self._first_seq.update(rec.next_seq)
        counts = {n: 0 for n in self.streams}
        for fid, parts in rec.pending_parts().items():
            spec = self.streams[next(iter(parts)).stream]
            job = self._runner.add(FlushJob(fid, spec, parts, self._sinks_for(spec)), declare=False)
            self._count_recovered(job, counts)
        by_stream: dict[str, dict[StreamKey, object]] = {}
        for key, cols in rec.live_rows().items():
            by_stream.setdefault(key.stream, {})[key] = cols
        for name, keyed in by_stream.items():
            spec = self.streams[name]
            # chunk i of every symbol's rows goes into job i: a per-symbol stream keeps its
            # legacy batch size, and 500 symbols recover into a few files, not 500
            step = spec.flush_rows if spec.per_symbol else max(len(c) for c in keyed.values())
            longest = max(len(c) for c in keyed.values())
            for start in range(0, longest, max(1, step)):
                job = self._new_job(spec, {k: c.select(slice(start, start + step)) for k, c in keyed.items()})
                self._count_recovered(job, counts)
        self._load_last_candles(rec)
        for job in list(self._runner.jobs):
            # a job whose INTENT the spool refused waits for it (see ``FlushRunner.submit_due``)
            if job.declared and self._runner.run_now(job):
                self._account(job)
        if self.spool.started:
            self._rotate()  # the segment holding the recovered rows goes once they are written
        recovered_samples = sum(v for n, v in counts.items() if self.streams[n].counts_as_samples)
        if rec.segments:
            log.info("Spool recovery: %d samples recovered from %d segment(s)%s", recovered_samples, len(rec.segments),
                     "" if self._begin_rec is None else "; they stay there until the disk takes writes again")
        if self._begin_rec is None:
            self._report_recovery(rec, aside)
        return recovered_samples

    def _report_recovery(self, rec: RecoveredSpool, aside: Path | None) -> None:
        """Warn about damaged and set-aside segments once ``Spool.begin`` has dealt with them."""
        if rec.damage:
            self.metrics.spool_damaged_records.inc(rec.torn_records)
            self.metrics.spool_damaged_bytes.inc(rec.damaged_bytes)
            where = "; ".join(f"{p.name}: " + ", ".join(f"{d.length} bytes at offset {d.offset}" for d in regions)
                              for p, regions in rec.damage.items())
            log.warning(
                "Spool: skipped %d damaged record(s), %d bytes (%s); every other record was recovered. "
                "The damaged segment(s) are kept unchanged in %s.",
                rec.torn_records, rec.damaged_bytes, where, rec.damaged_dir or "the spool folder",
            )
        if aside is not None:
            kept = ", ".join(f"{n} {s} rows" for s, n in sorted(rec.set_aside_rows.items())) or "no rows"
            log.warning(
                "Spool: %d segment(s) could not be read as this build's data (%s); moved intact to %s (%s kept there, "
                "see REASON.txt); their tape and candle rows were recovered. Collection continues.",
                len(rec.set_aside), "; ".join(sorted(set(rec.set_aside.values()))), aside, kept,
            )

    def _count_recovered(self, job: FlushJob | None, counts: dict[str, int]) -> None:
        if job is None:
            return
        counts[job.spec.name] += job.rows
        if not job.nbytes_at_start:  # a re-run pending flush (``_new_job`` counted the others)
            job.nbytes_at_start = job.nbytes
            self._job_bytes += job.nbytes_at_start
        self.metrics.rows_recovered.labels(stream=job.spec.name).inc(job.rows)
        self._buffered_rows[job.spec.name] += job.rows
        if job.spec.counts_as_samples:
            for key, cols in job.parts.items():
                self.metrics.samples_collected.labels(symbol=key.symbol).inc(len(cols))

    def _ensure_open(self) -> None:
        if not self._opened:
            self.recover()

    def _load_last_candles(self, rec: RecoveredSpool) -> None:
        """Candles already stored or spooled are not written again after a restart."""
        try:
            # the newest partitions hold the last stored bars (sim dates need not be today)
            parts = self.store.partition_dirs(self.streams[CANDLE].group)[-2:]
            start = parts[0].name[5:] if parts else None
            table = (self.store.read_offline_table(self.streams[CANDLE].group, start_date=start, columns=["timestamp", "symbol"])
                     if parts else None)
            if table is not None and table.num_rows:
                ts = table.column("timestamp").cast(pa.int64()).to_numpy()
                syms = table.column("symbol").to_numpy(zero_copy_only=False)
                for sym in np.unique(syms):
                    self._last_candle[str(sym)] = max(self._last_candle.get(str(sym), -1), int(ts[syms == sym].max()))
        except Exception as exc:  # an unreadable candle file must not stop collection
            log.warning("Could not read stored candles to de-duplicate: %s", exc)
        for key, cols in rec.rows.items():
            if key.stream == CANDLE and len(cols):
                last = int(cols.ints["ts"].max())
                self._last_candle[key.symbol] = max(self._last_candle.get(key.symbol, -1), last)

    # --- loop-facing API -------------------------------------------------------------------
    def should_collect(self, iteration: int) -> bool:
        """True on ticks that take a sample (every ``collection_interval``-th, from tick 0)."""
        return iteration % self.collection_interval == 0

    def collect_sample(self, symbol: str, features: np.ndarray, timestamp_ms: int, mid_price: float) -> bool:
        """Accept one sample: 110 float32 features at the book's event time (ms), mid price > 0.

        Returns False, counting a skip (``invalid_sample``), for a malformed sample. On
        True the sample is already in the spool. Raises ``ValueError`` for an invalid symbol.
        """
        vec = np.asarray(features, dtype=np.float32)
        # one BLAS dot is the cheap finiteness test (NaN/inf make it non-finite); a finite
        # vector whose sum overflows float32 is rare and gets the exact test
        if vec.shape != (FEATURE_COUNT,) or not (mid_price > 0) or (
                not math.isfinite(vec.dot(_ONES)) and not np.isfinite(vec).all()):
            self.skip(symbol, "invalid_sample")
            return False
        lane = self._append(SAMPLE, symbol, (int(timestamp_ms), int(time.time() * 1000)), (float(mid_price),), vec)
        lane.collected.inc()
        return True

    def add_tape(self, symbol: str, ts_ms: int, mid: float, bid: float, ask: float) -> None:
        """One price-tape row: book event time (ms), mid, best bid and ask."""
        self._append(TAPE, symbol, (int(ts_ms),), (float(mid), float(bid), float(ask)))

    def add_candles(self, symbol: str, candles: Sequence[Candle]) -> int:
        """Closed 1-minute bars, oldest first; each bar is stored once even if a source repeats it.

        Several new bars at once (a back-fill: 480 per symbol at start) go to the spool as
        one block record and into the buffer in one copy. Returns the bars added.
        """
        last = self._last_candle.get(symbol, -1)
        fresh = []
        for c in candles:
            if c.start_ms > last:
                fresh.append(c)
                last = c.start_ms
        self._last_candle[symbol] = last
        if len(fresh) == 1:
            c = fresh[0]
            self._append(CANDLE, symbol, (int(c.start_ms),), (c.open, c.high, c.low, c.close, c.volume, c.turnover))
        elif fresh:
            ints = np.array([[c.start_ms] for c in fresh], dtype=np.int64)
            floats = np.array([(c.open, c.high, c.low, c.close, c.volume, c.turnover) for c in fresh], dtype=np.float64)
            self._append_rows(CANDLE, symbol, ints, floats)
        return len(fresh)

    def add_raw_events(self, symbol: str, ints: np.ndarray, floats: np.ndarray) -> None:
        """Raw venue events of one symbol's tick (``backend.venues.raw`` rows: int64 (n, 8), float64 (n, 2)).

        The rows reach the spool as one block record, so a crash keeps them whole or
        drops them whole; they are flushed to the ``raw_events`` group like any stream.
        """
        if len(ints):
            self._append_rows(RAW, symbol, ints, floats)

    def _append_rows(self, stream: str, symbol: str, ints: np.ndarray, floats: np.ndarray) -> None:
        """Rows of a stream without a vector as one spool block record, then one copy into the buffer."""
        n = len(ints)
        lane = self._lanes.get((stream, symbol)) or self._lane(stream, symbol)
        seq = np.arange(lane.seq, lane.seq + n, dtype=np.int64)
        lane.seq += n
        if self._spool_down is None:
            try:
                self.spool.append_arrays(lane.key, seq, ints, floats)
            except OSError as exc:
                self._spool_failed("spool append", exc)
                self._unspooled.setdefault((stream, symbol), int(seq[0]))
        else:
            self._unspooled.setdefault((stream, symbol), int(seq[0]))
        buf = lane.buf
        room = self._tick_base + self._tick_bytes - self._buffer_bytes - self._job_bytes - self._spool_book
        self._buffer_bytes += buf.extend(seq, ints, floats, room)  # one vectorised copy, not a row at a time
        self._tick_bytes += n * buf.row_bytes + buf.row_cost  # (one vectorised block at most)
        self._buffered_rows[stream] += n
        if len(buf) >= lane.spec.flush_rows:
            self._due[(stream, symbol)] = None

    def add_record(self, stream: str, symbol: str, ints: tuple, floats: tuple, *, source: str | None = None) -> None:
        """One row of a stream without a vector (``streams.PREDICTION``, ``streams.PAPER_TRADE``): spooled, then buffered.

        ``ints``/``floats`` follow the stream's ``RowLayout``; ``source`` replaces the
        collector's source in the row's key (the model streams keep their model URI there;
        one value per stream and symbol for the collector's life). Raises ``KeyError`` for
        an unknown stream, ``ValueError`` for an invalid symbol or a row of the wrong width.
        """
        spec = self.streams[stream]
        if len(ints) != len(spec.layout.ints) or len(floats) != len(spec.layout.floats) or spec.layout.width:
            raise ValueError(f"a {stream} row has {len(spec.layout.ints)} ints and {len(spec.layout.floats)} floats")
        if (stream, symbol) not in self._lanes:
            self._lane(stream, symbol, source)
        self._append(stream, symbol, ints, floats)

    def _lane(self, stream: str, symbol: str, source: str | None = None) -> _Lane:
        self._ensure_open()
        validate_symbol(symbol)
        key = StreamKey(stream, symbol, source or self.source)
        spec = self.streams[stream]
        counter = self.metrics.samples_collected.labels(symbol=symbol) if spec.counts_as_samples else None
        lane = self._lanes[(stream, symbol)] = _Lane(key, spec, self._first_seq.get(key, 0), counter)
        return lane

    def _append(self, stream: str, symbol: str, ints: tuple, floats: tuple, vector: np.ndarray | None = None) -> _Lane:
        """Spool first (the row survives a crash from here on), then the RAM buffer."""
        lane = self._lanes.get((stream, symbol)) or self._lane(stream, symbol)
        seq = lane.seq
        lane.seq = seq + 1
        if self._spool_down is None:
            try:
                self.spool.append_row(lane.key, seq, ints, floats, vector)
            except OSError as exc:
                self._spool_failed("spool append", exc)
                self._unspooled.setdefault((stream, symbol), seq)
        else:
            self._unspooled.setdefault((stream, symbol), seq)
        buf = lane.buf
        # a new block takes no more than the room left: memory stays under the tick's target
        # plus the worst-case cost of the rows appended so far this tick (see ``_target``)
        room = self._tick_base + self._tick_bytes - self._buffer_bytes - self._job_bytes - self._spool_book
        self._buffer_bytes += buf.append(seq, ints, floats, vector, room)
        self._tick_bytes += buf.row_cost
        self._buffered_rows[stream] += 1
        if len(buf) >= lane.spec.flush_rows:
            self._due[(stream, symbol)] = None
        return lane

    def skip(self, symbol: str, reason: str) -> None:
        """Count a sample not taken for ``symbol`` (``lobbot_samples_skipped_total{symbol,reason}``)."""
        child = self._skip_counters.get((symbol, reason))
        if child is None:
            child = self._skip_counters[(symbol, reason)] = self.metrics.samples_skipped.labels(symbol=symbol, reason=reason)
        child.inc()

    def sync(self) -> None:
        """Group commit of the spool (called once per tick, off the loop); an I/O error is reported, not raised."""
        try:
            self.spool.sync()
        except OSError as exc:
            self._persist_failed("spool sync", exc)

    # --- disk full and I/O errors -------------------------------------------------------------
    def _persist_failed(self, where: str, exc: OSError) -> None:
        """Count a failed write of the collect path; say it once per outage (any thread)."""
        self.metrics.persist_errors.labels(where=where, error=errno_name(exc)).inc()
        if self._outage is None:
            self._outage = (time.monotonic(), f"{where}: {exc.strerror or exc}")
            log.error(
                "CANNOT PERSIST collected data (%s: %s). Collection goes on: rows are held in memory up to "
                "the %.0f MB cap (past it the oldest are dropped and counted) and written as soon as the disk "
                "takes writes again.", where, exc.strerror or exc, self.max_buffer_bytes / 1048576,
            )

    def _spool_failed(self, where: str, exc: OSError) -> None:
        self._spool_down = f"{where}: {exc.strerror or exc}"
        self.metrics.persisting.set(0)
        self._next_probe = time.monotonic() + PROBE_INTERVAL_S
        self._persist_failed(where, exc)

    def _try_resume(self) -> bool:
        """Spool the rows and INTENTs held while the spool refused writes; True once it takes them."""
        self._next_probe = time.monotonic() + PROBE_INTERVAL_S
        try:
            if self._begin_rec is not None:  # start-up on a full disk: the recovered rows first
                aside = self.spool.finish_begin()
                rec, self._begin_rec = self._begin_rec, None
                self._report_recovery(rec, aside)
            for (stream, symbol), lo in list(self._unspooled.items()):
                lane = self._lanes[(stream, symbol)]
                parts = [job.parts[lane.key] for job in self._runner.jobs if not job.declared and lane.key in job.parts]
                if len(lane.buf):
                    parts.append(lane.buf.peek())
                for part in parts:
                    cols = part.columns() if isinstance(part, BlockRows) else part
                    self.spool.append_block(lane.key, cols.select(cols.seq >= lo))
                del self._unspooled[(stream, symbol)]
            for job in self._runner.jobs:
                if not job.declared:
                    self._runner.declare(job)
            self.spool.sync()
        except OSError as exc:
            self.metrics.persist_errors.labels(where="spool append", error=errno_name(exc)).inc()
            return False
        self._spool_down = None
        self.metrics.persisting.set(1)
        log.warning("The spool takes writes again; the rows held in memory are in it and their flushes run.")
        return True

    def _outage_over(self) -> None:
        if self._outage is not None and self._spool_down is None:
            started, why = self._outage
            self.outages.append((time.monotonic() - started, why))
            self._outage = None
            self._log_drops(force=True)
            log.warning("Persisting again after %.0f s without (%s).", self.outages[-1][0], why)

    def _drop_past_cap(self) -> None:
        """During an outage, past the memory cap: drop the oldest queued flushes, counted by reason."""
        for job in list(self._runner.jobs):
            if self.memory_bytes <= 0.9 * self.max_buffer_bytes:
                break
            if job.future is not None:
                continue
            # a declared job's rows are in the spool: the next start recovers them; the others are lost
            reason = "memory_cap_kept_in_spool" if job.declared else "memory_cap_not_persisted"
            self._runner.jobs.remove(job)
            self.metrics.rows_dropped.labels(stream=job.spec.name, reason=reason).inc(job.rows)
            self._buffered_rows[job.spec.name] -= job.rows
            self._job_bytes -= job.nbytes_at_start
            key = (job.spec.name, reason)
            self._drops_unlogged[key] = self._drops_unlogged.get(key, 0) + job.rows
        self._log_drops()

    def _log_drops(self, force: bool = False) -> None:
        # a long outage drops a flush's worth of rows every few ticks: one line per stream and
        # reason at most every DROP_LOG_PERIOD_S (the first at once), the rest at the end
        now = time.monotonic()
        if not self._drops_unlogged or not (force or self._drops_logged_at is None
                                            or now - self._drops_logged_at >= DROP_LOG_PERIOD_S):
            return
        first = self._drops_logged_at is None
        for (stream, reason), rows in sorted(self._drops_unlogged.items()):
            log.error("Dropped %d %s rows past the memory cap while the disk refuses writes (%s)%s", rows, stream,
                      reason, f"; further drops are summed and said at most every {DROP_LOG_PERIOD_S:.0f} s"
                      if first else "")
        self._drops_unlogged.clear()
        self._drops_logged_at = now

    @property
    def dropped(self) -> dict[str, int]:
        """Rows dropped, by reason (all streams)."""
        return counter_by(self.metrics.rows_dropped, "reason")

    def persistence_lines(self) -> list[str]:
        """Run-summary lines about disk outages and dropped rows (none when there were none)."""
        lines = []
        spans = list(self.outages) + ([(time.monotonic() - self._outage[0], self._outage[1])] if self._outage else [])
        if spans:
            errors = counter_by(self.metrics.persist_errors, "error")
            lines.append(f"Disk: could not persist for {sum(s for s, _ in spans):.0f} s in {len(spans)} outage(s) "
                         f"(first: {spans[0][1]}; failed writes: {format_reasons(errors)})"
                         + ("; still failing at exit" if self._outage else "; resumed by itself"))
        dropped = self.dropped
        if dropped:
            lines.append("Dropped rows by reason: " + format_reasons(dropped))
        return lines

    # --- flushing ----------------------------------------------------------------------------
    def maybe_flush(self) -> None:
        """Start flushes that are due, reap finished ones, start a spool rotation when due.

        Cheap (O(1) when nothing is due); call every tick from the event loop.
        """
        self._reap()
        self._spool_book = self.spool.bookkeeping_bytes
        if self._spool_down is not None and time.monotonic() >= self._next_probe:
            self._try_resume()
        if self._due:
            due, self._due = list(self._due), {}
            # every lane at its flush size this tick goes into one job per stream: 500 symbols
            # due together make one parquet file per date, not 500 (legacy stays per symbol)
            self._dispatch_many([ln for ln in (self._lanes[k] for k in due) if len(ln.buf) >= ln.spec.flush_rows])
        # The cap covers buffers, queued flushes and the spool's bookkeeping (``memory_bytes``).
        self._recent_ticks.append(self._tick_bytes)
        self._tick_bytes = 0
        if self.memory_bytes > self._target():
            self._cap_dispatch()
        self._tick_base = self._target()
        if self.memory_bytes > self.max_buffer_bytes and self._outage is not None:
            self._drop_past_cap()
        self._runner.submit_due()
        if self.spool.rotation_due and (self._rotation is None or self._rotation.done()):
            self._rotation = self._maintenance.submit(self._rotate)
        self._publish()

    def _target(self) -> int:
        """Memory a tick may start with: the cap less the rows of the largest of the last ticks (at most a quarter of it).

        A row is counted at its worst-case cost (``RowBuffer.row_cost``). Within a tick a
        new block takes only the room between memory and this target plus the rows
        appended so far (``_append``), so memory stays under the cap at every row as long
        as a tick brings no more rows than the largest of the last ``collection_interval + 1``
        ticks (or a quarter of the cap); ``wait_for_room`` brings it back under the target.
        """
        return self.max_buffer_bytes - min(max(self._recent_ticks, default=0), self.max_buffer_bytes // 4)

    def _cap_dispatch(self) -> bool:
        """Past the target: flush the largest buffers together when the queued flushes cannot bring memory under it.

        Memory falls only when a flush is written, so while the flushes already queued
        will bring it under the target nothing more is started (no small files). Otherwise
        the largest buffers go, one job per stream, until what is left of them, with the
        spool's bookkeeping and any failed flushes, fits the target and at most a quarter
        of the cap: so a cap flush takes at least half the cap less the spool's bookkeeping
        (the target is at least 3/4 of the cap), in one parquet file per date and stream,
        never one per sample. True when a flush was started.
        """
        now = time.monotonic()
        draining = sum(j.nbytes_at_start for j in self._runner.jobs
                       if j.future is not None or (j.declared and j.retry_at <= now))
        target = self._target()
        if self.memory_bytes - draining <= target:
            return False
        fixed = self.memory_bytes - self._buffer_bytes - draining  # bookkeeping and flushes that wait for a retry
        keep = max(0, min(self.max_buffer_bytes // 4, target - fixed))
        picked, left = [], self._buffer_bytes
        for lane in sorted(self._lanes.values(), key=lambda ln: ln.buf.nbytes, reverse=True):
            if left <= keep or not lane.buf.nbytes:
                break
            picked.append(lane)
            left -= lane.buf.nbytes
        self._dispatch_many(picked)
        return bool(picked)

    async def wait_for_room(self) -> None:
        """Backpressure, awaited after ``maybe_flush`` each tick: hold the tick until memory is under the target.

        The target is the cap less the rows of the largest of the last
        ``collection_interval + 1`` ticks (at most a quarter of the cap), so the next tick's
        rows fit under the cap. When the flush thread writes slower than rows arrive (a
        ``--fast`` simulation, a slow disk), the tick waits for queued flushes to finish
        (the loop itself is not blocked) instead of letting memory grow past the cap.
        Returns at once when under the target; never waits during a disk outage (rows
        past the cap are then dropped and counted, see ``maybe_flush``) or for a flush that
        failed and waits for its retry. Time waited: ``backpressure_s``.
        """
        if self.memory_bytes <= self._target():
            return
        started = time.monotonic()
        while self.memory_bytes > self._target() and self._outage is None:
            self._cap_dispatch()
            self._runner.submit_due()
            running = [j.future for j in self._runner.jobs if j.future is not None]
            if not running:
                break
            await asyncio.wait([asyncio.wrap_future(running[0])])  # one worker: the first runs now
            self._reap()
        if not self.backpressure_waits:
            log.info("Flushes are slower than collection: ticks wait for them to keep the collector under its "
                     "%.0f MB cap (--max-buffer-memory-mb)", self.max_buffer_bytes / 1048576)
        self.backpressure_waits += 1
        self.backpressure_s += time.monotonic() - started
        self._publish()

    def _rotate(self) -> None:
        try:
            self.spool.rotate()
        except OSError as exc:  # the current segment simply grows; retried at the next due tick
            self._persist_failed("spool rotation", exc)

    def checkpoint(self) -> None:
        """Rotate the spool now, on this thread: a new segment, fully written old segments deleted.

        Never rewrites rows that are still unflushed except to compact a segment that is
        mostly written (see ``spool``).
        """
        self._reap()
        if self._rotation is not None:
            self._rotation.result()
        self.spool.rotate()
        self._publish()

    def flush_all(self) -> None:
        """Dispatch every buffer (shutdown); does not wait."""
        self._reap()
        self._due = {}
        self._dispatch_many([ln for ln in self._lanes.values() if len(ln.buf)])
        self._runner.submit_due()

    def wait_for_flushes(self, timeout_s: float | None = None) -> None:
        """Block until the flushes already started have finished, and account for them.

        For tools and tests without an event loop; starts nothing new.
        """
        self._runner.wait(timeout_s)
        self._reap()
        self._publish()

    async def close(self, timeout_s: float | None = None) -> bool:
        """Flush everything and wait for every queued flush; returns True when nothing is left unflushed.

        There is no deadline that could strand queued work: it waits as long as flushes
        keep finishing (a 500-symbol shutdown may queue minutes of writes on a slow disk).
        It stops waiting only when every job left has failed three times (or the disk
        refuses the spool), or when ``timeout_s`` seconds (None: no limit) pass without
        any flush finishing. Whatever could not be written stays in the spool and is
        recovered at the next start; the spool is closed only after the flush thread is idle.
        """
        self.flush_all()
        last_progress = time.monotonic()
        while self._runner.jobs:
            if timeout_s is not None and time.monotonic() - last_progress > timeout_s:
                break
            left = len(self._runner.jobs)
            if any(j.future is not None for j in self._runner.jobs):
                await self._runner.wait_async(1.0)
            self._reap()
            if len(self._runner.jobs) < left:
                last_progress = time.monotonic()
            if self._spool_down is not None:
                self._try_resume()
            pending = [j for j in self._runner.jobs if j.future is None]
            if pending and not any(j.future is not None for j in self._runner.jobs):
                if all(j.attempts >= 3 or not j.declared for j in pending) and (
                        self._spool_down is not None or all(j.attempts >= 3 for j in pending)):
                    break
                await asyncio.sleep(self._runner.retry_delay_s)
                for job in pending:
                    job.retry_at = 0.0
            self._runner.submit_due()
        return self._finish_close()

    def close_sync(self) -> bool:
        """``close`` for code without an event loop (tests, tools): one attempt per flush."""
        self.flush_all()
        self._runner.wait()
        self._reap()
        return self._finish_close()

    def _finish_close(self) -> bool:
        self._log_drops(force=True)
        clean = not self._runner.jobs and not any(len(ln.buf) for ln in self._lanes.values())
        if self._rotation is not None:
            self._rotation.result()
        self._maintenance.shutdown(wait=True)
        self._runner.shutdown()
        # every row written: the spool holds nothing to recover
        try:
            self.spool.close(remove_segments=clean)
        except OSError as exc:
            self._persist_failed("spool close", exc)
        for job in self._runner.jobs:
            if job.declared:
                log.error("Flush %s not written (%s); its rows stay in the spool for the next start",
                          job.flush_id, job.last_error)
            else:
                self.metrics.rows_dropped.labels(stream=job.spec.name, reason="not_persisted_at_exit").inc(job.rows)
                log.error("Flush %s not written and not in the spool (the disk refused both): %d %s rows are lost",
                          job.flush_id, job.rows, job.spec.name)
        self._publish()
        return clean

    def _sinks_for(self, spec: StreamSpec) -> tuple[str, ...]:
        # the tape and candles always go to the store, whatever the sample sinks are
        if not spec.counts_as_samples:
            return tuple(s for s in spec.sinks if s == "parquet")
        return tuple(s for s in spec.sinks if s in self._enabled_sinks)

    def _new_job(self, spec: StreamSpec, parts) -> FlushJob | None:
        parts = {k: c for k, c in parts.items() if len(c)}
        if not parts:
            return None
        self._job_counter += 1
        job = FlushJob(f"{self._run_id}-{self._job_counter:06d}", spec, parts, self._sinks_for(spec))
        if self._spool_down is None:
            try:
                self._runner.add(job)
            except OSError as exc:  # the runner keeps it, undeclared
                self._spool_failed("spool intent", exc)
        else:
            job.declared = False
            self._runner.add(job, declare=False)
        job.nbytes_at_start = job.nbytes
        self._job_bytes += job.nbytes_at_start
        return job

    def _dispatch_many(self, lanes: list[_Lane]) -> None:
        """One flush job per stream for ``lanes``; a stream that is not per symbol takes all its lanes."""
        by_spec: dict[str, list[_Lane]] = {}
        for ln in lanes:
            by_spec.setdefault(ln.spec.name, []).append(ln)
        for name, group in by_spec.items():
            spec = self.streams[name]
            if not spec.per_symbol:
                group = [ln for ln in self._lanes.values() if ln.spec is spec]
            parts = {}
            for ln in group:
                if len(ln.buf):
                    self._buffer_bytes -= ln.buf.nbytes
                    parts[ln.key] = ln.buf.take()
            self._new_job(spec, parts)

    def _reap(self) -> None:
        for job in self._runner.reap():
            self._account(job)

    def _account(self, job: FlushJob) -> None:
        if self._outage is not None:
            self._outage_over()
        self.metrics.rows_flushed.labels(stream=job.spec.name).inc(job.rows)
        for sink, n in job.files.items():
            if n:
                self.metrics.files_written.labels(stream=job.spec.name, sink=sink).inc(n)
        self._buffered_rows[job.spec.name] -= job.rows
        self._job_bytes -= job.nbytes_at_start

    def _publish(self) -> None:
        m = self.metrics
        m.buffer_bytes.set(self.memory_bytes)
        m.spool_bytes.set(self.spool.total_bytes)
        for name, n in self._buffered_rows.items():
            m.rows_buffered.labels(stream=name).set(n)

    # --- statistics ---------------------------------------------------------------------------
    @property
    def buffered(self) -> int:
        """Samples not yet written by every sink (in buffers and in queued flushes)."""
        return sum(n for s, n in self._buffered_rows.items() if self.streams[s].counts_as_samples)

    @property
    def memory_bytes(self) -> int:
        """Bytes the collector holds: buffers, queued flushes and the spool's bookkeeping (the capped total)."""
        return self._buffer_bytes + self._job_bytes + self._spool_book

    def statistics_line(self) -> str:
        """``MLDataCollector statistics: collected=... buffered=... flushed=... files=... skipped=... memory_mb=...``."""
        self._publish()
        s = self.stats
        return (
            f"MLDataCollector statistics: collected={s.collected} buffered={self.buffered} flushed={s.flushed} "
            f"files={s.files} skipped={s.skipped} memory_mb={self.memory_bytes / 1048576:.2f}"
        )
