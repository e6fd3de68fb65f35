"""Training and labelling jobs: one child process at a time, followed and cancellable.

``JobRunner.start(kind, argv)`` runs ``argv`` with ``asyncio.create_subprocess_exec`` (never
a shell) in a new session, hence its own process group, with stdout and stderr merged and
read line by line into the job's ``log_tail``; training lines are parsed for per-epoch
metrics and the MLflow run id (``backend.web.progress``). ``cancel(job_id)`` sends SIGINT to
the whole group (the training CLI then marks its MLflow run KILLED), SIGTERM after
``grace_s`` and SIGKILL after twice that, so the child and its children are gone within a
few seconds. A second ``start`` while a job is queued or running raises ``JobBusy``.

The child's environment is the server's minus ``LOBBOT_API_TOKEN`` (the token never
reaches a child), with ``PYTHONUNBUFFERED=1`` so lines arrive as they are printed,
``LOBBOT_LANG=en`` so the lines parsed for progress are the English ones, and the
``overrides`` the app gives: ``MLFLOW_TRACKING_URI`` set to the store the runs list reads.
Without that pin a child resolves its store from whatever ``MLFLOW_TRACKING_URI`` the
server process happens to hold (``mlflow.set_tracking_uri`` writes it into
``os.environ``), and its run lands in a store the page never reads.
"""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from backend.web.progress import parse_epoch, parse_run_id

KINDS = ("training", "labelling")
ACTIVE = ("queued", "running")
LOG_LINES = 400
SHOWN_LINES = 60


class JobBusy(RuntimeError):
    """Another job is queued or running; ``job`` is that job."""

    def __init__(self, job: "Job"):
        self.job = job
        super().__init__(f"a {job.kind} job ({job.job_id}) is already {job.state}; wait for it or cancel it")


@dataclass
class Job:
    """One child run. ``as_dict()`` is the job JSON of DESIGN.md §6.3 plus ``pid``,
    ``options``, ``started``/``ended`` (s since epoch) and ``error``."""

    job_id: str
    kind: str
    options: dict
    state: str = "queued"
    epoch: int = 0
    epochs: int | None = None
    metrics: list[dict] = field(default_factory=list)
    log: collections.deque = field(default_factory=lambda: collections.deque(maxlen=LOG_LINES))
    mlflow_run_id: str | None = None
    exit_code: int | None = None
    pid: int | None = None
    started: float | None = None
    ended: float | None = None
    error: str | None = None
    cancel_requested: bool = False
    process: asyncio.subprocess.Process | None = field(default=None, repr=False)
    done: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    def as_dict(self, lines: int = SHOWN_LINES) -> dict:
        """The job in the JSON shape of DESIGN.md §6.3, with the last ``lines`` of its log."""
        tail = list(self.log)[-lines:] if lines else []
        return {
            "job_id": self.job_id,
            "kind": self.kind,
            "state": self.state,
            "epoch": self.epoch,
            "epochs": self.epochs,
            "metrics": list(self.metrics),
            "log_tail": "\n".join(tail),
            "mlflow_run_id": self.mlflow_run_id,
            "exit_code": self.exit_code,
            "pid": self.pid,
            "options": self.options,
            "started": self.started,
            "ended": self.ended,
            "error": self.error,
        }

    def feed(self, line: str) -> None:
        """Take one output line: keep it, and read progress from it."""
        self.log.append(line)
        if self.kind != "training":
            return
        ep = parse_epoch(line)
        if ep is not None:
            self.epoch = ep["epoch"]
            self.epochs = ep["epochs"]
            self.metrics.append({k: v for k, v in ep.items() if k != "epochs"})
            return
        run_id = parse_run_id(line)
        if run_id:
            self.mlflow_run_id = run_id


class JobRunner:
    """Runs one job at a time; keeps the last ``keep`` jobs for ``GET``.

    ``cwd``: the child's working directory (the repository root, so ``python -m backend...``
    imports this checkout). ``grace_s``: seconds between SIGINT, SIGTERM and SIGKILL.
    ``env``: the base environment (default ``os.environ`` now); ``overrides``: variables
    every child gets whatever the base says (the app pins ``MLFLOW_TRACKING_URI``).
    """

    def __init__(self, cwd: Path, *, grace_s: float = 2.0, keep: int = 20, env: dict | None = None,
                 overrides: dict[str, str] | None = None) -> None:
        self.cwd = Path(cwd)
        self.grace_s = grace_s
        self.keep = keep
        base = dict(os.environ if env is None else env)
        base.pop("LOBBOT_API_TOKEN", None)
        base["PYTHONUNBUFFERED"] = "1"
        base["LOBBOT_LANG"] = "en"  # the progress parser reads the English lines; the page translates
        base.update(overrides or {})
        self.env = base
        self.jobs: dict[str, Job] = {}
        self._tasks: set[asyncio.Task] = set()
        self._changed = asyncio.Condition()

    # --- queries ---------------------------------------------------------------------------
    def active(self) -> Job | None:
        """The job that is queued or running, or None."""
        return next((j for j in self.jobs.values() if j.state in ACTIVE), None)

    def get(self, job_id: str) -> Job | None:
        """The job with this id, or None."""
        return self.jobs.get(job_id)

    def recent(self) -> list[Job]:
        """Jobs newest first."""
        return list(reversed(self.jobs.values()))

    # --- control ---------------------------------------------------------------------------
    async def start(self, kind: str, argv: Sequence[str], options: dict | None = None, *, epochs: int | None = None) -> Job:
        """Start ``argv`` as a job of ``kind``; returns once the child is spawned (or failed to).

        Raises:
            ValueError: ``kind`` is not ``training`` or ``labelling``, or ``argv`` is empty.
            JobBusy: another job is queued or running.
        """
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        if not argv:
            raise ValueError("argv is empty")
        busy = self.active()
        if busy is not None:
            raise JobBusy(busy)
        job = Job(uuid.uuid4().hex[:16], kind, dict(options or {}), epochs=epochs)
        self.jobs[job.job_id] = job
        while len(self.jobs) > self.keep:
            oldest = next(iter(self.jobs))
            if self.jobs[oldest].state in ACTIVE:
                break
            del self.jobs[oldest]
        try:
            job.process = await asyncio.create_subprocess_exec(
                *argv,
                cwd=str(self.cwd),
                env=self.env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
                limit=1 << 20,
            )
        except OSError as exc:
            job.state, job.error, job.ended = "failed", f"could not start: {exc}", time.time()
            job.done.set()
            return job
        job.pid = job.process.pid
        job.state = "running"
        job.started = time.time()
        task = asyncio.get_running_loop().create_task(self._follow(job))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return job

    async def _follow(self, job: Job) -> None:
        proc = job.process
        assert proc is not None and proc.stdout is not None
        try:
            while True:
                raw = await proc.stdout.readline()
                if not raw:
                    break
                # tqdm-style carriage returns: keep the last state of the line
                text = raw.decode("utf-8", "replace").rstrip("\r\n").split("\r")[-1]
                job.feed(text)
            code = await proc.wait()
        finally:
            if proc.returncode is None:  # the follower itself was cancelled (server shutdown)
                self._signal_group(job, signal.SIGKILL)
                code = await proc.wait()
        job.exit_code = code
        job.ended = time.time()
        if job.cancel_requested:
            job.state = "cancelled"
        elif code == 0:
            job.state = "succeeded"
        else:
            job.state = "failed"
            last = next((line for line in reversed(job.log) if line.strip()), "")
            job.error = f"exit code {code}" + (f": {last.strip()[:300]}" if last else "")
        job.done.set()

    def _signal_group(self, job: Job, sig: int) -> bool:
        if job.pid is None:
            return False
        try:
            os.killpg(job.pid, sig)  # the child leads its own session, so its pgid is its pid
            return True
        except ProcessLookupError:
            return False

    async def cancel(self, job_id: str) -> Job | None:
        """Stop job ``job_id`` and its children; returns the job (``None`` if unknown).

        Waits until the child has exited (at most about 2 x ``grace_s`` + 1 s). A job that
        already ended is returned unchanged.
        """
        job = self.jobs.get(job_id)
        if job is None or job.state not in ACTIVE:
            return job
        job.cancel_requested = True
        for sig, wait in ((signal.SIGINT, self.grace_s), (signal.SIGTERM, self.grace_s), (signal.SIGKILL, 5.0)):
            if not self._signal_group(job, sig):
                break
            try:
                await asyncio.wait_for(job.done.wait(), wait)
                break
            except asyncio.TimeoutError:
                continue
        # grandchildren that ignored SIGINT/SIGTERM while the leader exited
        self._signal_group(job, signal.SIGKILL)
        await job.done.wait()
        return job

    async def close(self) -> None:
        """Cancel the active job and wait for followers (server shutdown)."""
        job = self.active()
        if job is not None:
            await self.cancel(job.job_id)
        for t in list(self._tasks):
            await t
