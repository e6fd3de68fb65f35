import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

REPO = Path(__file__).resolve().parents[2]
PY = sys.executable


@pytest.fixture
def run_cli(tmp_path):
    """Run the training CLI as a real process with an isolated data dir and tracking store."""
    import os
    import subprocess

    def _run(*args, data_dir=None, env_extra=None, timeout=240):
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LOBBOT_", "MLFLOW_"))}
        env.pop("DATA_DIR", None)
        env.update(env_extra or {})
        cmd = [PY, "-m", "backend.ml_engine.training_orchestrator", "--data-dir", str(data_dir or tmp_path), "--no-progress", *args]
        return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)

    return _run
