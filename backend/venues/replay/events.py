"""Recorded ``raw_events`` rows -> the runs and ticks a replay hands to the engine (sans I/O).

A recording is a sequence of *runs* (one per start of the recording bot: the
``history`` bars it back-filled, then its ticks). A tick is the set of events sharing
one ``timestamp`` (the recording bot's local tick time); within it, each symbol's
events become the ``MarketSnapshot`` the source delivered then, bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from backend.contracts.raw_events import RAW_KINDS
from backend.venues.orderbook import OrderBook
from backend.venues.types import Candle, MarketSnapshot, Trade

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


def sort_events(table: pa.Table) -> pa.Table:
    """Rows in replay order: tick time, symbol, kind (``RAW_KINDS`` order), venue time; stable otherwise."""
    rank = pc.index_in(table.column("kind"), value_set=pa.array(RAW_KINDS))
    keyed = table.append_column("_rank", rank)
    order = pc.sort_indices(keyed, sort_keys=[("timestamp", "ascending"), ("symbol", "ascending"),
                                              ("_rank", "ascending"), ("venue_ts", "ascending")])
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
            snap = pending.get(s)
            if snap is None:
                snap = pending[s] = MarketSnapshot(s, None)
            if k == "trades":
                lo, hi = t_off[i], t_off[i + 1]
                p, z = p_val[p_off[i]:p_off[i + 1]], s_val[s_off[i]:s_off[i + 1]]
                snap.trades = [Trade(int(a), float(b), float(c), int(d))
                               for a, b, c, d in zip(t_val[lo:hi], p, z, d_val[d_off[i]:d_off[i + 1]])]
            elif k == "candle":
                p = p_val[p_off[i]:p_off[i + 1]]
                z = s_val[s_off[i]:s_off[i + 1]]
                snap.candles.append(
                    Candle(int(vts[i]), float(p[0]), float(p[1]), float(p[2]), float(p[3]), float(z[0]), float(z[1])))
            else:  # book / no_book: the symbol's tick is complete
                snap.clock_offset_ms = int(offset[i])
                snap.live = bool(live[i])
                tick.collect = tick.collect or bool(collect[i])
                if k == "book":
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
