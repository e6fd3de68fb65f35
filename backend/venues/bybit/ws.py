"""The async driver of the Bybit v5 public WebSocket: it only moves bytes.

Everything the messages mean (local books, sequence checks, resyncs, trades, bars)
is ``BybitProtocol``'s (``venues/bybit/protocol.py``). This driver:

* connects (``websockets``), tells the protocol, and sends what it asks to send;
* feeds every received frame to the protocol with the local receive time, then sends
  its answers and counts its events in the shared ``Metrics``: book updates and pongs
  in ``lobbot_ws_messages_total{venue,kind}``, faults in
  ``lobbot_venue_faults_total{venue,reason}``, resyncs in ``lobbot_ws_resyncs_total``;
* sends an application ping every ``ping_interval_s`` (Bybit drops connections that
  stay silent; its docs recommend a ping every 20 s), and closes a link with no traffic
  for ``dead_after_s`` (reason ``dead_link``);
* on any disconnect, counts the reason and ``lobbot_ws_reconnects_total`` and
  reconnects with exponential backoff and full jitter; the backoff restarts once a
  snapshot has arrived on the new connection.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Callable, Sequence

import websockets
from websockets.asyncio.client import connect

from backend.metrics import Metrics
from backend.venues.bybit.protocol import BookUpdate, BybitProtocol, Fault, Pong, ResyncNeeded
from backend.venues.bybit.rest import backoff_delay
from backend.venues.local_book import ApplyResult, LocalBook
from backend.venues.source import Clock
from backend.venues.types import Candle, Trade

__all__ = ["BookHook", "BybitWsClient"]

log = logging.getLogger(__name__)

BookHook = Callable[[str, ApplyResult, LocalBook], None]
_LOGGED_FAULTS = frozenset({"malformed", "subscribe_error", "sequence_gap", "crossed_book"})


class BybitWsClient:
    """One WebSocket connection (re-established as needed) for a fixed list of symbols.

    ``on_book(symbol, result, local_book)``, when given, is called after every book
    message is applied, before the next frame is read (tests use it to check every
    intermediate state). ``metrics`` is the bot's registry (a new one when None);
    counts carry the label ``venue``.
    """

    def __init__(
        self,
        url: str,
        symbols: Sequence[str],
        *,
        depth: int = 50,
        ping_interval_s: float = 20.0,
        dead_after_s: float | None = None,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 30.0,
        open_timeout_s: float = 10.0,
        trades: bool = True,
        klines: bool = True,
        clock: Clock | None = None,
        seed: int | None = None,
        on_book: BookHook | None = None,
        metrics: Metrics | None = None,
        venue: str = "bybit",
    ):
        self.url = url
        self.protocol = BybitProtocol(symbols, depth=depth, trades=trades, klines=klines)
        self.symbols = self.protocol.symbols
        self.ping_interval_s = ping_interval_s
        self.dead_after_s = dead_after_s if dead_after_s is not None else 2.5 * ping_interval_s
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.open_timeout_s = open_timeout_s
        self.clock = clock or Clock()
        self.on_book = on_book
        self.metrics = metrics if metrics is not None else Metrics()
        self.venue = venue
        self.last_error: str | None = None
        self.connected = asyncio.Event()
        self._rng = random.Random(seed)
        self._ws = None
        self._task: asyncio.Task | None = None
        self._closing = False
        self._last_rx = time.monotonic()
        self._dead_link = False

    @property
    def books(self) -> dict[str, LocalBook]:
        """symbol -> its ``LocalBook`` (owned by the protocol)."""
        return self.protocol.books

    # --- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        """Start the connection task (returns at once; see ``wait_synced``)."""
        if self._task is None:
            self._closing = False
            self._task = asyncio.create_task(self._run(), name="bybit-ws")

    async def close(self) -> None:
        """Close the connection and stop reconnecting; safe to call twice."""
        self._closing = True
        ws = self._ws
        if ws is not None:
            try:
                await asyncio.wait_for(ws.close(), 2.0)
            except (asyncio.TimeoutError, websockets.exceptions.WebSocketException, OSError):
                pass
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def wait_synced(self, timeout_s: float, symbols: Sequence[str] | None = None) -> bool:
        """Wait until every (given) symbol has a book; False on timeout (seconds)."""
        deadline = time.monotonic() + timeout_s
        while not self.protocol.synced(symbols):
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.01)
        return True

    def drain_trades(self, symbol: str) -> list[Trade]:
        """Trades received since the last call."""
        return self.protocol.drain_trades(symbol)

    def drain_candles(self, symbol: str) -> list[Candle]:
        """Closed bars received since the last call."""
        return self.protocol.drain_candles(symbol)

    def status(self, symbol: str) -> tuple[str, str]:
        """Why a symbol has no book right now: (reason word, sentence)."""
        if self._ws is None:
            return "ws_disconnected", f"websocket disconnected ({self.last_error or 'connecting'}); reconnecting"
        return "resync_pending", "waiting for an order-book snapshot (resync in progress)"

    # --- connection loop ------------------------------------------------------------------------
    async def _run(self) -> None:
        attempt = 0
        while not self._closing:
            pinger = None
            reason = "closed_by_server"
            try:
                async with connect(self.url, ping_interval=None, open_timeout=self.open_timeout_s,
                                   close_timeout=1.0, max_size=2**24) as ws:
                    self._ws = ws
                    self._dead_link = False
                    self._last_rx = time.monotonic()
                    self.protocol.connection_opened()
                    await self._flush(ws)
                    self.connected.set()
                    pinger = asyncio.create_task(self._ping_loop(ws))
                    async for raw in ws:
                        self._last_rx = time.monotonic()
                        self.protocol.receive_text(raw, self.clock.now_ms())
                        if self._handle_events():
                            attempt = 0  # a snapshot arrived: the link is healthy again
                        await self._flush(ws)
                if self._dead_link:
                    reason = "dead_link"
                else:
                    self.last_error = "closed by server"
            except asyncio.CancelledError:
                raise
            except (OSError, asyncio.TimeoutError, websockets.exceptions.WebSocketException) as exc:
                reason = "connect_error" if self._ws is None else "connection_error"
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("Bybit WebSocket %s: %s", self.url, self.last_error)
            finally:
                if pinger is not None:
                    pinger.cancel()
                self._ws = None
                self.connected.clear()
                self.protocol.connection_closed()
            if self._closing:
                break
            self.metrics.venue_faults.labels(venue=self.venue, reason=reason).inc()
            self.metrics.ws_reconnects.labels(venue=self.venue).inc()
            delay = backoff_delay(attempt, self.backoff_base_s, self.backoff_max_s, self._rng)
            attempt += 1
            await asyncio.sleep(delay)

    async def _flush(self, ws) -> None:
        for text in self.protocol.data_to_send():
            await ws.send(text)

    async def _ping_loop(self, ws) -> None:
        try:
            while True:
                await asyncio.sleep(self.ping_interval_s)
                if time.monotonic() - self._last_rx > self.dead_after_s:
                    self.last_error = f"no traffic for {self.dead_after_s:.1f} s"
                    log.warning("Bybit WebSocket %s: %s; reconnecting", self.url, self.last_error)
                    self._dead_link = True
                    await ws.close()
                    return
                self.protocol.send_ping()
                await self._flush(ws)
        except (websockets.exceptions.WebSocketException, OSError):
            return

    def _handle_events(self) -> bool:
        """Count and log the protocol's events; True if one was a snapshot that (re)synced a book."""
        synced = False
        m, venue = self.metrics, self.venue
        for ev in self.protocol.events_received():
            if isinstance(ev, BookUpdate):
                m.ws_messages.labels(venue=venue, kind=f"book_{ev.result.value}").inc()
                synced |= ev.result is ApplyResult.RESET
                if self.on_book is not None:
                    self.on_book(ev.symbol, ev.result, self.books[ev.symbol])
            elif isinstance(ev, Pong):
                m.ws_messages.labels(venue=venue, kind="pong").inc()
            elif isinstance(ev, Fault):
                m.venue_faults.labels(venue=venue, reason=ev.reason).inc()
                if ev.reason in _LOGGED_FAULTS:
                    log.warning("Bybit WebSocket: %s (%s)", ev.detail, ev.reason)
            elif isinstance(ev, ResyncNeeded):
                m.ws_resyncs.labels(venue=venue).inc()
                log.warning("%s order book discarded (%s): resubscribing for a fresh snapshot", ev.symbol, ev.reason)
        return synced
