"""What the web app asks a running bot, and the answers it builds from it.

The bot hands ``create_app`` a ``StatusProvider``: one cheap, synchronous call
(``status()``, run on the event loop, no I/O) returning a ``BotStatus``. Everything else
the Collector panel shows is read from the bot's ``Metrics`` registry, the same object the
run summary and ``/metrics`` read (DESIGN.md §6.2).

* ``NoBot``: the standalone app (``python -m backend.web``): no collector runs.
* ``MetricsStatus``: a provider built from a ``Metrics`` object, the bot's symbols and a
  callable giving the source's state; the bot can use it as is. It also publishes
  ``lobbot_symbol_venue{symbol,venue} 1`` for every symbol it reports, so any per-symbol
  series of ``/metrics`` can be split by venue with a join on ``symbol``.

Every symbol carries its venue (``venue_of`` the source: ``bybit``, ``binance``, ``sim``,
``replay``), and the collector view groups the venue-labelled counters per venue.

``health(status)`` and ``collector_view(metrics, status)`` are pure functions giving the
JSON of ``GET /health`` and ``GET /api/collector``.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Literal, Protocol, Sequence

SourceState = Literal["no_bot", "starting", "live", "reconnecting", "down", "stopped"]


@dataclass(frozen=True)
class SymbolStatus:
    """One symbol: ``book_age_s`` (seconds since the last accepted book, exchange time;
    ``None`` before the first), ``samples`` collected, ``last_sample_ms`` (event time, ms since
    epoch; ``None`` before the first), ``venue`` it is collected from."""

    symbol: str
    book_age_s: float | None
    samples: int
    last_sample_ms: int | None
    venue: str | None = None


@dataclass(frozen=True)
class BotStatus:
    """A snapshot of the bot: ``running`` false means no bot (standalone app).

    ``max_book_age_s``: a book older than this is not fresh (the bot's staleness limit);
    ``started_ms``: when the bot started (ms since epoch); ``warmup``: ticks done / needed
    before the first sample, ``None`` once warm.
    """

    running: bool
    source: str | None = None
    source_state: SourceState = "no_bot"
    symbols: tuple[SymbolStatus, ...] = ()
    max_book_age_s: float = 15.0
    started_ms: int | None = None
    warmup: tuple[int, int] | None = None
    detail: str = ""


class Snapshot:
    """Every sample of a ``Metrics`` registry, collected once; read like ``Metrics``.

    The registry's own readers collect the whole registry per call; the Collector panel
    reads a few dozen values each second, on the bot's loop, so it reads one snapshot.
    """

    def __init__(self, metrics):
        self._by_name: dict[str, list[tuple[dict, float]]] = {}
        for family in metrics.registry.collect():
            for smp in family.samples:
                self._by_name.setdefault(smp.name, []).append((smp.labels, smp.value))

    def samples(self, name: str):
        """Every (labels, value) of one exposed sample name in this snapshot."""
        return iter(self._by_name.get(name, ()))

    def get(self, name: str, **labels: str) -> float | None:
        """Value of one sample with exactly these labels, or None when absent."""
        for got, v in self._by_name.get(name, ()):
            if got == labels:
                return float(v)
        return None

    def value(self, name: str, **labels: str) -> float:
        """Value of one sample with exactly these labels, 0.0 when absent."""
        v = self.get(name, **labels)
        return 0.0 if v is None else v

    def by_label(self, name: str, label: str, **where: str) -> dict[str, float]:
        """Sum of a sample grouped by one label, over samples matching ``where``."""
        out: dict[str, float] = {}
        for labels, v in self._by_name.get(name, ()):
            if v and all(labels.get(k) == w for k, w in where.items()):
                key = labels.get(label, "")
                out[key] = out.get(key, 0.0) + v
        return out


class StatusProvider(Protocol):
    """Anything with ``status() -> BotStatus``; called on the event loop, must not block."""

    def status(self) -> BotStatus:
        """The bot as the web app shows it now."""
        ...


class NoBot:
    """The provider of the standalone app: no collector is running."""

    def status(self) -> BotStatus:
        """A status saying no bot runs in this process (standalone web app)."""
        return BotStatus(running=False, detail="no bot in this process (python -m backend.web)")


@dataclass
class MetricsStatus:
    """A provider reading per-symbol state from a bot's ``Metrics``.

    ``source_state`` is called on every status (e.g. ``lambda: "live"``); ``warmup``, when
    given, returns ``(ticks_done, ticks_needed)`` or ``None`` once warm.
    """

    metrics: object
    symbols: Sequence[str]
    source: str
    source_state: Callable[[], SourceState]
    max_book_age_s: float = 15.0
    warmup: Callable[[], tuple[int, int] | None] | None = None
    #: symbol -> seconds since its last book computed at call time (the bot's ``book_age_s``): a
    #: stuck tick does not update the gauge, so /health takes the larger of the two
    live_age: Callable[[str], float | None] | None = None
    started_ms: int = field(default_factory=lambda: int(time.time() * 1000))
    venue: str = ""
    _published: set = field(default_factory=set, init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.venue:
            from backend.venues.factory import venue_of  # the bot has it imported already

            self.venue = venue_of(self.source)
        self._publish()

    def _publish(self) -> None:
        """``lobbot_symbol_venue{symbol,venue} 1`` for the current symbols (``--symbols all`` changes them)."""
        gauge = getattr(self.metrics, "symbol_venue", None)
        if gauge is None:
            return
        current = set(self.symbols)
        for s in current - self._published:
            gauge.labels(symbol=s, venue=self.venue).set(1)
        for s in self._published - current:
            gauge.remove(s, self.venue)
        self._published = current

    def status(self, snapshot: Snapshot | None = None) -> BotStatus:
        """The bot's status read from its registry and source state."""
        if len(self._published) != len(self.symbols) or not self._published.issuperset(self.symbols):
            self._publish()
        m = snapshot if snapshot is not None else Snapshot(self.metrics)
        rows = []
        for s in self.symbols:
            age = m.get("lobbot_book_age_seconds", symbol=s)
            now_age = self.live_age(s) if self.live_age is not None else None
            if now_age is not None and (age is None or math.isnan(age) or now_age > age):
                age = now_age
            last = m.get("lobbot_last_sample_timestamp_ms", symbol=s)
            rows.append(
                SymbolStatus(
                    s,
                    None if age is None or math.isnan(age) else float(age),
                    int(m.value("lobbot_samples_collected_total", symbol=s)),
                    int(last) if last else None,
                    self.venue,
                )
            )
        return BotStatus(
            running=True,
            source=self.source,
            source_state=self.source_state(),
            symbols=tuple(rows),
            max_book_age_s=self.max_book_age_s,
            started_ms=self.started_ms,
            warmup=self.warmup() if self.warmup else None,
        )


def _iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def health(status: BotStatus) -> tuple[int, dict]:
    """``(http_status, body)`` of ``GET /health`` (DESIGN.md §6.3).

    With a bot: "ok" when every symbol has a fresh book, "degraded" when some do, "down"
    (HTTP 503) when none does or the source is down. Without a bot (standalone app) the
    server itself is what is checked: "ok", ``"bot": false``, no symbols.
    """
    if not status.running:
        return 200, {"status": "ok", "bot": False, "symbols": {}}
    fresh = [s.book_age_s is not None and s.book_age_s <= status.max_book_age_s for s in status.symbols]
    if status.source_state == "down" or not any(fresh):
        state = "down"
    elif all(fresh):
        state = "ok"
    else:
        state = "degraded"
    body = {
        "status": state,
        "bot": True,
        "source": status.source,
        "source_state": status.source_state,
        "symbols": {
            s.symbol: {"book_age_s": s.book_age_s, "samples": s.samples, "last_sample": _iso(s.last_sample_ms)}
            for s in status.symbols
        },
    }
    return (503 if state == "down" else 200), body


def histogram_quantile(buckets: Sequence[tuple[float, float]], q: float) -> float | None:
    """Upper bound of quantile ``q`` from cumulative ``(le, count)`` buckets (Prometheus style).

    Returns the smallest bucket bound whose cumulative count reaches ``q`` of the total,
    ``None`` without observations (``inf`` when it lies in the overflow bucket).
    """
    buckets = sorted(buckets)
    if not buckets or buckets[-1][1] <= 0:
        return None
    target = q * buckets[-1][1]
    for le, count in buckets:
        if count >= target:
            return le
    return math.inf


def _histogram(metrics, name: str) -> dict:
    buckets, total, n = [], 0.0, 0.0
    for labels, v in metrics.samples(f"{name}_bucket"):
        buckets.append((float(labels["le"]), v))
    total = metrics.value(f"{name}_sum")
    n = metrics.value(f"{name}_count")
    p99 = histogram_quantile(buckets, 0.99)
    p50 = histogram_quantile(buckets, 0.5)
    fix = lambda x: None if x is None or math.isinf(x) else x  # noqa: E731
    return {"count": int(n), "mean_s": (total / n) if n else None, "p50_le_s": fix(p50), "p99_le_s": fix(p99)}


def collector_view(metrics, status: BotStatus, now_ms: int | None = None) -> dict:
    """The JSON of ``GET /api/collector``: the status plus counts read from ``metrics``.

    Per symbol: book age, samples, last sample, skipped and rejected by reason. Overall:
    loop lag (mean, p50/p99 bucket bounds), flushes, spool and buffer bytes, clock offset
    per venue, reconnects per venue, ticks and overruns, venue faults by reason.
    """
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    metrics = metrics if isinstance(metrics, Snapshot) else Snapshot(metrics)
    symbols = []
    for s in status.symbols:
        symbols.append(
            {
                "symbol": s.symbol,
                "book_age_s": s.book_age_s,
                "fresh": s.book_age_s is not None and s.book_age_s <= status.max_book_age_s,
                "samples": s.samples,
                "last_sample": _iso(s.last_sample_ms),
                "skipped": metrics.by_label("lobbot_samples_skipped_total", "reason", symbol=s.symbol),
                "rejected": metrics.by_label("lobbot_books_rejected_total", "reason", symbol=s.symbol),
                "venue": s.venue,
            }
        )
    code, h = health(status)
    return {
        "time": _iso(now_ms),
        "bot": status.running,
        "health": h["status"],
        "source": status.source,
        "source_state": status.source_state,
        "detail": status.detail,
        "started": _iso(status.started_ms),
        "warmup": list(status.warmup) if status.warmup else None,
        "max_book_age_s": status.max_book_age_s,
        "symbols": symbols,
        "ticks": int(metrics.value("lobbot_ticks_total")),
        "tick_overruns": int(metrics.value("lobbot_tick_overruns_total")),
        "loop_lag": _histogram(metrics, "lobbot_loop_lag_seconds"),
        "flush": _histogram(metrics, "lobbot_flush_seconds"),
        "spool_bytes": metrics.value("lobbot_spool_bytes"),
        "buffer_bytes": metrics.value("lobbot_buffer_bytes"),
        "rows_flushed": metrics.by_label("lobbot_rows_flushed_total", "stream"),
        "clock_offset_s": {labels.get("venue", ""): v for labels, v in metrics.samples("lobbot_exchange_clock_offset_seconds")},
        "reconnects": metrics.by_label("lobbot_ws_reconnects_total", "venue"),
        "venue_faults": metrics.by_label("lobbot_venue_faults_total", "reason"),
        "venues": venues_view(metrics, status),
    }


def venues_view(metrics, status: BotStatus) -> dict[str, dict]:
    """Per venue: its symbols and its venue-labelled counters (reconnects, resyncs, retries,
    faults by reason, clock offset, bans). Venues are those of the symbols plus any seen in
    the counters; the panel draws one group of rows per venue."""
    metrics = metrics if isinstance(metrics, Snapshot) else Snapshot(metrics)
    names: list[str] = []
    for s in status.symbols:
        if s.venue and s.venue not in names:
            names.append(s.venue)
    for name in ("lobbot_ws_reconnects_total", "lobbot_venue_faults_total", "lobbot_exchange_clock_offset_seconds"):
        for labels, _ in metrics.samples(name):
            v = labels.get("venue")
            if v and v not in names:
                names.append(v)
    out = {}
    for v in names:
        offset = metrics.get("lobbot_exchange_clock_offset_seconds", venue=v)
        out[v] = {
            "symbols": [s.symbol for s in status.symbols if s.venue == v],
            "reconnects": int(metrics.value("lobbot_ws_reconnects_total", venue=v)),
            "resyncs": int(metrics.value("lobbot_ws_resyncs_total", venue=v)),
            "retries": int(metrics.value("lobbot_venue_retries_total", venue=v)),
            "bans": int(metrics.value("lobbot_venue_bans_total", venue=v)),
            "faults": {k: int(n) for k, n in metrics.by_label("lobbot_venue_faults_total", "reason", venue=v).items()},
            "clock_offset_s": offset,
        }
    return out
