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

The loop itself (connect, heartbeat, counting, backoff) is the venue-neutral ``WsDriver``
(``venues/ws_driver.py``); this module supplies the combined-stream URL, the ping frame,
the snapshot fetches, and Binance's log wording and limits.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable, Sequence

from backend.metrics import Metrics
from backend.venues.binance.messages import DepthSnapshot
from backend.venues.binance.protocol import BinanceProtocol
from backend.venues.binance.rest import BinanceBannedError
from backend.venues.source import Clock
from backend.venues.ws_driver import HEALTHY_AFTER_S, RECONNECT_WARN_PER_5MIN, BookHook, WsDriver
from backend.venues.ws_events import BookUpdate, ResyncNeeded
from backend.venues.local_book import ApplyResult

__all__ = ["BinanceWsClient", "BookHook", "HEALTHY_AFTER_S", "MAX_STREAMS_PER_CONNECTION", "MIN_PING_INTERVAL_S",
           "RECONNECT_WARN_PER_5MIN", "combined_url"]

log = logging.getLogger(__name__)

SnapshotFetcher = Callable[[str], Awaitable[DepthSnapshot]]
MAX_STREAMS_PER_CONNECTION = 200
"""Streams one connection may carry (Binance futures "Websocket Market Streams": at most 200 streams per
connection in the limit this bot plans for; newer docs allow more)."""
MIN_PING_INTERVAL_S = 0.2
"""Our pings at most 5 per second: half of Binance's 10 incoming messages per second per connection."""


def combined_url(base: str, streams: Sequence[str]) -> str:
    """``wss://host[/stream]`` + streams -> ``wss://host/stream?streams=a/b/c``."""
    root = base.rstrip("/")
    for tail in ("/stream", "/ws"):
        if root.endswith(tail):
            root = root[: -len(tail)]
    return f"{root}/stream?streams={'/'.join(streams)}"


class BinanceWsClient(WsDriver):
    """One combined-stream connection (re-established as needed) for a fixed list of symbols.

    ``fetch_snapshot(symbol)`` returns a REST ``DepthSnapshot`` (the REST client's
    ``get_depth``). ``on_book(symbol, result, local_book)``, when given, is called after
    every depth message is handled (tests use it to check every intermediate state).
    Raises ``ValueError`` for more than ``MAX_STREAMS_PER_CONNECTION`` streams or a ping
    interval below ``MIN_PING_INTERVAL_S``.
    """

    label = "Binance"
    task_name = "binance-ws"
    logged_faults = frozenset({"malformed", "subscribe_error", "sequence_gap", "crossed_book", "stale_snapshot"})
    resync_sentence = "waiting for the depth snapshot to bridge the diff stream (resync in progress)"
    alarm_text = ("%s WebSocket: %d disconnects in the last %.0f minutes; Binance may ban IPs that "
                  "are disconnected repeatedly. Reconnects are slowed down (up to %.0f s apart); check "
                  "the network or the endpoint.")
    drop_query_in_logs = True
    log = log

    def __init__(self, url: str, symbols: Sequence[str], fetch_snapshot: SnapshotFetcher, *, depth: int = 50,
                 ping_interval_s: float = 20.0, pong_timeout_s: float | None = None, backoff_base_s: float = 0.5,
                 backoff_max_s: float = 30.0, open_timeout_s: float = 10.0, snapshot_retry_s: float = 1.0,
                 trades: bool = True, klines: bool = True, clock: Clock | None = None, seed: int | None = None,
                 on_book: BookHook | None = None, metrics: Metrics | None = None, venue: str = "binance"):
        protocol = BinanceProtocol(symbols, depth=depth, trades=trades, klines=klines)
        if len(protocol.streams) > MAX_STREAMS_PER_CONNECTION:
            raise ValueError(f"{len(protocol.streams)} streams on one connection; Binance allows "
                             f"{MAX_STREAMS_PER_CONNECTION}")
        if ping_interval_s < MIN_PING_INTERVAL_S:
            raise ValueError(f"ping interval {ping_interval_s:g} s is below {MIN_PING_INTERVAL_S:g} s (Binance "
                             "allows 10 incoming messages per second per connection)")
        self._init_driver(combined_url(url, protocol.streams), protocol, ping_interval_s=ping_interval_s,
                          pong_timeout_s=pong_timeout_s, backoff_base_s=backoff_base_s, backoff_max_s=backoff_max_s,
                          open_timeout_s=open_timeout_s, clock=clock, seed=seed, on_book=on_book, metrics=metrics,
                          venue=venue)
        self.base_url = url
        self.fetch_snapshot = fetch_snapshot
        self.snapshot_retry_s = snapshot_retry_s
        self._epoch = 0
        self._fetches: set[asyncio.Task] = set()
        self._snap_failures: dict[str, int] = {}

    # --- WsDriver hooks ---------------------------------------------------------------------------
    async def _opened(self, ws) -> None:
        """A new connection: a new epoch (older snapshot fetches are void); start the fetches asked for."""
        self._epoch += 1
        self._after_input()

    async def _received(self, ws) -> None:
        """Count the frame's events and start the snapshot fetches it asked for (nothing is sent back)."""
        self._after_input()

    def _closed(self) -> None:
        """The connection is gone: fetches started for it are void."""
        self._epoch += 1

    async def _stop_work(self) -> None:
        """Cancel the snapshot fetches in flight."""
        for t in list(self._fetches):
            t.cancel()
        if self._fetches:
            await asyncio.gather(*self._fetches, return_exceptions=True)

    async def _send_ping(self, ws) -> None:
        """A WebSocket ping frame; its pong (answered by the server) marks the connection live."""
        waiter = await ws.ping()
        waiter.add_done_callback(self._on_pong)

    def _on_pong(self, fut: asyncio.Future) -> None:
        if fut.cancelled() or fut.exception() is not None:
            return
        self._pong()

    def _on_book(self, ev: BookUpdate) -> None:
        """A snapshot that (re)synced a book clears the symbol's snapshot failures."""
        if ev.result is ApplyResult.RESET:
            self._snap_failures.pop(ev.symbol, None)

    def _on_resync(self, ev: ResyncNeeded) -> None:
        """Log the resync; a stale snapshot counts as a failed fetch (the next one waits longer)."""
        if ev.reason == "stale_snapshot":
            self._snap_failures[ev.symbol] = self._snap_failures.get(ev.symbol, 0) + 1
        self.log.warning("Binance %s order book resync (%s): fetching a fresh depth snapshot", ev.symbol, ev.reason)

    # --- snapshots ---------------------------------------------------------------------------------
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
