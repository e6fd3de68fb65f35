"""The venue-neutral async WebSocket driver: connect, heartbeat, count, reconnect with backoff.

Both public-stream clients (``BybitWsClient`` in ``venues/bybit/ws.py``, ``BinanceWsClient``
in ``venues/binance/ws.py``) are this loop around their venue's sans-I/O protocol object
(``venues/*/protocol.py``). The driver only moves bytes; a venue fills in a few hooks:

* ``_opened(ws)`` / ``_received(ws, raw)`` / ``_closed()``: what to do when a connection
  opens, when a frame arrives (the protocol has already been fed it), when it closes;
* ``_send_ping(ws)``: how to ping (Bybit: an application ``{"op": "ping"}``; Binance: a
  WebSocket ping frame);
* ``_on_book`` / ``_on_resync``: venue bookkeeping beside the shared counting.

What every venue shares, with the rule each follows:

* the connection is *live* while every ping is answered within ``pong_timeout_s`` (a
  ``Heartbeat``, ``venues/health.py``); a ping left unanswered longer makes it *silent*: its
  books are not handed out (``live()`` is False, ``status`` says ``ws_silent``) and it is
  closed and opened again (reason ``ws_silent``). A live connection's books are current
  however long since they changed: both venues push a book only when it changes;
* events are counted in the shared ``Metrics``: book messages by outcome and pongs in
  ``lobbot_ws_messages_total{venue,kind}``, faults in ``lobbot_venue_faults_total{venue,reason}``,
  resyncs in ``lobbot_ws_resyncs_total``;
* on any disconnect the reason is logged and counted in ``lobbot_ws_disconnects_total{venue,reason}``
  (and ``lobbot_venue_faults_total``) and ``lobbot_ws_reconnects_total``, and the driver
  reconnects after the delay of a ``ReconnectPolicy``: exponential backoff with full jitter
  that restarts only after a connection stayed up for ``HEALTHY_AFTER_S`` (DESIGN.md §6.2),
  so a server that closes right after connecting is retried ever more slowly (up to
  ``backoff_max_s``), never in a tight loop. More than ``RECONNECT_WARN_PER_5MIN`` disconnects
  in 5 minutes log the venue's warning (``_alarm_text``; Bybit allows at most 500 new
  connections per IP in 5 minutes, Binance may ban IPs that reconnect repeatedly).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Any, Callable, Sequence

import websockets
from websockets.asyncio.client import connect

from backend.metrics import Metrics
from backend.venues.health import Heartbeat, ReconnectPolicy
from backend.venues.local_book import ApplyResult, LocalBook
from backend.venues.source import Clock
from backend.venues.types import BookEvent, Candle, Trade
from backend.venues.ws_events import BookUpdate, Fault, Pong, ResyncNeeded

__all__ = ["BookHook", "HEALTHY_AFTER_S", "RECONNECT_WARN_PER_5MIN", "WsDriver", "safe_url"]

BookHook = Callable[[str, ApplyResult, LocalBook], None]
HEALTHY_AFTER_S = 60.0  # DESIGN.md §6.2: the backoff resets only after 60 s of healthy connection
RECONNECT_WARN_PER_5MIN = 20
"""Disconnects per 5 minutes above which a warning is logged; well below Bybit's 500 new connections
per IP per 5 minutes ("Rate Limit Rules > WebSocket IP limit")."""
_WS_ERRORS = (OSError, asyncio.TimeoutError, websockets.exceptions.WebSocketException)


def safe_url(url: str, *, drop_query: bool = False) -> str:
    """The URL without any user:password part (secrets are never logged), and without its query when
    ``drop_query`` (a Binance combined-stream URL carries the whole stream list there)."""
    scheme, sep, rest = url.partition("://")
    host, slash, path = rest.partition("/")
    if drop_query:
        path = path.split("?", 1)[0]
    return f"{scheme}{sep}{host.rpartition('@')[2]}{slash}{path}"


class WsDriver:
    """The connection loop shared by the venues' WebSocket clients (one connection, re-established as
    needed, for the fixed symbol list of ``protocol``).

    A subclass sets the class attributes ``label`` (the venue's name in log lines), ``task_name``,
    ``logged_faults`` (fault reasons worth a log line), ``resync_sentence`` (``status`` while a book
    resyncs) and ``alarm_text`` (the warning for too many disconnects; formatted with the count, the
    window in minutes and the longest delay), calls ``_init_driver`` from its constructor and fills
    in the hooks it needs.
    """

    label = "venue"
    task_name = "venue-ws"
    logged_faults: frozenset[str] = frozenset()
    resync_sentence = "waiting for an order-book snapshot (resync in progress)"
    alarm_text = "%s WebSocket: %d disconnects in the last %.0f minutes (reconnects slowed down, up to %.0f s apart)"
    log_connect_errors = False
    drop_query_in_logs = False
    log: logging.Logger = logging.getLogger(__name__)

    def _init_driver(self, url: str, protocol: Any, *, ping_interval_s: float, pong_timeout_s: float | None,
                     backoff_base_s: float, backoff_max_s: float, open_timeout_s: float, clock: Clock | None,
                     seed: int | None, on_book: BookHook | None, metrics: Metrics | None, venue: str) -> None:
        """Set the state every venue's client shares (call from the subclass's ``__init__``)."""
        self.url = url
        self.protocol = protocol
        self.symbols = protocol.symbols
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
        self.last_disconnect: str | None = None
        self.connected = asyncio.Event()
        self.ever_connected = False  #: a connection opened at least once (start-up tells "unreachable" by it)
        self._rng = random.Random(seed)
        self.policy = ReconnectPolicy(backoff_base_s, backoff_max_s, HEALTHY_AFTER_S, rate_window_s=300.0,
                                      warn_per_window=RECONNECT_WARN_PER_5MIN, rng=self._rng)
        self._ws = None
        self._task: asyncio.Task | None = None
        self._closing = False
        self._silent = False

    @property
    def books(self) -> dict[str, LocalBook]:
        """symbol -> its ``LocalBook`` (owned by the protocol)."""
        return self.protocol.books

    # --- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        """Start the connection task (returns at once; see ``wait_synced``)."""
        if self._task is None:
            self._closing = False
            self._task = asyncio.create_task(self._run(), name=self.task_name)

    async def close(self) -> None:
        """Close the connection and stop reconnecting (and any venue work: ``_stop_work``); safe to call twice."""
        self._closing = True
        ws = self._ws
        if ws is not None:
            try:
                await asyncio.wait_for(ws.close(), 2.0)
            except _WS_ERRORS:
                pass
        await self._stop_work()
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
        return "resync_pending", self.resync_sentence

    # --- venue hooks ------------------------------------------------------------------------------
    async def _opened(self, ws) -> None:
        """A connection opened and the protocol knows it (default: send what it asks to send)."""
        await self._flush(ws)

    async def _received(self, ws) -> None:
        """The protocol was fed a frame (default: count its events, send its answers)."""
        self._handle_events()
        await self._flush(ws)

    def _closed(self) -> None:
        """The connection is gone (before the protocol is told)."""

    async def _stop_work(self) -> None:
        """``close`` is stopping the client: end any venue task besides the connection."""

    async def _send_ping(self, ws) -> None:
        """Send one ping (default: the protocol's application-level ping)."""
        self.protocol.send_ping()
        await self._flush(ws)

    def _on_book(self, ev: BookUpdate) -> None:
        """A book message was handled (after it was counted, before ``on_book``)."""

    def _on_resync(self, ev: ResyncNeeded) -> None:
        """A book was discarded (after it was counted): log it."""
        self.log.warning("%s order book discarded (%s)", ev.symbol, ev.reason)

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
                    await self._opened(ws)
                    self.ever_connected = True
                    self.connected.set()
                    pinger = asyncio.create_task(self._ping_loop(ws))
                    async for raw in ws:
                        self.protocol.receive_text(raw, self.clock.now_ms())
                        await self._received(ws)
                if self._silent:
                    reason = "ws_silent"
                else:
                    self.last_error = "closed by server"
            except asyncio.CancelledError:
                raise
            except _WS_ERRORS as exc:
                reason = "connect_error" if self._ws is None else "connection_error"
                self.last_error = f"{type(exc).__name__}: {exc}"
                if self.log_connect_errors:
                    self.log.warning("%s WebSocket %s: %s", self.label, self.url, self.last_error)
            finally:
                if pinger is not None:
                    pinger.cancel()
                self._ws = None
                self._closed()
                self.connected.clear()
                self.protocol.connection_closed()
            if self._closing:
                break
            await self._backoff(reason)

    async def _backoff(self, reason: str) -> None:
        """Count and log a disconnect, then wait the policy's delay."""
        self.last_disconnect = reason
        self.metrics.venue_faults.labels(venue=self.venue, reason=reason).inc()
        self.metrics.ws_disconnects.labels(venue=self.venue, reason=reason).inc()
        self.metrics.ws_reconnects.labels(venue=self.venue).inc()
        now = time.monotonic()
        delay = self.policy.disconnected(now)
        self.log.warning("%s WebSocket %s disconnected (%s: %s); reconnecting in %.1f s (attempt %d)", self.label,
                         safe_url(self.url, drop_query=self.drop_query_in_logs), reason, self.last_error or "-",
                         delay, self.policy.attempt)
        if self.policy.alarm(now):
            self.log.warning(self.alarm_text, self.label, self.policy.recent(now), self.policy.rate_window_s / 60,
                             self.policy.max_s)
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
                    await self._send_ping(ws)
                await asyncio.sleep(step)
        except _WS_ERRORS:
            return

    def _pong(self) -> None:
        """A ping was answered: the connection is live; counted as ``kind="pong"``."""
        self.heartbeat.pong(time.monotonic())
        self.metrics.ws_messages.labels(venue=self.venue, kind="pong").inc()

    def _handle_events(self) -> bool:
        """Count and log the protocol's events; True if one was a snapshot that (re)synced a book."""
        synced = False
        m, venue = self.metrics, self.venue
        for ev in self.protocol.events_received():
            if isinstance(ev, BookUpdate):
                m.ws_messages.labels(venue=venue, kind=f"book_{ev.result.value}").inc()
                synced |= ev.result is ApplyResult.RESET
                self._on_book(ev)
                if self.on_book is not None:
                    self.on_book(ev.symbol, ev.result, self.books[ev.symbol])
            elif isinstance(ev, Pong):
                self._pong()
            elif isinstance(ev, Fault):
                m.venue_faults.labels(venue=venue, reason=ev.reason).inc()
                if ev.reason in self.logged_faults:
                    self.log.warning("%s WebSocket: %s (%s)", self.label, ev.detail, ev.reason)
            elif isinstance(ev, ResyncNeeded):
                m.ws_resyncs.labels(venue=venue).inc()
                self._on_resync(ev)
        return synced
