"""MLflow tracking: where runs go, how URIs are fixed up, and how failures are explained.

Two traps with MLflow 3.x / SQLAlchemy 2.x (DESIGN §5):
* ``postgresql://`` now selects the psycopg 3 driver, which is not installed; we
  rewrite it to ``postgresql+psycopg2://`` (psycopg2-binary is a dependency).
* With a database backend the default artifact root is ``./mlruns`` in whatever
  directory the command ran from; every experiment we create gets an explicit
  artifact location instead (default ``<data_dir>/mlflow/artifacts``).
Passwords are masked in everything printed or raised, by ``backend.credentials`` (the same
parse SQLAlchemy does, so the mask and the connection agree on where a password ends).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from backend.credentials import CredentialError, mask_url, parse_url
from backend.credentials import scrub as scrub_url
from backend.ml_engine.training_orchestrator.errors import TrackingError

DEFAULT_EXPERIMENT = "lob_direction"
_PG_PREFIXES = ("postgresql://", "postgres://")


def default_tracking_uri(data_dir: Path) -> str:
    """SQLite under ``<data_dir>/mlflow/mlflow.db``."""
    return f"sqlite:///{(Path(data_dir) / 'mlflow' / 'mlflow.db').resolve().as_posix()}"


def default_artifact_location(data_dir: Path) -> str:
    """``<data_dir>/mlflow/artifacts`` as a file URI (never ./mlruns in the current directory)."""
    return (Path(data_dir) / "mlflow" / "artifacts").resolve().as_uri()


def normalize_tracking_uri(uri: str) -> str:
    """Make the plain PostgreSQL URI users type work with psycopg2; leave everything else alone."""
    for prefix in _PG_PREFIXES:
        if uri.startswith(prefix):
            return "postgresql+psycopg2://" + uri[len(prefix) :]
    return uri


def mask_uri(uri: str) -> str:
    """The URI with its password (if any) replaced by ***; safe to print and log.

    Parsed by ``backend.credentials`` exactly as SQLAlchemy (or yarl, for HTTP) will parse it.
    """
    return mask_url(uri)


def scrub(text: str, uri: str) -> str:
    """Remove every form of the password of ``uri`` from any text (driver errors like to quote the DSN)."""
    return scrub_url(text, uri)


@dataclass
class TrackingTarget:
    """Where a run is tracked: the normalised URI (may hold a password: print ``shown``), the
    artifact location of new experiments and where the URI came from."""

    uri: str  # normalised, may hold a password: never print it, print ``shown``
    artifact_location: str
    source: str  # where the URI came from: --tracking-uri, MLFLOW_TRACKING_URI, default

    @property
    def shown(self) -> str:
        """The URI with any password masked."""
        return mask_uri(self.uri)

    @property
    def is_database(self) -> bool:
        """True for SQL stores (sqlite, postgresql, ...), False for file and HTTP stores."""
        return not self.uri.startswith(("file:", "http:", "https:", "databricks")) and "://" in self.uri


def resolve_tracking(cli_uri: str | None, env_uri: str | None, data_dir: Path, artifact_location: str | None = None) -> TrackingTarget:
    """The target from ``--tracking-uri``, else ``MLFLOW_TRACKING_URI``, else the SQLite default;
    ``postgresql://`` is rewritten to the psycopg2 driver (DESIGN §5)."""
    if cli_uri:
        uri, source = cli_uri, "--tracking-uri"
    elif env_uri:
        uri, source = env_uri, "MLFLOW_TRACKING_URI"
    else:
        uri, source = default_tracking_uri(data_dir), "default"
    if uri.startswith("sqlite:///"):
        Path(uri[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
    location = artifact_location or default_artifact_location(data_dir)
    if "://" not in location:
        location = Path(location).resolve().as_uri()
    return TrackingTarget(normalize_tracking_uri(uri), location, source)


def _explain(exc: BaseException, target: TrackingTarget) -> TrackingError:
    text = scrub(f"{type(exc).__name__}: {exc}", target.uri)
    low = text.lower()
    where = f"MLflow tracking store {target.shown} (from {target.source})"
    if "no module named 'psycopg'" in low or "no module named 'psycopg2'" in low:
        hint = "the PostgreSQL driver is missing: pip install psycopg2-binary, and use postgresql:// or postgresql+psycopg2:// URIs"
    elif "does not exist" in low and "database" in low:
        hint = "create the database first: createdb -h HOST -U USER mlflow (see docs/mlflow_postgres.md)"
    elif "connection refused" in low or "could not connect" in low or "could not translate host" in low or "timeout" in low:
        hint = "the database server is not reachable: check host, port and that PostgreSQL is running"
    elif "password authentication failed" in low or "authentication" in low:
        hint = "the database refused the user or password in the URI"
    elif "permission denied for schema public" in low:
        hint = (
            "the role may not create tables in schema public (PostgreSQL 15+ no longer lets every role do so): "
            "make it the database owner (ALTER DATABASE mlflow OWNER TO mlflow) or GRANT CREATE ON SCHEMA public TO it "
            "(see docs/mlflow_postgres.md)"
        )
    elif "can't locate revision" in low:
        hint = (
            "the database's alembic_version table belongs to another tool (or a newer MLflow): "
            "give MLflow its own database (see docs/mlflow_postgres.md)"
        )
    elif "out-of-date database schema" in low or "alembic" in low or "mlflow db upgrade" in low:
        hint = f"the database schema is older than this MLflow: run `mlflow db upgrade {target.shown}` (back the database up first)"
    elif "already exists" in low or "duplicate" in low:
        hint = "the database holds tables of another tool or another MLflow version: give MLflow its own database"
    else:
        hint = "see docs/mlflow_postgres.md"
    return TrackingError(f"Cannot use {where}: {hint}.\n  cause: {text.splitlines()[0][:500]}")


def quiet_mlflow_logs() -> None:
    """Lower alembic's and MLflow's migration logging to warnings."""
    # The first use of a SQL store prints dozens of alembic migration lines.
    for name in ("alembic", "alembic.runtime.migration", "mlflow.store.db.utils"):
        logging.getLogger(name).setLevel(logging.WARNING)


def probe_database(target: TrackingTarget, timeout_s: int = 10) -> None:
    """Connect once, quickly: MLflow itself retries a dead database with backoff for ~100 s before failing,
    and a dead HTTP tracking server for longer. Raises ``TrackingError`` (masked, with the fix)."""
    try:
        parse_url(target.uri)  # the parse SQLAlchemy will do: refuses a password it would split
    except CredentialError as exc:
        raise TrackingError(f"Cannot use MLflow tracking store (from {target.source}): {exc}.") from None
    if target.uri.startswith(("http:", "https:")):
        _probe_server(target, timeout_s)
        return
    if not target.uri.startswith(("postgresql", "mysql", "mssql")):
        return
    try:
        import sqlalchemy
        from sqlalchemy.pool import NullPool

        args = {"connect_timeout": timeout_s} if target.uri.startswith(("postgresql", "mysql")) else {}
        engine = sqlalchemy.create_engine(target.uri, poolclass=NullPool, connect_args=args)
        try:
            with engine.connect():
                pass
        finally:
            engine.dispose()
    except Exception as exc:
        raise _explain(exc, target) from None


def _probe_server(target: TrackingTarget, timeout_s: int) -> None:
    # MLflow's REST client retries a dead tracking server with backoff for minutes, printing nothing
    import socket
    import urllib.parse

    u = urllib.parse.urlsplit(target.uri)
    port = u.port or (443 if u.scheme == "https" else 80)
    try:
        socket.create_connection((u.hostname or "", port), timeout=timeout_s).close()
    except OSError as exc:
        raise TrackingError(
            f"Cannot use {target.shown} (from {target.source}): the tracking server is not reachable at "
            f"{u.hostname}:{port} ({exc.strerror or exc}). Start it (mlflow server ...), fix the URI, or unset "
            "MLFLOW_TRACKING_URI to use the local SQLite store under the data dir."
        ) from None


def open_experiment(target: TrackingTarget, name: str) -> str:
    """Point MLflow at ``target`` and return the id of experiment ``name`` (created with our artifact location)."""
    quiet_mlflow_logs()
    import mlflow

    probe_database(target)
    try:
        mlflow.set_tracking_uri(target.uri)
        exp = mlflow.get_experiment_by_name(name)
        if exp is None:
            return mlflow.create_experiment(name, artifact_location=target.artifact_location)
        if exp.lifecycle_stage != "active":
            raise TrackingError(
                f"Experiment {name!r} in {target.shown} is deleted: restore it (mlflow experiments restore) or pass another --experiment"
            )
        target.artifact_location = exp.artifact_location
        return exp.experiment_id
    except TrackingError:
        raise
    except Exception as exc:  # MLflow, SQLAlchemy and driver errors all land here
        raise _explain(exc, target) from None
