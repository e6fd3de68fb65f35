"""The training app: ``python -m backend.ml_engine.training_orchestrator`` (argument parsing and printing).

The work is ``backend.ml_engine.training_orchestrator.orchestrator.train_and_track``.
Exit status: 0 trained, 1 data or tracking problem (the message says what to do),
2 bad arguments (a feature group that does not exist among them), 130 interrupted (SIGINT),
143 terminated (SIGTERM); both end the MLflow run as KILLED.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from pydantic import ValidationError

from backend.apps import console as c
from backend.config import add_data_dir_argument, configure, duration_seconds, settings_error_text
from backend.i18n import _, add_lang_argument, setup_or_exit
from backend.symbols import validate_symbol
from backend.contracts.groups import TRAINING_FEATURES
from backend.contracts.labels import DEFAULT_THRESHOLD_PCT, DEFAULT_TOLERANCE_S, HORIZONS_S
from backend.ml_engine.training_orchestrator.config import (
    ALLOW_MIXED_SOURCES_FLAG,
    SOURCES_FLAG,
    DEFAULT_MIN_SAMPLES,
    DEFAULT_SEQUENCE_LENGTH,
    DataConfig,
    TrainConfig,
)
from backend.ml_engine.training_orchestrator.label_setting import ALLOW_MIXED_FLAG
from backend.ml_engine.training_orchestrator.errors import TrackingError, TrainingDataError
from backend.ml_engine.training_orchestrator.tracking import DEFAULT_EXPERIMENT, scrub

EPILOG = f"""
workflow:
  python -m backend.main                          collect samples (guide step 1)
  python preprocessing_add_future_labels_parquet.py   add future labels (step 3)
  python -m backend.ml_engine.training_orchestrator --epochs 50 --folds 5   (5 folds recommended)

what a run does:
  reads only the needed columns of the feature group, checks schema, size (>= {DEFAULT_MIN_SAMPLES}
  samples) and label coverage (>= 80 %); builds per-symbol sequences that never
  cross a gap (> 2 sampling intervals) or a symbol; splits by time 70/15/15 with a
  purge gap of one sequence span + the horizon; normalises with training
  statistics only; trains a conv+LSTM classifier (class-weighted, early stopping
  on validation macro-F1); scores the test split beside majority, persistence and
  logistic-regression baselines; logs everything to MLflow.

evaluation (docs/evaluation.md):
  --folds K walks forward: K consecutive test windows at the end of the data (together
  15 % x K of it, at most half), each scored by a model trained from scratch on what
  lies before it (all of it, or the last --window), normalised and with baselines
  fitted on that fold's training rows only. Every score gets a 95 % block-bootstrap
  interval; the verdict against each baseline ("beats", "not distinguishable from",
  "worse than") reads the interval of the paired difference model - baseline at the
  Bonferroni level over the baselines (98.3 % for three). A model that does not beat
  persistence gets a warning. K folds train K models: about K times the training time.

sources:
  every sample records its source (bybit, binance, sim, replay). A group holding more than
  one is refused (the message names them with their counts): choose with --sources bybit,
  or train on all of them with --allow-mixed-sources.

labels:
  the labeller stores its threshold and tolerance with the labels; training refuses
  labels made with different thresholds unless {ALLOW_MIXED_FLAG} is given, and the
  persistence baseline classifies with the stored threshold. Labels made before this
  was recorded train as before, with a warning (settings unknown).

tracking:
  the default SQLite store is the file <data-dir>/mlflow/mlflow.db.
  MLFLOW_TRACKING_URI or --tracking-uri postgresql://user@host:5432/mlflow uses
  PostgreSQL through psycopg2 (see docs/mlflow_postgres.md). Passwords are never printed.

exit status: 0 trained, 1 data or tracking problem (message says what to do), 2 bad arguments
(e.g. a --feature-group that does not exist: the groups present are listed), 130 interrupted
(Ctrl+C), 143 terminated (kill); either way the MLflow run is marked KILLED and nothing is registered.
"""


def build_parser() -> argparse.ArgumentParser:
    """The command line; each default is shown once, in its help text."""
    p = argparse.ArgumentParser(
        prog="python -m backend.ml_engine.training_orchestrator",
        description="Train the order-book direction model on the parquet feature store and track it in MLflow.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    g = p.add_argument_group("training")
    g.add_argument("--epochs", type=int, default=50, help="maximum epochs (default 50; early stopping may end sooner)")
    g.add_argument("--batch-size", type=int, default=256, help="sequences per batch (default 256)")
    g.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate (default 1e-3)")
    g.add_argument("--patience", type=int, default=8, help="epochs without a better validation macro-F1 before stopping (default 8)")
    g.add_argument("--seed", type=int, default=42, help="random seed; the same seed and data give the same model (default 42)")
    g.add_argument(
        "--device", choices=("auto", "cpu", "cuda"), default="auto", help="auto = CUDA with mixed precision when present, else CPU"
    )
    g.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")
    g.add_argument("--no-progress", action="store_true", help="no per-batch progress bar (per-epoch lines are still printed)")
    add_lang_argument(g)

    d = p.add_argument_group("data")
    add_data_dir_argument(d)
    d.add_argument(
        "--feature-group",
        default=None,
        help="feature group to train on (default: the configured one, $LOBBOT_FEATURE_STORE_GROUP or training_features)",
    )
    d.add_argument("--start-date", default=None, help="first UTC date to use, YYYY-MM-DD (default: all)")
    d.add_argument("--end-date", default=None, help="last UTC date to use, inclusive, YYYY-MM-DD (default: all)")
    d.add_argument("--symbols", default=None, help="comma-separated symbols, e.g. BTCUSDT,ETHUSDT (default: all in the store)")
    d.add_argument("--horizon", type=int, choices=HORIZONS_S, default=60, help="label horizon in seconds (default 60)")
    d.add_argument(
        "--sequence-length",
        type=int,
        default=DEFAULT_SEQUENCE_LENGTH,
        help=f"samples per input sequence, one per collection interval (30 s with the bot's defaults) (default {DEFAULT_SEQUENCE_LENGTH})",
    )
    d.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="percent move separating UP/DOWN from NEUTRAL for the persistence baseline (default: the threshold "
        f"stored with the labels, else {DEFAULT_THRESHOLD_PCT:g} (the labeller's) for labels that record none)",
    )
    d.add_argument(
        "--tolerance",
        type=float,
        default=None,
        help="seconds a past price may lie before t-h for the persistence baseline (default: the labels' "
        f"tolerance, else {DEFAULT_TOLERANCE_S:g})",
    )
    d.add_argument(
        ALLOW_MIXED_FLAG,
        action="store_true",
        help="train on labels made with different thresholds instead of refusing",
    )
    d.add_argument(
        SOURCES_FLAG,
        default=None,
        help="comma-separated sample sources to train on, e.g. bybit (the store's source column: bybit, binance, "
        "sim, replay); default: all, refused when the data holds more than one",
    )
    d.add_argument(
        ALLOW_MIXED_SOURCES_FLAG,
        action="store_true",
        help="train on every source in the data together (simulated and live samples in one model)",
    )
    d.add_argument("--min-samples", type=int, default=DEFAULT_MIN_SAMPLES, help=f"refuse to train below this (default {DEFAULT_MIN_SAMPLES})")

    e = p.add_argument_group("evaluation")
    e.add_argument(
        "--folds",
        type=int,
        default=1,
        help="walk-forward folds: K test windows in time, a model trained from scratch for each (default 1: one "
        "70/15/15 split; 5 recommended)",
    )
    e.add_argument(
        "--window",
        default=None,
        metavar="DURATION",
        help="rolling training window per fold, e.g. 12h or 2d: train only on that much data before each "
        "fold's validation window (default: expanding, everything before)",
    )

    t = p.add_argument_group("tracking")
    t.add_argument("--experiment", default=DEFAULT_EXPERIMENT, help=f"MLflow experiment name (default {DEFAULT_EXPERIMENT})")
    t.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite under <data-dir>/mlflow); "
        "postgresql://... is rewritten to use psycopg2",
    )
    t.add_argument(
        "--artifact-location",
        default=None,
        help="where a new experiment stores artifacts (default <data-dir>/mlflow/artifacts, never ./mlruns)",
    )
    t.add_argument("--register-model", metavar="NAME", default=None, help="also register the logged model under NAME in the registry")
    return p


def parse_window(text: str | None) -> float | None:
    """'12h' -> 43200.0 seconds (s, m, h, d or plain seconds); None stays None (expanding).

    Raises:
        ValueError: for any other text.
    """
    if text is None:
        return None
    return duration_seconds(text, what="--window")


def _symbols(text: str | None) -> list[str] | None:
    if not text:
        return None
    return [s for s in text.replace(" ", "").split(",") if s]


def _valid_symbols(text: str | None) -> list[str] | None:
    """``--symbols``: checked here, so a bad one is a bad argument (exit 2), not a failed run.
    Raises ``ValueError`` (``InvalidSymbolError``) naming the symbol."""
    symbols = _symbols(text)
    for sym in symbols or ():
        validate_symbol(sym)
    return symbols


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the process stands so it ends like Ctrl+C (the MLflow run marked KILLED)."""


def _on_sigterm(signum, frame) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut the run's KILLED record short
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv``, train, print the summary; returns the exit status.

    SIGTERM (a plain ``kill``; the web app's cancel after its SIGINT) interrupts the run like
    SIGINT: the MLflow run is ended as KILLED, exit status 143 (130 for SIGINT).
    """
    if threading.current_thread() is not threading.main_thread():
        return _main(argv)
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return _main(argv)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_or_exit(parser, args.lang)
    try:
        settings = configure(data_dir=args.data_dir)
        dcfg = DataConfig(
            feature_group=args.feature_group or settings.feature_store_group,
            start_date=args.start_date,
            end_date=args.end_date,
            symbols=_valid_symbols(args.symbols),
            horizon_s=args.horizon,
            sequence_length=args.sequence_length,
            threshold_pct=args.threshold,
            tolerance_s=args.tolerance,
            allow_mixed_label_thresholds=args.allow_mixed_label_thresholds,
            min_samples=args.min_samples,
            folds=args.folds,
            window_s=parse_window(args.window),
            sources=_symbols(args.sources),
            allow_mixed_sources=args.allow_mixed_sources,
        )
        tcfg = TrainConfig(
            epochs=args.epochs,
            batch_size=args.batch_size,
            lr=args.lr,
            patience=args.patience,
            seed=args.seed,
            device=args.device,
            num_threads=args.threads,
            show_progress=not args.no_progress,
        )
    except ValidationError as exc:  # settings from the environment / --data-dir
        print(f"error: invalid settings: {settings_error_text(exc)}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return run(settings, dcfg, tcfg, args)


def run(settings, dcfg: DataConfig, tcfg: TrainConfig, args: argparse.Namespace) -> int:
    """Train with parsed settings and print the guide's layout; returns the exit status."""
    from backend.ml_engine.feature_store.feature_store import get_feature_store
    from backend.ml_engine.training_orchestrator.orchestrator import train_and_track
    from backend.ml_engine.training_orchestrator.tracking import resolve_tracking

    from backend.apps.label import missing_group
    from backend.ml_engine.feature_store.feature_store import FeatureStoreError

    try:
        missing = missing_group(get_feature_store(), dcfg.feature_group) if dcfg.feature_group != TRAINING_FEATURES else None
    except FeatureStoreError as exc:
        missing = str(exc)
    if missing:
        print(f"error: {missing}", file=sys.stderr)
        return 2
    target = resolve_tracking(args.tracking_uri, settings.mlflow_tracking_uri, settings.data_dir, args.artifact_location)
    progress = None
    if tcfg.show_progress:
        from functools import partial

        from tqdm import tqdm

        progress = partial(tqdm, leave=False, unit="batch", dynamic_ncols=True)
    print(_("TRAINING: order-book direction model"))
    print("=" * 80)
    try:
        summary = train_and_track(
            get_feature_store(), dcfg, tcfg, target, args.experiment, args.register_model, out=_echo, progress=progress
        )
    except TrainingDataError as exc:
        print(f"\n{exc}", file=sys.stderr)
        return 1
    except TrackingError as exc:
        print(f"\n{exc}", file=sys.stderr)
        return 1
    except ValueError as exc:  # e.g. --device cuda without CUDA, a bad date
        print(f"\nerror: {scrub(str(exc), target.uri)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:
        run_id = getattr(exc, "mlflow_run_id", None)
        what = "Terminated" if isinstance(exc, Terminated) else "Interrupted"
        tail = f"the MLflow run {run_id} is marked KILLED" if run_id else "no MLflow run had been started"
        print(f"\n{what}: nothing was registered; {tail}.", file=sys.stderr)
        return 143 if isinstance(exc, Terminated) else 130

    print()
    print(summary.report)
    print()
    print(_("SUMMARY"))
    print("=" * 80)
    m, a = summary.model_scores, summary.assessment
    folds = len(a.folds)
    print(f"{c.OK} " + _("Best epoch: {best} of {run} run").format(best=summary.best_epoch, run=summary.epochs_run) + (f" (last of {folds} folds)" if folds > 1 else ""))
    acc, f1 = a.overall.scores[a.model]["accuracy"], a.overall.scores[a.model]["macro_f1"]
    pooled = f" (all {folds} test windows)" if folds > 1 else ""
    print(
        f"{c.OK} Test accuracy: {m.accuracy:.3f} [{acc.low:.3f}, {acc.high:.3f}]   "
        f"macro-F1: {m.macro_f1:.3f} [{f1.low:.3f}, {f1.high:.3f}]{pooled}"
    )
    for name, s in summary.baseline_scores.items():
        v = a.verdicts[name]
        print(f"  baseline {name:<12} macro-F1: {s.macro_f1:.3f}   model {v.text()}")
    if a.warning:
        print(f"{c.FAIL} {a.warning}")
    if summary.run_id:
        print(f"{c.OK} MLflow run: {summary.run_id} (experiment {args.experiment!r}, {target.shown})")
        version = summary.facts.get("registered_model_version")
        registered = ""
        if args.register_model:
            # the version is what the bot's --model needs (models:/NAME/VERSION)
            registered = (f", registered as {args.register_model!r} version {version} (models:/{args.register_model}/{version})"
                          if version is not None else f", registered as {args.register_model!r}")
        print(f"{c.OK} Model: {summary.model_uri}" + registered)
    print("  " + _("Took {seconds} s").format(seconds=f"{summary.facts.get('seconds', 0):.0f}"))
    print("=" * 80)
    return 0


def _echo(line: str) -> None:
    # tqdm.write keeps per-epoch lines from tearing an active progress bar.
    try:
        from tqdm import tqdm

        tqdm.write(line)
    except ImportError:  # pragma: no cover
        print(line)
    sys.stdout.flush()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
