"""Raw venue events: what a source delivered in one tick, as fixed-size spool rows and as store rows.

Sans I/O. The bot hands each tick's ``MarketSnapshot``s to ``encode_tick`` (and the
back-filled bars of a start to ``encode_history``); the rows go through the collector's
write-ahead spool like every other stream, and ``raw_table`` turns a flush of them into
the ``raw_events`` group's Arrow table (``backend.contracts.raw_events``: one row per
event, price/size lists). ``backend.venues.replay`` reads the table back.

Spool rows (``RAW_INTS`` int64 fields, ``RAW_FLOATS`` float64 fields): an event is one
*header* row (``kind`` >= 0, an index into ``RAW_KINDS``) followed by its *level* rows
(``kind`` < 0). All rows of one symbol's tick are appended as one block, so a crash
keeps a tick's events of a symbol whole or drops them whole; flushes run between
ticks, so no event is ever split between two files.

Header row: ``ts`` tick time; ``vts`` venue time (book time, bar open time); ``seq``
book update id; ``recv``/``cts`` book receive and matching-engine times (``NULL_INT``
when absent); ``aux`` clock offset (ms); ``x`` = ``collect | live << 1 | n_bids << 8``.
Level rows: ``LEVEL`` (``price``, ``size``; bids then asks, or a bar's
``(open, volume), (high, turnover), (low, NaN), (close, NaN)``), ``TRADE`` (``vts`` =
trade time, ``x`` = side, ``price``, ``size``), ``REASON`` (``x`` = 8 bytes of the
UTF-8 reason text), ``IDS`` (``vts`` = a Binance diff's ``U``, then its ``pu``).

A source with a local book (``MarketSnapshot.book_events`` not None: the WebSocket
sources) is recorded in the *delta form*: each book message applied since the last
tick is a ``book_snapshot`` / ``book_delta`` / ``book_checkpoint`` event (``x`` =
``n_bids << 8``, its levels), and the tick's book is a ``book_ref`` header without
levels (``x`` = flags | the most levels of a side << 8): the replay rebuilds it.
"""

from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import numpy as np
import pyarrow as pa

from backend.contracts.raw_events import RAW_EVENTS_SCHEMA, RAW_KINDS
from backend.venues.types import BookEvent, Candle, MarketSnapshot

__all__ = ["NULL_INT", "RAW_FLOATS", "RAW_INTS", "encode_history", "encode_tick", "raw_table", "venue_of"]

RAW_INTS: tuple[str, ...] = ("ts", "kind", "vts", "seq", "recv", "cts", "aux", "x")
RAW_FLOATS: tuple[str, ...] = ("price", "size")
NULL_INT = np.iinfo(np.int64).min  #: an absent optional int (update id, cts)

HISTORY, TRADES, CANDLE, BOOK, NO_BOOK = (RAW_KINDS.index(k) for k in ("history", "trades", "candle", "book", "no_book"))
BOOK_SNAPSHOT, BOOK_DELTA, BOOK_CHECKPOINT, BOOK_REF = (
    RAW_KINDS.index(k) for k in ("book_snapshot", "book_delta", "book_checkpoint", "book_ref"))
_EVENT_KIND = {"snapshot": BOOK_SNAPSHOT, "delta": BOOK_DELTA, "checkpoint": BOOK_CHECKPOINT}
_WITH_LEVELS = (BOOK, BOOK_SNAPSHOT, BOOK_DELTA, BOOK_CHECKPOINT, BOOK_REF)  # kinds whose n_bids is stored
LEVEL, TRADE, REASON, IDS = -1, -2, -3, -4
_NI = len(RAW_INTS)
_K, _VTS, _SEQ, _RECV, _CTS, _AUX, _X = range(1, 8)


def venue_of(source: str) -> str:
    """``bybit-ws`` -> ``bybit``: the venue a source name belongs to."""
    return source.split("-", 1)[0]


def _opt(v: int | None) -> int:
    return NULL_INT if v is None else int(v)


class _Rows:
    """Rows of one symbol's tick being encoded (ints (n, 8), floats (n, 2))."""

    def __init__(self, ts: int, n: int):
        self.ints = np.zeros((n, _NI), dtype=np.int64)
        self.ints[:, 0] = ts
        self.floats = np.full((n, 2), np.nan)
        self.i = 0

    def header(self, kind: int, vts: int = NULL_INT, seq: int = NULL_INT, recv: int = NULL_INT,
               cts: int = NULL_INT, aux: int = 0, x: int = 0) -> None:
        self.ints[self.i, 1:] = (kind, vts, seq, recv, cts, aux, x)
        self.i += 1

    def levels(self, kind: int, price: np.ndarray, size: np.ndarray, vts: np.ndarray | None = None,
               x: np.ndarray | None = None) -> None:
        n = len(price)
        sl = slice(self.i, self.i + n)
        self.ints[sl, _K] = kind
        self.ints[sl, _VTS] = NULL_INT if vts is None else vts
        self.ints[sl, _SEQ] = NULL_INT
        self.ints[sl, _RECV] = NULL_INT
        self.ints[sl, _CTS] = NULL_INT
        if x is not None:
            self.ints[sl, _X] = x
        self.floats[sl, 0] = price
        self.floats[sl, 1] = size
        self.i += n


def _reason_words(reason: str) -> np.ndarray:
    raw = reason.encode()
    raw += b"\0" * (-len(raw) % 8)
    return np.frombuffer(raw, dtype="<i8").astype(np.int64)


def _bar(rows: _Rows, kind: int, c: Candle) -> None:
    rows.header(kind, vts=int(c.start_ms))
    rows.levels(LEVEL, np.array([c.open, c.high, c.low, c.close]), np.array([c.volume, c.turnover, np.nan, np.nan]))


def encode_history(now_ms: int, candles: Sequence[Candle]) -> tuple[np.ndarray, np.ndarray]:
    """Spool rows of the back-filled bars handed over at a start (``history`` events)."""
    rows = _Rows(now_ms, 5 * len(candles))
    for c in candles:
        _bar(rows, HISTORY, c)
    return rows.ints, rows.floats


def _encode_events(events: Sequence[BookEvent], ints: np.ndarray, floats: np.ndarray) -> int:
    """Write the rows of book messages (delta form) at the start of ``ints``/``floats``; returns the rows written.

    Vectorised over the messages: a busy book sends hundreds between two ticks.
    """
    m = len(events)
    nb = np.fromiter((len(e.bids) for e in events), np.int64, m)
    na = np.fromiter((len(e.asks) for e in events), np.int64, m)
    ids = np.fromiter((e.first_id is not None for e in events), np.bool_, m)
    per = 1 + nb + na + 2 * ids
    head = np.concatenate(([0], np.cumsum(per)[:-1]))
    n = int(per.sum())
    out, f = ints[:n], floats[:n]
    out[:, _K] = LEVEL
    out[:, _VTS:_CTS + 1] = NULL_INT
    out[:, _AUX:] = 0
    f[:] = np.nan
    out[head, _K] = np.fromiter((_EVENT_KIND[e.kind] for e in events), np.int64, m)
    out[head, _VTS] = np.fromiter((e.ts_ms for e in events), np.int64, m)
    out[head, _SEQ] = np.fromiter((e.update_id for e in events), np.int64, m)
    out[head, _RECV] = np.fromiter((e.recv_ms for e in events), np.int64, m)
    out[head, _CTS] = np.fromiter((_opt(e.cts_ms) for e in events), np.int64, m)
    out[head, _X] = nb << 8
    lv = nb + na
    if lv.sum():
        levels = np.concatenate([a for e in events for a in (e.bids, e.asks)]).reshape(-1, 2)
        first = np.repeat(head + 1 - np.concatenate(([0], np.cumsum(lv)[:-1])), lv)
        f[first + np.arange(len(levels))] = levels
    if ids.any():
        at = (head + 1 + lv)[ids]
        out[at, _K] = out[at + 1, _K] = IDS
        out[at, _VTS] = np.fromiter((e.first_id for e in events if e.first_id is not None), np.int64, len(at))
        out[at + 1, _VTS] = np.fromiter((_opt(e.prev_id) for e in events if e.first_id is not None), np.int64, len(at))
        f[at] = f[at + 1] = 0.0
    return n


def _encode_snapshot(snap: MarketSnapshot, now_ms: int, collect: bool) -> tuple[np.ndarray, np.ndarray]:
    book, trades, events = snap.book, snap.trades, snap.book_events
    reason = None if book is not None else _reason_words(snap.reason or "")
    n = (1 + len(trades) if trades else 0) + 5 * len(snap.candles) + 1
    if events is not None:
        n += sum(1 + len(e.bids) + len(e.asks) + (2 if e.first_id is not None else 0) for e in events)
        n += len(reason) if book is None else 0
    else:
        n += (len(book.bid_prices) + len(book.ask_prices)) if book is not None else len(reason)
    rows = _Rows(now_ms, n)
    if trades:
        rows.header(TRADES)
        rows.levels(TRADE, np.fromiter((t.price for t in trades), np.float64, len(trades)),
                    np.fromiter((t.size for t in trades), np.float64, len(trades)),
                    vts=np.fromiter((t.ts_ms for t in trades), np.int64, len(trades)),
                    x=np.fromiter((t.side for t in trades), np.int64, len(trades)))
    for c in snap.candles:
        _bar(rows, CANDLE, c)
    flags = int(bool(collect)) | int(bool(snap.live)) << 1
    if events:
        rows.i += _encode_events(events, rows.ints[rows.i:], rows.floats[rows.i:])
    if book is not None and events is not None:  # the replay rebuilds the levels from the events
        rows.header(BOOK_REF, vts=int(book.ts_ms), seq=_opt(book.update_id), recv=int(book.recv_ms), cts=_opt(book.cts_ms),
                    aux=int(snap.clock_offset_ms), x=flags | max(len(book.bid_prices), len(book.ask_prices)) << 8)
    elif book is not None:
        nb = len(book.bid_prices)
        rows.header(BOOK, vts=int(book.ts_ms), seq=_opt(book.update_id), recv=int(book.recv_ms), cts=_opt(book.cts_ms),
                    aux=int(snap.clock_offset_ms), x=flags | nb << 8)
        rows.levels(LEVEL, np.concatenate([book.bid_prices, book.ask_prices]),
                    np.concatenate([book.bid_sizes, book.ask_sizes]))
    else:
        rows.header(NO_BOOK, aux=int(snap.clock_offset_ms), x=flags)
        rows.levels(REASON, np.zeros(len(reason)), np.zeros(len(reason)), x=reason)
    return rows.ints, rows.floats


def encode_tick(snapshots: Mapping[str, MarketSnapshot], now_ms: int, collect: bool,
                symbols: Iterable[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Spool rows of one tick, per symbol of ``symbols`` that has a snapshot: ``{symbol: (ints, floats)}``.

    ``now_ms`` is the local time the engine is given for the tick and ``collect`` whether
    the tick takes samples; both are stored so a replay steps the engine identically.
    """
    out = {}
    for sym in symbols:
        snap = snapshots.get(sym)
        if snap is not None:
            out[sym] = _encode_snapshot(snap, now_ms, collect)
    return out


def _ts(values: np.ndarray) -> pa.Array:
    mask = values == NULL_INT
    arr = pa.array(values, type=pa.int64(), mask=mask if mask.any() else None)
    return arr.cast(RAW_EVENTS_SCHEMA.field("timestamp").type)


def _list(offsets: np.ndarray, values: np.ndarray, type_: pa.DataType) -> pa.Array:
    return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), pa.array(values, type=type_))


def raw_table(parts: Iterable[tuple[str, str, Mapping[str, np.ndarray], Mapping[str, np.ndarray]]]) -> pa.Table:
    """Spool rows -> the ``raw_events`` table, one row per event in row order.

    ``parts``: ``(symbol, source, ints by name, floats by name)`` per symbol, each holding
    whole events (a header row first; level rows before a symbol's first header, which
    only a damaged spool block could leave, are dropped).
    """
    tables = []
    for symbol, source, ints, floats in parts:
        kind = ints["kind"]
        if not len(kind):
            continue
        if kind[0] < 0:  # never written so; a damaged spool block could leave orphans: drop them
            start = int(np.argmax(kind >= 0)) if (kind >= 0).any() else len(kind)
            ints = {k: v[start:] for k, v in ints.items()}
            floats = {k: v[start:] for k, v in floats.items()}
            kind = ints["kind"]
            if not len(kind):
                continue
        head = np.flatnonzero(kind >= 0)
        n_ev = len(head)
        lvl = kind < 0
        # each event's level rows are the rows between its header and the next one
        level_start = head - np.arange(n_ev)
        total = int(lvl.sum())
        offsets = np.append(level_start, total)
        price = floats["price"][lvl]
        size = floats["size"][lvl]
        lkind, lvts, lx = kind[lvl], ints["vts"][lvl], ints["x"][lvl]
        is_level = lkind == LEVEL
        is_trade = lkind == TRADE
        is_ids = lkind == IDS
        is_sized = is_level & ~np.isnan(size)

        def sub(mask: np.ndarray) -> np.ndarray:
            return np.append(0, np.cumsum(mask))[offsets]

        x = ints["x"][head]
        hkind = kind[head]
        reasons: list[str | None] = [None] * n_ev
        for e in np.flatnonzero(hkind == NO_BOOK):
            words = lx[offsets[e]:offsets[e + 1]]
            reasons[e] = words.astype("<i8").tobytes().rstrip(b"\0").decode()
        tables.append(pa.table({
            "timestamp": _ts(ints["ts"][head]),
            "symbol": pa.array([symbol] * n_ev, pa.string()),
            "venue": pa.array([venue_of(source)] * n_ev, pa.string()),
            "source": pa.array([source] * n_ev, pa.string()),
            "kind": pa.DictionaryArray.from_arrays(pa.array(hkind.astype(np.int32)),
                                                   pa.array(RAW_KINDS, pa.string())).cast(pa.string()),
            "venue_ts": _ts(ints["vts"][head]),
            "seq": pa.array(ints["seq"][head], pa.int64(), mask=ints["seq"][head] == NULL_INT),
            "recv_ts": _ts(ints["recv"][head]),
            "cts": _ts(ints["cts"][head]),
            "clock_offset_ms": pa.array(ints["aux"][head], pa.int64()),
            "collect": pa.array((x & 1).astype(bool)),
            "live": pa.array((x & 2).astype(bool)),
            "reason": pa.array(reasons, pa.string()),
            "n_bids": pa.array(np.where(np.isin(hkind, _WITH_LEVELS), x >> 8, 0).astype(np.int32)),
            "price": _list(sub(is_level | is_trade), price[is_level | is_trade], pa.float64()),
            "size": _list(sub(is_sized | is_trade), size[is_sized | is_trade], pa.float64()),
            "trade_ts": _list(sub(is_trade | is_ids), lvts[is_trade | is_ids], pa.int64()),
            "side": _list(sub(is_trade), lx[is_trade].astype(np.int8), pa.int8()),
        }, schema=RAW_EVENTS_SCHEMA))
    if not tables:
        return RAW_EVENTS_SCHEMA.empty_table()
    return pa.concat_tables(tables)
