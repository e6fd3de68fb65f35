"""The job runner with real child processes: output, exit codes, cancel of a whole process group."""

import asyncio
import sys
import time

from helpers import pid_alive

from backend.web.jobs import JobBusy, JobRunner

# A child that prints epoch lines, starts a grandchild, and ignores SIGINT and SIGTERM.
STUBBORN = r"""
import signal, subprocess, sys, time
signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal(signal.SIGTERM, signal.SIG_IGN)
g = subprocess.Popen([sys.executable, "-c", "import signal,time; signal.signal(signal.SIGINT, signal.SIG_IGN); signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"])
print("grandchild", g.pid, flush=True)
print("epoch   1/9  train_loss 1.0000  val_loss 0.9000  val_acc 0.400  val_macro_f1 0.300  1,000 samples/s  *best", flush=True)
time.sleep(600)
"""


async def _wait(cond, timeout=30.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        await asyncio.sleep(0.05)
    return False


async def test_cancel_kills_child_and_grandchild(tmp_path):
    runner = JobRunner(tmp_path, grace_s=0.5)
    job = await runner.start("training", [sys.executable, "-c", STUBBORN])
    assert await _wait(lambda: job.metrics and any(line.startswith("grandchild") for line in job.log))
    grandchild = int(next(line for line in job.log if line.startswith("grandchild")).split()[1])
    assert job.epoch == 1 and job.epochs == 9 and job.metrics[0]["val_macro_f1"] == 0.3 and job.metrics[0]["best"]
    try:
        await runner.start("labelling", [sys.executable, "-c", "pass"])
        raise AssertionError("a second job started while one runs")
    except JobBusy as exc:
        assert exc.job is job
    t0 = time.monotonic()
    await runner.cancel(job.job_id)
    assert time.monotonic() - t0 < 5
    assert job.state == "cancelled"
    assert not pid_alive(job.pid)
    assert await _wait(lambda: not pid_alive(grandchild), 5)


async def test_exit_code_and_last_line_on_failure(tmp_path):
    runner = JobRunner(tmp_path)
    job = await runner.start("labelling", [sys.executable, "-c", "import sys; print('working'); print('No training data available', file=sys.stderr); sys.exit(3)"])
    await job.done.wait()
    assert job.state == "failed" and job.exit_code == 3
    assert "No training data available" in job.error and "working" in job.as_dict()["log_tail"]
    ok = await runner.start("labelling", [sys.executable, "-c", "print('done')"])
    await ok.done.wait()
    assert ok.state == "succeeded" and ok.exit_code == 0


async def test_token_never_reaches_the_child(tmp_path, monkeypatch):
    monkeypatch.setenv("LOBBOT_API_TOKEN", "secret-secret-secret-1234")
    runner = JobRunner(tmp_path)
    job = await runner.start("labelling", [sys.executable, "-c", "import os; print(os.environ.get('LOBBOT_API_TOKEN', 'absent'))"])
    await job.done.wait()
    assert list(job.log) == ["absent"]


async def test_app_pins_the_childs_tracking_store(tmp_path, monkeypatch):
    """The cause of the empty runs list after a job (issue 14): mlflow.set_tracking_uri in
    this process writes MLFLOW_TRACKING_URI into os.environ, and a child inheriting it
    tracked its run in that store instead of the one /api/runs reads."""
    import mlflow

    from backend.web.app import KEY_JOBS, WebSettings, create_app
    from backend.web.auth import ApiToken

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "")  # restored after the test, whatever mlflow writes
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/other.db")  # what an in-process training run does
    try:
        store = f"sqlite:///{tmp_path}/data/mlflow/mlflow.db"
        app = create_app(WebSettings(data_dir=tmp_path / "data", token=ApiToken("t" * 24, "test"), tracking_uri=store,
                                     warm_audit=False))
        job = await app[KEY_JOBS].start("labelling", [sys.executable, "-c", "import os; print(os.environ['MLFLOW_TRACKING_URI'])"])
        await job.done.wait()
        assert list(job.log) == [store]
    finally:
        mlflow.set_tracking_uri(None)
