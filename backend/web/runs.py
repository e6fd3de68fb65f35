"""Training runs as the page shows them, read from the MLflow tracking store.

Blocking (MLflow's client does I/O): the app calls these through a worker thread. One
``RunsReader`` per tracking URI; it holds an ``MlflowClient`` bound to that URI (no
process-wide ``mlflow.set_tracking_uri``), created on first use so the bot never imports
MLflow unless someone opens the runs list.

Shapes (DESIGN.md §6.3): ``list_runs()`` -> ``[{"run_id", "experiment", "start_time" (ISO),
"status", "params", "metrics": {"test_macro_f1", "baseline_<name>_macro_f1", ...}}]``
newest first; ``run_detail(id)`` adds ``"curves": {metric: [[step, value], ...]}`` and
``"confusion": {"labels": [...], "matrix": [[...]]}`` (rows = true class) from the run's
``report.json`` artifact, ``None`` when the run has none.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import sqlite3
import tempfile
import threading
from pathlib import Path

RUN_ID_RE = re.compile(r"^[0-9a-f]{32}\Z")
CURVES = ("train_loss", "val_loss", "val_accuracy", "val_macro_f1")
CLASS_LABELS = ("DOWN", "NEUTRAL", "UP")
# params shown in the list; the rest are in the detail
LIST_PARAMS = ("horizon_s", "sequence_length", "epochs", "data_symbols", "data_start", "data_end", "feature_group", "data_rows")


class RunNotFound(LookupError):
    """No run with that id in the tracking store."""


def _iso(ms: int | None) -> str | None:
    if not ms:
        return None
    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


class RunsReader:
    """Reads runs of ``tracking_uri`` (already normalised, may hold a password: never shown)."""

    def __init__(self, tracking_uri: str, *, max_runs: int = 200) -> None:
        self.tracking_uri = tracking_uri
        self.max_runs = max_runs
        self._client = None
        self._lock = threading.Lock()
        self._ready = False

    def _get_client(self):
        with self._lock:
            if self._client is None:
                from backend.ml_engine.training_orchestrator.tracking import TrackingTarget, probe_database

                # one quick connect first (raises TrackingError, masked, with the fix): MLflow itself
                # retries a dead database for ~100 s, logging the driver's error each time, and with a
                # raw '@' in the password that error quotes the password's tail as the host name
                probe_database(TrackingTarget(self.tracking_uri, "", "the web app's tracking URI"), timeout_s=5)
                from backend.ml_engine.training_orchestrator.tracking import quiet_mlflow_logs

                quiet_mlflow_logs()
                # a progress bar per artifact download would litter the server's log
                os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
                from mlflow.tracking import MlflowClient

                # the registry is the same store (models:/NAME/VERSION of the Live Model panel)
                self._client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)
            return self._client

    def _no_store_yet(self) -> bool:
        """True while a SQLite store is absent or not yet set up by the process creating it.

        MLflow's client creates the tables of a database that lacks them, so opening a store
        a training child is still creating would run the same migrations from two processes
        at once; until ``alembic_version`` holds a row (MLflow's set-up is done) the store is
        read as empty, through a read-only connection that never writes.
        """
        if self._ready or not self.tracking_uri.startswith("sqlite:///"):
            return False
        path = Path(self.tracking_uri[len("sqlite:///") :])
        if not path.exists():
            return True
        try:
            con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=5)
            try:
                ready = con.execute("SELECT count(*) FROM alembic_version").fetchone()[0] > 0
            finally:
                con.close()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):  # being set up by the process that created it
                return True
            return False  # locked, unreadable: MLflow's own error explains it
        except sqlite3.DatabaseError:  # not a database at all: MLflow's own error explains it
            return False
        self._ready = ready
        return not ready

    def list_runs(self) -> list[dict]:
        """Runs of every active experiment, newest first (at most ``max_runs``)."""
        if self._no_store_yet():  # do not create an empty database just by looking
            return []
        client = self._get_client()
        from mlflow.entities import ViewType

        experiments = {e.experiment_id: e.name for e in client.search_experiments(view_type=ViewType.ACTIVE_ONLY)}
        if not experiments:
            return []
        runs = client.search_runs(list(experiments), max_results=self.max_runs, order_by=["attributes.start_time DESC"])
        return [self._summary(r, experiments.get(r.info.experiment_id, "")) for r in runs]

    @staticmethod
    def _summary(run, experiment: str) -> dict:
        params = run.data.params
        return {
            "run_id": run.info.run_id,
            "experiment": experiment,
            "start_time": _iso(run.info.start_time),
            "end_time": _iso(run.info.end_time),
            "status": run.info.status,
            "params": {k: params[k] for k in LIST_PARAMS if k in params},
            "metrics": {k: v for k, v in run.data.metrics.items()
                        if k.startswith(("test_", "baseline_", "best_", "diff_", "verdict_"))},
            # the evaluation's verdicts (docs/evaluation.md): "beats X" only when the paired
            # difference's interval is above zero
            "verdicts": {k[len("verdict_"):]: v for k, v in run.data.tags.items()
                         if k.startswith("verdict_") and k != "verdict_summary"},
            "warning": run.data.tags.get("evaluation_warning"),
        }

    def run_detail(self, run_id: str) -> dict:
        """One run with all params, per-epoch curves and the confusion matrix.

        Raises:
            ValueError: ``run_id`` is not 32 lower-case hex digits.
            RunNotFound: no such run.
        """
        if not RUN_ID_RE.match(run_id or ""):
            raise ValueError(f"run id must be 32 lower-case hex digits, got {run_id[:40]!r}")
        if self._no_store_yet():
            raise RunNotFound(run_id)
        client = self._get_client()
        try:
            run = client.get_run(run_id)
        except Exception as exc:  # MLflow raises MlflowException(RESOURCE_DOES_NOT_EXIST)
            if "not found" in str(exc).lower() or "does_not_exist" in str(exc).lower() or "no run" in str(exc).lower():
                raise RunNotFound(run_id) from None
            raise
        exp = client.get_experiment(run.info.experiment_id)
        out = self._summary(run, exp.name if exp else "")
        out["params"] = dict(run.data.params)
        out["metrics"] = dict(run.data.metrics)
        out["curves"] = {
            name: [[m.step, m.value] for m in sorted(client.get_metric_history(run_id, name), key=lambda m: m.step)]
            for name in CURVES
        }
        out["confusion"] = self._confusion(client, run_id)
        return out

    def model_facts(self, model_uri: str) -> dict | None:
        """What the Live Model panel shows of the run that logged ``model_uri`` (``models:/...``,
        ``runs:/...``): ``run_id``, ``sequence_length``, ``test_macro_f1``, ``test_accuracy`` and the
        baselines' test macro-F1; ``None`` while there is no tracking store.

        Raises:
            ModelLoadError: the URI names no model this store knows.
        """
        if self._no_store_yet():
            return None
        from backend.ml_engine.live.model_loader import resolve_run_id

        client = self._get_client()
        run = client.get_run(resolve_run_id(client, model_uri))
        metrics, params = run.data.metrics, run.data.params
        try:
            seq = int(params["sequence_length"])
        except (KeyError, ValueError):
            seq = None
        return {
            "run_id": run.info.run_id,
            "sequence_length": seq,
            "test_macro_f1": metrics.get("test_macro_f1"),
            "test_accuracy": metrics.get("test_accuracy"),
            "baselines": {k[len("baseline_"):-len("_macro_f1")]: v for k, v in metrics.items()
                          if k.startswith("baseline_") and k.endswith("_macro_f1")},
        }

    @staticmethod
    def _confusion(client, run_id: str) -> dict | None:
        with tempfile.TemporaryDirectory(prefix="lobbot_web_") as tmp:
            try:
                path = client.download_artifacts(run_id, "report.json", tmp)
            except Exception:  # no artifact (run failed before evaluation)
                return None
            report = json.loads(Path(path).read_text())
        model = report.get("model") or {}
        matrix = model.get("confusion")
        if not matrix:
            return None
        return {
            "labels": list(CLASS_LABELS),
            "matrix": matrix,
            "baselines": {k: v.get("macro_f1") for k, v in (report.get("baselines") or {}).items()},
        }
