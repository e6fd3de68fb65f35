"""SIGINT and SIGTERM end a training run's MLflow run as KILLED, and the console says so truthfully."""

import os
import signal
import subprocess
import threading

import pytest

from conftest import PY, REPO
from synthetic import make_samples, write_store


def _tracked_status(data_dir):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{data_dir / 'mlflow' / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("interrupt")
    runs = client.search_runs([exp.experiment_id])
    store = client._tracking_client.store
    try:
        return [(r.info.run_id, r.info.status) for r in runs]
    finally:
        getattr(store, "engine", None) and store.engine.dispose()


@pytest.mark.parametrize("sig, code, word", [(signal.SIGINT, 130, "Interrupted"), (signal.SIGTERM, 143, "Terminated")])
def test_a_signal_marks_the_run_killed(tmp_path, sig, code, word):
    write_store(tmp_path / "feature_store" / "offline", [make_samples("BTCUSDT", 1500, seed=1)])
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOBBOT_", "MLFLOW_"))}
    env.pop("DATA_DIR", None)
    cmd = [PY, "-m", "backend.ml_engine.training_orchestrator", "--data-dir", str(tmp_path), "--no-progress",
           "--experiment", "interrupt", "--epochs", "100000", "--patience", "100000", "--batch-size", "64",
           "--sequence-length", "10", "--threads", "1"]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    timer = threading.Timer(240, proc.kill)  # a hung child must not hang the suite
    timer.start()
    try:
        seen = []
        for line in proc.stdout:  # the first epoch line: the MLflow run is open and logging
            seen.append(line)
            if line.startswith("epoch "):
                break
        assert any(line.startswith("epoch ") for line in seen), "".join(seen) + proc.stderr.read()
        proc.send_signal(sig)
        out, err = proc.communicate()
    finally:
        timer.cancel()
    assert proc.returncode == code, (proc.returncode, err[-3000:])
    [(run_id, status)] = _tracked_status(tmp_path)
    assert status == "KILLED"
    assert f"{word}: nothing was registered; the MLflow run {run_id} is marked KILLED." in err
    assert "Traceback" not in err
