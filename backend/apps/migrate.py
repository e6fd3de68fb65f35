"""The migration app: command line of ``migrate_legacy_to_parquet.py`` (the guide's step 2).

Parses arguments, prints the guide's console layout and drives
``backend.ml_engine.migration.legacy_to_parquet.Migrator`` batch by batch.
Exit status: 0 every batch migrated or already present, 1 any batch failed, 2 bad arguments.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from backend.apps import console as c
from backend.config import add_data_dir_argument, configure_or_exit
from backend.i18n import _, add_lang_argument, setup_or_exit
from backend.contracts.groups import MARKET_GROUPS
from backend.ml_engine.feature_store.feature_store import get_feature_store
from backend.ml_engine.feature_store.legacy_format import list_symbols
from backend.ml_engine.migration.interpret import NameMapError, load_name_map
from backend.ml_engine.migration.legacy_to_parquet import MigrationTotals, Migrator
from backend.symbols import InvalidSymbolError, validate_symbol


def _symbols(value: str) -> list[str]:
    try:
        return [validate_symbol(s) for s in value.replace(" ", "").split(",") if s]
    except InvalidSymbolError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def main(argv: list[str] | None = None) -> int:
    """Run the migration; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="migrate_legacy_to_parquet.py",
        description="Copy legacy batches (data/ml_training/<SYMBOL>/{features,labels,metadata}) into the parquet "
        "feature store, labels included. Safe to re-run: migrated batches and rows the store already holds are "
        "not written again. Source files are never modified or deleted.",
        epilog="Exit status: 0 when every batch was migrated or already present, 1 when any batch failed "
        "(each failure is printed with its file and reason), 2 on bad arguments.",
    )
    add_data_dir_argument(parser)
    parser.add_argument("--symbols", type=_symbols, help="comma-separated symbols to migrate (default: all found)")
    parser.add_argument(
        "--feature-group", default=None, help="target feature group (default: the configured one, training_features)"
    )
    parser.add_argument("--dry-run", action="store_true", help="read and check every batch, write nothing")
    parser.add_argument(
        "--strict",
        action="store_true",
        help="accept only batches in today's exact form (by default older forms with one unambiguous reading "
        "are migrated and each reading is reported and recorded in the parquet file's metadata)",
    )
    parser.add_argument(
        "--map",
        dest="name_map",
        metavar="NAMES.json",
        type=Path,
        help="migrate batches whose feature_names differ from ours through an explicit rename map: a JSON object "
        '{"legacy name": "our name", ...} (targets must be our feature names, one source each). A batch migrates '
        "when its names, renamed through the map, are exactly our 110 in any order (columns are reordered to the "
        "canonical order by name, values unchanged); otherwise it is refused with the names still missing / "
        "unknown. The renames used are reported per batch and recorded in the parquet file's metadata "
        "(lobbot.legacy_feature_name_map). Not with --strict",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_lang_argument(parser)
    args = parser.parse_args(argv)
    setup_or_exit(parser, args.lang)
    settings = configure_or_exit(parser, data_dir=args.data_dir)
    group = args.feature_group or settings.feature_store_group
    if group in MARKET_GROUPS:
        parser.error(f"--feature-group {group!r} does not hold training samples")
    name_map = None
    if args.name_map is not None:
        if args.strict:
            parser.error("--map and --strict cannot be combined: --strict refuses every batch whose feature names differ")
        try:
            name_map = load_name_map(args.name_map)
        except NameMapError as exc:
            parser.error(f"--map: {exc}")
    store = get_feature_store()
    root = settings.legacy_root

    c.header(_("MIGRATION: Legacy -> Feature Store (Parquet)") + (" [DRY RUN: nothing is written]" if args.dry_run else ""))
    c.out(_("Source: {path}").format(path=root))
    c.out(_("Target: {path}").format(path=store.root / group))
    if name_map is not None:
        c.out(f"Feature name map: {args.name_map} ({len(name_map)} name(s))")
    found, ignored = list_symbols(root)
    for name in ignored:
        c.out(f"  note: ignored folder {name!r} (not a valid symbol)")
    symbols = found if args.symbols is None else [s for s in args.symbols if s in found]
    for s in [] if args.symbols is None else [s for s in args.symbols if s not in found]:
        c.out(f"  note: no legacy data for {s}")
    c.out(_("Symbols found: {n}").format(n=len(symbols)))
    c.out(_("Symbols: {symbols}").format(symbols=", ".join(symbols) if symbols else "-"))

    migrator = Migrator(root, store, group, dry_run=args.dry_run, strict=args.strict, name_map=name_map)
    plan = {s: migrator.batches(s) for s in symbols}
    totals = MigrationTotals()
    bar = c.progress(range(sum(len(v) for v in plan.values())), desc="migrating", unit="batch", enabled=not args.no_progress)
    with bar:
        for symbol in symbols:
            c.section(_("Migrating {symbol}").format(symbol=symbol))
            c.out("  " + _("Batches found: {n}").format(n=len(plan[symbol])))
            for ref in plan[symbol]:
                o = migrator.migrate_batch(ref)
                totals.outcomes.append(o)
                name = ref.features_path.name
                if o.status == "migrated":
                    c.out(f"  {c.OK} " + _("{name}: {samples} samples").format(name=name, samples=f"{o.samples:,}") + (" (would be written)" if args.dry_run else ""))
                elif o.status == "updated":
                    c.out(f"  {c.OK} {name}: labels added since migration carried over ({o.samples:,} rows)")
                elif o.status == "present":
                    c.out(f"  {c.SKIP} {name}: already in the feature store ({o.samples:,} samples), skipped")
                else:
                    c.out(f"  {c.FAIL} {name}: {o.error}")
                for note in o.notes:
                    c.out(f"      read as: {note}")
                bar.update(1)

    c.out()
    c.header(_("MIGRATION SUMMARY"))
    c.out(f"{c.OK} " + _("Batches processed: {n}").format(n=f"{totals.count('migrated'):,}"))
    c.out(f"{c.OK} " + _("Samples migrated: {n}").format(n=f"{totals.samples('migrated'):,}") + (" (dry run: not written)" if args.dry_run else ""))
    if totals.count("present"):
        c.out(f"  Already migrated (skipped): {totals.count('present'):,} batches, {totals.samples('present'):,} samples")
    if totals.count("updated"):
        c.out(f"{c.OK} Batches whose new labels were carried over: {totals.count('updated'):,}")
    interpreted = sum(1 for o in totals.outcomes if o.notes and o.status != "failed")
    if interpreted:
        c.out(f"  Batches in an older form (readings listed above, recorded in the files): {interpreted:,}")
    for line in migrator.store_problems:
        c.out(f"{c.FAIL} store file skipped: {line}")
    failed = totals.count("failed")
    if failed:
        c.out(f"{c.FAIL} Batches failed: {failed:,} (listed above; sources left untouched)")
    c.footer()
    return 1 if failed else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
