"""MLflow on the PostgreSQL server at 127.0.0.1:5432: a fresh database per run, dropped afterwards.

Runs in CI without skipping: an unreachable server fails the test.
"""

import uuid

import numpy as np
import pytest
import torch

from conftest import FAST_TRAIN_ARGS, PG_HOST, PG_PORT


def test_cli_run_tracked_in_postgres(run_cli, learnable_store_dir, pg_database):
    import mlflow

    user, db = pg_database
    plain_uri = f"postgresql://{user}@{PG_HOST}:{PG_PORT}/{db}"  # what users type: psycopg 3 unless rewritten
    proc = run_cli(*FAST_TRAIN_ARGS, "--tracking-uri", plain_uri, "--experiment", "t_pg", data_dir=learnable_store_dir)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert f"postgresql+psycopg2://{user}@{PG_HOST}:{PG_PORT}/{db}" in proc.stdout

    mlflow.set_tracking_uri(f"postgresql+psycopg2://{user}@{PG_HOST}:{PG_PORT}/{db}")
    try:
        runs = mlflow.search_runs(experiment_names=["t_pg"])
        assert len(runs) == 1
        run = runs.iloc[0]
        assert run["status"] == "FINISHED"
        assert run["metrics.test_macro_f1"] > run["metrics.baseline_majority_macro_f1"]
        assert run["metrics.test_macro_f1"] > run["metrics.baseline_persistence_macro_f1"]
        assert "metrics.baseline_logreg_macro_f1" in runs.columns and "metrics.test_accuracy" in runs.columns
        exp = mlflow.get_experiment_by_name("t_pg")
        # With a database backend MLflow would default to ./mlruns; ours go under the data dir.
        assert exp.artifact_location == (learnable_store_dir / "mlflow" / "artifacts").resolve().as_uri()
        logged = mlflow.search_logged_models(experiment_ids=[exp.experiment_id], output_format="list")
        assert len(logged) == 1
        model = mlflow.pytorch.load_model(logged[0].model_uri)
        x = torch.from_numpy(np.random.default_rng(0).normal(size=(3, 10, 110)).astype(np.float32))
        with torch.no_grad():
            y = model(x)
        assert tuple(y.shape) == (3, 3) and torch.isfinite(y).all()
    finally:
        # Release pooled connections so the database can be dropped cleanly; this must
        # happen before the URI is reset, or MLflow opens its default ./mlflow.db here.
        from mlflow.tracking._tracking_service.utils import _get_store

        getattr(_get_store(), "engine", None) and _get_store().engine.dispose()
        mlflow.set_tracking_uri(None)


def test_missing_database_is_explained_without_password(run_cli, learnable_store_dir, pg_database):
    user, _ = pg_database
    uri = f"postgresql://{user}:hunter2secret@{PG_HOST}:{PG_PORT}/no_such_db_{uuid.uuid4().hex[:8]}"
    proc = run_cli("--epochs", "1", "--sequence-length", "10", "--tracking-uri", uri, data_dir=learnable_store_dir)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "Cannot use MLflow tracking store" in out and "create the database first" in out, out
    assert "hunter2secret" not in out and "***" in out
    assert "Traceback" not in out
