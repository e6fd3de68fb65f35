"""The ``raw_events`` group: what a venue delivered, one row per event (DESIGN.md §6.4).

Recorded with ``--record-raw`` before any derivation (no validation, no features), so
a later build can re-derive every feature from it (``--source replay``). A row is one
event of one symbol in one tick of the bot:

* ``timestamp``: the bot's local time of the tick (ms, UTC); every event of a tick
  shares it, and the hive partition is its UTC date.
* ``symbol``, ``venue`` (``bybit``, ``binance``, ``sim``), ``source`` (the source that
  recorded it: ``bybit-ws``, ``sim`` ...).
* ``kind`` (``RAW_KINDS``):

  - ``history``: back-filled closed 1-minute bars handed over at start; one row per bar,
    ``venue_ts`` = bar open time, ``price`` = ``[open, high, low, close]``, ``size`` =
    ``[volume, turnover]``. A ``history`` row starts a new run of the bot.
  - ``candle``: a bar newly closed in this tick (same lists as ``history``).
  - ``trades``: the public trades new in this tick: ``trade_ts``, ``price``, ``size``,
    ``side`` (+1 taker buy, -1 taker sell), one list element per trade.
  - ``book``: the symbol's book this tick as the source gave it: ``price`` and ``size``
    hold the ``n_bids`` bid levels (best first) followed by the ask levels (best first);
    ``venue_ts`` the venue's book time, ``seq`` its update id (null when the venue gives
    none), ``recv_ts`` the local receive time, ``cts`` the matching-engine time (or null).
  - ``no_book``: no book this tick; ``reason`` says why (``http_429``, ``resync_pending`` ...).

  ``book`` and ``no_book`` rows close the symbol's tick and also carry the tick's
  ``collect`` flag (a sample was due), the source's ``clock_offset_ms`` and ``live``.

Prices and sizes are stored as float64 exactly as parsed (bit-equal on replay).
"""

from __future__ import annotations

from backend.ml_engine.feature_store.feature_schema import RAW_EVENTS_SCHEMA

__all__ = ["RAW_EVENTS_SCHEMA", "RAW_KINDS"]

#: event kinds, in the order a tick's events are replayed within one symbol
RAW_KINDS: tuple[str, ...] = ("history", "trades", "candle", "book", "no_book")
