"""The async driver of the Bybit v5 public WebSocket: it only moves bytes.

Everything the messages mean (local books, sequence checks, resyncs, trades, bars)
is ``BybitProtocol``'s (``venues/bybit/protocol.py``). This driver:

* connects (``websockets``), tells the protocol, and sends what it asks to send;
* feeds every received frame to the protocol with the local receive time, then sends
  its answers and counts its events in the shared ``Metrics``: book updates and pongs
  in ``lobbot_ws_messages_total{venue,kind}``, faults in
  ``lobbot_venue_faults_total{venue,reason}``, resyncs in ``lobbot_ws_resyncs_total``;
* sends an application ping every ``ping_interval_s`` (Bybit drops connections that
  stay silent; its docs, "Connect > How to Send the Heartbeat Packet", recommend a ping
  every 20 s). The connection is *live* while every ping is answered within
  ``pong_timeout_s`` (a ``Heartbeat``); a ping left unanswered longer makes it *silent*:
  its books are no longer current (``live()`` is False, ``status`` says ``ws_silent``)
  and the connection is closed and re-established (reason ``ws_silent``). A live
  connection's books are current however long since they last changed: Bybit pushes a
  book only when it changes;
* on any disconnect, logs the reason, counts it in ``lobbot_ws_disconnects_total{venue,reason}``
  (and ``lobbot_venue_faults_total``) and ``lobbot_ws_reconnects_total``, and reconnects
  after the delay of a ``ReconnectPolicy``: exponential backoff with full jitter that
  restarts only after a connection stayed up for 60 s, so a server that closes right
  after the snapshot is retried ever more slowly (up to ``backoff_max_s``), never in a
  tight loop. More than ``RECONNECT_WARN_PER_5MIN`` disconnects in 5 minutes log a
  warning: Bybit allows at most 500 new connections per IP in 5 minutes and asks
  clients not to connect and disconnect frequently ("Rate Limit Rules > WebSocket IP limit").
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
from backend.venues.health import Heartbeat, ReconnectPolicy
from backend.venues.local_book import ApplyResult, LocalBook
from backend.venues.source import Clock
from backend.venues.types import BookEvent, Candle, Trade

__all__ = ["BookHook", "BybitWsClient"]

log = logging.getLogger(__name__)


def _safe_url(url: str) -> str:
    """The URL without any user:password part (secrets are never logged)."""
    scheme, sep, rest = url.partition("://")
    host, slash, path = rest.partition("/")
    return f"{scheme}{sep}{host.rpartition('@')[2]}{slash}{path}"

BookHook = Callable[[str, ApplyResult, LocalBook], None]
_LOGGED_FAULTS = frozenset({"malformed", "subscribe_error", "sequence_gap", "crossed_book"})
HEALTHY_AFTER_S = 60.0  # DESIGN.md §6.2: the backoff resets only after 60 s of healthy connection
RECONNECT_WARN_PER_5MIN = 20
"""Disconnects per 5 minutes above which a warning is logged; well below Bybit's 500 new connections
per IP per 5 minutes ("Rate Limit Rules > WebSocket IP limit")."""


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
        pong_timeout_s: float | None = None,
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
        # an answer normally takes one round trip; allow a generous bound, at least 1 s, at most 10 s
        self.pong_timeout_s = pong_timeout_s if pong_timeout_s is not None else max(1.0, min(10.0, ping_interval_s))
        self.heartbeat = Heartbeat(self.pong_timeout_s)
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
        self.policy = ReconnectPolicy(backoff_base_s, backoff_max_s, HEALTHY_AFTER_S,
                                      rate_window_s=300.0, warn_per_window=RECONNECT_WARN_PER_5MIN, rng=self._rng)
        self._ws = None
        self._task: asyncio.Task | None = None
        self._closing = False
        self._silent = False
        self.last_disconnect: str | None = None

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

    def drain_book_events(self, symbol: str) -> list[BookEvent]:
        """Book messages the symbol's local book applied since the last call (raw events' delta form)."""
        return self.protocol.books[symbol].drain_events()

    def live(self) -> bool:
        """True while the connection is open and answers pings within ``pong_timeout_s``."""
        return self._ws is not None and not self._silent and not self.heartbeat.silent(time.monotonic())

    def status(self, symbol: str) -> tuple[str, str]:
        """Why a symbol has no current book right now: (reason word, sentence)."""
        if self._silent or (self._ws is not None and self.heartbeat.silent(time.monotonic())):
            return "ws_silent", f"websocket silent: no pong within {self.pong_timeout_s:g} s; reconnecting"
        if self._ws is None:
            if self.last_disconnect == "ws_silent":
                return "ws_silent", f"websocket was silent (no pong within {self.pong_timeout_s:g} s); reconnecting"
            return "ws_disconnected", f"websocket disconnected ({self.last_error or 'connecting'}); reconnecting"
        return "resync_pending", "waiting for an order-book snapshot (resync in progress)"

    # --- connection loop ------------------------------------------------------------------------
    async def _run(self) -> None:
        while not self._closing:
            pinger = None
            reason = "closed_by_server"
            try:
                async with connect(self.url, ping_interval=None, open_timeout=self.open_timeout_s,
                                   close_timeout=1.0, max_size=2**24) as ws:
                    self._ws = ws
                    self._silent = False
                    self.heartbeat.opened(time.monotonic())
                    self.policy.connected(time.monotonic())
                    self.protocol.connection_opened()
                    await self._flush(ws)
                    self.connected.set()
                    pinger = asyncio.create_task(self._ping_loop(ws))
                    async for raw in ws:
                        self.protocol.receive_text(raw, self.clock.now_ms())
                        self._handle_events()
                        await self._flush(ws)
                if self._silent:
                    reason = "ws_silent"
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
            self.last_disconnect = reason
            self.metrics.venue_faults.labels(venue=self.venue, reason=reason).inc()
            self.metrics.ws_disconnects.labels(venue=self.venue, reason=reason).inc()
            self.metrics.ws_reconnects.labels(venue=self.venue).inc()
            now = time.monotonic()
            delay = self.policy.disconnected(now)
            log.warning("Bybit WebSocket %s disconnected (%s: %s); reconnecting in %.1f s (attempt %d)",
                        _safe_url(self.url), reason, self.last_error or "-", delay, self.policy.attempt)
            if self.policy.alarm(now):
                log.warning("Bybit WebSocket: %d disconnects in the last %.0f minutes. Bybit allows at most 500 new "
                            "connections per IP in 5 minutes and may ban clients that connect and disconnect often; "
                            "reconnects are slowed down (up to %.0f s apart). Check the network or the endpoint.",
                            self.policy.recent(now), self.policy.rate_window_s / 60, self.policy.max_s)
            await asyncio.sleep(delay)

    async def _flush(self, ws) -> None:
        for text in self.protocol.data_to_send():
            await ws.send(text)

    async def _ping_loop(self, ws) -> None:
        step = min(self.ping_interval_s, self.pong_timeout_s) / 4.0
        last_ping = float("-inf")
        try:
            while True:
                now = time.monotonic()
                if self.heartbeat.silent(now):
                    self.last_error = f"no pong within {self.pong_timeout_s:g} s"
                    self._silent = True
                    await asyncio.wait_for(ws.close(), self.pong_timeout_s)
                    return
                if now - last_ping >= self.ping_interval_s:
                    last_ping = now
                    self.heartbeat.ping_sent(now)
                    self.protocol.send_ping()
                    await self._flush(ws)
                await asyncio.sleep(step)
        except (websockets.exceptions.WebSocketException, OSError, asyncio.TimeoutError):
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
                self.heartbeat.pong(time.monotonic())
                m.ws_messages.labels(venue=venue, kind="pong").inc()
            elif isinstance(ev, Fault):
                m.venue_faults.labels(venue=venue, reason=ev.reason).inc()
                if ev.reason in _LOGGED_FAULTS:
                    log.warning("Bybit WebSocket: %s (%s)", ev.detail, ev.reason)
            elif isinstance(ev, ResyncNeeded):
                m.ws_resyncs.labels(venue=venue).inc()
                log.warning("%s order book discarded (%s): resubscribing for a fresh snapshot", ev.symbol, ev.reason)
        return synced
