"""One registry of everything the bot counts: ``Metrics``.

Every rejected book, skipped sample, venue fault, flush and reconnect is counted here
and nowhere else (DESIGN.md §6.2); the run summary, the ``MLDataCollector statistics``
line, ``GET /metrics`` and the web page all read from the same object.

The registry is prometheus-client's ``CollectorRegistry``: one per ``Metrics`` instance,
so two bots in one process (tests) never share counts. Metric names carry the
``lobbot_`` prefix and are the ones DESIGN.md §6.3 lists; each has one ``# HELP`` line.

Reading values back (``value``, ``by_label``) walks the registry's samples; it is meant
for summaries and tests, not for the hot path.
"""

from __future__ import annotations

from collections import Counter as _Tally
from typing import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["Metrics", "CONTENT_TYPE_LATEST"]

# Loop lag and flush time: from 1 ms (a healthy tick) to 10 s (a stalled disk).
_LAG_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
_FLUSH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    """The counters, gauges and histograms of one bot (or one tool run).

    Attributes are prometheus-client metric objects; increment them directly, e.g.
    ``metrics.books_rejected.labels(symbol="BTCUSDT", reason="stale").inc()``.
    Label values are free strings; reasons are short snake_case words
    (``stale``, ``crossed``, ``no_book``, ``warming_up``, ``http_429`` ...).
    """

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        # samples and books
        self.samples_collected = Counter("lobbot_samples_collected", "Samples handed to the collector, per symbol.",
                                         ["symbol"], registry=r)
        self.samples_skipped = Counter("lobbot_samples_skipped", "Samples not taken at a collection tick, by reason.",
                                       ["symbol", "reason"], registry=r)
        self.books_rejected = Counter("lobbot_books_rejected", "Books rejected by validation, by reason.",
                                      ["symbol", "reason"], registry=r)
        self.book_age = Gauge("lobbot_book_age_seconds", "Age of the last accepted book in exchange time.",
                              ["symbol"], registry=r)
        self.last_sample_ms = Gauge("lobbot_last_sample_timestamp_ms", "Event time of the last sample taken, ms since epoch.",
                                    ["symbol"], registry=r)
        self.symbol_venue = Gauge("lobbot_symbol_venue", "1 per symbol collected, labelled with its venue (bybit, binance, "
                                  "sim, replay): join per-symbol series on symbol to split them by venue.",
                                  ["symbol", "venue"], registry=r)
        # the loop
        self.symbol_changes = Counter("lobbot_symbol_changes", "Symbols that joined (listed) or left (delisted) "
                                      "the run after start, per venue.", ["venue", "change"], registry=r)
        self.ticks = Counter("lobbot_ticks", "Ticks run by the fixed-rate scheduler.", registry=r)
        self.tick_overruns = Counter("lobbot_tick_overruns", "Ticks that ended after the next tick was due.", registry=r)
        self.loop_lag = Histogram("lobbot_loop_lag_seconds", "Event-loop lag: how late a scheduled wake-up ran.",
                                  buckets=_LAG_BUCKETS, registry=r)
        # venues
        self.venue_faults = Counter("lobbot_venue_faults", "Faults seen talking to a venue, by kind.",
                                    ["venue", "reason"], registry=r)
        self.ws_reconnects = Counter("lobbot_ws_reconnects", "WebSocket reconnects.", ["venue"], registry=r)
        self.ws_resyncs = Counter("lobbot_ws_resyncs", "Books discarded and resubscribed for a fresh snapshot.",
                                  ["venue"], registry=r)
        self.ws_messages = Counter("lobbot_ws_messages", "WebSocket book messages by outcome (book_applied, "
                                   "book_reset, book_gap, ...) and pongs.", ["venue", "kind"], registry=r)
        self.venue_retries = Counter("lobbot_venue_retries", "REST requests sent again after a transient fault.",
                                     ["venue"], registry=r)
        self.clock_offset = Gauge("lobbot_exchange_clock_offset_seconds",
                                  "Exchange clock minus local clock, estimated from server times.", ["venue"], registry=r)
        self.venue_bans = Counter("lobbot_venue_bans", "IP bans (HTTP 403) that stopped all REST traffic to a venue.",
                                  ["venue"], registry=r)
        self.venue_banned_until = Gauge("lobbot_venue_banned_until_seconds",
                                        "End of the venue's current IP ban, Unix seconds (0: not banned).", ["venue"],
                                        registry=r)
        self.ws_disconnects = Counter("lobbot_ws_disconnects", "WebSocket disconnects by reason.", ["venue", "reason"],
                                      registry=r)
        # the collector
        self.rows_flushed = Counter("lobbot_rows_flushed", "Rows written to every enabled sink, per stream.",
                                    ["stream"], registry=r)
        self.files_written = Counter("lobbot_files_written", "Files written by flushes, per stream and sink.",
                                     ["stream", "sink"], registry=r)
        self.flush_failures = Counter("lobbot_flush_failures", "Flushes that failed and were kept for a retry.",
                                      ["stream", "reason"], registry=r)
        self.flush_seconds = Histogram("lobbot_flush_seconds", "Time to write one flush to its sinks.",
                                       buckets=_FLUSH_BUCKETS, registry=r)
        self.rows_recovered = Counter("lobbot_rows_recovered", "Rows recovered from the spool at start, per stream.",
                                      ["stream"], registry=r)
        self.spool_bytes = Gauge("lobbot_spool_bytes", "Bytes in the write-ahead spool.", registry=r)
        self.spool_damaged_records = Counter("lobbot_spool_damaged_records",
                                             "Spool records skipped as damaged at recovery (their rows are lost).",
                                             registry=r)
        self.spool_damaged_bytes = Counter("lobbot_spool_damaged_bytes", "Spool bytes skipped as damaged at recovery.",
                                           registry=r)
        self.rows_dropped = Counter("lobbot_rows_dropped", "Rows dropped past the memory cap while nothing could be "
                                    "persisted, per stream and reason.", ["stream", "reason"], registry=r)
        self.persist_errors = Counter("lobbot_persist_errors", "Writes of the collect path (spool, sinks) that failed, "
                                      "by where and error.", ["where", "error"], registry=r)
        self.persisting = Gauge("lobbot_persisting", "1 while the collector can write its spool, 0 while it cannot.",
                                registry=r)
        self.buffer_bytes = Gauge("lobbot_buffer_bytes", "Bytes held in collector buffers and queued flushes.", registry=r)
        self.rows_buffered = Gauge("lobbot_rows_buffered", "Rows buffered in memory, not yet on disk, per stream.",
                                   ["stream"], registry=r)

    # -- reading back -------------------------------------------------------------
    def value(self, name: str, **labels: str) -> float:
        """Current value of one sample, 0.0 when it was never set.

        ``name`` is the exposed sample name, e.g. ``lobbot_books_rejected_total``.
        """
        v = self.registry.get_sample_value(name, labels)
        return 0.0 if v is None else float(v)

    def samples(self, name: str) -> Iterable[tuple[dict[str, str], float]]:
        """Every (labels, value) of the exposed sample ``name``."""
        for family in self.registry.collect():
            for s in family.samples:
                if s.name == name:
                    yield s.labels, s.value

    def by_label(self, name: str, label: str, **where: str) -> dict[str, float]:
        """Sum of sample ``name`` grouped by one label, over samples matching ``where``.

        E.g. ``by_label("lobbot_books_rejected_total", "reason")`` -> ``{"stale": 3.0}``.
        Zero entries are left out.
        """
        out: _Tally = _Tally()
        for labels, v in self.samples(name):
            if v and all(labels.get(k) == w for k, w in where.items()):
                out[labels.get(label, "")] += v
        return dict(out)

    def total(self, name: str, **where: str) -> float:
        """Sum of sample ``name`` over all label values matching ``where``."""
        return float(sum(v for labels, v in self.samples(name) if all(labels.get(k) == w for k, w in where.items())))

    def exposition(self) -> bytes:
        """The Prometheus text format of the whole registry (``GET /metrics``)."""
        return generate_latest(self.registry)


def format_reasons(counts: dict[str, float]) -> str:
    """``{"stale": 3, "crossed": 1}`` -> ``"crossed=1, stale=3"``; ``"none"`` when empty."""
    if not counts:
        return "none"
    return ", ".join(f"{k}={int(v)}" for k, v in sorted(counts.items()))
