"""``TickEngine.step``: one tick of the bot as a pure function of the books and the clock.

Given each symbol's ``MarketSnapshot`` and the local time, a step

1. hands the new trades and closed bars to the ``FeaturePipeline`` (and returns the
   bars, to be stored);
2. validates each book once (``BookValidator``: empty, one-sided, crossed, locked,
   bad price/size, unsorted, non-finite mid/spread/notional, stale, future, out of
   order) in exchange time (local time plus the snapshot's ``clock_offset_ms``; a
   ``live`` WebSocket book skips the age test), counting every rejection in
   ``lobbot_books_rejected_total{symbol,reason}`` and setting
   ``lobbot_book_age_seconds{symbol}`` (exchange time minus book time) for each accepted book;
3. returns one price-tape row per accepted book;
4. updates the 110 features from the accepted books and, on a collection tick,
   says which samples to take (warm symbols) and which to skip with what reason:
   ``<source reason>`` or ``no_book`` (no book arrived), ``book_<invalid reason>``
   (rejected), ``warming_up`` (features not ready).

No I/O, no awaits, no clock reads: the caller (``engine/bot.py``) stores the output.
The state carried from tick to tick is the pipeline's history and the validator's
last accepted time per symbol, so the same inputs always give the same outputs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Mapping, NamedTuple, Sequence

import numpy as np

from backend.metrics import Metrics
from backend.ml_engine.features import FeaturePipeline
from backend.venues.orderbook import BookInvalid, BookValidator, OrderBook
from backend.venues.types import Candle, MarketSnapshot

__all__ = ["Sample", "TapeRow", "TickEngine", "TickOutput"]

log = logging.getLogger(__name__)


class TapeRow(NamedTuple):
    """One price-tape row: book exchange time (ms), mid, best bid, best ask."""

    ts_ms: int
    mid: float
    bid: float
    ask: float


class Sample(NamedTuple):
    """One training sample: float32 ``(110,)`` features in schema order, book time (ms), mid price."""

    symbol: str
    features: np.ndarray
    ts_ms: int
    mid: float


@dataclass
class TickOutput:
    """What one tick produced, per symbol in the engine's symbol order.

    ``candles``: newly closed bars to store (symbols with none are absent);
    ``tape``: a row per accepted book; ``rejected``: why each rejected book was;
    ``samples`` / ``skips``: filled on collection ticks only (``(symbol, reason)`` skips).
    """

    candles: dict[str, list[Candle]] = field(default_factory=dict)
    tape: dict[str, TapeRow] = field(default_factory=dict)
    rejected: dict[str, BookInvalid] = field(default_factory=dict)
    samples: list[Sample] = field(default_factory=list)
    skips: list[tuple[str, str]] = field(default_factory=list)


class TickEngine:
    """Validation, price tape and features for a fixed list of symbols.

    ``max_age_ms`` / ``max_future_ms``: how far a book's exchange time may lie behind
    or ahead of the venue's current time (local time plus the snapshot's clock offset) (``Settings.max_book_age_s`` / ``max_clock_skew_s`` x 1000).
    ``metrics`` is the bot's registry (a new one when None).
    """

    def __init__(self, symbols: Sequence[str], *, book_depth: int = 50, max_age_ms: float = 15_000,
                 max_future_ms: float = 5_000, metrics: Metrics | None = None,
                 pipeline: FeaturePipeline | None = None):
        self.symbols = list(symbols)
        self.metrics = metrics if metrics is not None else Metrics()
        self.pipeline = pipeline if pipeline is not None else FeaturePipeline(self.symbols, book_depth=book_depth)
        self.validator = BookValidator(max_age_ms=max_age_ms, max_future_ms=max_future_ms)
        self._age = {s: self.metrics.book_age.labels(symbol=s) for s in self.symbols}

    def add_history(self, symbol: str, candles: Sequence[Candle]) -> None:
        """Back-filled closed bars of ``symbol`` (oldest first), before the first step."""
        self.pipeline.add_candles(symbol, candles)

    def step(self, snapshots: Mapping[str, MarketSnapshot], now_ms: int, collect: bool) -> TickOutput:
        """Run one tick at local time ``now_ms`` (ms since the epoch); ``collect`` marks a collection tick."""
        out = TickOutput()
        pipeline = self.pipeline
        books: dict[str, OrderBook] = {}
        for sym in self.symbols:
            snap = snapshots.get(sym)
            if snap is None:
                continue
            if snap.trades:
                pipeline.add_trades(sym, snap.trades)
            if snap.candles:
                pipeline.add_candles(sym, snap.candles)
                out.candles[sym] = snap.candles
            book = snap.book
            if book is None:
                if collect:
                    out.skips.append((sym, snap.reason or "no_book"))
                continue
            ex_now = now_ms + snap.clock_offset_ms  # the venue's clock, not ours
            reason = self.validator.check(book, ex_now, check_age=not snap.live)
            if reason is not None:
                self.metrics.books_rejected.labels(symbol=sym, reason=reason.value).inc()
                out.rejected[sym] = reason
                log.debug("%s: book rejected (%s)", sym, reason.value)
                if collect:
                    out.skips.append((sym, f"book_{reason.value}"))
                continue
            self._age[sym].set((ex_now - book.ts_ms) / 1000.0)
            books[sym] = book
            out.tape[sym] = TapeRow(book.ts_ms, book.mid, book.best_bid, book.best_ask)
        batch = pipeline.update(books)
        if collect:
            for i, sym in enumerate(batch.symbols):
                if not batch.warm[i]:
                    out.skips.append((sym, "warming_up"))
                    log.debug("%s: not collected, features warming up (%s)", sym, batch.not_warm.get(sym))
                    continue
                out.samples.append(Sample(sym, batch.features[i], int(batch.timestamps_ms[i]), float(batch.mid_prices[i])))
        return out
