"""Passwords and tokens in URLs: one parser for connecting and masking, so no part of a secret
is printed, logged, raised or stored in MLflow; an ambiguous password is refused, masked."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from backend.credentials import CredentialError, mask_url, parse_url, scrub

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "training"))

PG_HOST = os.environ.get("LOBBOT_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("LOBBOT_TEST_PG_PORT", "5432"))
SECRET = "Sx/7#qZ@v9Kp"  # contains / # and @
SECRET_PARTS = ["Sx/7", "7#qZ", "qZ@v", "v9Kp", "Sx%2F7", "%23qZ", "%40v9"]


def _leaks(text: str) -> list[str]:
    return [p for p in SECRET_PARTS if p in text]


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://alice:Sx/7%23qZ%40v9Kp@db.example:5432/mlflow",
        "postgresql://alice:Sx%2F7%23qZ%40v9Kp@db.example/mlflow",
        "postgresql+psycopg2://alice:Sx/7#qZ%40v9Kp@db.example/mlflow",
        "http://alice:Sx%2F7%23qZ%40v9Kp@api.example:8080/v5",
        "https://api.example/v5?api_key=Sx%2F7%23qZ%40v9Kp",
    ],
)
def test_mask_and_scrub_hide_every_form(url):
    parsed = parse_url(url)
    assert parsed.has_secret
    assert not _leaks(parsed.masked) and not _leaks(repr(parsed)) and not _leaks(str(parsed))
    quoted = f"connection to {url} failed: password={SECRET} rejected for Sx/7#qZ@v9Kp (Sx%2F7%23qZ%40v9Kp)"
    assert not _leaks(parsed.scrub(quoted)), parsed.scrub(quoted)
    assert "***" in parsed.masked


def test_mask_matches_what_sqlalchemy_and_yarl_connect_to():
    import yarl
    from sqlalchemy.engine import make_url

    db = "postgresql://alice:Sx/7#qZ%40v9Kp@db.example:5433/mlflow"
    assert make_url(db).password == SECRET and make_url(db).host == "db.example"
    assert parse_url(db).masked == "postgresql://alice:***@db.example:5433/mlflow"
    http = "http://alice:Sx%2F7%23qZ%40v9Kp@api.example/v5"
    assert yarl.URL(http).password == SECRET
    assert parse_url(http).masked == "http://alice:***@api.example/v5"


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://alice:Sx/7#qZ@v9Kp@db.example/mlflow",  # raw @: SQLAlchemy would take 'v9Kp@db.example' as host
        "http://alice:Sx/7#qZ%40v9Kp@api.example/v5",  # / and # end an HTTP authority
        "http://alice:Sx@v9Kp@api.example/v5",
    ],
)
def test_ambiguous_password_is_refused_showing_only_the_mask(url):
    with pytest.raises(CredentialError) as err:
        parse_url(url)
    text = str(err.value)
    assert "percent-encode" in text or "percent-encoded" in text
    assert not _leaks(text) and "alice" not in text, text
    assert not _leaks(mask_url(url)) and not _leaks(scrub(f"error at {url}", url))


def _admin():
    import psycopg2

    for user in ([os.environ["LOBBOT_TEST_PG_USER"]] if os.environ.get("LOBBOT_TEST_PG_USER") else ["postgres", "root"]):
        try:
            conn = psycopg2.connect(host=PG_HOST, port=PG_PORT, user=user, dbname="postgres", connect_timeout=5)
            conn.autocommit = True
            return conn
        except psycopg2.OperationalError:
            continue
    pytest.fail(f"PostgreSQL at {PG_HOST}:{PG_PORT} is required for this test")


@pytest.fixture
def pg_secret_db():
    """A role whose password holds / # and @, owning a fresh database; dropped afterwards."""
    conn = _admin()
    tag = uuid.uuid4().hex[:10]
    role, db = f"lobbot_secret_{tag}", f"mlflow_secret_{tag}"
    with conn.cursor() as cur:
        cur.execute(f"CREATE ROLE {role} LOGIN PASSWORD %s", (SECRET,))
        cur.execute(f'CREATE DATABASE "{db}" OWNER {role}')
    try:
        yield role, db
    finally:
        with conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
            cur.execute(f"DROP ROLE IF EXISTS {role}")
        conn.close()


def _train(data_dir: Path, uri: str, log_file: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOBBOT_", "MLFLOW_"))}
    env.pop("DATA_DIR", None)
    env["MLFLOW_TRACKING_URI"] = uri
    cmd = [sys.executable, "-m", "backend.ml_engine.training_orchestrator", "--data-dir", str(data_dir), "--no-progress",
           "--epochs", "2", "--patience", "1", "--batch-size", "128", "--sequence-length", "10", "--threads", "1",
           "--experiment", "secret_scan"]
    with open(log_file, "w") as fh:
        proc = subprocess.run(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=fh, text=True, timeout=400)
    return proc


def _scan_tree(root: Path) -> list[str]:
    hits = []
    for path in root.rglob("*"):
        if path.is_file() and path.stat().st_size < 50_000_000:
            text = path.read_bytes().decode("latin-1")
            if _leaks(text):
                hits.append(str(path))
    return hits


def test_training_with_secrets_in_the_uri_leaks_nothing(tmp_path, pg_secret_db):
    import mlflow
    from synthetic import make_samples, write_store

    role, db = pg_secret_db
    write_store(tmp_path / "feature_store" / "offline", [make_samples("BTCUSDT", 1200, seed=1)])
    good = f"postgresql://{role}:Sx/7#qZ%40v9Kp@{PG_HOST}:{PG_PORT}/{db}"  # raw / and #, @ encoded
    proc = _train(tmp_path, good, tmp_path / "stderr.log")
    out = proc.stdout + (tmp_path / "stderr.log").read_text()
    assert proc.returncode == 0, out
    assert not _leaks(out), out
    assert f"{role}:***@" in out

    raw_at = f"postgresql://{role}:{SECRET}@{PG_HOST}:{PG_PORT}/{db}"
    bad = _train(tmp_path, raw_at, tmp_path / "stderr2.log")
    bad_out = bad.stdout + (tmp_path / "stderr2.log").read_text()
    assert bad.returncode == 1 and "percent-encode" in bad_out and "Traceback" not in bad_out, bad_out
    assert not _leaks(bad_out) and "not reachable" not in bad_out, bad_out

    assert not _scan_tree(tmp_path)  # artifacts, logs, anything written under the data dir
    mlflow.set_tracking_uri(good.replace("postgresql://", "postgresql+psycopg2://"))
    try:
        runs = mlflow.search_runs(experiment_names=["secret_scan"], output_format="list")
        assert len(runs) == 1
        run = runs[0]
        stored = " ".join(f"{k}={v}" for k, v in {**run.data.params, **run.data.tags}.items())
        stored += " " + " ".join(str(v) for v in [run.info.artifact_uri, run.info.run_name])
        assert not _leaks(stored), stored
    finally:
        from mlflow.tracking._tracking_service.utils import _get_store

        getattr(_get_store(), "engine", None) and _get_store().engine.dispose()
        mlflow.set_tracking_uri(None)


def test_permission_denied_for_schema_public_is_explained(tmp_path):
    """PostgreSQL 15+: a role that does not own the database cannot create MLflow's tables."""
    from synthetic import make_samples, write_store

    conn = _admin()
    tag = uuid.uuid4().hex[:10]
    role, db = f"lobbot_noown_{tag}", f"mlflow_noown_{tag}"
    with conn.cursor() as cur:
        cur.execute(f"CREATE ROLE {role} LOGIN PASSWORD %s", (SECRET,))
        cur.execute(f'CREATE DATABASE "{db}"')  # owned by the admin, not by the role
    try:
        write_store(tmp_path / "feature_store" / "offline", [make_samples("BTCUSDT", 800, seed=1)], tape=False)
        proc = _train(tmp_path, f"postgresql://{role}:Sx%2F7%23qZ%40v9Kp@{PG_HOST}:{PG_PORT}/{db}", tmp_path / "err.log")
        out = proc.stdout + (tmp_path / "err.log").read_text()
        assert proc.returncode == 1, out
        assert "schema public" in out and "GRANT CREATE ON SCHEMA public" in out and "Traceback" not in out, out
        assert not _leaks(out), out
    finally:
        with conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
            cur.execute(f"DROP ROLE IF EXISTS {role}")
        conn.close()


def test_settings_refuse_an_ambiguous_exchange_url_without_quoting_it(tmp_path):
    from pydantic import ValidationError

    from backend.config import Settings, settings_error_text

    with pytest.raises(ValidationError) as err:
        Settings(data_dir=tmp_path, bybit_rest_url="http://alice:Sx/7#qZ@v9Kp@api.example/")
    for text in (str(err.value), settings_error_text(err.value), repr(err.value)):
        assert "percent-encoded" in text and not _leaks(text) and "alice" not in text, text


@pytest.mark.parametrize("uri, words", [
    ("postgresql://alice:Sx/7#qZ@v9Kp@127.0.0.1:1/mlflow", "percent-encode"),  # a raw @: refused, never connected
    ("postgresql://alice:Sx/7#qZ%40v9Kp@127.0.0.1:1/mlflow", "not reachable"),  # nothing listens on port 1
    ("http://alice:Sx%2F7%23qZ%40v9Kp@127.0.0.1:1/", "tracking server is not reachable"),  # MLflow would retry for minutes
])
def test_live_report_checks_the_tracking_store_first_and_masks_it(tmp_path, uri, words):
    """The live report asks MLflow only after one quick connect: no ~100 s of MLflow retries, and no
    driver error (which, for a raw '@', names the password's tail as the host) on the console."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOBBOT_", "MLFLOW_"))}
    env.pop("DATA_DIR", None)
    env["MLFLOW_TRACKING_URI"] = uri
    proc = subprocess.run([sys.executable, "-m", "backend.apps.live_report", "--data-dir", str(tmp_path)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1 and words in out and "Traceback" not in out, out
    assert "alice:***@" in out or "***@127.0.0.1" in out, out
    assert not _leaks(out), out
