"""The bot's command line: ``python -m backend.main [options]``.

Parses the options (each can also come from the environment or ``.env`` as
``LOBBOT_<NAME>``), sets up logging, runs ``backend.engine.bot.Bot`` and prints its
run summary. With ``--api-port`` the ML Management web app (``backend/web``) is served
from the bot's event loop. Console lines are English or, with ``--lang ru`` /
``LOBBOT_LANG=ru`` / a Russian locale, Russian (``backend/i18n``). Expected problems (bad settings, a second bot on the same data folder,
an unreachable exchange) end with one clear message and exit code 2 or 1, never a
traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from typing import TYPE_CHECKING

from pydantic import ValidationError

from backend import i18n
from backend.config import Settings, add_data_dir_argument, configure, field_name
from backend.venues.factory import SOURCES

if TYPE_CHECKING:
    from backend.engine.bot import Bot

__all__ = ["build_parser", "main", "settings_from_args"]


def build_parser() -> argparse.ArgumentParser:
    """The option parser. Option defaults are ``None`` ("not given", so settings apply); help shows the real default once."""
    p = argparse.ArgumentParser(
        prog="python -m backend.main",
        description="Collect order-book ML training data: live from Bybit or Binance USD-M, from the built-in "
        "simulated market, or by replaying recorded raw events.",
        epilog="Every option can also be set in the environment or .env as LOBBOT_<NAME> "
        "(e.g. LOBBOT_SYMBOLS=BTCUSDT,ETHUSDT); command-line flags win.",
    )
    d = {name: f.default for name, f in Settings.model_fields.items()}
    p.add_argument("--source", choices=list(SOURCES), default=None,
                   help=f"market source: Bybit or Binance USD-M REST polling, their WebSocket local books (bybit-ws, "
                   f"binance-ws), the simulator (sim), or recorded raw events (replay) (default: {d['source']})")
    p.add_argument("--symbols", default=None, metavar="SYMS|all|@FILE",
                   help="comma-separated symbols; 'all': every trading Bybit linear USDT perpetual (instruments-info, "
                   "checked again every --instruments-refresh: new listings join, delistings leave), for --source "
                   "bybit-ws (or bybit); '@FILE': one symbol per line, # comments (default: BTCUSDT,ETHUSDT)")
    p.add_argument("--instruments-refresh", default=None, metavar="DURATION",
                   help="Bybit sources: how often to check instruments-info while running, e.g. 1d, 6h, 30s; a symbol "
                   "delisted meanwhile is dropped (default: 1d)")
    p.add_argument("--interval", type=float, default=None, help=f"seconds between ticks (default: {d['interval']})")
    p.add_argument("--collection-interval", type=int, default=None,
                   help=f"ticks between collected samples (default: {d['collection_interval']})")
    p.add_argument("--max-samples-per-file", type=int, default=None,
                   help=f"samples per symbol buffered before a flush to disk (default: {d['max_samples_per_file']})")
    p.add_argument("--max-buffer-memory-mb", type=float, default=None,
                   help="memory cap of everything the collector holds (buffers, queued flushes, spool bookkeeping); "
                   f"above it the largest buffers are flushed together (default: {d['max_buffer_memory_mb']})")
    p.add_argument("--no-legacy", action="store_true", help="do not write the legacy .npy/.json batches")
    p.add_argument("--no-feature-store", action="store_true",
                   help="do not write training samples to the parquet feature store (the price tape and candles are still written)")
    add_data_dir_argument(p)
    p.add_argument("--seed", type=int, default=None, help="random seed of the simulator (default: 0)")
    p.add_argument("--stats-interval", type=int, default=None,
                   help=f"ticks between 'MLDataCollector statistics' log lines (default: {d['stats_interval']})")
    p.add_argument("--max-iterations", type=int, default=None,
                   help="stop after N ticks; 0 only recovers and flushes spooled samples of an earlier run, then exits "
                   "(default: no limit)")
    p.add_argument("--fast", action="store_true", help="sim only: run on a virtual clock (a simulated day takes seconds)")
    p.add_argument("--duration", default=None, help="sim only: simulated time to run, e.g. 90m, 24h, 2d (default: until stopped)")
    p.add_argument("--sim-start", default=None, help="sim only: ISO start time of the simulated market, UTC (default: now)")
    p.add_argument("--record-raw", action=argparse.BooleanOptionalAction, default=None,
                   help="store what the venue delivered (books with sequence ids and venue times, trades, candles) "
                   "in the raw_events group, so features can be re-derived later with --source replay "
                   "(default: on for live sources, off for sim)")
    p.add_argument("--replay-from", default=None, help="replay only: first UTC date of recorded raw events (YYYY-MM-DD; default: the first recorded)")
    p.add_argument("--replay-to", default=None, help="replay only: last UTC date of recorded raw events (YYYY-MM-DD; default: the last recorded)")
    p.add_argument("--feature-store-group", default=None,
                   help=f"feature group the samples go to (default: {d['feature_store_group']})")
    p.add_argument("--allow-mixed-versions", action="store_true",
                   help="replay only: write into a group that holds rows of another feature version")
    p.add_argument("--model", default=None, metavar="URI",
                   help="predict with this MLflow model at every collection tick and paper-trade on its signals "
                   "(models:/NAME/VERSION, models:/NAME@ALIAS or runs:/RUN_ID/model; see docs/paper_trading.md); "
                   "predictions and paper fills go to the predictions and paper_trades groups (default: no model)")
    p.add_argument("--label-threshold", type=float, default=None, metavar="PCT",
                   help="with --model: the threshold (%%) you will label the predictions group with; the model must "
                   "have been trained on labels made with it (default: the labeller's, "
                   f"{d['model_label_threshold_pct']})")
    p.add_argument("--paper-enter-prob", type=float, default=None,
                   help=f"paper trading: enter long/short when P(up)/P(down) reaches this (default: {d['paper_enter_prob']})")
    p.add_argument("--paper-notional", type=float, default=None,
                   help=f"paper trading: quote notional per trade (default: {d['paper_notional_quote']})")
    p.add_argument("--paper-fee-bps", type=float, default=None,
                   help=f"paper trading: taker fee per fill in bps (default: {d['paper_taker_fee_bps']})")
    p.add_argument("--paper-slippage-bps", type=float, default=None,
                   help=f"paper trading: slippage per fill in bps (default: {d['paper_slippage_bps']})")
    p.add_argument("--log-level", default=None, help=f"DEBUG, INFO, WARNING or ERROR (default: {d['log_level']})")
    p.add_argument("--api-port", type=int, default=None,
                   help="serve the ML Management page, /health and /metrics on this port (see docs/web.md); a live "
                   "source that cannot connect is then retried instead of ending the run (default: no web app)")
    p.add_argument("--api-host", default="127.0.0.1",
                   help="address the web app binds (default: %(default)s; any other address makes every request but the page "
                   "itself and /health need the token, and /health then shows only ok/degraded/down)")
    p.add_argument("--lang", choices=i18n.LANGUAGES, default=None,
                   help="console language (default: $LOBBOT_LANG, else Russian under a ru_* locale, else English)")
    return p


# settings fields set by an option of another name (the rest share the option's dest)
_DEST_OF_FIELD = {"instruments_refresh_s": "instruments_refresh", "use_legacy_format": "no_legacy",
                  "enable_feature_store": "no_feature_store", "model_uri": "model",
                  "paper_notional_quote": "paper_notional", "paper_taker_fee_bps": "paper_fee_bps",
                  "model_label_threshold_pct": "label_threshold"}


def settings_problems(exc: ValidationError, parser: argparse.ArgumentParser) -> str:
    """One ``where: why`` per invalid setting, named as the user gave it: the option and its
    environment variable (``--interval / LOBBOT_INTERVAL``), never the internal field name."""
    options = {a.dest: a.option_strings[0] for a in parser._actions if a.option_strings}
    parts = []
    for e in exc.errors():
        msg = str(e["msg"]).removeprefix("Value error, ")
        field = field_name(str(e["loc"][0])) if e["loc"] else ""
        option = options.get(_DEST_OF_FIELD.get(field, field))
        if option:
            parts.append(f"{option} (or LOBBOT_{field.upper()}): {msg}")
        else:
            parts.append(f"LOBBOT_{field.upper()}: {msg}" if field else msg)
    return "; ".join(parts)


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Settings from parsed options over the environment; raises pydantic ``ValidationError`` for bad values.

    A replay without ``--symbols`` (and without ``LOBBOT_SYMBOLS``) replays every recorded symbol.
    """
    overrides = dict(
        source=args.source,
        symbols=args.symbols,
        instruments_refresh_s=args.instruments_refresh,
        interval=args.interval,
        collection_interval=args.collection_interval,
        max_samples_per_file=args.max_samples_per_file,
        max_buffer_memory_mb=args.max_buffer_memory_mb,
        use_legacy_format=False if args.no_legacy else None,
        enable_feature_store=False if args.no_feature_store else None,
        data_dir=args.data_dir,
        seed=args.seed,
        stats_interval=args.stats_interval,
        max_iterations=args.max_iterations,
        fast=True if args.fast else None,
        duration=args.duration,
        sim_start=args.sim_start,
        log_level=args.log_level,
        record_raw=args.record_raw,
        replay_from=args.replay_from,
        replay_to=args.replay_to,
        feature_store_group=args.feature_store_group,
        allow_mixed_versions=True if args.allow_mixed_versions else None,
        model_uri=args.model,
        model_label_threshold_pct=args.label_threshold,
        paper_enter_prob=args.paper_enter_prob,
        paper_notional_quote=args.paper_notional,
        paper_taker_fee_bps=args.paper_fee_bps,
        paper_slippage_bps=args.paper_slippage_bps,
    )
    settings = configure(**overrides)
    if settings.source == "replay" and args.symbols is None and not os.environ.get("LOBBOT_SYMBOLS"):
        from backend.venues.replay.source import recorded_symbols

        recorded = recorded_symbols(settings.feature_store_root, settings.replay_from, settings.replay_to)
        if recorded:
            settings = configure(**dict(overrides, symbols=",".join(recorded)))
    return settings


def _web_service(args: argparse.Namespace, settings: Settings, lang: str):
    """The web app as a bot service (``--api-port``); raises ``ValueError`` / ``TokenError`` for bad options."""
    from backend.ml_engine.training_orchestrator.tracking import resolve_tracking
    from backend.web.app import WebSettings
    from backend.web.auth import load_or_create_token
    from backend.web.embed import BotServer

    if not 1 <= args.api_port <= 65535:
        raise ValueError(f"--api-port must be between 1 and 65535, got {args.api_port}")
    token = load_or_create_token(settings.data_dir)
    target = resolve_tracking(None, settings.mlflow_tracking_uri, settings.data_dir)
    web_settings = WebSettings(data_dir=settings.data_dir, token=token, tracking_uri=target.uri, host=args.api_host,
                               feature_group=settings.feature_store_group, lang=lang)
    return BotServer(web_settings, args.api_port)


def _live_model_service(settings: Settings):
    """The model in the loop as a bot service (``--model``): the model loaded from MLflow and checked
    against what this bot produces. Raises ``ModelLoadError`` / ``ModelCompatibilityError`` (clear messages)."""
    from backend.ml_engine.feature_store.feature_schema import FEATURE_NAMES, FEATURE_SCHEMA_VERSION
    from backend.ml_engine.live.model_loader import BotProfile, ModelLoadError, load_live_model
    from backend.ml_engine.live.paper import PaperConfig
    from backend.ml_engine.live.service import LiveModelService
    from backend.ml_engine.training_orchestrator.errors import TrackingError
    from backend.ml_engine.training_orchestrator.tracking import probe_database, resolve_tracking

    # MLflow draws a progress bar per downloaded artifact; the bot's console is a log
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    target = resolve_tracking(None, settings.mlflow_tracking_uri, settings.data_dir)
    try:  # one quick connect (MLflow retries a dead store ~100 s and logs a raw-'@' password's tail as the host)
        probe_database(target)
    except TrackingError as exc:
        raise ModelLoadError(str(exc)) from None
    profile = BotProfile(tuple(FEATURE_NAMES), FEATURE_SCHEMA_VERSION,
                         int(round(settings.interval * settings.collection_interval * 1000)),
                         settings.model_label_threshold_pct)
    model = load_live_model(settings.model_uri, target.uri, profile, settings.symbols)
    paper = PaperConfig(horizon_s=model.spec.horizon_s, enter_prob=settings.paper_enter_prob,
                        notional_quote=settings.paper_notional_quote, taker_fee_bps=settings.paper_taker_fee_bps,
                        slippage_bps=settings.paper_slippage_bps)
    return LiveModelService(model, settings.symbols, paper)


def _print_summary(bot: Bot) -> None:
    for line in bot.summary:
        print(line, flush=True)
    # disk outages and rows dropped past the memory cap (issue 11): said in the summary too
    for line in bot.ml_data_collector.persistence_lines():
        print(line, flush=True)


def main(argv: list[str] | None = None) -> int:
    """Run the bot; returns the exit code (0 done or stopped, 1 could not run, 2 bad arguments)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    # the engine's stack (pandas, pyarrow, TA-Lib) loads after the options parse, so --help
    # and a bad option answer at once
    from backend.engine.bot import Bot, StartupError, parse_duration, parse_start_ms
    from backend.ml_engine.data_collection.spool import SpoolLockedError

    try:
        lang = i18n.setup(args.lang)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        settings = settings_from_args(args)
    except ValidationError as exc:
        print(f"error: invalid settings: {settings_problems(exc, parser)}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=getattr(logging, settings.log_level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stdout,
    )
    if settings.source != "sim" and (settings.fast or settings.duration or settings.sim_start):
        print("error: --fast, --duration and --sim-start apply to --source sim only", file=sys.stderr)
        return 2
    if args.label_threshold is not None and not settings.model_uri:
        print("error: --label-threshold applies with --model only (it is checked against the model's labels)",
              file=sys.stderr)
        return 2
    if args.instruments_refresh is not None and settings.source not in ("bybit", "bybit-ws"):
        print("error: --instruments-refresh applies to the Bybit sources (bybit, bybit-ws) only", file=sys.stderr)
        return 2
    try:
        parse_start_ms(settings.sim_start)
        if settings.duration:
            parse_duration(settings.duration)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    services = ()
    if args.api_port is not None:
        from backend.web.auth import TokenError

        try:
            services = (_web_service(args, settings, lang),)
        except (ValueError, TokenError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    if settings.model_uri:
        from backend.ml_engine.live.model_loader import ModelCompatibilityError, ModelLoadError

        try:
            services = (_live_model_service(settings), *services)
        except (ModelLoadError, ModelCompatibilityError) as exc:
            print(f"error: --model: {exc}", file=sys.stderr)
            return 2
    try:
        bot = Bot(settings, keep_retrying=args.api_port is not None, services=services)
    except SpoolLockedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        code = asyncio.run(bot.run())
    except StartupError as exc:
        # a run refused before its first tick has nothing to sum up (unless the spool was recovered):
        # a summary of zeros above the refusal would read as if something ran
        if bot.ticks or bot.ml_data_collector.stats.collected:
            _print_summary(bot)
        print(f"\n{exc}\n", file=sys.stderr)
        return getattr(exc, "exit_code", 1)  # 2: --api-port cannot be bound (backend.web.embed.PortUnavailable)
    except KeyboardInterrupt:
        _print_summary(bot)
        return 0
    _print_summary(bot)
    # rows lost to a full disk make the run a failure, whatever else went well
    return code or (1 if any(r != "memory_cap_kept_in_spool" for r in bot.ml_data_collector.dropped) else 0)
