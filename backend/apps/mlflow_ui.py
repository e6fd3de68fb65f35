"""``python -m backend.apps.mlflow_ui``: MLflow's own UI on the store the training command uses.

Plain ``mlflow ui`` opens ``sqlite:///mlflow.db`` in the current directory: an empty store,
and an untracked ``mlflow.db`` dropped wherever it runs (the repository, typically). This
command resolves the store exactly as training does (``--tracking-uri``, else
``$MLFLOW_TRACKING_URI``, else ``<data-dir>/mlflow/mlflow.db``) and runs MLflow's server on
it, from ``<data-dir>/mlflow`` so nothing is written anywhere else. The store URI (which may
hold a password) goes to the child through its environment, never its command line, and
is printed masked.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from backend.config import add_data_dir_argument, configure
from backend.ml_engine.training_orchestrator.tracking import resolve_tracking

__all__ = ["build_parser", "main", "ui_command"]

DEFAULT_PORT = 5000


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m backend.apps.mlflow_ui`` argument parser."""
    p = argparse.ArgumentParser(
        prog="python -m backend.apps.mlflow_ui",
        description="Open MLflow's UI on the tracking store the training command uses (never an empty ./mlflow.db).",
        epilog="Then open http://127.0.0.1:PORT/ ; the web app links runs there with "
        "python -m backend.web --mlflow-ui-url http://127.0.0.1:PORT. Stop with Ctrl+C.",
    )
    add_data_dir_argument(p)
    p.add_argument("--tracking-uri", default=None,
                   help="MLflow store (default: $MLFLOW_TRACKING_URI, else sqlite:///<data-dir>/mlflow/mlflow.db)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"TCP port (default {DEFAULT_PORT})")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1; the UI has no login)")
    p.add_argument("--dry-run", action="store_true", help="print what would run and exit")
    return p


def ui_command(data_dir: Path, tracking_uri: str | None, host: str, port: int) -> tuple[list[str], dict, Path, str]:
    """``(argv, environment additions, working directory, masked store)`` of the MLflow server."""
    target = resolve_tracking(tracking_uri, os.environ.get("MLFLOW_TRACKING_URI"), data_dir)
    cwd = Path(data_dir).resolve() / "mlflow"
    argv = [sys.executable, "-m", "mlflow", "server", "--host", host, "--port", str(port),
            "--workers", "1", "--default-artifact-root", target.artifact_location]
    return argv, {"MLFLOW_BACKEND_STORE_URI": target.uri}, cwd, target.shown


def main(argv: list[str] | None = None) -> int:
    """Run MLflow's own UI on the tracking store training uses; returns its exit code."""
    args = build_parser().parse_args(argv)
    if not 1 <= args.port <= 65535:
        print(f"error: --port must be between 1 and 65535, got {args.port}", file=sys.stderr)
        return 2
    settings = configure(data_dir=args.data_dir)
    cmd, env_add, cwd, shown = ui_command(settings.data_dir, args.tracking_uri, args.host, args.port)
    print(f"MLflow UI: http://{args.host}:{args.port}/  (store: {shown}, artifacts: {cmd[-1]}); "
          "starting takes a while the first time", flush=True)
    if args.dry_run:
        print("would run (in " + str(cwd) + "): " + " ".join(cmd[1:]))
        return 0
    cwd.mkdir(parents=True, exist_ok=True)
    os.chdir(cwd)
    # become MLflow's server: Ctrl+C and SIGTERM reach it directly, no wrapper is left behind
    os.execve(cmd[0], cmd, {**os.environ, **env_add})
    return 1  # pragma: no cover (execve does not return)


if __name__ == "__main__":
    sys.exit(main())
