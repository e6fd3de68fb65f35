"""Recorded ``raw_events`` rows -> the runs and ticks a replay hands to the engine (sans I/O).

A recording is a sequence of *runs* (one per start of the recording bot: the
``history`` bars it back-filled, then its ticks). A tick is the set of events sharing
one ``timestamp`` (the recording bot's local tick time); within it, each symbol's
events become the ``MarketSnapshot`` the source delivered then, bit for bit.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from backend.contracts.raw_events import RAW_KINDS, REPLAY_RANK
from backend.venues.local_book import LocalBook
from backend.venues.orderbook import OrderBook
from backend.venues.types import Candle, MarketSnapshot, Trade

log = logging.getLogger(__name__)

__all__ = ["ReplayRun", "ReplayTick", "RunDecoder", "decode_runs", "sort_events"]


@dataclass
class ReplayTick:
    """One recorded tick: local time, whether it took samples, each symbol's snapshot."""

    now_ms: int
    collect: bool
    snapshots: dict[str, MarketSnapshot] = field(default_factory=dict)


@dataclass
class ReplayRun:
    """One start of the recording bot: its back-filled bars per symbol and its ticks, oldest first."""

    start_ms: int
    history: dict[str, list[Candle]] = field(default_factory=dict)
    ticks: list[ReplayTick] = field(default_factory=list)


_RANKS = pa.array([REPLAY_RANK[k] for k in RAW_KINDS], pa.int8())
_BOOK_EVENTS = pa.array(["book_snapshot", "book_delta", "book_checkpoint"])


def sort_events(table: pa.Table) -> pa.Table:
    """Rows in replay order: tick time, symbol, kind (``REPLAY_RANK``), venue time; stable otherwise.

    Book messages (delta form) keep their recorded order: they are applied as received.
    """
    kind = table.column("kind")
    rank = pc.take(_RANKS, pc.index_in(kind, value_set=pa.array(RAW_KINDS)))
    vts = pc.if_else(pc.is_in(kind, value_set=_BOOK_EVENTS), pa.scalar(None, table.schema.field("venue_ts").type),
                     table.column("venue_ts"))
    keyed = pa.table({"timestamp": table.column("timestamp"), "symbol": table.column("symbol"), "_rank": rank,
                      "_vts": vts})
    order = pc.sort_indices(keyed, sort_keys=[("timestamp", "ascending"), ("symbol", "ascending"),
                                              ("_rank", "ascending"), ("_vts", "ascending")])
    return table.take(order)


def _ints(table: pa.Table, name: str, null: int = -1) -> np.ndarray:
    col = table.column(name)
    if pa.types.is_timestamp(col.type):
        col = col.cast(pa.int64())
    return col.fill_null(null).to_numpy()


def decode_runs(table: pa.Table) -> list[ReplayRun]:
    """Decode ``raw_events`` rows (any order; ``sort_events`` is applied) into runs of ticks.

    A ``history`` row at a tick time no earlier run used starts a new run. Rows before
    the first ``history`` row (a recording cut by a date range) form a run without
    back-filled bars. (``RunDecoder`` does the same a chunk at a time.)
    """
    runs: list[ReplayRun] = []
    for run, tick in RunDecoder().feed(table):
        if not runs or runs[-1] is not run:
            runs.append(run)
        run.ticks.append(tick)
    return runs


class RunDecoder:
    """Decodes a recording chunk by chunk (bounded memory), carrying the current run across chunks.

    Feed chunks in time order whose tick times do not overlap (a tick's events all in one
    chunk); ``feed`` returns the chunk's ticks, each with its run (the same ``ReplayRun``
    object for every tick of one run, its ``ticks`` left empty; a new object starts a new
    run). Runs are the same as ``decode_runs`` finds in the whole table.
    """

    def __init__(self) -> None:
        self.run: ReplayRun | None = None
        self._run_has_ticks = False
        self._tick: ReplayTick | None = None
        self._pending: dict[str, MarketSnapshot] = {}
        self._books: dict[str, LocalBook] = {}  # delta form: each symbol's book rebuilt from its events
        self.mismatches = 0  #: ``book_ref`` ticks whose book could not be rebuilt (a recording cut before its snapshot)

    def _book_event(self, kind: str, s: str, p: np.ndarray, z: np.ndarray, nb: int, seq: int, vts: int, recv: int,
                    cts: int | None) -> None:
        local = self._books.get(s)
        if local is None:
            local = self._books[s] = LocalBook(s)
        bids, asks = np.column_stack([p[:nb], z[:nb]]), np.column_stack([p[nb:], z[nb:]])
        if kind == "book_delta":
            local.apply_delta(bids, asks, seq, vts, recv, cts)  # NOT_READY before a snapshot: ignored, as live
        else:
            local.apply_snapshot(bids, asks, seq, vts, recv, cts)

    def _book_ref(self, s: str, depth: int, seq: int | None, vts: int) -> OrderBook | None:
        local = self._books.get(s)
        book = local.book(depth) if local is not None else None
        if book is None or book.update_id != seq:
            self.mismatches += 1
            if self.mismatches == 1:
                log.warning("%s: the recorded book (update id %s) cannot be rebuilt from the recorded book messages "
                            "(rebuilt: %s); such ticks replay without a book", s, seq,
                            None if book is None else book.update_id)
            return None
        return book if book.ts_ms == vts else dataclasses.replace(book, ts_ms=vts)

    def feed(self, table: pa.Table) -> list[tuple[ReplayRun, ReplayTick]]:
        """The ticks of one chunk of ``raw_events`` rows (any order within the chunk), oldest first."""
        out: list[tuple[ReplayRun, ReplayTick]] = []
        if table.num_rows == 0:
            return out
        t = sort_events(table)
        ts = _ints(t, "timestamp")
        sym = t.column("symbol").to_pylist()
        kind = t.column("kind").to_pylist()
        vts = _ints(t, "venue_ts")
        seq = t.column("seq").to_pylist()
        recv = _ints(t, "recv_ts")
        cts = t.column("cts").cast(pa.int64()).to_pylist()
        offset = t.column("clock_offset_ms").to_numpy()
        collect = t.column("collect").to_numpy(zero_copy_only=False)
        live = t.column("live").to_numpy(zero_copy_only=False)
        reason = t.column("reason").to_pylist()
        n_bids = t.column("n_bids").to_numpy()

        def lists(name: str, dtype) -> tuple[np.ndarray, np.ndarray]:
            col = t.column(name).combine_chunks()
            return col.offsets.to_numpy(), col.values.to_numpy(zero_copy_only=False).astype(dtype, copy=False)

        p_off, p_val = lists("price", np.float64)
        s_off, s_val = lists("size", np.float64)
        t_off, t_val = lists("trade_ts", np.int64)
        d_off, d_val = lists("side", np.int8)

        run, tick, pending = self.run, self._tick, self._pending
        for i in range(t.num_rows):
            k, s, now = kind[i], sym[i], int(ts[i])
            if k == "history":
                if run is None or (now != run.start_ms and self._run_has_ticks):
                    run = ReplayRun(now)
                    self._run_has_ticks = False
                    self._books = {}  # a restarted bot's books start from the venue's snapshots
                    tick = None
                p = p_val[p_off[i]:p_off[i + 1]]
                z = s_val[s_off[i]:s_off[i + 1]]
                run.history.setdefault(s, []).append(
                    Candle(int(vts[i]), float(p[0]), float(p[1]), float(p[2]), float(p[3]), float(z[0]), float(z[1])))
                continue
            if run is None:
                run = ReplayRun(now)
                self._run_has_ticks = False
            if tick is None or tick.now_ms != now:
                tick = ReplayTick(now, False)
                self._run_has_ticks = True
                out.append((run, tick))
                pending.clear()  # a symbol's tick cut short (a crash inside it) is not carried into this one
            snap = pending.get(s)
            if snap is None:
                snap = pending[s] = MarketSnapshot(s, None)
            if k == "trades":
                lo, hi = t_off[i], t_off[i + 1]
                p, z = p_val[p_off[i]:p_off[i + 1]], s_val[s_off[i]:s_off[i + 1]]
                snap.trades = [Trade(int(a), float(b), float(c), int(d))
                               for a, b, c, d in zip(t_val[lo:hi], p, z, d_val[d_off[i]:d_off[i + 1]])]
            elif k in ("book_snapshot", "book_delta", "book_checkpoint"):
                nb = int(n_bids[i])
                self._book_event(k, s, p_val[p_off[i]:p_off[i + 1]], s_val[s_off[i]:s_off[i + 1]], nb, seq[i],
                                 int(vts[i]), int(recv[i]), cts[i])
            elif k == "candle":
                p = p_val[p_off[i]:p_off[i + 1]]
                z = s_val[s_off[i]:s_off[i + 1]]
                snap.candles.append(
                    Candle(int(vts[i]), float(p[0]), float(p[1]), float(p[2]), float(p[3]), float(z[0]), float(z[1])))
            else:  # book / no_book: the symbol's tick is complete
                snap.clock_offset_ms = int(offset[i])
                snap.live = bool(live[i])
                tick.collect = tick.collect or bool(collect[i])
                if k == "book_ref":
                    snap.book = self._book_ref(s, int(n_bids[i]), seq[i], int(vts[i]))
                    if snap.book is None:
                        snap.reason = "replay_book_missing"
                elif k == "book":
                    nb = int(n_bids[i])
                    p = p_val[p_off[i]:p_off[i + 1]]
                    z = s_val[s_off[i]:s_off[i + 1]]
                    snap.book = OrderBook(s, p[:nb].copy(), z[:nb].copy(), p[nb:].copy(), z[nb:].copy(), int(vts[i]),
                                          int(recv[i]), cts[i], seq[i])
                else:
                    snap.reason = reason[i]
                tick.snapshots[s] = pending.pop(s)
        self.run, self._tick = run, tick
        return out
