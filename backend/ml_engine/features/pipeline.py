"""FeaturePipeline: (book, closed candles, trades) per symbol -> 110 features per tick.

The bot loop calls, per tick, ``add_candles``/``add_trades`` with what each source
delivered and then ``update`` with the valid books. ``update`` returns one row
per book in ``FEATURE_NAMES`` order plus an explicit warm-up flag per row:

* order-book features are computed for all books at once on stacked arrays;
* tick-history features (order flow, tick returns, EMAs, spread z-score) advance
  on every update for the symbols present;
* candle and indicator features at book time t use only bars closed at or before
  t; they are recomputed only for symbols whose set of such bars changed and are
  cached otherwise (bars that close after t wait for a later tick);
* a row is warm once its symbol has ``min_candles`` contiguous closed bars,
  ``TICKS_NEEDED`` books of tick history and 60 s of trade feed. Non-warm rows may
  hold NaN and say why in ``not_warm``; warm rows are always finite.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from backend.venues.orderbook import OrderBook
from backend.venues.types import Candle, Trade
from backend.ml_engine.feature_store.feature_schema import (
    CANDLE_FEATURES,
    FEATURE_COUNT,
    FEATURE_INDEX,
    FEATURE_NAMES,
    INDICATOR_FEATURES,
)
from backend.ml_engine.features.book_arrays import stack_books
from backend.ml_engine.features.candle_features import CANDLE_LOOKBACK, candle_features
from backend.ml_engine.features.candle_history import CandleHistory
from backend.ml_engine.features.indicator_features import indicator_features
from backend.ml_engine.features.orderbook_features import snapshot_features
from backend.ml_engine.features.tick_state import TICKS_NEEDED, TickState
from backend.ml_engine.features.trade_window import TRADE_WINDOW_MS, TradeWindow
from backend.symbols import validate_symbol

log = logging.getLogger(__name__)

# Closed bars a symbol needs before its candle/indicator features count, and the
# window they are computed on. The slowest recursive smoothing is EMA(50): after
# 300 bars its seed weighs (49/51)^250 ~ 5e-5 of one price move; Wilder's 14-bar
# RSI/ATR/ADX seeds weigh (13/14)^270 ~ 2e-9. The sources back-fill 400 bars, so a
# symbol is warm on candles from its first tick, with room for a few missing bars.
MIN_CANDLES = 300
_TRADE_COLS = [FEATURE_INDEX[n] for n in ("ob_trade_imbalance", "ob_trade_intensity_log", "ob_trade_vwap_dev_bps", "ob_trade_last_side")]
_CANDLE_START = FEATURE_INDEX[CANDLE_FEATURES[0]]
_N_SLOW = len(CANDLE_FEATURES) + len(INDICATOR_FEATURES)
assert FEATURE_NAMES[_CANDLE_START:] == CANDLE_FEATURES + INDICATOR_FEATURES


@dataclass
class FeatureBatch:
    """One tick's features, one row per book passed to ``update``."""

    symbols: list[str]
    features: np.ndarray  # float32 (n, 110) in FEATURE_NAMES order
    warm: np.ndarray  # bool (n,)
    not_warm: dict[str, str]  # symbol -> why its row is not usable yet
    timestamps_ms: np.ndarray  # int64 (n,), book.ts_ms
    mid_prices: np.ndarray  # float64 (n,)
    feature_names: tuple[str, ...] = field(default=FEATURE_NAMES, repr=False)

    def __len__(self) -> int:
        return len(self.symbols)

    def row(self, symbol: str) -> np.ndarray:
        """The (110,) float32 feature row of ``symbol``; ValueError if it is not in the batch."""
        return self.features[self.symbols.index(symbol)]


class FeaturePipeline:
    """Computes the 110 features of every symbol, one ``update`` per tick (pure, no I/O).

    Args:
        symbols: the symbols it serves; each a plain ticker (``backend.symbols``).
        book_depth: levels kept per side of every book (``ob_*_levels_filled`` divide
            by it).
        min_candles: contiguous closed 1-minute bars a symbol needs before its
            candle and indicator features count (the window they run on).
        max_tick_gap_ms: see ``__init__``.

    Raises:
        ValueError: duplicate symbols, ``book_depth < 1`` or ``min_candles`` shorter
            than the longest candle feature (``CANDLE_LOOKBACK``).
        backend.symbols.InvalidSymbolError: a symbol is not a plain ticker.

    Counters ``rejected_candles``, ``ignored_candles`` and ``rejected_trades`` grow
    as bad input is skipped; ``stats()`` reports them.
    """

    def __init__(
        self,
        symbols: Sequence[str],
        book_depth: int = 50,
        *,
        min_candles: int = MIN_CANDLES,
        max_tick_gap_ms: int | None = 60_000,
    ):
        """``max_tick_gap_ms``: a book arriving later than this after the symbol's previous
        one restarts its tick history (None: never)."""
        self.symbols = [validate_symbol(s) for s in symbols]
        if len(set(self.symbols)) != len(self.symbols):
            dup = sorted({s for s in self.symbols if self.symbols.count(s) > 1})
            raise ValueError(f"duplicate symbols: {', '.join(dup)}")
        if book_depth < 1:
            raise ValueError(f"book_depth must be >= 1, got {book_depth}")
        if min_candles < CANDLE_LOOKBACK:
            raise ValueError(f"min_candles must be >= {CANDLE_LOOKBACK} (the longest candle feature), got {min_candles}")
        self.book_depth = int(book_depth)
        self.min_candles = int(min_candles)
        self._index = {s: i for i, s in enumerate(self.symbols)}
        n = len(self.symbols)
        self._ticks = TickState(n, max_tick_gap_ms)
        self._trades = [TradeWindow() for _ in range(n)]
        self._candles = [CandleHistory() for _ in range(n)]
        self._slow = np.full((n, _N_SLOW), np.nan)  # cached candle + indicator features
        self._slow_t = np.full(n, np.iinfo(np.int64).min, dtype=np.int64)  # book time of that cache
        self._next_close = np.full(n, np.inf)  # close time of the first bar not in the cache
        self._avail = np.zeros(n, dtype=np.int64)  # contiguous closed bars behind the cache
        self._first_ts = np.full(n, -1, dtype=np.int64)  # first book time: trade feed coverage
        self._status: dict[str, str | None] = {s: "no book yet" for s in self.symbols}
        self.rejected_candles = 0
        self.ignored_candles = 0
        self.rejected_trades = 0

    # --- inputs ----------------------------------------------------------------------------
    def _idx(self, symbol: str) -> int:
        try:
            return self._index[symbol]
        except KeyError:
            raise ValueError(f"unknown symbol {symbol!r}: this pipeline was built for {len(self.symbols)} symbols") from None

    def add_candles(self, symbol: str, candles: Sequence[Candle]) -> None:
        """Closed 1-minute bars, oldest first; duplicates and older bars are ignored."""
        i = self._idx(symbol)
        hist = self._candles[i]
        _, ignored, rejected = hist.add(candles)
        self.ignored_candles += ignored
        if rejected:
            self.rejected_candles += len(rejected)
            log.warning("%s: %d bad candle(s) skipped: %s", symbol, len(rejected), "; ".join(rejected[:3]))
        # the first bar not yet behind the cache may be one that just arrived
        self._next_close[i] = min(self._next_close[i], hist.close_ms(self._cached_count(i)))

    def _cached_count(self, i: int) -> int:
        hist = self._candles[i]
        return hist.closed_count(int(self._slow_t[i])) if self._slow_t[i] > np.iinfo(np.int64).min else hist.dropped

    def add_trades(self, symbol: str, trades: Sequence[Trade]) -> None:
        """Trades since the last tick (any order); those after a book's time wait for later books."""
        i = self._idx(symbol)
        rejected = self._trades[i].add(trades)
        if rejected:
            self.rejected_trades += len(rejected)
            log.warning("%s: %d bad trade(s) skipped: %s", symbol, len(rejected), "; ".join(rejected[:3]))

    # --- one tick --------------------------------------------------------------------------
    def update(self, books: Mapping[str, OrderBook]) -> FeatureBatch:
        """One tick: the features of every given book, rows in ``books``' order.

        Args:
            books: symbol -> its current, already validated book (at least one level
                per side). Symbols absent this tick keep their history untouched.

        Returns:
            A ``FeatureBatch`` with (n, 110) float32 features; rows flagged not warm
            may hold NaN and say why in ``not_warm``.

        Raises:
            ValueError: a symbol this pipeline was not built for.
        """
        syms = list(books)
        n = len(syms)
        if n == 0:
            return FeatureBatch([], np.empty((0, FEATURE_COUNT), np.float32), np.zeros(0, bool), {}, np.zeros(0, np.int64), np.zeros(0))
        idx = np.fromiter((self._idx(s) for s in syms), dtype=np.int64, count=n)
        blist = list(books.values())
        ts = np.fromiter((b.ts_ms for b in blist), dtype=np.int64, count=n)
        arr = stack_books(blist, self.book_depth)
        mid = (arr.bid_px[:, 0] + arr.ask_px[:, 0]) * 0.5

        out = np.empty((n, FEATURE_COUNT))
        snap = snapshot_features(arr, self.book_depth)
        tick, n_books = self._ticks.update(
            idx, ts, arr, mid, snap["ob_spread_bps"], snap["ob_imbalance_1"], snap["ob_microprice_dev_bps"]
        )
        for part in (snap, tick):
            for name, values in part.items():
                out[:, FEATURE_INDEX[name]] = values

        first = self._first_ts[idx]
        first = np.where(first < 0, ts, first)
        self._first_ts[idx] = first
        out[:, _TRADE_COLS] = self._trade_features(idx, ts, mid)

        self._refresh_slow(idx, ts)
        out[:, _CANDLE_START:] = self._slow[idx]

        features = out.astype(np.float32)
        finite = np.isfinite(features).all(axis=1)
        tick_ok = n_books >= TICKS_NEEDED
        candle_ok = self._avail[idx] >= self.min_candles
        trade_ok = ts - first >= TRADE_WINDOW_MS
        warm = tick_ok & candle_ok & trade_ok & finite
        not_warm: dict[str, str] = {}
        for i in np.flatnonzero(~warm):
            reasons = []
            if not candle_ok[i]:
                reasons.append(f"candles {self._avail[idx[i]]}/{self.min_candles}")
            if not tick_ok[i]:
                if n_books[i] == 1:
                    reasons.append("order-flow needs a previous book")
                else:
                    reasons.append(f"tick history {n_books[i]}/{TICKS_NEEDED} books")
            if not trade_ok[i]:
                reasons.append(f"trade window {(ts[i] - first[i]) // 1000}/{TRADE_WINDOW_MS // 1000} s")
            if not reasons:
                # should not happen: a warm-looking row with NaN/inf is held back, loudly
                bad = [FEATURE_NAMES[j] for j in np.flatnonzero(~np.isfinite(features[i]))]
                reasons.append(f"non-finite features: {', '.join(bad[:5])}")
                log.error("%s: non-finite features at %d: %s", syms[i], ts[i], ", ".join(bad))
            not_warm[syms[i]] = "; ".join(reasons)
        for i, s in enumerate(syms):
            self._status[s] = not_warm.get(s)
        return FeatureBatch(syms, features, warm, not_warm, ts, mid)

    def _trade_features(self, idx: np.ndarray, ts: np.ndarray, mid: np.ndarray) -> np.ndarray:
        res = np.zeros((idx.size, 4))  # no trades in the window: balanced, none, at mid, no side
        trades = self._trades
        for i in range(idx.size):
            tw = trades[idx[i]]
            if tw.ts:
                t = int(ts[i])
                res[i] = tw.features(t, float(mid[i]))
                tw.prune(t - TRADE_WINDOW_MS)
        return res

    def _refresh_slow(self, idx: np.ndarray, ts: np.ndarray) -> None:
        """Recompute candle + indicator features where the bars closed by t changed."""
        due = (self._next_close[idx] <= ts) | (ts < self._slow_t[idx])
        if not due.any():
            return
        ready: list[tuple[int, int]] = []
        for i in np.flatnonzero(due):
            s, t = int(idx[i]), int(ts[i])
            hist = self._candles[s]
            k = hist.closed_count(t)
            self._slow_t[s] = t
            self._next_close[s] = hist.close_ms(k)
            avail = hist.available(k)
            if k - self.min_candles < hist.dropped:
                avail = min(avail, k - hist.dropped)  # bars trimmed away (time went backwards)
            self._avail[s] = avail
            if avail >= self.min_candles:
                ready.append((s, k))
            else:
                self._slow[s] = np.nan
        if not ready:
            return
        windows = np.stack([self._candles[s].window(k, self.min_candles) for s, k in ready])
        n_candle = len(CANDLE_FEATURES)
        slow = self._slow
        slow_rows = np.fromiter((s for s, _ in ready), dtype=np.int64, count=len(ready))
        slow[slow_rows, :n_candle] = candle_features(windows)
        for j, (s, k) in enumerate(ready):
            slow[s, n_candle:] = indicator_features(windows[j])
            self._candles[s].trim(k - 2 * self.min_candles)

    # --- status ----------------------------------------------------------------------------
    def is_warm(self, symbol: str) -> bool:
        """Whether the symbol's row in the latest update was usable."""
        self._idx(symbol)
        return self._status[symbol] is None

    def warmup_status(self, symbol: str) -> str | None:
        """Why the symbol's latest row was not usable, or None if it was."""
        self._idx(symbol)
        return self._status[symbol]

    def stats(self) -> dict[str, int]:
        """Counts of skipped or repaired input since start: rejected/ignored/filled
        candles, rejected trades and restarts of a symbol's tick history."""
        return {
            "rejected_candles": self.rejected_candles,
            "ignored_candles": self.ignored_candles,
            "filled_candles": sum(h.filled for h in self._candles),
            "rejected_trades": self.rejected_trades,
            "tick_history_restarts": self._ticks.restarts,
        }
