"""``python -m backend.apps.mlflow_ui`` opens MLflow's UI on the training store and drops nothing in the current directory."""

import signal
import subprocess
import sys
import time

import pytest
import requests

from helpers import REPO, clean_env, free_port


@pytest.mark.slow  # MLflow's server creates its store and starts workers: tens of seconds
def test_mlflow_ui_serves_the_default_store(tmp_path):
    data = tmp_path / "data"
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "backend.apps.mlflow_ui", "--data-dir", str(data), "--port", str(port)],
                            cwd=cwd, env={**clean_env(), "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        first = proc.stdout.readline()
        assert f"MLflow UI: http://127.0.0.1:{port}/" in first and str(data / "mlflow" / "mlflow.db") in first
        end = time.monotonic() + 240
        while time.monotonic() < end:
            try:
                r = requests.post(f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/search",
                                  json={"max_results": 10}, timeout=15)
                if r.status_code == 200:
                    break
            except (requests.ConnectionError, requests.Timeout):
                pass
            assert proc.poll() is None, proc.stdout.read()[-2000:]
            time.sleep(0.5)
        else:
            raise AssertionError("the MLflow UI did not answer")
        assert (data / "mlflow" / "mlflow.db").exists()
    finally:
        import os

        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    assert list(cwd.iterdir()) == []
    assert not (REPO / "mlflow.db").exists()
