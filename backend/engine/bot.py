"""The runtime ``Bot``: a market source, the ``TickEngine`` and the collector under the fixed-rate scheduler.

Every ``interval`` seconds (tick k starts at t0 + k * interval) it polls the books of
all symbols, runs one ``TickEngine.step`` (validation once, price tape, features,
which samples to take), and hands the result to ``MLDataCollector``: candles and tape
rows every tick, samples every ``collection_interval`` ticks. ``request_stop()`` (the
app wires SIGINT/SIGTERM to it) ends the loop after the current tick; everything
buffered is flushed before ``run()`` returns.

One ``Metrics`` registry is shared by the source, the engine, the scheduler and the
collector; the run summary (``summary_lines``) reads from it. Nothing here prints: the
app (``backend/apps/bot.py``) prints the summary.

With ``keep_retrying`` (the app sets it with ``--api-port``), a live source that cannot
connect at start is retried with backoff instead of ending the run; ``source_state``
says where the source stands ("starting", "live", "down", "stopped") and
``warmup_progress()`` how far the features are from the first sample. ``services`` are
started before anything else and stopped last (the app passes the web server): each
has ``async start(bot)`` and ``async stop()``; a service that also has ``async
on_tick(now_ms, out, snapshots)`` is awaited at every tick after the tick's samples
are collected and before the group commit (the app's ``--model`` service predicts and
paper-trades there, appending to the collector's streams).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import shutil
import signal
import time
from pathlib import Path

from backend.config import Settings, duration_seconds
from backend.i18n import _
from backend.engine.heap import freeze_startup_heap
from backend.engine.replay import ReplayScheduler, replay_problem
from backend.engine.scheduler import Scheduler
from backend.engine.tick import TickEngine, TickOutput
from backend.metrics import Metrics, format_reasons
from backend.ml_engine.data_collection import MLDataCollector
from backend.ml_engine.feature_store.atomic import remove_stale_temp_files
from backend.ml_engine.features.tick_state import TICKS_NEEDED
from backend.ml_engine.features.trade_window import TRADE_WINDOW_MS
from backend.credentials import mask_url, scrub
from backend.venues.factory import make_source, venue_of
from backend.venues.raw import encode_history, encode_tick
from backend.venues.source import Clock, MarketSource, OffsetClock, VenueStartupError, VirtualClock, WebSocketUnreachable

__all__ = ["Bot", "StartupError", "first_sample_tick", "parse_duration", "parse_start_ms", "raw_disk_warning",
           "unreachable_message"]

log = logging.getLogger(__name__)

#: raw events' delta form at BTCUSDT-like activity: ~6.3 MB per symbol-hour (bench/replay_bench.py --ws)
RAW_DELTA_MB_PER_SYMBOL_DAY = 150
RAW_WARN_DAYS = 7.0  # warn when raw events would fill the free disk space sooner than this
SYNC_PERIOD_S = 1.0  # at most one spool fsync per second of wall time
RETRY_BACKOFF_S = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0)  # waits between start attempts with keep_retrying


class StartupError(RuntimeError):
    """An expected condition that stops the bot with a clear message, not a traceback."""


def parse_duration(text: str) -> float:
    """'24h' -> 86400.0 seconds; a number with a unit s, m, h or d. Raises ``ValueError`` otherwise.

    A bare number is refused: "24" could mean hours as easily as seconds
    (``backend.config.duration_seconds`` with ``unit_required``).
    """
    return duration_seconds(text, unit_required=True)


def raw_disk_warning(n_symbols: int, free_bytes: int | None, where: Path,
                     warn_days: float = RAW_WARN_DAYS) -> str | None:
    """A warning when raw events for ``n_symbols`` would fill ``free_bytes`` within ``warn_days`` days.

    The rate is ``RAW_DELTA_MB_PER_SYMBOL_DAY`` (MB = 10**6 bytes) per symbol, measured against
    the fake exchange (bench/replay_bench.py --ws); real books can be busier. Returns None when
    the space lasts longer, when ``n_symbols`` is 0 or when the free space is unknown (None).
    """
    if not n_symbols or free_bytes is None:
        return None
    per_day = n_symbols * RAW_DELTA_MB_PER_SYMBOL_DAY * 1e6
    days = free_bytes / per_day
    if days >= warn_days:
        return None
    return (f"Raw events for {n_symbols} symbols would fill the {free_bytes / 1e9:.1f} GB free under {where} in about "
            f"{days:.1f} days at {per_day / 1e9:.1f} GB a day; pass --no-record-raw, collect fewer symbols or free "
            f"space (the collector keeps running when the disk fills, but stops persisting until space returns)")


def first_sample_tick(collection_interval: int, interval_s: float) -> int:
    """The first tick (0-based) that can take a sample: the features need ``TICKS_NEEDED``
    books of history and a full trade window (60 s), and samples are taken every
    ``collection_interval``-th tick. 100 at the defaults (3 s, every 10th tick): 5 minutes."""
    ci = max(1, collection_interval)
    window_ticks = -(-TRADE_WINDOW_MS // max(1, int(round(interval_s * 1000))))
    needed = max(TICKS_NEEDED - 1, window_ticks)
    return -(-needed // ci) * ci


def parse_start_ms(text: str | None) -> int:
    """ISO time (naive means UTC) -> ms since the epoch; now when empty. Raises ``ValueError`` for other text."""
    if not text:
        return int(time.time() * 1000)
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"invalid --sim-start {text!r}: use an ISO time such as 2025-11-07T00:00:00Z") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return int(when.timestamp() * 1000)


def unreachable_message(s: Settings, exc: Exception) -> str:
    """The one paragraph shown when a live source cannot connect at start.

    Names the venue's own URL settings; the URL and the exception text are masked
    (``backend.credentials``), since an exchange URL may carry a user and token.
    """
    venue = venue_of(s.source)
    # a WebSocket source talks REST first (symbols, clock, candles): name the endpoint that failed
    ws = isinstance(exc, WebSocketUnreachable)
    if venue == "binance":
        url, names, api = (s.binance_ws_url if ws else s.binance_rest_url,
                           "BINANCE_REST_URL / BINANCE_WS_URL", "Binance USD-M's")
    else:
        url, names, api = (s.bybit_ws_url if ws else s.bybit_rest_url,
                           "BYBIT_REST_URL / BYBIT_WS_URL", "Bybit's")
    return (
        f"Cannot reach the exchange: the '{s.source}' source failed to connect to {mask_url(url)} "
        f"({type(exc).__name__}: {scrub(str(exc), url)}). Live collection needs network access to {api} public API; "
        f"check the connection, a proxy or firewall, or point {names} at a reachable "
        "endpoint. To try the bot without network, run the simulated market instead, e.g.: "
        "python -m backend.main --source sim --fast --duration 24h"
    )


def _make_collector(s: Settings, metrics: Metrics) -> MLDataCollector:
    kwargs = dict(
        storage_path=s.legacy_root,
        max_samples_per_file=s.max_samples_per_file,
        collection_interval=s.collection_interval,
        max_buffer_memory_mb=s.max_buffer_memory_mb,
        enable_feature_store=s.enable_feature_store,
        use_legacy_format=s.use_legacy_format,
        feature_store_group=s.feature_store_group,
        source=venue_of(s.source),
        spool_dir=s.spool_dir,
        fsync=s.spool_fsync,
    )
    return MLDataCollector(**kwargs, metrics=metrics)


class Bot:
    """One collector run as configured by ``settings``.

    Construction opens the collector (and takes the data folder's spool lock: raises
    ``SpoolLockedError`` when another bot holds it). ``run()`` returns the exit code;
    it raises ``StartupError`` when a live source cannot reach the exchange.
    ``metrics`` is the run's registry (a new one when None).
    """

    def __init__(self, settings: Settings, metrics: Metrics | None = None, *,
                 keep_retrying: bool = False, services: tuple = ()):
        self.settings = settings
        self.keep_retrying = keep_retrying
        self.services = tuple(services)
        self._tick_hooks = tuple(s for s in self.services if hasattr(s, "on_tick"))
        self.source_state = "starting"
        self.metrics = metrics if metrics is not None else Metrics()
        self.symbols = list(settings.symbols)
        self.fast = settings.source == "sim" and settings.fast
        self.start_ms = parse_start_ms(settings.sim_start) if settings.source == "sim" else int(time.time() * 1000)
        self.duration_s = parse_duration(settings.duration) if settings.duration else None
        self.replay = settings.source == "replay"
        self.record_raw = settings.records_raw  # raw venue events to the raw_events group (DESIGN.md §6.4)
        if self.fast or self.replay:  # a replay's source moves the clock to each recorded tick time
            self.clock: Clock = VirtualClock(0 if self.replay else self.start_ms)
        elif settings.source == "sim" and settings.sim_start:
            self.clock = OffsetClock(self.start_ms)  # real-time pace, simulated dates
        else:
            self.clock = Clock()
        self.ml_data_collector = _make_collector(settings, self.metrics)
        self.stop_event = asyncio.Event()
        self.source: MarketSource | None = None
        self.scheduler: Scheduler | None = None
        self.summary: list[str] = []
        self._last_sync = 0.0
        self._last_book_ms: dict[str, int] = {}
        self._cohorts: list[TickEngine] = []  # engines of symbols that joined during the run (new listings)
        self.symbols_at_start = 0
        self.joined: list[str] = []  # symbols that joined during the run, in order
        self.left: dict[str, str] = {}  # symbols dropped during the run (delisted) -> why
        self.exit_code = 0  # 1 when the run ends because nothing is left to collect
        self.first_sample_tick = first_sample_tick(settings.collection_interval, settings.interval)

    @property
    def ticks(self) -> int:
        """Ticks run so far."""
        return self.scheduler.ticks if self.scheduler is not None else 0

    def book_age_s(self, symbol: str) -> float | None:
        """Seconds since the symbol's last accepted book, on the bot's clock, computed now (None before its first).

        Unlike the ``lobbot_book_age_seconds`` gauge, which ticks update, this grows while a
        tick is stuck (a hung poll), so /health can see a stalled bot.
        """
        last = self._last_book_ms.get(symbol)
        return None if last is None else max(0.0, (self.clock.now_ms() - last) / 1000.0)

    def warmup_progress(self) -> tuple[int, int] | None:
        """``(ticks done, first sample tick)`` while no sample has been taken yet, ``None`` after."""
        if self.metrics.total("lobbot_samples_collected_total") > 0:
            return None
        return min(self.ticks, self.first_sample_tick), self.first_sample_tick

    def statistics_line(self) -> str:
        """The collector's statistics line (in the console language), then the warm-up progress.

        The collector's fields keep their names and order; when samples were skipped,
        ``skipped_by=<reason>:<n>,...`` (largest first) follows, then ``warmup=done`` or
        ``warmup=<ticks>/<first sample tick>``.
        """
        line = self.ml_data_collector.statistics_line()
        prefix = "MLDataCollector statistics:"
        if line.startswith(prefix):
            line = _(prefix) + line[len(prefix):]
        # the reason beside the count, so a user watching the log sees why without waiting for the summary
        by = sorted(self.ml_data_collector.stats.skip_reasons.items(), key=lambda kv: (-kv[1], kv[0]))
        if by:
            line += " skipped_by=" + ",".join(f"{k}:{int(v)}" for k, v in by if v)
        w = self.warmup_progress()
        return line + (" warmup=done" if w is None else f" warmup={w[0]}/{w[1]}")

    def request_stop(self, signame: str = "") -> None:
        """Stop after the current tick (idempotent); ``run()`` then flushes and returns."""
        if not self.stop_event.is_set():
            log.info("Received %s: stopping after the current tick and flushing all buffers", signame or "stop")
        self.stop_event.set()

    async def run(self) -> int:
        """Recover the spool, collect until stopped, flush; fills ``summary``. Returns the exit code."""
        s = self.settings
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.request_stop, sig.name)
        started = []
        try:
            for service in self.services:
                await service.start(self)
                started.append(service)
            return await self._run()
        finally:
            self.source_state = "stopped"
            for service in reversed(started):
                try:
                    await service.stop()
                except Exception as exc:  # stopping must not hide the run's own outcome
                    log.warning("stopping %s failed: %s", type(service).__name__, exc)

    async def _run(self) -> int:
        s = self.settings
        remove_stale_temp_files(s.data_dir / "feature_store")
        remove_stale_temp_files(s.legacy_root)
        collector = self.ml_data_collector
        if self.replay:
            problem = replay_problem(s, self.symbols)  # another feature version, or rows it would store twice
            if problem:
                raise StartupError(problem)
        recovered = await asyncio.to_thread(collector.recover)
        if recovered:
            log.info("Recovered and flushed %d samples left by an earlier run", recovered)
        if s.max_iterations == 0:
            log.info("--max-iterations 0: recovery done, exiting")
            self.summary = [self.statistics_line().rsplit(" warmup=", 1)[0]]
            await collector.close()
            return 0
        try:
            return await self._collect()
        finally:
            clean = await collector.close()
            if self.source is not None:
                await self.source.close()
            self.summary = self.summary_lines(clean)

    async def _collect(self) -> int:
        s = self.settings
        collector = self.ml_data_collector
        log.info(
            "Starting %s for %s: interval %.3gs, a sample every %d ticks, data in %s",
            s.source, "every trading linear USDT perpetual (--symbols all)" if s.symbols_all else ",".join(self.symbols),
            s.interval, s.collection_interval, s.data_dir,
        )
        if not await self._start_source():
            return 0  # stopped before the source came up
        if self.record_raw and s.source.endswith("-ws"):
            # the delta form keeps every book message: say what that costs on disk before days of it pile up
            n = len(self.source.symbols)
            log.info("Recording raw events (every book message, docs/replay.md) for %d symbol%s: up to about %.1f GB "
                     "a day at BTCUSDT-like activity (%d MB per symbol-day); --no-record-raw turns it off",
                     n, "" if n == 1 else "s", n * RAW_DELTA_MB_PER_SYMBOL_DAY / 1000, RAW_DELTA_MB_PER_SYMBOL_DAY)
            try:
                free = shutil.disk_usage(s.data_dir).free
            except OSError:
                free = None  # the collect path reports disk trouble itself; this is only a forecast
            warning = raw_disk_warning(n, free, s.data_dir)
            if warning:
                log.warning(warning)
        if s.symbols_all:
            self.symbols[:] = self.source.symbols  # in place: services hold this list
        self.symbols_at_start = len(self.symbols)
        self.source_state = "live"
        if not self.fast:
            wait_s = self.first_sample_tick * s.interval
            log.info(
                "Features warm up over %d ticks and %d s of trades: the first sample comes at tick %d, in about %s "
                "(the statistics line shows warmup=<ticks>/%d until then)",
                TICKS_NEEDED, TRADE_WINDOW_MS // 1000, self.first_sample_tick, _span(wait_s), self.first_sample_tick,
            )
            if self.duration_s is not None and self.duration_s < wait_s:
                log.warning("--duration %s ends before the features warm up (%s): this run will store no sample; "
                            "run for longer than that", _span(self.duration_s), _span(wait_s))
        self.engine = self._new_engine()
        frozen = freeze_startup_heap()  # full GC passes would otherwise walk the start-up heap on the loop
        log.debug("start-up heap: %d objects frozen out of the cyclic collector's passes", frozen)
        if self.replay:
            self.scheduler = ReplayScheduler(self.clock, self.source, metrics=self.metrics, stop=self.stop_event,
                                             max_ticks=s.max_iterations)
        else:
            self.scheduler = Scheduler(self.clock, s.interval, metrics=self.metrics, stop=self.stop_event,
                                       duration_s=self.duration_s, max_ticks=s.max_iterations)
        async for tick in self.scheduler:
            await self._tick(self.engine, collect=collector.should_collect(tick))
            if (tick + 1) % s.stats_interval == 0:
                log.info(self.statistics_line())
        return self.exit_code

    async def _start_source(self) -> bool:
        """Connect the source; False when a stop came first.

        Without ``keep_retrying`` a live source that cannot connect raises ``StartupError``;
        with it, the attempt is repeated after ``RETRY_BACKOFF_S`` waits (the last one
        repeating) until it succeeds or the bot is stopped.
        """
        s = self.settings
        attempt = 0
        while not self.stop_event.is_set():
            self.source = make_source(s, self.symbols, self.clock, metrics=self.metrics)
            try:
                if await self._unless_stopped(self.source.start()):
                    return True
                return False
            except VenueStartupError as exc:  # unknown symbol, IP ban, limits: said as is, not "cannot reach"
                raise StartupError(str(exc)) from None
            except Exception as exc:
                if s.source == "sim":
                    raise
                if not self.keep_retrying:
                    raise StartupError(unreachable_message(s, exc)) from None
                self.source_state = "down"
                wait = RETRY_BACKOFF_S[min(attempt, len(RETRY_BACKOFF_S) - 1)]
                attempt += 1
                log.warning("%s Retrying in %g s (attempt %d); /health answers 503 'down' until books arrive.",
                            unreachable_message(s, exc).split(". Live collection")[0] + ".", wait, attempt)
                await self.source.close()
                self.source = None
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self.stop_event.wait(), wait)
        return False

    async def _unless_stopped(self, aw) -> bool:
        """Await ``aw`` unless a stop request comes first (then cancel it); True when it completed."""
        task = asyncio.ensure_future(aw)
        stop = asyncio.ensure_future(self.stop_event.wait())
        try:
            await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        if task.done():
            task.result()  # raises the start's exception
            return True
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        return False

    def _new_engine(self) -> TickEngine:
        """A fresh engine primed with the source's back-filled bars (stored, and recorded when raw events are)."""
        s, collector = self.settings, self.ml_data_collector
        engine = TickEngine(self.symbols, book_depth=s.book_depth, max_age_ms=s.max_book_age_s * 1000,
                            max_future_ms=s.max_clock_skew_s * 1000, metrics=self.metrics)
        for sym in self.symbols:
            candles = self.source.initial_candles(sym)
            engine.add_history(sym, candles)
            collector.add_candles(sym, candles)
            if self.record_raw and candles:
                collector.add_raw_events(sym, *encode_history(self.clock.now_ms(), candles))
        return engine

    def _follow_universe(self, snaps: dict) -> dict:
        """Symbols the source dropped (delisted) leave the run; new listings it took join with their own engine
        (back-filled candles first, as at start). Returns the snapshots of the symbols still in the run."""
        dropped = getattr(self.source, "dropped", None)
        if dropped:
            for sym, why in dropped.items():
                if sym in self.symbols:
                    self.symbols.remove(sym)  # its buffered rows stay and are flushed like any others
                    self.left[sym] = why
                    self.metrics.symbol_changes.labels(venue=venue_of(self.settings.source), change="delisted").inc()
        take = getattr(self.source, "take_joined", None)
        joined = [sym for sym in (take() if take is not None else []) if sym not in self.symbols]
        if joined:
            s, collector = self.settings, self.ml_data_collector
            engine = TickEngine(joined, book_depth=s.book_depth, max_age_ms=s.max_book_age_s * 1000,
                                max_future_ms=s.max_clock_skew_s * 1000, metrics=self.metrics)
            for sym in joined:
                candles = self.source.initial_candles(sym)
                engine.add_history(sym, candles)
                collector.add_candles(sym, candles)
                if self.record_raw and candles:
                    collector.add_raw_events(sym, *encode_history(self.clock.now_ms(), candles))
            self._cohorts.append(engine)
            self.symbols.extend(joined)
            self.joined.extend(joined)
            self.metrics.symbol_changes.labels(venue=venue_of(self.settings.source), change="listed").inc(len(joined))
        if self.left:
            snaps = {sym: snap for sym, snap in snaps.items() if sym not in self.left}
        return snaps

    def _step(self, engine: TickEngine, snaps: dict, now_ms: int, collect: bool) -> TickOutput:
        """``engine.step``, and the step of every engine of symbols that joined later, as one output."""
        out = engine.step(snaps, now_ms, collect)
        for extra in self._cohorts:
            more = extra.step(snaps, now_ms, collect)
            out.candles.update(more.candles)
            out.tape.update(more.tape)
            out.rejected.update(more.rejected)
            out.samples.extend(more.samples)
            out.skips.extend(more.skips)
        return out

    async def _tick(self, engine: TickEngine, collect: bool) -> None:
        collector = self.ml_data_collector
        snaps = await self.source.poll()
        now_ms = self.clock.now_ms()
        if not self.replay:
            snaps = self._follow_universe(snaps)
            if not self.symbols and self.left and not self.stop_event.is_set():
                log.error("Every symbol has left the run (delisted: %s); nothing is left to collect, stopping. "
                          "Check the symbols at the venue's instruments list and start again with listed ones.",
                          ", ".join(self.left))
                self.exit_code = 1
                self.stop_event.set()
        if self.replay:  # the recorded tick's sampling; a recorded restart starts a fresh engine, as it did then
            collect = self.source.collect
            if self.source.run_started:
                engine = self.engine = self._new_engine()
        elif self.record_raw:  # before anything is derived: a crash keeps no sample without its raw events
            for sym, (ints, floats) in encode_tick(snaps, now_ms, collect, self.symbols).items():
                collector.add_raw_events(sym, ints, floats)
        if self.fast or self.replay:
            out = self._step(engine, snaps, now_ms, collect)
        else:
            # in real time the step (features of every symbol: ~100 ms at 500 symbols, ~250 ms when
            # a minute bar closes) runs on a worker thread, so WebSocket readers, the web page and
            # the probe keep being served; ticks stay sequential and the step is pure, so its
            # output is the same (a --fast or replay run has nothing else to serve and stays inline)
            out = await asyncio.to_thread(self._step, engine, snaps, now_ms, collect)
        for sym in self.symbols:
            candles = out.candles.get(sym)
            if candles:
                collector.add_candles(sym, candles)
            row = out.tape.get(sym)
            if row is not None:
                if not self.replay:  # the recording run stored this tape row already
                    collector.add_tape(sym, row.ts_ms, row.mid, row.bid, row.ask)
                self._last_book_ms[sym] = row.ts_ms
            elif sym in self._last_book_ms:
                # no fresh book this tick: the age keeps growing (what /health judges)
                self.metrics.book_age.labels(symbol=sym).set((now_ms - self._last_book_ms[sym]) / 1000.0)
        for sym, reason in out.skips:
            collector.skip(sym, reason)
        for sample in out.samples:
            collector.collect_sample(sample.symbol, sample.features, sample.ts_ms, sample.mid)
        for hook in self._tick_hooks:  # e.g. the model in the loop (--model): predictions, paper trades
            await hook.on_tick(now_ms, out, snaps)
        # group commit: one fsync per tick, but at most one per second of wall time
        # (a --fast run does thousands of ticks per second)
        if time.monotonic() - self._last_sync >= SYNC_PERIOD_S:
            self._last_sync = time.monotonic()
            await asyncio.to_thread(collector.sync)
        collector.maybe_flush()
        await collector.wait_for_room()  # backpressure: flushes behind keep the next tick waiting, not memory growing

    def summary_lines(self, clean: bool) -> list[str]:
        """The run summary, read from the registry: statistics, rejections, skips, venue faults."""
        c, m = self.ml_data_collector, self.metrics
        rejected = m.by_label("lobbot_books_rejected_total", "reason")
        # the collector's own counts: its ``stats`` is a view of the registry it was given
        skips = dict(c.stats.skip_reasons)
        recovered, flush_failures = c.stats.recovered, c.stats.flush_failures
        lines = [
            self.statistics_line().rsplit(" warmup=", 1)[0],
            _("Run summary:") + f" ticks={self.ticks} overruns={int(m.value('lobbot_tick_overruns_total'))} "
            f"books_rejected={int(sum(rejected.values()))} ({format_reasons(rejected)}) "
            f"recovered={recovered} flush_failures={flush_failures}",
        ]
        if skips:
            lines.append(_("Skipped samples by reason:") + " " + format_reasons(skips))
        if self.source is not None:
            venue = self.source.venue
            faults = m.by_label("lobbot_venue_faults_total", "reason", venue=venue)
            lines.append(
                _("Source:") + f" {self.source.name} faults={int(sum(faults.values()))} ({format_reasons(faults)}) "
                f"reconnects={int(m.value('lobbot_ws_reconnects_total', venue=venue))} "
                f"resyncs={int(m.value('lobbot_ws_resyncs_total', venue=venue))} "
                f"retries={int(m.value('lobbot_venue_retries_total', venue=venue))}"
            )
            if self.joined or self.left or self.settings.symbols_all:
                lines.append(_("Symbols: {start} at start, listed during the run: {listed}, delisted: {left}").format(
                    start=self.symbols_at_start,
                    listed=f"{len(self.joined)}{' (' + ', '.join(self.joined) + ')' if self.joined else ''}",
                    left=f"{len(self.left)}{' (' + ', '.join(self.left) + ')' if self.left else ''}"))
            offset = [v for labels, v in m.samples("lobbot_exchange_clock_offset_seconds") if labels.get("venue") == venue]
            if offset:
                lines.append(_("Exchange clock: {venue} minus local = {offset} s (staleness and future timestamps "
                               "judged in exchange time)").format(venue=venue, offset=f"{offset[0]:+.3f}"))
        # rows dropped past the memory cap during an outage are lost unless they were already in the spool
        lost = int(sum(v for labels, v in m.samples("lobbot_rows_dropped_total")
                       if labels.get("reason") != "memory_cap_kept_in_spool"))
        if lost:
            lines.append(_("Not every collected row is on disk: {n} were dropped past the memory cap while the disk "
                           "refused writes (see 'Dropped rows by reason').").format(n=lost))
        if not clean:
            lines.append(_("Some rows could not be written; they stay in the spool and are flushed on the next start."))
        elif not lost:
            lines.append(_("All collected samples are on disk."))
        return lines


def _span(seconds: float) -> str:
    """90 -> '1.5 min', 300 -> '5 min', 7200 -> '2 h', 20 -> '20 s'."""
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.3g} min"
    return f"{seconds / 3600:.3g} h"
