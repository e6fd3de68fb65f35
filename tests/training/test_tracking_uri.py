"""Tracking URIs: PostgreSQL goes through psycopg2, artifacts have a known home, passwords never show."""

from pathlib import Path

from backend.ml_engine.training_orchestrator.tracking import mask_uri, normalize_tracking_uri, resolve_tracking, scrub


def test_plain_postgres_uri_uses_psycopg2():
    assert normalize_tracking_uri("postgresql://u:p@h:5432/db") == "postgresql+psycopg2://u:p@h:5432/db"
    assert normalize_tracking_uri("postgres://u@h/db") == "postgresql+psycopg2://u@h/db"
    assert normalize_tracking_uri("postgresql+psycopg2://u@h/db") == "postgresql+psycopg2://u@h/db"
    assert normalize_tracking_uri("sqlite:////x/mlflow.db") == "sqlite:////x/mlflow.db"


def test_password_masked_everywhere():
    uri = "postgresql+psycopg2://trader:s3cr%40t@db.example:5432/mlflow"
    assert mask_uri(uri) == "postgresql+psycopg2://trader:***@db.example:5432/mlflow"
    assert mask_uri("postgresql://trader@h/db") == "postgresql://trader@h/db"
    err = f'connection to "{uri}" failed: password=s3cr%40t rejected for s3cr%40t'
    assert "s3cr" not in scrub(err, uri)


def test_default_is_sqlite_under_data_dir(tmp_path):
    t = resolve_tracking(None, None, tmp_path)
    assert t.uri == f"sqlite:///{(tmp_path / 'mlflow' / 'mlflow.db').resolve().as_posix()}"
    assert t.artifact_location == (tmp_path / "mlflow" / "artifacts").resolve().as_uri()
    assert (tmp_path / "mlflow").is_dir() and t.source == "default"


def test_cli_beats_env_and_env_beats_default(tmp_path):
    t = resolve_tracking("postgresql://a@h/x", "postgresql://b@h/y", tmp_path)
    assert t.uri.endswith("a@h/x") and t.source == "--tracking-uri"
    t = resolve_tracking(None, "postgresql://b:pw@h/y", tmp_path, artifact_location=str(tmp_path / "arts"))
    assert t.uri == "postgresql+psycopg2://b:pw@h/y" and t.shown == "postgresql+psycopg2://b:***@h/y"
    assert t.artifact_location == Path(tmp_path / "arts").resolve().as_uri()
