"""Job options from the page: validated field by field, then mapped to a child's argv.

Pure: no I/O. ``training_argv(body, ...)`` / ``labelling_argv(body, ...)`` take the JSON
body of ``POST /api/training`` / ``POST /api/labelling`` and return the argument list of
the training CLI (``python -m backend.ml_engine.training_orchestrator``) or the parquet
labeller (``preprocessing_add_future_labels_parquet.py``). Every value is checked (type,
range, format; symbols through ``backend.symbols.validate_symbol``) before it reaches the
list, and every option is passed as one ``--flag=value`` item, so no value can be read as
another flag. The list is for ``asyncio.create_subprocess_exec``, never a shell.

Errors: ``OptionsError`` carrying ``fields``, a dict field -> message saying what is wrong
and what is accepted; the API answers 400 with it.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any, Callable

from backend.contracts.labels import DEFAULT_THRESHOLD_PCT, DEFAULT_TOLERANCE_S
from backend.ml_engine.feature_store.feature_schema import HORIZONS_S
from backend.ml_engine.labelling.labels import DEFAULT_HORIZONS_S, LabelConfig
from backend.symbols import InvalidSymbolError, validate_symbol

GROUP_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}\Z")  # \Z: "$" would accept a trailing newline
EXPERIMENT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\- ]{0,99}\Z")
MAX_SYMBOLS = 500


class OptionsError(ValueError):
    """Invalid job options; ``fields`` maps each bad field to a message."""

    def __init__(self, fields: dict[str, str]):
        self.fields = dict(fields)
        super().__init__("; ".join(f"{k}: {v}" for k, v in self.fields.items()))


@dataclass(frozen=True)
class Option:
    """One accepted field: ``flag`` of the CLI and ``check(value) -> str`` giving the argv
    text (raises ``ValueError`` with the message shown to the user)."""

    flag: str
    check: Callable[[Any], str]
    help: str


def _int(lo: int, hi: int) -> Callable[[Any], str]:
    def check(v: Any) -> str:
        if isinstance(v, bool) or not isinstance(v, int):
            if isinstance(v, str) and re.fullmatch(r"[+-]?\d{1,12}", v.strip()):
                v = int(v)
            elif isinstance(v, float) and v.is_integer():
                v = int(v)
            else:
                raise ValueError(f"must be a whole number between {lo} and {hi}, got {v!r}")
        if not lo <= v <= hi:
            raise ValueError(f"must be between {lo} and {hi}, got {v}")
        return str(v)

    return check


def _number(v: Any) -> float:
    if isinstance(v, bool):
        raise ValueError(f"must be a number, got {v!r}")
    if isinstance(v, str):
        try:
            v = float(v.strip())
        except ValueError:
            raise ValueError(f"must be a number, got {v!r}") from None
    if not isinstance(v, (int, float)) or v != v or v in (float("inf"), float("-inf")):
        raise ValueError(f"must be a finite number, got {v!r}")
    return v


def _finite(v: Any) -> str:
    """Any finite number; its range is checked by a rule of the whole body (``_labelling_rule``)."""
    return repr(float(_number(v)))


def _float(lo: float, hi: float, *, lo_open: bool = True, hi_open: bool = False) -> Callable[[Any], str]:
    def check(v: Any) -> str:
        v = _number(v)
        if (v <= lo if lo_open else v < lo) or (v >= hi if hi_open else v > hi):
            raise ValueError(
                f"must be {'above' if lo_open else 'at least'} {lo:g} and {'below' if hi_open else 'at most'} {hi:g}, got {v:g}"
            )
        return repr(float(v))

    return check


def _choice(*allowed: Any) -> Callable[[Any], str]:
    def check(v: Any) -> str:
        if not isinstance(v, bool):
            for a in allowed:
                if v == a or (isinstance(v, str) and v.strip() == str(a)):
                    return str(a)
        raise ValueError(f"must be one of {', '.join(map(str, allowed))}, got {v!r}")

    return check


def _date(v: Any) -> str:
    if not isinstance(v, str) or not re.fullmatch(r"\d{4}-\d{2}-\d{2}", v.strip()):
        raise ValueError(f"must be a date YYYY-MM-DD, got {v!r}")
    try:
        return dt.date.fromisoformat(v.strip()).isoformat()
    except ValueError:
        raise ValueError(f"is not a real date: {v!r}") from None


def _symbols(v: Any) -> str:
    items = v.split(",") if isinstance(v, str) else v
    if not isinstance(items, list) or not all(isinstance(s, str) for s in items):
        raise ValueError("must be a list of symbols or a comma-separated string, e.g. BTCUSDT,ETHUSDT")
    items = [s.strip() for s in items if s.strip()]
    if not items:
        raise ValueError("is empty: give at least one symbol or leave the field out for all symbols")
    if len(items) > MAX_SYMBOLS:
        raise ValueError(f"at most {MAX_SYMBOLS} symbols, got {len(items)}")
    for s in items:
        try:
            validate_symbol(s)
        except InvalidSymbolError as exc:
            raise ValueError(str(exc)) from None
    if len(set(items)) != len(items):
        raise ValueError(f"repeats a symbol: {', '.join(items)}")
    return ",".join(items)


def _group(v: Any) -> str:
    if not isinstance(v, str) or not GROUP_RE.match(v):
        raise ValueError(f"must be a feature group name of lower-case letters, digits and _ (e.g. training_features), got {v!r}")
    return v


_WINDOW_RE = re.compile(r"^\d{1,6}(\.\d{1,3})?[smhd]\Z")


def _window(v: Any) -> str:
    if not isinstance(v, str) or not _WINDOW_RE.match(v.strip()):
        raise ValueError(f"must be a duration with a unit, e.g. 90m, 12h or 2d, got {v!r}")
    return v.strip()


def _experiment(v: Any) -> str:
    if not isinstance(v, str) or not EXPERIMENT_RE.match(v):
        raise ValueError(f"must be 1-100 characters of letters, digits, space and _.- starting with a letter or digit, got {v!r}")
    return v


def _horizons(v: Any) -> str:
    items = v.split(",") if isinstance(v, str) else v
    if not isinstance(items, list) or not items:
        raise ValueError(f"must be a non-empty list, a subset of {', '.join(map(str, HORIZONS_S))}")
    out = []
    for h in items:
        try:
            out.append(int(_choice(*HORIZONS_S)(h.strip() if isinstance(h, str) else h)))
        except ValueError:
            raise ValueError(f"must be a subset of {', '.join(map(str, HORIZONS_S))}, got {h!r}") from None
    if len(set(out)) != len(out):
        raise ValueError(f"repeats a horizon: {out}")
    return ",".join(str(h) for h in sorted(out))


_SOURCE_RE = re.compile(r"^[a-z][a-z0-9-]{0,29}\Z")


def _sources(v: Any) -> str:
    items = v.split(",") if isinstance(v, str) else v
    if not isinstance(items, list) or not all(isinstance(x, str) for x in items):
        raise ValueError("must be a list of sources or a comma-separated string, e.g. bybit,binance")
    items = [x.strip() for x in items if x.strip()]
    if not items:
        raise ValueError("is empty: give at least one source (bybit, binance, sim, replay) or leave the field out")
    bad = [x for x in items if not _SOURCE_RE.match(x)]
    if bad:
        raise ValueError(f"{bad[0]!r} is not a source name: the store's source column holds e.g. bybit, binance, sim, replay")
    return ",".join(dict.fromkeys(items))


TRAINING_OPTIONS: dict[str, Option] = {
    "epochs": Option("--epochs", _int(1, 1000), "maximum epochs"),
    "batch_size": Option("--batch-size", _int(1, 65536), "sequences per batch"),
    "lr": Option("--lr", _float(0.0, 1.0), "learning rate"),
    "patience": Option("--patience", _int(1, 1000), "early-stopping patience in epochs"),
    "seed": Option("--seed", _int(0, 2**31 - 1), "random seed"),
    "device": Option("--device", _choice("auto", "cpu", "cuda"), "auto, cpu or cuda"),
    "threads": Option("--threads", _int(1, 256), "CPU threads for torch"),
    "feature_group": Option("--feature-group", _group, "feature group"),
    "start_date": Option("--start-date", _date, "first UTC date, YYYY-MM-DD"),
    "end_date": Option("--end-date", _date, "last UTC date, YYYY-MM-DD"),
    "symbols": Option("--symbols", _symbols, "symbols"),
    "horizon": Option("--horizon", _choice(*HORIZONS_S), "label horizon in seconds"),
    "sequence_length": Option("--sequence-length", _int(2, 10000), "samples per sequence"),
    "threshold": Option("--threshold", _float(0.0, 100.0, lo_open=False), "percent move threshold (training accepts 0)"),
    "tolerance": Option("--tolerance", _float(0.0, 3600.0, lo_open=False), "seconds of tolerance (training accepts 0)"),
    "min_samples": Option("--min-samples", _int(1, 10**9), "minimum samples"),
    "experiment": Option("--experiment", _experiment, "MLflow experiment"),
    "folds": Option("--folds", _int(1, 20), "walk-forward folds (5 recommended, docs/evaluation.md)"),
    "window": Option("--window", _window, "rolling training window per fold, e.g. 12h"),
    "sources": Option("--sources", _sources, "sample sources to train on, e.g. bybit (a store holding several needs a choice)"),
    "allow_mixed_sources": Option("--allow-mixed-sources", lambda v: _flag(v), "train on every source in the store"),
}

LABELLING_OPTIONS: dict[str, Option] = {
    "feature_group": Option("--feature-group", _group, "feature group"),
    "start_date": Option("--start-date", _date, "first UTC date, YYYY-MM-DD"),
    "end_date": Option("--end-date", _date, "last UTC date, YYYY-MM-DD"),
    "horizons": Option("--horizons", _horizons, "horizons in seconds"),
    # ranges: the labeller's own rule, checked by _labelling_rule on the whole body
    "threshold": Option("--threshold", _finite, "direction threshold in percent: UP above +T, DOWN below -T"),
    "tolerance": Option("--tolerance", _finite, "seconds after t+h in which a price must be found; below the smallest horizon"),
    "dry_run": Option("--dry-run", lambda v: _flag(v), "compute and report, write nothing"),
}


def _flag(v: Any) -> str:
    if not isinstance(v, bool):
        raise ValueError(f"must be true or false, got {v!r}")
    return "1" if v else ""


def _labelling_rule(checked: dict[str, str], errors: dict[str, str]) -> dict[str, str]:
    """The labeller's own rule on horizons, tolerance and threshold: the ``LabelConfig`` the
    labelling command builds from the same values (fields it leaves out take the command's
    defaults), so the page accepts exactly what the command accepts, in its words.

    ``LabelConfig`` stops at its first complaint, so tolerance and threshold are checked in
    separate configurations (each beside the other's valid default) to report both at
    once; the tolerance is not judged while the horizons it depends on are invalid.
    """
    horizons = tuple(int(h) for h in checked["horizons"].split(",")) if "horizons" in checked else DEFAULT_HORIZONS_S
    out: dict[str, str] = {}
    trials = {"tolerance": (horizons, float(checked.get("tolerance", DEFAULT_TOLERANCE_S)), DEFAULT_THRESHOLD_PCT),
              "threshold": (DEFAULT_HORIZONS_S, DEFAULT_TOLERANCE_S, float(checked.get("threshold", DEFAULT_THRESHOLD_PCT)))}
    for key, args in trials.items():
        if key not in checked or key in errors or (key == "tolerance" and "horizons" in errors):
            continue
        try:
            LabelConfig(*args)
        except ValueError as exc:
            out[key] = str(exc).removeprefix(f"{key} ")
    return out


def validate(body: Any, spec: dict[str, Option],
             rule: Callable[[dict[str, str], dict[str, str]], dict[str, str]] | None = None) -> dict[str, str]:
    """Checked argv texts of every given field; ``None`` / ``""`` values count as not given.

    ``rule(checked, errors)``, when given, checks the fields together after each was
    checked alone and returns more field -> message errors.

    Raises:
        OptionsError: the body is not a JSON object, a field is unknown, a value is
            invalid, ``start_date`` lies after ``end_date``, or ``rule`` objects; all
            problems at once.
    """
    if not isinstance(body, dict):
        raise OptionsError({"body": "must be a JSON object of options, e.g. {\"epochs\": 5, \"horizon\": 60}"})
    errors: dict[str, str] = {}
    out: dict[str, str] = {}
    for key, value in body.items():
        opt = spec.get(key)
        if opt is None:
            errors[str(key)[:64]] = f"unknown option; known options: {', '.join(sorted(spec))}"
            continue
        if value is None or value == "":
            continue
        try:
            out[key] = opt.check(value)
        except ValueError as exc:
            errors[key] = str(exc)
    if "start_date" in out and "end_date" in out and out["start_date"] > out["end_date"]:
        errors["end_date"] = f"must not be before start_date ({out['start_date']}), got {out['end_date']}"
    if rule is not None:
        errors.update({k: v for k, v in rule(out, errors).items() if k not in errors})
    if errors:
        raise OptionsError(errors)
    return out


def _argv(checked: dict[str, str], spec: dict[str, Option]) -> list[str]:
    argv = []
    for key, text in checked.items():
        flag = spec[key].flag
        if key in ("dry_run", "allow_mixed_sources"):  # flags without a value
            if text:
                argv.append(flag)
            continue
        argv.append(f"{flag}={text}")
    return argv


def training_argv(body: Any, *, python: str, data_dir: str) -> tuple[list[str], dict[str, str]]:
    """``(argv, checked)`` of one training run on ``data_dir`` (``--no-progress`` added).

    Raises:
        OptionsError: see ``validate``.
    """
    checked = validate(body, TRAINING_OPTIONS)
    argv = [python, "-m", "backend.ml_engine.training_orchestrator", f"--data-dir={data_dir}", "--no-progress"]
    return argv + _argv(checked, TRAINING_OPTIONS), checked


def labelling_argv(body: Any, *, python: str, script: str, data_dir: str) -> tuple[list[str], dict[str, str]]:
    """``(argv, checked)`` of one parquet labeller run on ``data_dir`` (``--no-progress`` added).

    Raises:
        OptionsError: see ``validate``.
    """
    checked = validate(body, LABELLING_OPTIONS, _labelling_rule)
    argv = [python, script, f"--data-dir={data_dir}", "--no-progress"]
    return argv + _argv(checked, LABELLING_OPTIONS), checked
