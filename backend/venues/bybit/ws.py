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

The loop itself (connect, heartbeat, counting, backoff) is the venue-neutral ``WsDriver``
(``venues/ws_driver.py``); this module supplies Bybit's ping, log wording and limits.
"""

from __future__ import annotations

import logging
from typing import Sequence

from backend.metrics import Metrics
from backend.venues.bybit.protocol import BybitProtocol
from backend.venues.source import Clock
from backend.venues.ws_driver import HEALTHY_AFTER_S, RECONNECT_WARN_PER_5MIN, BookHook, WsDriver
from backend.venues.ws_events import ResyncNeeded

__all__ = ["BookHook", "BybitWsClient", "HEALTHY_AFTER_S", "RECONNECT_WARN_PER_5MIN"]

log = logging.getLogger(__name__)


class BybitWsClient(WsDriver):
    """One WebSocket connection (re-established as needed) for a fixed list of symbols.

    ``on_book(symbol, result, local_book)``, when given, is called after every book
    message is applied, before the next frame is read (tests use it to check every
    intermediate state). ``metrics`` is the bot's registry (a new one when None);
    counts carry the label ``venue``.
    """

    label = "Bybit"
    task_name = "bybit-ws"
    logged_faults = frozenset({"malformed", "subscribe_error", "sequence_gap", "crossed_book"})
    resync_sentence = "waiting for an order-book snapshot (resync in progress)"
    alarm_text = ("%s WebSocket: %d disconnects in the last %.0f minutes. Bybit allows at most 500 new "
                  "connections per IP in 5 minutes and may ban clients that connect and disconnect often; "
                  "reconnects are slowed down (up to %.0f s apart). Check the network or the endpoint.")
    log_connect_errors = True
    log = log

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
        self._init_driver(url, BybitProtocol(symbols, depth=depth, trades=trades, klines=klines),
                          ping_interval_s=ping_interval_s, pong_timeout_s=pong_timeout_s,
                          backoff_base_s=backoff_base_s, backoff_max_s=backoff_max_s, open_timeout_s=open_timeout_s,
                          clock=clock, seed=seed, on_book=on_book, metrics=metrics, venue=venue)

    def _on_resync(self, ev: ResyncNeeded) -> None:
        """Log a discarded book (the protocol has queued the resubscribe)."""
        self.log.warning("%s order book discarded (%s): resubscribing for a fresh snapshot", ev.symbol, ev.reason)
