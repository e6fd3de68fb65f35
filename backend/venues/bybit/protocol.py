"""Bybit v5 public WebSocket protocol, sans I/O: messages in, book state, events and requests out.

In the manner of the ``websockets`` library's protocol core, this object never touches
a socket, an event loop or a clock. Its driver (``venues/bybit/ws.py``) tells it about
the connection (``connection_opened``, ``connection_closed``), feeds it every frame
(``receive_text``) or already-decoded message (``receive``) with the local receive time,
asks it for a ping when its timer fires (``send_ping``), and then reads out:

* ``data_to_send()``: the JSON texts to send, in order (subscribe, unsubscribe, ping);
* ``events_received()``: what happened, in order (``BookUpdate``, ``Pong``, ``Fault``,
  ``ResyncNeeded``), for counting and logging;
* the data itself: ``book(symbol)`` (the local book's top levels),
  ``drain_trades(symbol)``, ``drain_candles(symbol)``.

Protocol rules it applies (Bybit v5 docs, "WebSocket Stream > Public > Orderbook",
"Connect > How to subscribe", "Connect > Heartbeat"):

* per symbol it subscribes ``orderbook.<depth>.<SYM>``, ``publicTrade.<SYM>`` and
  ``kline.1.<SYM>``, at most 10 topics per subscribe request;
* a ``snapshot`` replaces the book, and so does any message with ``u == 1``: Bybit
  restarted its order-book service and the sequence starts again;
* ``u`` grows by exactly one per message for a topic: a delta with ``u`` at or below
  the book's is a duplicate (ignored); a jump means messages were lost, so the book is
  discarded and the book topic is resubscribed (unsubscribe + subscribe) for a fresh
  snapshot; a delta that crosses the book is handled the same way. ``seq`` is a cross
  sequence that is *not* contiguous and is deliberately unused;
* the application heartbeat is ``{"op": "ping"}``; the server answers with
  ``"op": "pong"`` (or ``"ret_msg": "pong"`` on some endpoints);
* trades are de-duplicated by trade id ``i``; only closed bars (``confirm: true``) are kept.

Malformed frames never raise: they become a ``Fault("malformed")`` event.
"""

from __future__ import annotations

import json
from collections import deque
from typing import Any, Sequence, Union

from backend.symbols import validate_symbol
from backend.venues.bybit.messages import (
    BookMessage,
    BybitMessageError,
    decode_json,
    parse_ws_book,
    parse_ws_klines,
    parse_ws_trades,
    topic_kind,
)
from backend.venues.local_book import ApplyResult, LocalBook
from backend.venues.types import Candle, Trade
from backend.venues.ws_events import BookUpdate, Fault, Pong, ResyncNeeded, StreamProtocol

__all__ = ["BookUpdate", "BybitProtocol", "Event", "Fault", "MAX_ARGS_PER_SUBSCRIBE", "Pong", "ResyncNeeded"]

MAX_ARGS_PER_SUBSCRIBE = 10  # Bybit's limit of topics per subscribe request
_SEEN_TRADE_IDS = 20_000  # per symbol: far more than one reconnect can replay

Event = Union[BookUpdate, Pong, Fault, ResyncNeeded]


class BybitProtocol(StreamProtocol):
    """The state of one Bybit public WebSocket session for a fixed list of symbols.

    ``books`` maps each symbol to its ``LocalBook`` (depth ``depth`` levels per side
    handed out). Raises ``InvalidSymbolError`` for a symbol that fails validation.
    """

    def __init__(self, symbols: Sequence[str], *, depth: int = 50, trades: bool = True, klines: bool = True):
        self.symbols = [validate_symbol(s) for s in symbols]
        self.depth = depth
        self.books = {s: LocalBook(s, depth) for s in self.symbols}
        self.topics: list[str] = []
        for s in self.symbols:
            self.topics.append(self.book_topic(s))
            if trades:
                self.topics.append(f"publicTrade.{s}")
            if klines:
                self.topics.append(f"kline.1.{s}")
        self.is_open = False
        self._out: list[str] = []
        self._events: list[Event] = []
        self._trades: dict[str, list[Trade]] = {s: [] for s in self.symbols}
        self._seen_ids: dict[str, tuple[deque, set]] = {s: (deque(), set()) for s in self.symbols}
        self._candles: dict[str, list[Candle]] = {s: [] for s in self.symbols}
        self._req = 0

    def book_topic(self, symbol: str) -> str:
        """``orderbook.<depth>.<SYMBOL>``."""
        return f"orderbook.{self.depth}.{symbol}"

    # --- connection events ----------------------------------------------------------------
    def connection_opened(self) -> None:
        """A new connection is up: every book starts over from a snapshot; subscribe requests are queued."""
        self.is_open = True
        self._reset_books()
        for i in range(0, len(self.topics), MAX_ARGS_PER_SUBSCRIBE):
            self._request("subscribe", self.topics[i: i + MAX_ARGS_PER_SUBSCRIBE])

    def connection_closed(self) -> None:
        """The connection is gone: no book is current until the next connection's snapshots; unsent requests are dropped."""
        self.is_open = False
        self._reset_books()
        self._out.clear()

    def send_ping(self) -> None:
        """Queue the application heartbeat ``{"op": "ping"}``."""
        self._request("ping")

    # --- input ------------------------------------------------------------------------------
    message_error = BybitMessageError

    def _decode(self, raw: str | bytes) -> Any:
        """One frame's JSON; ``BybitMessageError`` when it is not JSON (for ``StreamProtocol.receive_text``)."""
        return decode_json(raw, "websocket frame")

    def receive(self, msg: Any, recv_ms: int) -> None:
        """Feed one decoded message (a dict as Bybit sends it); never raises for bad payloads."""
        try:
            if not isinstance(msg, dict):
                raise BybitMessageError(f"websocket frame: expected an object, got {type(msg).__name__}")
            kind = topic_kind(msg)
            if kind is None:
                self._on_control(msg)
                return
            channel, symbol = kind
            if symbol not in self.books:
                self._events.append(Fault("unknown_topic", f"topic {msg.get('topic')!r} was not subscribed"))
                return
            if channel == "orderbook":
                self._on_book(symbol, parse_ws_book(msg), recv_ms)
            elif channel == "publicTrade":
                self._on_trades(symbol, msg)
            elif channel == "kline":
                self._candles[symbol].extend(parse_ws_klines(msg))
            else:
                self._events.append(Fault("unknown_topic", f"topic {msg.get('topic')!r} was not subscribed"))
        except BybitMessageError as exc:
            self._events.append(Fault("malformed", str(exc)))

    # --- output (events, books, trades and bars: StreamProtocol, venues/ws_events.py) ------------
    def data_to_send(self) -> list[str]:
        """The JSON texts to send now, oldest first; each is returned once."""
        out, self._out = self._out, []
        return out

    # --- internals -----------------------------------------------------------------------------
    def _request(self, op: str, args: list[str] | None = None) -> None:
        self._req += 1
        msg: dict = {"op": op, "req_id": str(self._req)}
        if args is not None:
            msg["args"] = args
        self._out.append(json.dumps(msg))

    def _reset_books(self) -> None:
        for b in self.books.values():
            b.reset()

    def _on_control(self, msg: dict) -> None:
        op = msg.get("op")
        if op in ("ping", "pong") or msg.get("ret_msg") == "pong":
            self._events.append(Pong())
        elif op in ("subscribe", "unsubscribe") and not msg.get("success", False):
            self._events.append(Fault("subscribe_error", f"{op} failed: {msg.get('ret_msg')}"))

    def _on_book(self, symbol: str, m: BookMessage, recv_ms: int) -> None:
        local = self.books[symbol]
        if m.symbol != symbol:
            result = ApplyResult.WRONG_SYMBOL
        elif m.kind == "snapshot" or m.u == 1:
            result = local.apply_snapshot(m.bids, m.asks, m.u, m.ts_ms, recv_ms, m.cts_ms)
        elif not local.ready:
            result = ApplyResult.NOT_READY
        elif m.u <= local.update_id:
            result = ApplyResult.STALE
        elif m.u != local.update_id + 1:
            local.reset()
            result = ApplyResult.GAP
        else:
            result = local.apply_delta(m.bids, m.asks, m.u, m.ts_ms, recv_ms, m.cts_ms)
        self._events.append(BookUpdate(symbol, result, m.u))
        if result is ApplyResult.WRONG_SYMBOL:
            self._events.append(Fault("malformed", f"{self.book_topic(symbol)}: data for symbol {m.symbol!r}", symbol))
        elif result.needs_resync:
            reason = "sequence_gap" if result is ApplyResult.GAP else "crossed_book"
            self._events.append(Fault(reason, f"{symbol} order book {result.value} at u={m.u}", symbol))
            self._events.append(ResyncNeeded(symbol, result.value))
            topic = self.book_topic(symbol)
            self._request("unsubscribe", [topic])
            self._request("subscribe", [topic])

    def _on_trades(self, symbol: str, msg: dict) -> None:
        order, seen = self._seen_ids[symbol]
        dups = 0
        for exec_id, trade in parse_ws_trades(msg):
            if exec_id in seen:
                dups += 1
                continue
            seen.add(exec_id)
            order.append(exec_id)
            if len(order) > _SEEN_TRADE_IDS:
                seen.discard(order.popleft())
            self._trades[symbol].append(trade)
        if dups:
            self._events.append(Fault("duplicate_trade", f"{symbol}: {dups} trade(s) received twice", symbol))
