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
from collections import deque
from pathlib import Path
from typing import Sequence

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from backend.contracts.groups import RAW_EVENTS
from backend.contracts.raw_events import RAW_EVENTS_SCHEMA
from backend.metrics import Metrics
from backend.venues.replay.events import ReplayRun, ReplayTick, RunDecoder
from backend.venues.source import Clock, MarketSource, VenueStartupError
from backend.venues.types import Candle, MarketSnapshot

__all__ = ["ReplaySource", "raw_event_chunks", "raw_event_files", "read_raw_events", "recorded_span", "recorded_symbols"]

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


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


def _ms(value) -> int:
    """A footer statistic of a timestamp column -> ms since the epoch (exact integer arithmetic)."""
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.timezone.utc)
        return (value - _EPOCH) // dt.timedelta(milliseconds=1)
    return int(value)


def _file_span(path: Path) -> tuple[int, int]:
    """(first, last) tick time (ms) of one raw-events file, from its footer's statistics (read when absent)."""
    meta = pq.ParquetFile(path).metadata
    col = meta.schema.names.index("timestamp")
    lo = hi = None
    for rg in range(meta.num_row_groups):
        st = meta.row_group(rg).column(col).statistics
        if st is None or not st.has_min_max:
            ts = pq.read_table(path, columns=["timestamp"]).column(0).cast(pa.int64())
            return (int(pc.min(ts).as_py()), int(pc.max(ts).as_py())) if len(ts) else (0, -1)
        a, b = _ms(st.min), _ms(st.max)
        lo, hi = (a, b) if lo is None else (min(lo, a), max(hi, b))
    return (lo, hi) if lo is not None else (0, -1)


def raw_event_chunks(store_root: Path, start=None, end=None) -> list[list[Path]]:
    """The raw-events files of the range in replay order, grouped so that no tick time is in two groups.

    Files are ordered by their first tick time; files whose tick-time spans overlap or
    touch (a restart's recovered rows, a date's second file) share a group. A replay
    decodes one group at a time, so its memory is bounded by the largest group (about
    one flush), not by the range.
    """
    spans = sorted((*_file_span(p), str(p)) for p in raw_event_files(store_root, start, end))
    groups: list[list[Path]] = []
    last_hi = None
    for lo, hi, path in spans:
        if hi < lo:  # an empty file
            continue
        if groups and lo <= last_hi:
            groups[-1].append(Path(path))
            last_hi = max(last_hi, hi)
        else:
            groups.append([Path(path)])
            last_hi = hi
    return groups


def _read(paths: Sequence[Path], symbols: Sequence[str] | None) -> pa.Table:
    tables = []
    for path in paths:
        table = pq.read_table(path, schema=RAW_EVENTS_SCHEMA)
        if symbols is not None:
            table = table.filter(pc.is_in(table.column("symbol"), value_set=pa.array(list(symbols), pa.string())))
        tables.append(table)
    return pa.concat_tables(tables) if tables else RAW_EVENTS_SCHEMA.empty_table()


def read_raw_events(store_root: Path, start=None, end=None, symbols: Sequence[str] | None = None) -> pa.Table:
    """Every recorded event of ``symbols`` (all when None) between the UTC dates ``start`` and ``end``."""
    return _read(raw_event_files(store_root, start, end), symbols)


def recorded_symbols(store_root: Path, start=None, end=None) -> list[str]:
    """Symbols with recorded events between the two UTC dates, sorted."""
    names: set[str] = set()
    for path in raw_event_files(store_root, start, end):
        names.update(pq.read_table(path, columns=["symbol"]).column(0).unique().to_pylist())
    return sorted(names)


def recorded_span(store_root: Path, start=None, end=None) -> tuple[int, int] | None:
    """(first, last) recorded tick time (ms) between the two UTC dates, from file footers; None when nothing."""
    spans = [s for s in (_file_span(p) for p in raw_event_files(store_root, start, end)) if s[1] >= s[0]]
    if not spans:
        return None
    return min(s[0] for s in spans), max(s[1] for s in spans)


class ReplaySource(MarketSource):
    """Plays back ``raw_events`` of ``symbols`` recorded between ``start`` and ``end`` (UTC dates, inclusive).

    ``store_root`` is the offline feature store (``<DATA_DIR>/feature_store/offline``).
    The clock must be virtual: replay runs as fast as the CPU allows. ``start()``
    raises ``VenueStartupError`` when nothing was recorded for a symbol in the range.
    The recording is read and decoded one group of files at a time (``raw_event_chunks``),
    so memory stays bounded however long the range.
    """

    name = "replay"
    venue = "replay"

    def __init__(self, symbols: Sequence[str], clock: Clock | None = None, *, store_root: Path,
                 start: str | dt.date | None, end: str | dt.date | None, metrics: Metrics | None = None):
        super().__init__(symbols, clock, metrics)
        self.store_root = Path(store_root)
        self.start_date, self.end_date = _day(start, "--replay-from"), _day(end, "--replay-to")
        self._chunks: list[list[Path]] = []
        self._decoder = RunDecoder()
        self._queue: deque[tuple[ReplayRun, ReplayTick]] = deque()
        self._run: ReplayRun | None = None  # the run of the tick polled last (or of the first tick before a poll)
        self.runs_seen = 0  #: recorded runs reached so far
        self.ticks_polled = 0  #: recorded ticks handed over so far
        self.collect = False  #: whether the tick just polled took samples when it was recorded
        self.run_started = False  #: the tick just polled is the first of a later recorded run
        self.recorded_venues: list[str] = []

    def _fill(self) -> None:
        """Decode file groups until a tick is queued or the recording ends."""
        while not self._queue and self._chunks:
            self._queue.extend(self._decoder.feed(_read(self._chunks.pop(0), self.symbols)))

    @property
    def exhausted(self) -> bool:
        """Every recorded tick has been polled."""
        self._fill()
        return not self._queue

    async def start(self) -> None:
        """Check the recording holds every symbol; decode its first group; move the clock to its first tick."""
        if not self.clock.virtual:
            raise VenueStartupError("replay needs a virtual clock (it runs as fast as the CPU allows)")
        files = raw_event_files(self.store_root, self.start_date, self.end_date)
        where = f"{self.store_root / RAW_EVENTS} between {self.start_date or 'the first day'} and {self.end_date or 'the last day'}"
        present: set[str] = set()
        venues: set[str] = set()
        wanted = pa.array(list(self.symbols), pa.string())
        for path in files:  # two small columns per file: which symbols and venues are there
            t = pq.read_table(path, columns=["symbol", "venue"])
            t = t.filter(pc.is_in(t.column("symbol"), value_set=wanted))
            present.update(t.column("symbol").unique().to_pylist())
            venues.update(t.column("venue").unique().to_pylist())
        missing = [s for s in self.symbols if s not in present]
        if missing:
            raise VenueStartupError(
                f"no raw events recorded for {', '.join(missing)} in {where}; record them with --record-raw "
                "(on by default for live sources) or pick other --symbols / dates")
        self.recorded_venues = sorted(venues)
        self._chunks = raw_event_chunks(self.store_root, self.start_date, self.end_date)
        self._fill()
        if not self._queue:
            raise VenueStartupError(f"the raw events in {where} hold no complete tick")
        self._run, first = self._queue[0]
        self.runs_seen = 1
        log.info("Replaying %d file(s) in %d group(s) of %s (venue %s) from %s", len(files), len(self._chunks) + 1,
                 ",".join(self.symbols), ",".join(self.recorded_venues), where)
        await self.clock.sleep_until(self._run.start_ms if self._run.history else first.now_ms)

    def initial_candles(self, symbol: str) -> list[Candle]:
        """The bars back-filled at the start of the run being replayed, oldest first."""
        if self._run is None:
            raise RuntimeError("ReplaySource: call start() first")
        return list(self._run.history.get(symbol, []))

    async def poll(self) -> dict[str, MarketSnapshot]:
        """The next recorded tick's snapshots, at its recorded time; empty once exhausted."""
        if self.exhausted:
            self.collect, self.run_started = False, False
            return {}
        run, tick = self._queue.popleft()
        self.run_started = self.ticks_polled > 0 and run is not self._run
        if self.run_started:
            self.runs_seen += 1
        self._run = run
        self.ticks_polled += 1
        await self.clock.sleep_until(tick.now_ms)
        self.collect = tick.collect
        return dict(tick.snapshots)

    async def close(self) -> None:
        """Nothing to release."""
        return None
