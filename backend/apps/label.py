"""The labelling app: command lines of the two labelling scripts (parse, configure, run, print).

``preprocessing_add_future_labels_parquet.py`` calls ``main_parquet`` and
``preprocessing_add_future_labels.py`` calls ``main_legacy``. The work is done by
``backend.ml_engine.labelling`` (one apply loop, a parquet and a legacy adapter);
this module only turns arguments into a ``LabelConfig`` and prints the guide's
console layout. Exit status: 0 done (an existing group without samples too), 1 some
file not labelled, 2 bad arguments (a feature group that does not exist among them).
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys

from functools import partial

from backend.apps import console as c
from backend.config import add_data_dir_argument, configure_or_exit
from backend.contracts.groups import MARKET_GROUPS, PRICE_TAPE, TRAINING_FEATURES
from backend.contracts.labels import CLASS_NAMES, HORIZONS_S
from backend.i18n import _, add_lang_argument, setup_or_exit
from backend.ml_engine.feature_store.feature_store import FeatureStoreError, get_feature_store
from backend.ml_engine.feature_store.legacy_format import list_symbols
from backend.ml_engine.labelling import labels as core
from backend.ml_engine.labelling.apply import apply_labels
from backend.ml_engine.labelling.legacy_labelling import LegacyAdapter
from backend.ml_engine.labelling.store_labelling import StoreAdapter
from backend.ml_engine.labelling.summary import LabelEvent, RunSummary
from backend.symbols import InvalidSymbolError, validate_symbol

EPILOG = """\
How labels are computed: for a sample at time t and horizon h, the future price is the
mid-price of the first price-tape row (or, where there is no tape, sample) of the same
symbol with timestamp in [t+h, t+h+tolerance]. future_movement_<h>s = (p_future / mid_price_t
- 1) * 100 (percent); future_direction_<h>s = 2 (UP) if movement > threshold, 0 (DOWN) if
< -threshold, else 1 (NEUTRAL). No price is found -> the label stays null and a later run
fills it once the data exists. Re-running with the same settings changes nothing.
The threshold and tolerance are stored with the labels (parquet file metadata; the legacy
batch's metadata JSON), so training classifies its baseline with the same threshold.

Why the defaults: the tolerance is one 3 s tape interval plus jitter, below the smallest
horizon; the threshold is about 0.67 sigma of a 10 s move and 0.3 sigma of a 60 s move of a
liquid perpetual, so no class is degenerate (the class balance it gives on your data is
printed at the end).
"""


def _date(value: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid date {value!r}: expected YYYY-MM-DD") from None


def _horizons(value: str) -> tuple[int, ...]:
    try:
        out = tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid horizons {value!r}: expected e.g. 10,30,60") from None
    bad = [h for h in out if h not in HORIZONS_S]
    if bad or not out:
        raise argparse.ArgumentTypeError(
            f"horizons must be among the schema's label columns {', '.join(map(str, HORIZONS_S))}, got {value!r}"
        )
    return tuple(sorted(set(out)))


def _symbols(value: str) -> list[str]:
    try:
        return [validate_symbol(s) for s in value.replace(" ", "").split(",") if s]
    except InvalidSymbolError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--start-date", type=_date, help="first UTC date to label, YYYY-MM-DD (default: all data)")
    parser.add_argument(
        "--end-date",
        type=_date,
        help="last UTC date to label, YYYY-MM-DD (default: all data); the next day is still read as look-ahead",
    )
    add_data_dir_argument(parser)
    parser.add_argument(
        "--horizons",
        type=_horizons,
        default=core.DEFAULT_HORIZONS_S,
        help="comma-separated horizons in seconds, a subset of 10,30,60 (default: 10,30,60)",
    )
    parser.add_argument(
        "--threshold",
        type=float,
        default=core.DEFAULT_THRESHOLD_PCT,
        help=f"direction threshold in percent: UP above +T, DOWN below -T (default: {core.DEFAULT_THRESHOLD_PCT:g})",
    )
    parser.add_argument(
        "--tolerance",
        type=float,
        default=core.DEFAULT_TOLERANCE_S,
        help=f"seconds after t+h in which a price must be found: 0 <= T < the smallest of --horizons, "
        f"fractions allowed (default: {core.DEFAULT_TOLERANCE_S:g})",
    )
    parser.add_argument("--dry-run", action="store_true", help="compute and report, write nothing")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    add_lang_argument(parser)


def _config(parser: argparse.ArgumentParser, args: argparse.Namespace) -> core.LabelConfig:
    if args.start_date and args.end_date and args.start_date > args.end_date:
        parser.error(f"--start-date {args.start_date} is after --end-date {args.end_date}")
    try:
        return core.LabelConfig(args.horizons, args.tolerance, args.threshold)
    except ValueError as exc:
        parser.error(str(exc))
        raise  # unreachable: parser.error exits


def _describe(args: argparse.Namespace, cfg: core.LabelConfig) -> None:
    lo = args.start_date.isoformat() if args.start_date else "first"
    hi = args.end_date.isoformat() if args.end_date else "last"
    c.out(f"Date range: {lo} .. {hi} (plus look-ahead of {cfg.reach_ms / 1000:g} s beyond the end)")
    c.out(
        f"Horizons: {', '.join(f'{h}s' for h in cfg.horizons_s)}; threshold ±{cfg.threshold_pct:g}%; "
        f"tolerance {cfg.tolerance_s:g} s" + ("; DRY RUN (nothing is written)" if args.dry_run else "")
    )


def _print_event(event: LabelEvent) -> None:
    if event.kind == "failed":
        c.out(f"  {c.FAIL} {event.name}: {event.text}")
    else:
        c.out(f"  note: {event.text}")


def print_symbol_sections(summary: RunSummary) -> None:
    """One section per symbol: samples seen and how many have every horizon labelled."""
    for name in sorted(summary.symbols):
        sc = summary.symbols[name]
        c.section(_("Processing {symbol}").format(symbol=name))
        c.out("  " + _("Samples: {n}").format(n=f"{sc.total:,}"))
        c.out(f"  {c.OK} " + _("Labelled: {labelled}/{total} samples ({pct})").format(
            labelled=f"{sc.labelled:,}", total=f"{sc.total:,}", pct=c.pct(sc.labelled, sc.total)))


def print_totals(summary: RunSummary, title: str, *, dry_run: bool, unit: str = "files") -> None:
    """The guide's summary block, files rewritten, and the class balance per horizon with rare-class warnings."""
    cfg = summary.config
    c.out()
    c.header(_(title))
    c.out(f"{c.OK} " + _("Samples processed: {n}").format(n=f"{summary.total:,}"))
    c.out(f"{c.OK} " + _("Future labels added: {n}").format(n=f"{summary.labelled:,}"))
    c.out("  " + _("Label percentage: {pct}").format(pct=c.pct(summary.labelled, summary.total)))
    # whole sentences per case, so a translation never has to glue an English word in
    rewritten = {("files", False): _("Files rewritten: {changed} of {total} (others unchanged)"),
                 ("files", True): _("Files would be rewritten: {changed} of {total} (others unchanged)"),
                 ("label files", False): _("Label files rewritten: {changed} of {total} (others unchanged)"),
                 ("label files", True): _("Label files would be rewritten: {changed} of {total} (others unchanged)")}
    c.out("  " + rewritten[(unit, dry_run)].format(changed=f"{summary.files_changed:,}", total=f"{summary.files_total:,}"))
    if summary.kept_existing:
        c.out(f"  Existing labels kept where no price was found now: {summary.kept_existing:,}")
    if summary.files_failed:
        c.out(f"{c.FAIL} {unit.capitalize()} skipped with errors: {len(summary.files_failed):,} (see above)")
    c.out()
    c.out(
        _("Class balance (threshold ±{threshold}%, tolerance {tolerance} s; {classes}):").format(
            threshold=f"{cfg.threshold_pct:g}", tolerance=f"{cfg.tolerance_s:g}",
            classes=f"0={CLASS_NAMES[0]} 1={CLASS_NAMES[1]} 2={CLASS_NAMES[2]}")
    )
    warnings = []
    for h in cfg.horizons_s:
        down, neutral, up, null = (int(x) for x in summary.balance.get(h, (0, 0, 0, 0)))
        n = down + neutral + up
        median = summary.median_abs_move(h)
        shown = f"{median:.4f}%" if median is not None else "n/a"
        c.out(
            f"  {h:>4}s: DOWN {down:,} ({c.pct(down, n)})  NEUTRAL {neutral:,} ({c.pct(neutral, n)})  "
            f"UP {up:,} ({c.pct(up, n)})  unlabelled {null:,}  median |move| {shown}"
        )
        warnings += [f"{h}s {name} is only {c.pct(k, total)} of labels" for name, k, total in summary.rare_classes(h)]
    for w in warnings:
        c.out(f"  WARNING: {w}; consider --threshold near the median |move| printed above")
    c.footer()


def _progress(enabled: bool):
    return partial(c.progress, enabled=enabled)


def missing_group(store, group: str) -> str | None:
    """None when ``group`` has a folder in ``store``; else a one-line error naming the groups present.

    A typo'd ``--feature-group`` (or ``LOBBOT_FEATURE_STORE_GROUP``) must not pass as "nothing
    to label" or "no data"; the apps check every group but the default ``training_features``,
    whose absence in a fresh install keeps the guide's message. Groups of
    market records (``price_tape``, ``candles``, ``raw_events``) are not offered.
    """
    if store.group_dir(group).is_dir():
        return None
    present = sorted(
        p.name for p in (store.root.iterdir() if store.root.is_dir() else [])
        if p.is_dir() and p.name not in MARKET_GROUPS and not p.name.startswith((".", "_"))
    )
    return (
        f"feature group {group!r} does not exist under {store.root}; groups present: "
        f"{', '.join(present) if present else 'none (collect samples first: python -m backend.main)'}"
    )


def _exit_code(summary: RunSummary) -> int:
    if summary.files_failed:
        c.out(f"{c.FAIL} {len(summary.files_failed)} file(s) not labelled; fix them (or re-run if they changed) and run again")
        return 1
    return 0


def main_parquet(argv: list[str] | None = None) -> int:
    """Label a feature-store group in place; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="preprocessing_add_future_labels_parquet.py",
        description="Fill the six future-label columns of a feature-store group in place (atomic rewrites, "
        "only files whose labels change).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--feature-group", default=None, help="feature group to label (default: the configured one, training_features)"
    )
    _common(parser)
    args = parser.parse_args(argv)
    setup_or_exit(parser, args.lang)
    cfg = _config(parser, args)
    settings = configure_or_exit(parser, data_dir=args.data_dir)
    group = args.feature_group or settings.feature_store_group
    if group in MARKET_GROUPS:
        parser.error(f"--feature-group {group!r} holds no samples to label")
    store = get_feature_store()
    try:
        missing = missing_group(store, group) if group != TRAINING_FEATURES else None
    except FeatureStoreError as exc:
        parser.error(str(exc))
    if missing:
        print(f"error: {missing}", file=sys.stderr)
        return 2
    c.header(_("PREPROCESSING: Adding Future Labels (Parquet)"))
    c.out(f"Feature group: {group} ({store.root / group})")
    _describe(args, cfg)
    adapter = StoreAdapter(store, group, cfg, args.start_date, args.end_date)
    try:
        rows, symbols = adapter.count()
    except FeatureStoreError as exc:
        parser.error(str(exc))
    if rows == 0 and not (store.root / group).is_dir():
        # nothing was ever collected here: most likely the wrong --data-dir, not an empty day
        print(f"error: {store.root / group} does not exist: no sample was ever stored under this data dir. Collect "
              "first (python -m backend.main), or point --data-dir (DATA_DIR) at the folder the bot wrote to.",
              file=sys.stderr)
        return 1
    if rows == 0:
        c.out(f"No samples found in {store.root / group} for this date range; nothing to label.")
        c.footer()
        return 0
    c.out(f"{c.OK} " + _("Loaded {n} samples").format(n=f"{rows:,}"))
    c.out("  " + _("Symbols: {symbols}").format(symbols=symbols))
    summary = apply_labels(
        adapter,
        cfg,
        RunSummary(cfg),
        dry_run=args.dry_run,
        on_event=_print_event,
        progress=_progress(not args.no_progress),
    )
    print_symbol_sections(summary)
    print_totals(summary, "PREPROCESSING SUMMARY", dry_run=args.dry_run, unit="files")
    return _exit_code(summary)


def main_legacy(argv: list[str] | None = None) -> int:
    """Label the legacy batches' labels files; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="preprocessing_add_future_labels.py",
        description="Fill the six future-label keys of the legacy labels JSON files (data/ml_training/<SYMBOL>/labels/), "
        "using the feature store's price tape and the legacy samples; identical to the parquet script's labels.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--symbols", type=_symbols, help="comma-separated symbols to label (default: every symbol folder)")
    _common(parser)
    args = parser.parse_args(argv)
    setup_or_exit(parser, args.lang)
    cfg = _config(parser, args)
    settings = configure_or_exit(parser, data_dir=args.data_dir)
    store = get_feature_store()
    root = settings.legacy_root
    c.header(_("PREPROCESSING: Adding Future Labels (legacy .npy/.json)"))
    c.out(f"Legacy data: {root}")
    c.out(f"Price tape: {store.root / PRICE_TAPE}")
    _describe(args, cfg)
    found, ignored = list_symbols(root)
    for name in ignored:
        c.out(f"  note: ignored folder {name!r} (not a valid symbol)")
    symbols = found if args.symbols is None else [s for s in args.symbols if s in found]
    missing = [] if args.symbols is None else [s for s in args.symbols if s not in found]
    for s in missing:
        c.out(f"  note: no legacy data for {s}")
    if not symbols:
        c.out(f"No legacy batches found under {root}; nothing to label.")
        c.footer()
        return 0
    c.out(_("Symbols: {symbols}").format(symbols=symbols))
    summary = RunSummary(cfg)
    progress = _progress(not args.no_progress)
    for symbol in symbols:
        adapter = LegacyAdapter(
            root, store, symbol, cfg, args.start_date, args.end_date, on_event=_print_event, progress=progress
        )
        apply_labels(adapter, cfg, summary, dry_run=args.dry_run, on_event=_print_event, progress=progress)
    c.out(f"{c.OK} " + _("Loaded {n} samples").format(n=f"{summary.total:,}"))
    print_symbol_sections(summary)
    print_totals(summary, "PREPROCESSING SUMMARY", dry_run=args.dry_run, unit="label files")
    return _exit_code(summary)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main_parquet())
