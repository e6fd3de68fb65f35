"""The runs reader against real SQLite tracking stores: never sets up a store another process is creating."""

import sqlite3

from backend.web.runs import RunsReader


def test_a_store_being_created_is_read_as_empty_and_left_alone(tmp_path):
    db = tmp_path / "mlflow.db"
    db.touch()  # what a training child's first connect leaves before MLflow's migrations
    reader = RunsReader(f"sqlite:///{db}")
    assert reader.list_runs() == []
    assert db.stat().st_size == 0  # no tables created by the reader
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE experiments (experiment_id INTEGER)")  # half-way through the set-up
    con.commit()
    con.close()
    assert reader.list_runs() == []
    assert [r[0] for r in sqlite3.connect(db).execute("SELECT name FROM sqlite_master")] == ["experiments"]


def test_a_set_up_store_lists_its_runs(tmp_path):
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    writer = MlflowClient(tracking_uri=uri)  # another process, in effect: its own client, no global URI
    exp = writer.create_experiment("lob_direction", artifact_location=(tmp_path / "artifacts").as_uri())
    run = writer.create_run(exp)
    writer.log_metric(run.info.run_id, "test_macro_f1", 0.4)
    writer.set_terminated(run.info.run_id)
    runs = RunsReader(uri).list_runs()
    assert [r["run_id"] for r in runs] == [run.info.run_id]
    assert runs[0]["metrics"] == {"test_macro_f1": 0.4} and runs[0]["experiment"] == "lob_direction"
