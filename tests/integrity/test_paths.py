"""Inputs that name paths are checked at start: symbols in full, group names, symlinks leaving the data dir."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from backend.apps.label import main_parquet
from backend.config import Settings, configure, settings_error_text
from backend.ml_engine.feature_store.feature_store import FeatureStore, FeatureStoreError
from backend.symbols import InvalidSymbolError, validate_symbol

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _reset():
    yield
    configure()


@pytest.mark.parametrize("bad", ["BTCUSDT\n", "BTCUSDT\r", "../BTC", "btcusdt", "B", "BTC/USDT", "BTC USDT", ""])
def test_symbols_are_matched_in_full(bad):
    with pytest.raises(InvalidSymbolError):
        validate_symbol(bad)


@pytest.mark.parametrize("bad", ["../x", "x/y", "Training", "x\n", "", "price_tape"])
def test_bad_group_refused_at_settings_time(bad, tmp_path):
    with pytest.raises(ValidationError) as err:
        Settings(data_dir=tmp_path, feature_store_group=bad)
    assert "feature_store_group" in settings_error_text(err.value)
    if bad != "price_tape":
        with pytest.raises(FeatureStoreError):
            FeatureStore(tmp_path).group_dir(bad)


def _run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if not k.startswith("LOBBOT_")} | env
    return subprocess.run([sys.executable, *args], cwd=cwd, env=full, capture_output=True, text=True, timeout=120)


def test_bot_refuses_a_group_that_climbs_out_before_collecting(tmp_path):
    proc = _run(
        [str(REPO / "backend" / "main.py"), "--source", "sim", "--fast", "--duration", "1h", "--data-dir", str(tmp_path)],
        {"LOBBOT_FEATURE_STORE_GROUP": "../x"},
        tmp_path,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert "invalid feature group '../x'" in out and "Traceback" not in out
    assert not (tmp_path / "feature_store").exists() and not (tmp_path / "x").exists()


def test_symlink_leaving_the_data_dir_is_refused(tmp_path, capsys):
    data, outside = tmp_path / "data", tmp_path / "elsewhere"
    (data / "ml_training").mkdir(parents=True)
    outside.mkdir()
    (data / "ml_training" / "BTCUSDT").symlink_to(outside, target_is_directory=True)
    with pytest.raises(ValidationError) as err:
        Settings(data_dir=data)
    text = settings_error_text(err.value)
    assert str(data / "ml_training" / "BTCUSDT") in text and "outside" in text
    with pytest.raises(SystemExit) as exit_:
        main_parquet(["--data-dir", str(data), "--no-progress"])
    assert exit_.value.code == 2
    assert "lead outside it" in capsys.readouterr().err
    proc = _run(
        [str(REPO / "backend" / "main.py"), "--source", "sim", "--fast", "--duration", "1h", "--data-dir", str(data)],
        {},
        tmp_path,
    )
    assert proc.returncode != 0 and "lead outside it" in proc.stderr, proc.stdout + proc.stderr
    assert list(outside.iterdir()) == []  # nothing was written through the link


def test_links_inside_the_data_dir_and_a_linked_data_dir_are_fine(tmp_path):
    real = tmp_path / "real"
    (real / "feature_store" / "offline" / "archive").mkdir(parents=True)
    (real / "feature_store" / "offline" / "training_features").symlink_to(real / "feature_store" / "offline" / "archive")
    link = tmp_path / "data"
    link.symlink_to(real, target_is_directory=True)
    assert Settings(data_dir=link).data_dir == link
    group = real / "feature_store" / "offline" / "other"
    group.mkdir()
    (group / "date=2025-01-01").symlink_to(tmp_path, target_is_directory=True)
    with pytest.raises(ValidationError, match="date=2025-01-01"):
        Settings(data_dir=link)


def test_names_that_reach_paths_argv_or_lookups_are_matched_in_full(tmp_path):
    """A trailing newline passes ``^...$``; every validator of the web app's inputs, the run id,
    the API token and legacy batch names refuses it (``\\Z`` / ``fullmatch``)."""
    import numpy as np

    from backend.ml_engine.feature_store.legacy_format import LegacyBatchWriter, list_batches
    from backend.web.auth import TokenError, load_or_create_token
    from backend.web.options import OptionsError, training_argv
    from backend.web.runs import RunsReader

    for field, value in (("feature_group", "training_features\n"), ("experiment", "lob\n")):
        with pytest.raises(OptionsError) as err:
            training_argv({field: value}, python=sys.executable, data_dir=str(tmp_path))
        assert field in err.value.fields, field
    with pytest.raises(ValueError, match="32 lower-case hex"):
        RunsReader(f"sqlite:///{tmp_path / 'mlflow.db'}").run_detail("0" * 32 + "\n")
    with pytest.raises(TokenError):
        load_or_create_token(tmp_path, environ={"LOBBOT_API_TOKEN": "a" * 20 + "\n"})
    w = LegacyBatchWriter(tmp_path / "ml_training", fsync=False)
    w.write_batch("BTCUSDT", np.zeros((2, 110), np.float32), np.array([1_762_509_600_000, 1_762_509_630_000]),
                  np.array([100.0, 100.1]), "sim")
    features = tmp_path / "ml_training" / "BTCUSDT" / "features"
    (features / "2025-11-07_batch_0007\n.npy").write_bytes((features / "2025-11-07_batch_0001.npy").read_bytes())
    assert [r.number for r in list_batches(tmp_path / "ml_training", "BTCUSDT")] == [1]


def test_a_data_dir_on_or_under_a_file_is_refused_by_every_command(tmp_path):
    """A file where the data dir (or one of its parents) should be: one clear line and exit 2 from
    each command, never a NotADirectoryError traceback from the first folder it tries to make."""
    afile = tmp_path / "notes.txt"
    afile.write_text("not a folder")
    with pytest.raises(ValidationError) as err:
        Settings(data_dir=afile / "data")
    assert f"lies under {afile}, which is a file, not a folder" in settings_error_text(err.value)
    with pytest.raises(ValidationError, match="is a file, not a folder"):
        Settings(data_dir=afile)
    commands = [
        [str(REPO / "backend" / "main.py"), "--source", "sim", "--fast", "--duration", "1h"],
        ["-m", "backend.web", "--port", "18799"],
        ["-m", "backend.ml_engine.training_orchestrator"],
        ["-m", "backend.apps.live_report"],
        [str(REPO / "preprocessing_add_future_labels_parquet.py")],
        [str(REPO / "migrate_legacy_to_parquet.py")],
        [str(REPO / "preprocessing_add_future_labels.py")],
    ]
    for cmd in commands:
        proc = _run(cmd + ["--data-dir", str(afile / "data")], {}, tmp_path)
        out = proc.stdout + proc.stderr
        assert proc.returncode == 2 and "Traceback" not in out, (cmd, out[-2000:])
        assert "which is a file, not a folder" in out and "LOBBOT_LOBBOT" not in out, (cmd, out[-2000:])
