"""The events a venue's sans-I/O WebSocket protocol reports to its driver, shared by every venue.

``venues/bybit/protocol.py`` and ``venues/binance/protocol.py`` both turn frames into these
(Bybit also reports ``Pong``, its application-level ping answer); ``venues/ws_driver.py``
counts and logs them the same way for both. ``StreamProtocol`` is how both protocols decode frames and
hand out events, books, trades and bars.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from backend.venues.local_book import ApplyResult, LocalBook
from backend.venues.orderbook import OrderBook
from backend.venues.types import Candle, Trade

__all__ = ["BookUpdate", "Fault", "Pong", "StreamProtocol", "ResyncNeeded"]


@dataclass(frozen=True, slots=True)
class BookUpdate:
    """One order-book message (diff or snapshot) was handled; ``result`` says how (``ApplyResult``);
    ``u`` is its (final) update id."""

    symbol: str
    result: ApplyResult
    u: int


@dataclass(frozen=True, slots=True)
class Pong:
    """The server answered an application-level ping (Bybit's ``{"op": "ping"}``)."""


@dataclass(frozen=True, slots=True)
class Fault:
    """Something the venue sent was wrong or unusable. ``reason`` is a short snake_case word for counting
    (``malformed``, ``sequence_gap``, ``stale_snapshot``, ``crossed_book``, ``subscribe_error``,
    ``unknown_topic``/``unknown_stream``, ``duplicate_trade``); ``detail`` is for a log line."""

    reason: str
    detail: str
    symbol: str | None = None


@dataclass(frozen=True, slots=True)
class ResyncNeeded:
    """A symbol's book (or its snapshot) was discarded; what re-fetches it is already queued (Bybit: the
    resubscribe requests in ``data_to_send``; Binance: a snapshot in ``snapshots_needed``). ``reason`` is
    the cause: ``gap``, ``crossed`` or ``stale_snapshot``."""

    symbol: str
    reason: str


class StreamProtocol:
    """What a venue's sans-I/O protocol does the same for every venue: decoding frames and handing its
    driver events, books, trades and bars. A mixin for a protocol with ``symbols``, ``books`` (symbol ->
    ``LocalBook``), ``_events`` (a list of the events above), ``_trades``/``_candles`` (symbol -> list),
    ``message_error`` (its parsers' exception), ``_decode(raw)`` and ``receive(msg, recv_ms)``."""

    message_error: type[Exception] = ValueError

    symbols: list[str]
    books: dict[str, LocalBook]
    _events: list
    _trades: dict[str, list[Trade]]
    _candles: dict[str, list[Candle]]

    def _decode(self, raw: str | bytes) -> Any:
        """One frame's JSON (raising ``message_error`` when it is not JSON)."""
        raise NotImplementedError

    def receive(self, msg: Any, recv_ms: int) -> None:
        """Feed one decoded message; never raises for bad payloads."""
        raise NotImplementedError

    def receive_text(self, raw: str | bytes, recv_ms: int) -> None:
        """Feed one frame as received; ``recv_ms`` is the local receive time (ms since the epoch). A frame that
        is not JSON is a ``Fault("malformed")``."""
        try:
            msg = self._decode(raw)
        except self.message_error as exc:
            self._events.append(Fault("malformed", str(exc)))
            return
        self.receive(msg, recv_ms)

    def events_received(self) -> list:
        """Events since the last call, oldest first; each is returned once."""
        out, self._events = self._events, []
        return out

    def book(self, symbol: str, depth: int | None = None) -> OrderBook | None:
        """The symbol's top ``depth`` levels, or None while it waits for a snapshot."""
        return self.books[symbol].book(depth)

    def synced(self, symbols: Sequence[str] | None = None) -> bool:
        """True when every (given) symbol has a book."""
        return all(self.books[s].ready for s in (symbols or self.symbols))

    def drain_trades(self, symbol: str) -> list[Trade]:
        """Trades received since the last call, each trade id once, in arrival order."""
        out, self._trades[symbol] = self._trades[symbol], []
        return out

    def drain_candles(self, symbol: str) -> list[Candle]:
        """Closed 1-minute bars received since the last call (may repeat a bar; the source hands each out once)."""
        out, self._candles[symbol] = self._candles[symbol], []
        return out
