"""The async driver of a Binance USD-M combined market stream: it only moves bytes (and fetches snapshots).

What the messages mean (local books, the ``U``/``u``/``pu`` rules, stale snapshots,
resyncs, trades, bars) is ``BinanceProtocol``'s (``venues/binance/protocol.py``). This driver:

* connects to the combined stream ``<base>/stream?streams=<a>/<b>/...`` (Binance USD-M
  docs, "Websocket Market Streams": combined streams are wrapped as
  ``{"stream": ..., "data": ...}``), so subscriptions travel in the URL and no
  SUBSCRIBE message is sent; a connection holds at most ``MAX_STREAMS_PER_CONNECTION``
  (200) streams, and the source spreads symbols over several connections above that;
* tells the protocol about the connection, feeds it every frame with the local receive
  time, and fetches each REST depth snapshot it asks for (``fetch_snapshot``, the REST
  client's ``get_depth``), handing it back; a failed fetch is retried after a growing
  delay, and during an IP ban not before the ban ends;
* keeps the connection alive the way Binance expects: the server sends a ping frame
  every 3 minutes and drops connections that do not answer with a pong within 10
  minutes; the ``websockets`` library answers those pings itself. To know the connection
  is alive without waiting minutes, the driver sends its own ping frame every
  ``ping_interval_s`` (at least ``MIN_PING_INTERVAL_S``: every frame sent counts toward
  Binance's limit of 10 incoming messages per second per connection) and expects the
  pong within ``pong_timeout_s`` (a ``Heartbeat``). A connection that stops answering is
  *silent*: its books are not handed out (``ws_silent``) and it is closed and opened
  again. A live connection's books are current however long since they changed: Binance
  pushes depth only when it changes;
* counts everything in the shared ``Metrics`` with ``venue="binance"``: book messages by
  outcome and pongs (``lobbot_ws_messages_total``), faults (``lobbot_venue_faults_total``),
  resyncs (``lobbot_ws_resyncs_total``), disconnects by reason and reconnects;
* reconnects after the delay of a ``ReconnectPolicy`` (exponential backoff with full
  jitter, reset only after a connection stayed up 60 s, DESIGN.md §6.2), so a server that
  closes right after connecting is retried ever more slowly, never in a tight loop; too
  many disconnects in 5 minutes log a warning (Binance may ban IPs that are disconnected
  repeatedly).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Awaitable, Callable, Sequence

import websockets
from websockets.asyncio.client import connect

from backend.metrics import Metrics
from backend.venues.binance.messages import DepthSnapshot
from backend.venues.binance.protocol import BinanceProtocol, BookUpdate, Fault, ResyncNeeded
from backend.venues.binance.rest import BinanceBannedError
from backend.venues.health import Heartbeat, ReconnectPolicy
from backend.venues.local_book import ApplyResult, LocalBook
from backend.venues.source import Clock
from backend.venues.types import BookEvent, Candle, Trade

__all__ = ["BinanceWsClient", "BookHook", "MAX_STREAMS_PER_CONNECTION", "MIN_PING_INTERVAL_S", "combined_url"]

log = logging.getLogger(__name__)

BookHook = Callable[[str, ApplyResult, LocalBook], None]
SnapshotFetcher = Callable[[str], Awaitable[DepthSnapshot]]
MAX_STREAMS_PER_CONNECTION = 200
"""Streams one connection may carry (Binance futures "Websocket Market Streams": at most 200 streams per
connection in the limit this bot plans for; newer docs allow more)."""
MIN_PING_INTERVAL_S = 0.2
"""Our pings at most 5 per second: half of Binance's 10 incoming messages per second per connection."""
HEALTHY_AFTER_S = 60.0
RECONNECT_WARN_PER_5MIN = 20
_LOGGED_FAULTS = frozenset({"malformed", "subscribe_error", "sequence_gap", "crossed_book", "stale_snapshot"})


def combined_url(base: str, streams: Sequence[str]) -> str:
    """``wss://host[/stream]`` + streams -> ``wss://host/stream?streams=a/b/c``."""
    root = base.rstrip("/")
    for tail in ("/stream", "/ws"):
        if root.endswith(tail):
            root = root[: -len(tail)]
    return f"{root}/stream?streams={'/'.join(streams)}"


def _safe_url(url: str) -> str:
    """The URL without any user:password part and without the stream list (secrets are never logged)."""
    scheme, sep, rest = url.partition("://")
    host, slash, path = rest.partition("/")
    return f"{scheme}{sep}{host.rpartition('@')[2]}{slash}{path.split('?', 1)[0]}"


class BinanceWsClient:
    """One combined-stream connection (re-established as needed) for a fixed list of symbols.

    ``fetch_snapshot(symbol)`` returns a REST ``DepthSnapshot`` (the REST client's
    ``get_depth``). ``on_book(symbol, result, local_book)``, when given, is called after
    every depth message is handled (tests use it to check every intermediate state).
    Raises ``ValueError`` for more than ``MAX_STREAMS_PER_CONNECTION`` streams or a ping
    interval below ``MIN_PING_INTERVAL_S``.
    """

    def __init__(self, url: str, symbols: Sequence[str], fetch_snapshot: SnapshotFetcher, *, depth: int = 50,
                 ping_interval_s: float = 20.0, pong_timeout_s: float | None = None, backoff_base_s: float = 0.5,
                 backoff_max_s: float = 30.0, open_timeout_s: float = 10.0, snapshot_retry_s: float = 1.0,
                 trades: bool = True, klines: bool = True, clock: Clock | None = None, seed: int | None = None,
                 on_book: BookHook | None = None, metrics: Metrics | None = None, venue: str = "binance"):
        self.protocol = BinanceProtocol(symbols, depth=depth, trades=trades, klines=klines)
        if len(self.protocol.streams) > MAX_STREAMS_PER_CONNECTION:
            raise ValueError(f"{len(self.protocol.streams)} streams on one connection; Binance allows "
                             f"{MAX_STREAMS_PER_CONNECTION}")
        if ping_interval_s < MIN_PING_INTERVAL_S:
            raise ValueError(f"ping interval {ping_interval_s:g} s is below {MIN_PING_INTERVAL_S:g} s (Binance "
                             "allows 10 incoming messages per second per connection)")
        self.base_url = url
        self.url = combined_url(url, self.protocol.streams)
        self.symbols = self.protocol.symbols
        self.fetch_snapshot = fetch_snapshot
        self.ping_interval_s = ping_interval_s
        self.pong_timeout_s = pong_timeout_s if pong_timeout_s is not None else max(1.0, min(10.0, ping_interval_s))
        self.heartbeat = Heartbeat(self.pong_timeout_s)
        self.open_timeout_s = open_timeout_s
        self.snapshot_retry_s = snapshot_retry_s
        self.clock = clock or Clock()
        self.on_book = on_book
        self.metrics = metrics if metrics is not None else Metrics()
        self.venue = venue
        self.last_error: str | None = None
        self.last_disconnect: str | None = None
        self.connected = asyncio.Event()
        self._rng = random.Random(seed)
        self.policy = ReconnectPolicy(backoff_base_s, backoff_max_s, HEALTHY_AFTER_S, rate_window_s=300.0,
                                      warn_per_window=RECONNECT_WARN_PER_5MIN, rng=self._rng)
        self._ws = None
        self._task: asyncio.Task | None = None
        self._closing = False
        self._silent = False
        self._epoch = 0
        self._fetches: set[asyncio.Task] = set()
        self._snap_failures: dict[str, int] = {}

    @property
    def books(self) -> dict[str, LocalBook]:
        """symbol -> its ``LocalBook`` (owned by the protocol)."""
        return self.protocol.books

    # --- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        """Start the connection task (returns at once; see ``wait_synced``)."""
        if self._task is None:
            self._closing = False
            self._task = asyncio.create_task(self._run(), name="binance-ws")

    async def close(self) -> None:
        """Close the connection, stop fetching and reconnecting; safe to call twice."""
        self._closing = True
        ws = self._ws
        if ws is not None:
            try:
                await asyncio.wait_for(ws.close(), 2.0)
            except (asyncio.TimeoutError, websockets.exceptions.WebSocketException, OSError):
                pass
        for t in list(self._fetches):
            t.cancel()
        if self._fetches:
            await asyncio.gather(*self._fetches, return_exceptions=True)
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
        return "resync_pending", "waiting for the depth snapshot to bridge the diff stream (resync in progress)"

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
                    self._epoch += 1
                    self.heartbeat.opened(time.monotonic())
                    self.policy.connected(time.monotonic())
                    self.protocol.connection_opened()
                    self._after_input()
                    self.connected.set()
                    pinger = asyncio.create_task(self._ping_loop(ws))
                    async for raw in ws:
                        self.protocol.receive_text(raw, self.clock.now_ms())
                        self._after_input()
                if self._silent:
                    reason = "ws_silent"
                else:
                    self.last_error = "closed by server"
            except asyncio.CancelledError:
                raise
            except (OSError, asyncio.TimeoutError, websockets.exceptions.WebSocketException) as exc:
                reason = "connect_error" if self._ws is None else "connection_error"
                self.last_error = f"{type(exc).__name__}: {exc}"
            finally:
                if pinger is not None:
                    pinger.cancel()
                self._ws = None
                self._epoch += 1
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
            log.warning("Binance WebSocket %s disconnected (%s: %s); reconnecting in %.1f s (attempt %d)",
                        _safe_url(self.url), reason, self.last_error or "-", delay, self.policy.attempt)
            if self.policy.alarm(now):
                log.warning("Binance WebSocket: %d disconnects in the last %.0f minutes; Binance may ban IPs that "
                            "are disconnected repeatedly. Reconnects are slowed down (up to %.0f s apart); check "
                            "the network or the endpoint.", self.policy.recent(now), self.policy.rate_window_s / 60,
                            self.policy.max_s)
            await asyncio.sleep(delay)

    def _after_input(self) -> None:
        """Count the protocol's events and start the snapshot fetches it asked for."""
        self._handle_events()
        for sym in self.protocol.snapshots_needed():
            task = asyncio.ensure_future(self._fetch(sym, self._epoch))
            self._fetches.add(task)
            task.add_done_callback(self._fetches.discard)

    async def _fetch(self, sym: str, epoch: int) -> None:
        fails = self._snap_failures.get(sym, 0)
        if fails:
            await asyncio.sleep(min(30.0, self.snapshot_retry_s * 2 ** min(fails - 1, 5)) * self._rng.uniform(0.5, 1.0))
        if epoch != self._epoch:
            return  # that connection is gone; the next one asked for its own snapshot
        try:
            snap = await self.fetch_snapshot(sym)
        except asyncio.CancelledError:
            raise
        except BinanceBannedError as exc:
            self._snap_failures[sym] = fails + 1
            await asyncio.sleep(exc.remaining_s)
            if epoch == self._epoch:
                self.protocol.snapshot_failed(sym)
                self._after_input()
            return
        except Exception as exc:  # the book stays pending (resync_pending) and is fetched again
            self._snap_failures[sym] = fails + 1
            log.warning("Binance %s depth snapshot failed (%s); retrying", sym, exc)
            if epoch == self._epoch:
                self.protocol.snapshot_failed(sym)
                self._after_input()
            return
        if epoch != self._epoch:
            return
        self.protocol.receive_snapshot(snap, self.clock.now_ms())
        self._after_input()

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
                    waiter = await ws.ping()
                    waiter.add_done_callback(self._on_pong)
                await asyncio.sleep(step)
        except (websockets.exceptions.WebSocketException, OSError, asyncio.TimeoutError):
            return

    def _on_pong(self, fut: asyncio.Future) -> None:
        if fut.cancelled() or fut.exception() is not None:
            return
        self.heartbeat.pong(time.monotonic())
        self.metrics.ws_messages.labels(venue=self.venue, kind="pong").inc()

    def _handle_events(self) -> None:
        m, venue = self.metrics, self.venue
        for ev in self.protocol.events_received():
            if isinstance(ev, BookUpdate):
                m.ws_messages.labels(venue=venue, kind=f"book_{ev.result.value}").inc()
                if ev.result is ApplyResult.RESET:
                    self._snap_failures.pop(ev.symbol, None)
                if self.on_book is not None:
                    self.on_book(ev.symbol, ev.result, self.books[ev.symbol])
            elif isinstance(ev, Fault):
                m.venue_faults.labels(venue=venue, reason=ev.reason).inc()
                if ev.reason in _LOGGED_FAULTS:
                    log.warning("Binance WebSocket: %s (%s)", ev.detail, ev.reason)
            elif isinstance(ev, ResyncNeeded):
                m.ws_resyncs.labels(venue=venue).inc()
                if ev.reason == "stale_snapshot":
                    self._snap_failures[ev.symbol] = self._snap_failures.get(ev.symbol, 0) + 1
                log.warning("Binance %s order book resync (%s): fetching a fresh depth snapshot", ev.symbol, ev.reason)
