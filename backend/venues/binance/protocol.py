"""Binance USD-M futures market streams, sans I/O: diff events and REST snapshots in; books, events and requests out.

Like ``venues/bybit/protocol.py`` this object never touches a socket, an event loop or a
clock. Its driver (``venues/binance/ws.py``) opens the combined stream whose names
``streams`` lists, tells it about the connection (``connection_opened``,
``connection_closed``), feeds it every frame with the local receive time
(``receive_text`` / ``receive``), fetches the REST depth snapshots it asks for
(``snapshots_needed()``) and hands them back (``receive_snapshot``, or
``snapshot_failed``), and reads out:

* ``events_received()``: ``BookUpdate``, ``Fault``, ``ResyncNeeded``, in order;
* ``book(symbol)``, ``drain_trades(symbol)``, ``drain_candles(symbol)``.

The local order book follows Binance's documented procedure (USD-M futures docs,
"Websocket Market Streams > How to manage a local order book correctly"):

1. the ``<symbol>@depth@100ms`` stream is opened first and its events are buffered;
2. then a depth snapshot is fetched (``GET /fapi/v1/depth``);
3. buffered events whose final id ``u`` is below the snapshot's ``lastUpdateId`` are dropped;
4. the first event applied must bridge the snapshot: ``U <= lastUpdateId <= u``. An event
   that starts right after it (its ``pu`` equals ``lastUpdateId``) bridges it too. When the
   first buffered event that is not dropped does neither, the snapshot is older than the
   stream can bridge (*stale*): it is discarded and a fresh one is asked for
   (``Fault("stale_snapshot")``, ``ResyncNeeded(reason="stale_snapshot")``);
5. from then on every event's ``pu`` must equal the previous event's ``u``; otherwise
   events were lost: the book is discarded, events are buffered again and a new snapshot
   is asked for (``Fault("sequence_gap")``, ``ResyncNeeded(reason="gap")``) without
   reconnecting. An event entirely at or below the book's id is a duplicate (ignored);
6. quantities are absolute, 0 removes the level, and removing a level the book does not
   hold is normal (``LocalBook`` applies these rules; a book that crosses after an
   update is discarded and resynced the same way, reason ``crossed``).

A book with no diff at all after its snapshot (a quiet market: Binance pushes only
changes) is current from the snapshot on. Trades come from ``<symbol>@aggTrade``
(de-duplicated by aggregate id ``a``, which grows per symbol), closed 1-minute bars
from ``<symbol>@kline_1m`` (``k.x`` true). Stream names are lower case, as Binance
requires. Malformed frames never raise: they become ``Fault("malformed")``.

Book times: a book's ``ts_ms`` is the event time ``E`` of the last message applied
(the snapshot's or the diff's) and ``cts_ms`` its transaction time ``T``, both ms.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Sequence, Union

from backend.symbols import validate_symbol
from backend.venues.binance.messages import (
    BinanceMessageError,
    DepthDiff,
    DepthSnapshot,
    decode_json,
    parse_agg_trade,
    parse_depth_diff,
    parse_kline_push,
    split_combined,
)
from backend.venues.local_book import ApplyResult, LocalBook
from backend.venues.types import Candle, Trade
from backend.venues.ws_events import BookUpdate, Fault, ResyncNeeded, StreamProtocol

__all__ = ["BinanceProtocol", "BookUpdate", "Event", "Fault", "MAX_BUFFERED_DIFFS", "ResyncNeeded"]

MAX_BUFFERED_DIFFS = 2_000
"""Diff events kept per symbol while its snapshot loads (at 10 per second: over 3 minutes); older ones are
dropped, which at worst makes the snapshot stale and fetched again."""

Event = Union[BookUpdate, Fault, ResyncNeeded]


class BinanceProtocol(StreamProtocol):
    """The state of one Binance USD-M combined-stream connection for a fixed list of symbols.

    ``depth`` levels per side are handed out by ``book``; the local book keeps every
    level the snapshot and the diffs give. Raises ``InvalidSymbolError`` for a symbol
    that fails validation.
    """

    def __init__(self, symbols: Sequence[str], *, depth: int = 50, trades: bool = True, klines: bool = True,
                 max_buffered: int = MAX_BUFFERED_DIFFS):
        self.symbols = [validate_symbol(s) for s in symbols]
        self.depth = depth
        self.books = {s: LocalBook(s, depth) for s in self.symbols}
        self.max_buffered = max_buffered
        self.streams: list[str] = []
        self._by_stream: dict[str, tuple[str, str]] = {}
        for s in self.symbols:
            low = s.lower()
            kinds = [("depth", f"{low}@depth@100ms")]
            if trades:
                kinds.append(("aggTrade", f"{low}@aggTrade"))
            if klines:
                kinds.append(("kline", f"{low}@kline_1m"))
            for kind, name in kinds:
                self.streams.append(name)
                self._by_stream[name] = (kind, s)
        self.is_open = False
        self._buffer: dict[str, deque[DepthDiff]] = {s: deque() for s in self.symbols}
        self._bridged: dict[str, bool] = {s: False for s in self.symbols}
        self._requested: set[str] = set()
        self._need: list[str] = []
        self._events: list[Event] = []
        self._trades: dict[str, list[Trade]] = {s: [] for s in self.symbols}
        self._last_agg: dict[str, int] = {}
        self._candles: dict[str, list[Candle]] = {s: [] for s in self.symbols}

    # --- connection events ----------------------------------------------------------------
    def connection_opened(self) -> None:
        """The stream is up (its events now arrive and are buffered): every book starts over; a snapshot
        per symbol is queued in ``snapshots_needed``."""
        self.is_open = True
        self._reset_all()
        for s in self.symbols:
            self._ask_snapshot(s)

    def connection_closed(self) -> None:
        """The stream is gone: no book is current, buffers and snapshot requests are dropped."""
        self.is_open = False
        self._reset_all()

    # --- snapshots ----------------------------------------------------------------------------
    def snapshots_needed(self) -> list[str]:
        """Symbols whose REST depth snapshot must be fetched now, oldest request first; each is returned once
        and counts as in flight until ``receive_snapshot`` or ``snapshot_failed``."""
        out, self._need = self._need, []
        return out

    def snapshot_failed(self, symbol: str) -> None:
        """The snapshot fetch for ``symbol`` failed: it is asked for again (the driver decides when to fetch)."""
        self._requested.discard(symbol)
        if self.is_open and not self.books[symbol].ready:
            self._ask_snapshot(symbol)

    def waiting(self, symbol: str) -> bool:
        """True while ``symbol`` has no book (its snapshot is pending or being bridged)."""
        return not self.books[symbol].ready

    def receive_snapshot(self, snap: DepthSnapshot, recv_ms: int) -> None:
        """Apply a REST depth snapshot with the buffered diffs (rules 3-5 of the module docstring).

        A snapshot for a symbol that already has a book, or that arrives while the stream
        is closed, is not used (``BookUpdate`` with ``STALE``).
        """
        sym = snap.symbol
        if sym not in self.books:
            self._events.append(Fault("malformed", f"depth snapshot for unknown symbol {sym!r}"))
            return
        self._requested.discard(sym)
        local = self.books[sym]
        if not self.is_open or local.ready:
            self._events.append(BookUpdate(sym, ApplyResult.STALE, snap.last_update_id))
            return
        last = snap.last_update_id
        buf = self._buffer[sym]
        while buf and buf[0].final_id < last:
            buf.popleft()  # rule 3: already in the snapshot
        if buf and not _bridges(buf[0], last):
            first = buf[0]
            self._events.append(BookUpdate(sym, ApplyResult.STALE, last))
            self._events.append(Fault("stale_snapshot", f"{sym} snapshot lastUpdateId={last} is older than the first "
                                      f"buffered diff (U={first.first_id}, pu={first.prev_final_id}): fetching "
                                      "a newer one", sym))
            self._events.append(ResyncNeeded(sym, "stale_snapshot"))
            self._ask_snapshot(sym)
            return
        result = local.apply_snapshot(snap.bids, snap.asks, last, snap.event_ms, recv_ms, snap.transact_ms)
        self._events.append(BookUpdate(sym, result, last))
        if result.needs_resync:
            self._resync(sym, result, last)
            return
        self._bridged[sym] = False
        pending = list(buf)
        buf.clear()
        for i, d in enumerate(pending):
            if not self._on_diff(sym, d, recv_ms):
                # a gap inside the buffer: keep what follows for the next snapshot
                buf.extend(pending[i + 1:])
                return

    # --- input ------------------------------------------------------------------------------
    message_error = BinanceMessageError

    def _decode(self, raw: str | bytes) -> Any:
        """One frame's JSON; ``BinanceMessageError`` when it is not JSON (for ``StreamProtocol.receive_text``)."""
        return decode_json(raw, "websocket frame")

    def receive(self, msg: Any, recv_ms: int) -> None:
        """Feed one decoded message as Binance sends it on a combined stream; never raises for bad payloads."""
        try:
            if not isinstance(msg, dict):
                raise BinanceMessageError(f"websocket frame: expected an object, got {type(msg).__name__}")
            if "stream" not in msg:
                self._on_control(msg)
                return
            stream, data = split_combined(msg)
            kind_sym = self._by_stream.get(stream)
            if kind_sym is None:
                self._events.append(Fault("unknown_stream", f"stream {stream!r} was not subscribed"))
                return
            kind, sym = kind_sym
            if kind == "depth":
                d = parse_depth_diff(data)
                if d.symbol != sym:
                    raise BinanceMessageError(f"stream {stream}: event for symbol {d.symbol!r}")
                self._receive_diff(sym, d, recv_ms)
            elif kind == "aggTrade":
                t = parse_agg_trade(data)
                if t.symbol != sym:
                    raise BinanceMessageError(f"stream {stream}: event for symbol {t.symbol!r}")
                last = self._last_agg.get(sym)
                if last is not None and t.agg_id <= last:
                    self._events.append(Fault("duplicate_trade", f"{sym}: aggregate trade {t.agg_id} received "
                                              "again", sym))
                    return
                self._last_agg[sym] = t.agg_id
                self._trades[sym].append(t.trade)
            else:
                ksym, candle, closed = parse_kline_push(data)
                if ksym != sym:
                    raise BinanceMessageError(f"stream {stream}: event for symbol {ksym!r}")
                if closed:
                    self._candles[sym].append(candle)
        except BinanceMessageError as exc:
            self._events.append(Fault("malformed", str(exc)))

    # --- output: events, books, trades and bars are StreamProtocol's (venues/ws_events.py) ----------

    # --- internals -----------------------------------------------------------------------------
    def _reset_all(self) -> None:
        for s in self.symbols:
            self.books[s].reset()
            self._buffer[s].clear()
            self._bridged[s] = False
        self._requested.clear()
        self._need.clear()

    def _ask_snapshot(self, sym: str) -> None:
        if sym not in self._requested:
            self._requested.add(sym)
            self._need.append(sym)

    def _on_control(self, msg: dict) -> None:
        # replies to SUBSCRIBE/UNSUBSCRIBE: {"result": null, "id": n}; errors: {"error": {"code", "msg"}, "id": n}
        if "error" in msg:
            self._events.append(Fault("subscribe_error", f"request {msg.get('id')!r} failed: {msg.get('error')!r}"))
        elif "result" not in msg:
            self._events.append(Fault("malformed", f"websocket frame without 'stream': {str(msg)[:120]}"))

    def _receive_diff(self, sym: str, d: DepthDiff, recv_ms: int) -> None:
        if not self.books[sym].ready:
            buf = self._buffer[sym]
            buf.append(d)  # rule 1: buffered while the snapshot loads
            if len(buf) > self.max_buffered:
                buf.popleft()
            self._events.append(BookUpdate(sym, ApplyResult.NOT_READY, d.final_id))
            return
        self._on_diff(sym, d, recv_ms)

    def _on_diff(self, sym: str, d: DepthDiff, recv_ms: int) -> bool:
        """Apply one diff to a synced book; False when it forced a resync."""
        local = self.books[sym]
        last = local.update_id
        if d.final_id <= last and not (not self._bridged[sym] and d.final_id == last):
            result = ApplyResult.STALE  # already in the book
        elif not self._bridged[sym] and not _bridges(d, last):
            result = ApplyResult.GAP
        elif self._bridged[sym] and d.prev_final_id != last:
            result = ApplyResult.GAP
        else:
            result = local.apply_delta(d.bids, d.asks, d.final_id, d.event_ms, recv_ms, d.transact_ms,
                                        d.first_id, d.prev_final_id)
            self._bridged[sym] = True
        self._events.append(BookUpdate(sym, result, d.final_id))
        if result.needs_resync:
            if result is ApplyResult.GAP:
                local.reset()
                self._buffer[sym].append(d)  # it may bridge the next snapshot
            self._resync(sym, result, d.final_id)
            return False
        return True

    def _resync(self, sym: str, result: ApplyResult, u: int) -> None:
        reason = "sequence_gap" if result is ApplyResult.GAP else "crossed_book"
        self._events.append(Fault(reason, f"{sym} order book {result.value} at u={u}", sym))
        self._events.append(ResyncNeeded(sym, result.value))
        self._bridged[sym] = False
        self._ask_snapshot(sym)


def _bridges(d: DepthDiff, last_update_id: int) -> bool:
    """Whether ``d`` may be the first event applied on a book at ``last_update_id`` (rule 4)."""
    return d.first_id <= last_update_id <= d.final_id or d.prev_final_id == last_update_id
