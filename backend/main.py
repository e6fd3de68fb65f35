"""The bot: ``python -m backend.main``.

Every ``interval`` seconds (fixed rate: tick k starts at t0 + k * interval) it
fetches the books of all symbols concurrently, validates them, updates the 110
features, appends one price-tape row per symbol, and every ``collection_interval``
ticks hands a sample per warm symbol to ``MLDataCollector``. SIGINT/SIGTERM stop the
loop, flush everything and exit 0.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import logging
import re
import signal
import sys
import time
from pathlib import Path

from pydantic import ValidationError

from backend.config import Settings, add_data_dir_argument, configure
from backend.venues.orderbook import BookValidator
from backend.venues.source import Clock, MarketSource, OffsetClock, VirtualClock
from backend.ml_engine.data_collection import MLDataCollector
from backend.ml_engine.data_collection.spool import SpoolLockedError
from backend.ml_engine.feature_store.atomic import remove_stale_temp_files

log = logging.getLogger("backend.main")

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
SYNC_PERIOD_S = 1.0


class StartupError(RuntimeError):
    """An expected condition that stops the bot with a clear message, not a traceback."""


def parse_duration(text: str) -> float:
    """'24h' -> 86400.0 seconds; accepts s, m, h, d or plain seconds."""
    m = _DURATION_RE.match(text or "")
    if not m:
        raise ValueError(f"invalid duration {text!r}: use e.g. 90s, 30m, 24h or 2d")
    return float(m.group(1)) * _UNIT_S[m.group(2)]


def parse_start_ms(text: str | None) -> int:
    if not text:
        return int(time.time() * 1000)
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"invalid --sim-start {text!r}: use an ISO time such as 2025-11-07T00:00:00Z") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return int(when.timestamp() * 1000)


class Bot:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.symbols = list(settings.symbols)
        self.fast = settings.source == "sim" and settings.fast
        self.start_ms = parse_start_ms(settings.sim_start) if settings.source == "sim" else int(time.time() * 1000)
        self.duration_s = parse_duration(settings.duration) if settings.duration else None
        if self.fast:
            self.clock: Clock = VirtualClock(self.start_ms)
        elif settings.source == "sim" and settings.sim_start:
            self.clock = OffsetClock(self.start_ms)  # real-time pace, simulated dates
        else:
            self.clock = Clock()
        self.ml_data_collector = MLDataCollector(
            storage_path=settings.legacy_root,
            max_samples_per_file=settings.max_samples_per_file,
            collection_interval=settings.collection_interval,
            max_buffer_memory_mb=settings.max_buffer_memory_mb,
            enable_feature_store=settings.enable_feature_store,
            use_legacy_format=settings.use_legacy_format,
            feature_store_group=settings.feature_store_group,
            source=settings.source,
            spool_dir=settings.spool_dir,
            fsync=settings.spool_fsync,
        )
        self.validator = BookValidator(max_age_ms=settings.max_book_age_s * 1000, max_future_ms=settings.max_clock_skew_s * 1000)
        self.stop_event = asyncio.Event()
        self.ticks = 0
        self.overruns = 0
        self.source: MarketSource | None = None
        self._last_sync = 0.0

    def request_stop(self, signame: str = "") -> None:
        if not self.stop_event.is_set():
            log.info("Received %s: stopping after the current tick and flushing all buffers", signame or "stop")
        self.stop_event.set()

    async def run(self) -> int:
        s = self.settings
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.request_stop, sig.name)
        remove_stale_temp_files(s.data_dir / "feature_store")
        remove_stale_temp_files(s.legacy_root)
        collector = self.ml_data_collector
        recovered = await asyncio.to_thread(collector.recover)
        if recovered:
            log.info("Recovered and flushed %d samples left by an earlier run", recovered)
        if s.max_iterations == 0:
            log.info("--max-iterations 0: recovery done, exiting")
            print(collector.statistics_line(), flush=True)
            await collector.close()
            return 0
        try:
            return await self._collect()
        finally:
            clean = await collector.close()
            if self.source is not None:
                await self.source.close()
            self._print_summary(clean)

    async def _collect(self) -> int:
        from backend.venues.sources import make_source
        from backend.ml_engine.features import FeaturePipeline

        s = self.settings
        collector = self.ml_data_collector
        self.source = make_source(s, self.symbols, self.clock)
        log.info(
            "Starting %s for %s: interval %.3gs, a sample every %d ticks, data in %s",
            s.source, ",".join(self.symbols), s.interval, s.collection_interval, s.data_dir,
        )
        try:
            await self.source.start()
        except Exception as exc:
            if s.source == "sim":
                raise
            raise StartupError(unreachable_message(s, exc)) from None
        pipeline = FeaturePipeline(self.symbols, book_depth=s.book_depth)
        for sym in self.symbols:
            candles = self.source.initial_candles(sym)
            pipeline.add_candles(sym, candles)
            collector.add_candles(sym, candles)
        interval_ms = int(round(s.interval * 1000))
        t0 = self.clock.now_ms()
        end_ms = t0 + int(self.duration_s * 1000) if self.duration_s is not None else None
        k = 0
        while not self.stop_event.is_set():
            tick_ms = t0 + k * interval_ms
            if end_ms is not None and tick_ms >= end_ms:
                break
            if s.max_iterations is not None and self.ticks >= s.max_iterations:
                break
            await self._sleep_until(tick_ms)
            if self.stop_event.is_set():
                break
            await self._tick(pipeline, collect=collector.should_collect(self.ticks))
            self.ticks += 1
            if self.ticks % s.stats_interval == 0:
                log.info(collector.statistics_line())
            # fixed rate: the next tick is t0 + (k+1)*interval; a late tick is counted, not drifted
            k += 1
            now = self.clock.now_ms()
            if now > t0 + k * interval_ms:
                missed = (now - (t0 + k * interval_ms)) // interval_ms + 1
                self.overruns += 1
                log.warning("Tick overrun: tick %d ended %d ms after the next tick was due; skipping %d slot(s)",
                            self.ticks, now - (t0 + k * interval_ms), missed)
                k += int(missed)
        return 0

    async def _sleep_until(self, t_ms: int) -> None:
        if self.fast:
            await self.clock.sleep_until(t_ms)
            return
        delay = (t_ms - self.clock.now_ms()) / 1000.0
        if delay > 0:
            try:
                await asyncio.wait_for(self.stop_event.wait(), timeout=delay)
            except asyncio.TimeoutError:
                pass

    async def _tick(self, pipeline, collect: bool) -> None:
        collector = self.ml_data_collector
        snaps = await self.source.poll()
        now = self.clock.now_ms()
        books = {}
        for sym in self.symbols:
            snap = snaps.get(sym)
            if snap is None:
                continue
            if snap.trades:
                pipeline.add_trades(sym, snap.trades)
            if snap.candles:
                pipeline.add_candles(sym, snap.candles)
                collector.add_candles(sym, snap.candles)
            if snap.book is None:
                if collect:
                    collector.skip(sym, "no_book")
                continue
            reason = self.validator.check(snap.book, now)
            if reason is not None:
                log.debug("%s: book rejected (%s)", sym, reason.value)
                if collect:
                    collector.skip(sym, f"book_{reason.value}")
                continue
            books[sym] = snap.book
            collector.add_tape(sym, snap.book.ts_ms, snap.book.mid, snap.book.best_bid, snap.book.best_ask)
        batch = pipeline.update(books)
        if collect:
            for i, sym in enumerate(batch.symbols):
                if not batch.warm[i]:
                    collector.skip(sym, "warming_up")
                    log.debug("%s: not collected, features warming up (%s)", sym, batch.not_warm.get(sym))
                    continue
                collector.collect_sample(sym, batch.features[i], int(batch.timestamps_ms[i]), float(batch.mid_prices[i]))
        # group commit: one fsync per tick, but at most one per second of wall time
        # (a --fast run does thousands of ticks per second)
        if time.monotonic() - self._last_sync >= SYNC_PERIOD_S:
            self._last_sync = time.monotonic()
            await asyncio.to_thread(collector.sync)
        collector.maybe_flush()

    def _print_summary(self, clean: bool) -> None:
        c = self.ml_data_collector
        lines = [
            c.statistics_line(),
            f"Run summary: ticks={self.ticks} overruns={self.overruns} books_rejected={self.validator.rejected} "
            f"({self.validator.summary()}) recovered={c.stats.recovered} flush_failures={c.stats.flush_failures}",
        ]
        if c.stats.skip_reasons:
            lines.append("Skipped samples by reason: " + ", ".join(f"{k}={v}" for k, v in sorted(c.stats.skip_reasons.items())))
        if self.source is not None and self.source.stats():
            lines.append("Source: " + ", ".join(f"{k}={v}" for k, v in sorted(self.source.stats().items())))
        lines.append("All collected samples are on disk." if clean else
                     "Some rows could not be written; they stay in the spool and are flushed on the next start.")
        for line in lines:
            print(line, flush=True)


def unreachable_message(s: Settings, exc: Exception) -> str:
    url = s.bybit_ws_url if s.source == "bybit-ws" else s.bybit_rest_url
    return (
        f"Cannot reach the exchange: the '{s.source}' source failed to connect to {url} "
        f"({type(exc).__name__}: {exc}). Live collection needs network access to Bybit's public API; "
        "check the connection, a proxy or firewall, or point BYBIT_REST_URL / BYBIT_WS_URL at a reachable "
        "endpoint. To try the bot without network, run the simulated market instead, e.g.: "
        "python -m backend.main --source sim --fast --duration 24h"
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m backend.main",
        description="Collect order-book ML training data: live from Bybit, or from the built-in simulated market.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        epilog="Every option can also be set in the environment or .env as LOBBOT_<NAME> "
        "(e.g. LOBBOT_SYMBOLS=BTCUSDT,ETHUSDT); command-line flags win.",
    )
    d = Settings.model_fields
    p.add_argument("--source", choices=["bybit", "bybit-ws", "sim"], default=None,
                   help=f"market source: Bybit REST polling, Bybit WebSocket local book, or the simulator (default: {d['source'].default})")
    p.add_argument("--symbols", default=None, help="comma-separated symbols (default: BTCUSDT,ETHUSDT)")
    p.add_argument("--interval", type=float, default=None, help=f"seconds between ticks (default: {d['interval'].default})")
    p.add_argument("--collection-interval", type=int, default=None,
                   help=f"ticks between collected samples (default: {d['collection_interval'].default})")
    p.add_argument("--max-samples-per-file", type=int, default=None,
                   help=f"samples per symbol buffered before a flush to disk (default: {d['max_samples_per_file'].default})")
    p.add_argument("--max-buffer-memory-mb", type=float, default=None,
                   help=f"memory cap of all buffers; above it the largest buffer is flushed (default: {d['max_buffer_memory_mb'].default})")
    p.add_argument("--no-legacy", action="store_true", help="do not write the legacy .npy/.json batches")
    p.add_argument("--no-feature-store", action="store_true",
                   help="do not write training samples to the parquet feature store (the price tape and candles are still written)")
    add_data_dir_argument(p)
    p.add_argument("--seed", type=int, default=None, help="random seed of the simulator")
    p.add_argument("--stats-interval", type=int, default=None,
                   help=f"ticks between 'MLDataCollector statistics' log lines (default: {d['stats_interval'].default})")
    p.add_argument("--max-iterations", type=int, default=None,
                   help="stop after N ticks; 0 only recovers and flushes spooled samples of an earlier run, then exits")
    p.add_argument("--fast", action="store_true", help="sim only: run on a virtual clock (a simulated day takes seconds)")
    p.add_argument("--duration", default=None, help="sim only: simulated time to run, e.g. 90m, 24h, 2d (default: until stopped)")
    p.add_argument("--sim-start", default=None, help="sim only: ISO start time of the simulated market, UTC (default: now)")
    p.add_argument("--log-level", default=None, help="DEBUG, INFO, WARNING or ERROR (default: INFO)")
    return p


def settings_from_args(args: argparse.Namespace) -> Settings:
    return configure(
        source=args.source,
        symbols=args.symbols,
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
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = settings_from_args(args)
    except ValidationError as exc:
        msgs = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: {e['msg']}" for e in exc.errors())
        print(f"error: invalid settings: {msgs}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=getattr(logging, settings.log_level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stdout,
    )
    if settings.source != "sim" and (settings.fast or settings.duration or settings.sim_start):
        print("error: --fast, --duration and --sim-start apply to --source sim only", file=sys.stderr)
        return 2
    try:
        parse_start_ms(settings.sim_start)
        if settings.duration:
            parse_duration(settings.duration)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        bot = Bot(settings)
    except SpoolLockedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        return asyncio.run(bot.run())
    except StartupError as exc:
        print(f"\n{exc}\n", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
