"""Server-side validation of job options and their mapping to the children's argv."""

import pytest

from backend.web.options import OptionsError, labelling_argv, training_argv

PY = "/usr/bin/python3"


def _fields(body, fn=training_argv, **kw):
    with pytest.raises(OptionsError) as exc:
        fn(body, python=PY, data_dir="/d", **kw) if fn is training_argv else fn(body, python=PY, script="l.py", data_dir="/d")
    return exc.value.fields


@pytest.mark.parametrize(
    "field, value, words",
    [
        ("epochs", 0, "between 1 and 1000"),
        ("folds", 0, "between 1 and 20"),
        ("window", "24", "with a unit"),
        ("window", "12h; rm -rf /", "with a unit"),
        ("epochs", "ten", "whole number"),
        ("epochs", True, "whole number"),
        ("horizon", 45, "one of 10, 30, 60"),
        ("sequence_length", 1, "between 2"),
        ("lr", -1, "above 0"),
        ("lr", "nan", "finite"),
        ("start_date", "2025-02-30", "not a real date"),
        ("end_date", "yesterday", "YYYY-MM-DD"),
        ("symbols", "BTCUSDT,../etc", "invalid symbol"),
        ("symbols", ["BTCUSDT", "BTCUSDT"], "repeats"),
        ("feature_group", "Training Features", "lower-case"),
        ("experiment", "--tracking-uri=x", "starting with a letter or digit"),
        ("device", "tpu", "one of auto, cpu, cuda"),
        ("nonsense", 1, "unknown option"),
    ],
)
def test_each_invalid_field_is_named(field, value, words):
    fields = _fields({"epochs": 3, field: value} if field != "epochs" else {field: value})
    assert set(fields) == {field}
    assert words in fields[field]


def test_all_problems_at_once_and_date_order():
    fields = _fields({"epochs": -1, "horizon": 1, "start_date": "2025-03-02", "end_date": "2025-03-01"})
    assert set(fields) == {"epochs", "horizon", "end_date"}
    assert "not be before start_date" in fields["end_date"]
    assert "JSON object" in _fields(["epochs", 5])["body"]


def test_training_argv_one_item_per_option():
    argv, checked = training_argv(
        {"epochs": 5, "horizon": "30", "symbols": "BTCUSDT, ETHUSDT", "start_date": "2025-01-01", "lr": 0.003, "threads": None},
        python=PY,
        data_dir="/data dir",
    )
    assert argv[:5] == [PY, "-m", "backend.ml_engine.training_orchestrator", "--data-dir=/data dir", "--no-progress"]
    assert argv[5:] == ["--epochs=5", "--horizon=30", "--symbols=BTCUSDT,ETHUSDT", "--start-date=2025-01-01", "--lr=0.003"]
    assert checked["symbols"] == "BTCUSDT,ETHUSDT"


def test_training_source_choice_reaches_the_cli():
    """A store holding several sources needs a choice (training refuses otherwise): the form's
    sources and allow_mixed_sources become the CLI's --sources and --allow-mixed-sources."""
    argv, _ = training_argv({"sources": " bybit, binance,bybit", "allow_mixed_sources": True}, python=PY, data_dir="/d")
    assert argv[5:] == ["--sources=bybit,binance", "--allow-mixed-sources"]
    argv, _ = training_argv({"allow_mixed_sources": False}, python=PY, data_dir="/d")
    assert argv[5:] == []
    fields = _fields({"sources": "../etc", "allow_mixed_sources": "yes"})
    assert set(fields) == {"sources", "allow_mixed_sources"} and "not a source name" in fields["sources"]
    from backend.apps.train import build_parser  # the flags exist in the CLI the child runs

    args = build_parser().parse_args(["--sources=bybit,binance", "--allow-mixed-sources"])
    assert args.sources == "bybit,binance" and args.allow_mixed_sources


def test_training_threshold_and_tolerance_accept_zero_as_training_does():
    argv, _ = training_argv({"threshold": 0, "tolerance": 0}, python=PY, data_dir="/d")
    assert argv[5:] == ["--threshold=0.0", "--tolerance=0.0"]
    from backend.ml_engine.training_orchestrator.config import DataConfig

    DataConfig(threshold_pct=0.0, tolerance_s=0.0)  # what the child builds from them: accepted
    assert set(_fields({"threshold": -0.1, "tolerance": -1})) == {"threshold", "tolerance"}


def test_labelling_argv():
    argv, _ = labelling_argv({"horizons": [60, 10], "dry_run": True, "tolerance": 4}, python=PY, script="l.py", data_dir="/d")
    assert argv == [PY, "l.py", "--data-dir=/d", "--no-progress", "--horizons=10,60", "--dry-run", "--tolerance=4.0"]
    fields = _fields({"tolerance": "ten", "horizons": "5", "dry_run": "yes"}, fn=labelling_argv)
    assert set(fields) == {"tolerance", "horizons", "dry_run"}


@pytest.mark.parametrize(
    "body",
    [
        {"horizons": [30, 60], "tolerance": 15},  # the trial's case: below the smallest horizon chosen
        {"horizons": [30], "tolerance": 29.5},
        {"tolerance": 0, "threshold": 0},
        {"threshold": 150},
        {"tolerance": 15},  # default horizons include 10
        {"horizons": [30], "tolerance": 30},
        {"horizons": "60", "tolerance": 60.5},
        {"tolerance": -1},
        {"threshold": -0.5},
    ],
)
def test_labelling_accepts_exactly_what_the_labeller_accepts(body, tmp_path, capsys):
    """The page's answer and the labelling command's answer to the same values agree, and a
    refusal is worded as the command words it."""
    from backend.apps.label import main_parquet

    # an existing, still empty group: accepted values end in "nothing to label", exit 0
    (tmp_path / "feature_store" / "offline" / "training_features").mkdir(parents=True)
    try:
        argv, _ = labelling_argv(body, python=PY, script="l.py", data_dir=str(tmp_path))
        web_error = None
    except OptionsError as exc:
        web_error = exc.fields
        argv = [PY, "l.py", f"--data-dir={tmp_path}", "--no-progress"] + [
            f"--{k}={','.join(map(str, v)) if isinstance(v, list) else v}" for k, v in body.items()]
    capsys.readouterr()
    try:
        cli_rc = main_parquet(argv[2:] + ["--dry-run"])
    except SystemExit as exc:  # argparse refuses: exit 2 with "error: <message>"
        cli_rc = exc.code
    cli_err = capsys.readouterr().err
    if web_error is None:
        assert cli_rc == 0, cli_err
    else:
        assert cli_rc == 2
        ((field, message),) = web_error.items()
        assert f"error: {field} {message}" in cli_err, (web_error, cli_err)
