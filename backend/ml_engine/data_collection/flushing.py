"""Flush jobs and the one worker thread that writes them to their sinks.

A job is the rows of one stream bound for its sinks under one flush id. Its INTENT is in
the spool before any sink is touched; the worker writes every sink the job still needs
(each sink is idempotent by flush id), then appends DONE. A failing sink leaves the job
queued with its rows for a retry after ``retry_delay_s``; nothing partial is left,
because each store writes atomically.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from backend.metrics import Metrics
from backend.ml_engine.data_collection.buffers import BlockRows, Columns
from backend.ml_engine.data_collection.records import StreamKey
from backend.ml_engine.data_collection.sinks import Sink
from backend.ml_engine.data_collection.spool import Spool
from backend.ml_engine.data_collection.streams import StreamSpec

log = logging.getLogger("backend.ml_engine.data_collection")


@dataclass
class FlushJob:
    """Rows of one stream (one or many keys) to write to ``sinks`` under ``flush_id``."""

    flush_id: str
    spec: StreamSpec
    parts: dict[StreamKey, Columns | BlockRows]  # BlockRows become Columns on the worker thread
    sinks: tuple[str, ...]
    sinks_done: set[str] = field(default_factory=set)
    files: dict[str, int] = field(default_factory=dict)
    future: Future | None = None
    attempts: int = 0
    retry_at: float = 0.0
    last_error: str | None = None
    nbytes_at_start: int = 0  #: ``nbytes`` when queued (the collector's running memory total)
    declared: bool = True  #: its INTENT is in the spool (False while the spool cannot be written)

    @property
    def rows(self) -> int:
        """Rows in the job."""
        return sum(len(c) for c in self.parts.values())

    @property
    def nbytes(self) -> int:
        """Bytes of the job's arrays."""
        return sum(c.nbytes for c in self.parts.values())

    def ranges(self) -> list[tuple[StreamKey, int, int]]:
        """(key, first seq, last seq) of every part, for the spool's INTENT record."""
        return [(k, c.first_seq, c.last_seq) for k, c in self.parts.items() if len(c)]


class FlushRunner:
    """Queues flush jobs, runs them on one worker thread, retries failures.

    ``submit_due``, ``reap`` and ``add`` are called from one thread (the event loop);
    ``run_now`` runs a job on the calling thread (recovery, before the loop starts).
    """

    def __init__(self, spool: Spool, sinks: dict[str, Sink], metrics: Metrics, retry_delay_s: float):
        self.spool = spool
        self.sinks = sinks
        self.metrics = metrics
        self.retry_delay_s = retry_delay_s
        self.jobs: list[FlushJob] = []
        #: called (on the thread that saw it) with where and the error for an ``OSError`` of a flush
        self.on_os_error = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ml-flush")

    def add(self, job: FlushJob, *, declare: bool = True) -> FlushJob:
        """Queue ``job``; ``declare`` writes its INTENT first (False: recovery re-runs a declared one)."""
        if declare:
            # The intent is durable before any sink is touched: recovery re-runs it by id.
            # When the spool refuses it, the job waits (undeclared) for ``declare``.
            try:
                self.spool.append_intent(job.flush_id, job.ranges())
            except OSError:
                job.declared = False
                self.jobs.append(job)
                raise
        self.jobs.append(job)
        return job

    def declare(self, job: FlushJob) -> None:
        """Write the INTENT of a job queued while the spool was unwritable; raises ``OSError``."""
        self.spool.append_intent(job.flush_id, job.ranges())
        job.declared = True

    def submit_due(self) -> None:
        """Hand every queued job whose retry time has come to the worker."""
        now = time.monotonic()
        for job in self.jobs:
            # a job whose INTENT is not in the spool must not touch a sink: were the process
            # killed, recovery would flush its spooled rows again under another id
            if job.future is None and job.retry_at <= now and job.declared:
                job.attempts += 1
                job.future = self._executor.submit(self._write, job)

    def reap(self) -> list[FlushJob]:
        """Collect finished jobs: returns those written; failed ones are requeued for a retry."""
        done = []
        for job in list(self.jobs):
            fut = job.future
            if fut is None or not fut.done():
                continue
            job.future = None
            exc = fut.exception()
            if exc is None:
                self.jobs.remove(job)
                done.append(job)
            else:
                self._failed(job, exc)
        return done

    def run_now(self, job: FlushJob) -> bool:
        """Write ``job`` on this thread; True when written (then it leaves the queue)."""
        job.attempts += 1
        try:
            self._write(job)
        except Exception as exc:
            self._failed(job, exc)
            return False
        self.jobs.remove(job)
        return True

    def wait(self, timeout_s: float | None = None) -> None:
        """Block until every job handed to the worker has finished (written or failed)."""
        for job in list(self.jobs):
            if job.future is not None:
                try:
                    job.future.result(timeout=timeout_s)
                except Exception:
                    pass  # reap() accounts for it

    async def wait_async(self, timeout_s: float) -> None:
        """``wait`` without blocking the event loop."""
        futures = [asyncio.wrap_future(j.future) for j in self.jobs if j.future is not None]
        if futures:
            await asyncio.wait(futures, timeout=timeout_s)

    def shutdown(self) -> None:
        """Stop the worker after the jobs handed to it."""
        self._executor.shutdown(wait=True)

    def _failed(self, job: FlushJob, exc: BaseException) -> None:
        job.last_error = f"{type(exc).__name__}: {exc}"
        job.retry_at = time.monotonic() + self.retry_delay_s
        self.metrics.flush_failures.labels(stream=job.spec.name, reason=type(exc).__name__).inc()
        if isinstance(exc, OSError) and self.on_os_error is not None:
            self.on_os_error("flush", exc)  # the collector says it once per outage
            return
        log.warning(
            "Flush of %d %s rows failed (%s); rows kept in memory and spool, retry in %.0f s",
            job.rows, job.spec.name, job.last_error, self.retry_delay_s,
        )

    def _write(self, job: FlushJob) -> None:
        """Worker thread: every sink the job still needs, then DONE in the spool."""
        started = time.perf_counter()
        # the copy out of the buffer's blocks happens here, not on the event loop
        job.parts = {k: c.columns() for k, c in job.parts.items()}
        for name in job.sinks:
            if name in job.sinks_done:
                continue
            job.files[name] = job.files.get(name, 0) + self.sinks[name].write(job.spec, job.parts, job.flush_id)
            job.sinks_done.add(name)
        self.spool.append_done(job.flush_id)
        self.metrics.flush_seconds.observe(time.perf_counter() - started)
