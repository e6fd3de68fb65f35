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


@pytest.fixture
def learnable_store_dir(tmp_path):
    """A data dir whose store has two symbols (one with a gap), labels and a price tape."""
    from synthetic import make_samples, write_store

    write_store(
        tmp_path / "feature_store" / "offline",
        [make_samples("BTCUSDT", 1500, seed=1), make_samples("ETHUSDT", 1500, seed=2, gaps={700: 600_000})],
    )
    return tmp_path


# Small and quick: a learnable run in a few seconds on two cores.
FAST_TRAIN_ARGS = ["--epochs", "10", "--patience", "3", "--lr", "3e-3", "--batch-size", "128", "--sequence-length", "10", "--threads", "1"]
