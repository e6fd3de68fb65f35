"""Hand-built books, bars and trades for the feature tests."""

from __future__ import annotations

import numpy as np

from backend.venues.orderbook import OrderBook
from backend.venues.types import CANDLE_MS, Candle, Trade

T0 = 1_700_000_040_000  # a minute boundary (ms)
assert T0 % CANDLE_MS == 0


def book(bids, asks, ts_ms: int = T0, symbol: str = "BTCUSDT") -> OrderBook:
    return OrderBook.from_levels(symbol, bids, asks, ts_ms, recv_ms=ts_ms)


def random_bars(n: int, *, start_ms: int, p0: float = 100.0, seed: int = 0, vol: float = 1e-3) -> list[Candle]:
    """A geometric random walk of n contiguous closed 1-minute bars."""
    rng = np.random.default_rng(seed)
    close = p0 * np.exp(np.cumsum(rng.normal(0.0, vol, n)))
    open_ = np.r_[p0, close[:-1]]
    wick = np.abs(rng.normal(0.0, vol / 2, (2, n)))
    high = np.maximum(open_, close) * (1 + wick[0])
    low = np.minimum(open_, close) * (1 - wick[1])
    volume = rng.lognormal(2.0, 0.7, n)
    return [
        Candle(start_ms + i * CANDLE_MS, float(open_[i]), float(high[i]), float(low[i]), float(close[i]), float(volume[i]))
        for i in range(n)
    ]


def scale_bars(bars: list[Candle], factor: float) -> list[Candle]:
    return [Candle(b.start_ms, b.open * factor, b.high * factor, b.low * factor, b.close * factor, b.volume, b.turnover * factor) for b in bars]


def bars_array(bars: list[Candle]) -> np.ndarray:
    """(5, n) rows open, high, low, close, volume."""
    return np.array([[b.open, b.high, b.low, b.close, b.volume] for b in bars]).T.copy()


def random_book(rng: np.random.Generator, mid: float, ts_ms: int, symbol: str = "BTCUSDT", levels: int = 50, tick_bps: float = 1.0) -> OrderBook:
    """A valid book around ``mid`` with prices on a grid of ``tick_bps``."""
    tick = mid * tick_bps * 1e-4
    half = rng.integers(1, 4)
    gaps_b = rng.integers(1, 4, levels)
    gaps_a = rng.integers(1, 4, levels)
    bid = mid - tick * (half + np.cumsum(gaps_b) - gaps_b[0])
    ask = mid + tick * (half + np.cumsum(gaps_a) - gaps_a[0])
    return OrderBook(symbol, bid, rng.lognormal(0, 1, levels), ask, rng.lognormal(0, 1, levels), ts_ms, ts_ms)


def trades_between(rng: np.random.Generator, t_from: int, t_to: int, mid: float, n: int) -> list[Trade]:
    ts = np.sort(rng.integers(t_from, t_to, n))
    return [Trade(int(t), float(mid * (1 + rng.normal(0, 1e-4))), float(rng.lognormal(0, 1)), int(rng.choice((-1, 1)))) for t in ts]
