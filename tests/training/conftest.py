import os
import sys
import uuid
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


PG_HOST = os.environ.get("LOBBOT_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("LOBBOT_TEST_PG_PORT", "5432"))


def _admin_connection():
    import psycopg2

    errors = []
    users = [os.environ["LOBBOT_TEST_PG_USER"]] if os.environ.get("LOBBOT_TEST_PG_USER") else ["postgres", "root"]
    for user in users:
        try:
            conn = psycopg2.connect(host=PG_HOST, port=PG_PORT, user=user, dbname="postgres", connect_timeout=5)
            conn.autocommit = True
            return conn, user
        except psycopg2.OperationalError as exc:
            errors.append(f"{user}: {exc}".strip())
    pytest.fail(f"PostgreSQL at {PG_HOST}:{PG_PORT} is required for this test: {errors}")


@pytest.fixture
def pg_database():
    conn, user = _admin_connection()
    name = f"mlflow_test_{uuid.uuid4().hex[:12]}"
    with conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    try:
        yield user, name
    finally:
        with conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.close()
