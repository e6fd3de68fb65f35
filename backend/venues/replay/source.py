"""``ReplaySource`` ("replay"): recorded ``raw_events`` played back through the engine on a virtual clock.

It delivers, tick by tick, the snapshots the recording bot's source delivered, and moves
the clock to each recorded tick time before handing them over, so the engine validates,
maintains the books, computes the features and takes samples exactly as it did then.
``collect`` says whether the recorded tick took samples (the bot uses it instead of its
own tick count, which restarts with every run); ``run_started`` is True on the first
tick of every recorded run after the first (the bot then starts a fresh engine with
``initial_candles``, as the recording bot did when it restarted).
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path
from typing import Sequence

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from backend.contracts.groups import RAW_EVENTS
from backend.contracts.raw_events import RAW_EVENTS_SCHEMA
from backend.metrics import Metrics
from backend.venues.replay.events import ReplayRun, ReplayTick, decode_runs
from backend.venues.source import Clock, MarketSource, VenueStartupError
from backend.venues.types import Candle, MarketSnapshot

__all__ = ["ReplaySource", "raw_event_files", "read_raw_events", "recorded_symbols"]

log = logging.getLogger(__name__)


def _day(value: str | dt.date | None, what: str) -> dt.date | None:
    if value is None or isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value)[:10])
    except ValueError:
        raise VenueStartupError(f"invalid {what} {value!r}: use a UTC date such as 2025-11-07") from None


def raw_event_files(store_root: Path, start: str | dt.date | None, end: str | dt.date | None) -> list[Path]:
    """Complete parquet files of ``<store_root>/raw_events/date=D/`` with ``start`` <= D <= ``end`` (UTC dates)."""
    lo, hi = _day(start, "--replay-from"), _day(end, "--replay-to")
    base = Path(store_root) / RAW_EVENTS
    files: list[Path] = []
    if not base.is_dir():
        return files
    for part in sorted(base.iterdir()):
        if not part.name.startswith("date=") or not part.is_dir():
            continue
        try:
            day = dt.date.fromisoformat(part.name[5:])
        except ValueError:
            continue
        if (lo and day < lo) or (hi and day > hi):
            continue
        files.extend(sorted(p for p in part.iterdir() if p.suffix == ".parquet" and not p.name.startswith((".", "_"))))
    return files


def read_raw_events(store_root: Path, start=None, end=None, symbols: Sequence[str] | None = None) -> pa.Table:
    """Every recorded event of ``symbols`` (all when None) between the UTC dates ``start`` and ``end``."""
    tables = []
    for path in raw_event_files(store_root, start, end):
        table = pq.read_table(path, schema=RAW_EVENTS_SCHEMA)
        if symbols is not None:
            table = table.filter(pc.is_in(table.column("symbol"), value_set=pa.array(list(symbols), pa.string())))
        tables.append(table)
    return pa.concat_tables(tables) if tables else RAW_EVENTS_SCHEMA.empty_table()


def recorded_symbols(store_root: Path, start=None, end=None) -> list[str]:
    """Symbols with recorded events between the two UTC dates, sorted."""
    names: set[str] = set()
    for path in raw_event_files(store_root, start, end):
        names.update(pq.read_table(path, columns=["symbol"]).column(0).unique().to_pylist())
    return sorted(names)


class ReplaySource(MarketSource):
    """Plays back ``raw_events`` of ``symbols`` recorded between ``start`` and ``end`` (UTC dates, inclusive).

    ``store_root`` is the offline feature store (``<DATA_DIR>/feature_store/offline``).
    The clock must be virtual: replay runs as fast as the CPU allows. ``start()``
    raises ``VenueStartupError`` when nothing was recorded for a symbol in the range.
    """

    name = "replay"
    venue = "replay"

    def __init__(self, symbols: Sequence[str], clock: Clock | None = None, *, store_root: Path,
                 start: str | dt.date | None, end: str | dt.date | None, metrics: Metrics | None = None):
        super().__init__(symbols, clock, metrics)
        self.store_root = Path(store_root)
        self.start_date, self.end_date = _day(start, "--replay-from"), _day(end, "--replay-to")
        self.runs: list[ReplayRun] = []
        self._ticks: list[tuple[int, ReplayTick]] = []  # (run index, tick)
        self._next = 0
        self.collect = False  #: whether the tick just polled took samples when it was recorded
        self.run_started = False  #: the tick just polled is the first of a later recorded run
        self.recorded_venues: list[str] = []

    @property
    def tick_count(self) -> int:
        """Recorded ticks to replay (known after ``start()``)."""
        return len(self._ticks)

    @property
    def exhausted(self) -> bool:
        """Every recorded tick has been polled."""
        return self._next >= len(self._ticks)

    async def start(self) -> None:
        """Read and decode the recording; move the clock to its first tick."""
        if not self.clock.virtual:
            raise VenueStartupError("replay needs a virtual clock (it runs as fast as the CPU allows)")
        table = read_raw_events(self.store_root, self.start_date, self.end_date, self.symbols)
        where = f"{self.store_root / RAW_EVENTS} between {self.start_date or 'the first day'} and {self.end_date or 'the last day'}"
        present = set(table.column("symbol").unique().to_pylist())
        missing = [s for s in self.symbols if s not in present]
        if missing:
            raise VenueStartupError(
                f"no raw events recorded for {', '.join(missing)} in {where}; record them with --record-raw "
                "(on by default for live sources) or pick other --symbols / dates")
        self.recorded_venues = sorted(set(table.column("venue").unique().to_pylist()))
        self.runs = decode_runs(table)
        self._ticks = [(r, tick) for r, run in enumerate(self.runs) for tick in run.ticks]
        if not self._ticks:
            raise VenueStartupError(f"the raw events in {where} hold no complete tick")
        log.info("Replaying %d ticks of %d run(s) of %s (venue %s) from %s", len(self._ticks), len(self.runs),
                 ",".join(self.symbols), ",".join(self.recorded_venues), where)
        await self.clock.sleep_until(self.runs[0].start_ms if self.runs[0].history else self._ticks[0][1].now_ms)

    def initial_candles(self, symbol: str) -> list[Candle]:
        """The bars back-filled at the start of the run being replayed, oldest first."""
        if not self.runs:
            raise RuntimeError("ReplaySource: call start() first")
        run = self.runs[self._ticks[self._next - 1][0]] if self._next else self.runs[0]
        return list(run.history.get(symbol, []))

    async def poll(self) -> dict[str, MarketSnapshot]:
        """The next recorded tick's snapshots, at its recorded time; empty once exhausted."""
        if self.exhausted:
            self.collect, self.run_started = False, False
            return {}
        run, tick = self._ticks[self._next]
        self.run_started = self._next > 0 and self._ticks[self._next - 1][0] != run
        self._next += 1
        await self.clock.sleep_until(tick.now_ms)
        self.collect = tick.collect
        return dict(tick.snapshots)

    async def close(self) -> None:
        """Nothing to release."""
        return None
