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

  - delta form, for sources that keep a local book (``bybit-ws``, ``binance-ws``): every
    book message the local book applied, in order, as ``book_snapshot`` (the venue's
    snapshot: it replaces the book), ``book_delta`` (changed levels; size 0 deletes the
    level) or ``book_checkpoint`` (not from the venue: the whole local book, written at
    least every 10 minutes of book time so a replay may start mid-recording). ``price``/
    ``size`` hold the ``n_bids`` bid levels then the ask levels as sent; ``seq`` the
    update id (Bybit ``u``, Binance ``u``), ``venue_ts`` the book time, ``recv_ts``,
    ``cts``; a Binance diff's ``trade_ts`` holds ``[U, pu]``. Then ``book_ref`` takes the
    place of ``book``: no levels, the book handed out that tick is the local book rebuilt
    from the events, its top ``n_bids`` levels a side (the most either side had);
    ``seq`` its update id (checked on replay), ``venue_ts`` the time the source stamped.

  ``book``, ``book_ref`` and ``no_book`` rows close the symbol's tick and also carry the tick's
  ``collect`` flag (a sample was due), the source's ``clock_offset_ms`` and ``live``.

Kinds are only ever added (the spool stores a kind as its index in ``RAW_KINDS``), so
files and spools written before the delta form read unchanged.

Prices and sizes are stored as float64 exactly as parsed (bit-equal on replay).
"""

from __future__ import annotations

from backend.ml_engine.feature_store.feature_schema import RAW_EVENTS_SCHEMA

__all__ = ["RAW_EVENTS_SCHEMA", "RAW_KINDS", "REPLAY_RANK"]

#: event kinds; append only (the spool keeps a kind's index)
RAW_KINDS: tuple[str, ...] = ("history", "trades", "candle", "book", "no_book",
                              "book_snapshot", "book_delta", "book_checkpoint", "book_ref")
#: the rank of each kind in a symbol's tick on replay; kinds of one rank keep their recorded order
REPLAY_RANK: dict[str, int] = {"history": 0, "trades": 1, "candle": 2, "book_snapshot": 3, "book_delta": 3,
                               "book_checkpoint": 3, "book": 4, "book_ref": 4, "no_book": 4}
