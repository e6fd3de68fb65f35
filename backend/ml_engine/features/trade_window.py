"""Recent trades of one symbol and their aggregates over the last 60 s before a time t.

Trades are kept sorted by time with running (prefix) sums, so the aggregates over
any window (t - 60 s, t] cost two binary searches. Trades stamped after t stay
stored for later ticks but never count at t.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from typing import Sequence

from backend.venues.types import Trade

TRADE_WINDOW_MS = 60_000


class TradeWindow:
    """Trades of one symbol sorted by time, with prefix sums of buy, sell and notional.

    Sizes are in base currency, prices in quote currency, times epoch ms. Late trades
    (older than the newest stored) are merged in order.
    """

    __slots__ = ("ts", "side", "cum_buy", "cum_sell", "cum_notional")

    def __init__(self) -> None:
        self.ts: list[int] = []
        self.side: list[int] = []
        # prefix sums with a leading 0: sum over trades [i, j) = cum[j] - cum[i]
        self.cum_buy: list[float] = [0.0]
        self.cum_sell: list[float] = [0.0]
        self.cum_notional: list[float] = [0.0]

    def __len__(self) -> int:
        return len(self.ts)

    def add(self, trades: Sequence[Trade]) -> list[str]:
        """Store valid trades; return a description of each one rejected.

        A trade is rejected (never raised) when its price or size is not a positive
        finite number or its side is not +1 (buy) or -1 (sell).
        """
        rejected: list[str] = []
        good: list[Trade] = []
        for t in trades:
            why = _invalid(t)
            if why:
                rejected.append(f"trade at {t.ts_ms}: {why}")
            else:
                good.append(t)
        if not good:
            return rejected
        good.sort(key=lambda t: t.ts_ms)
        if self.ts and good[0].ts_ms < self.ts[-1]:
            # late trades: re-append only the stored trades after the first late one
            cut = bisect_right(self.ts, good[0].ts_ms)
            good = sorted(self._as_trades(cut) + good, key=lambda t: t.ts_ms)
            del self.ts[cut:], self.side[cut:]
            del self.cum_buy[cut + 1 :], self.cum_sell[cut + 1 :], self.cum_notional[cut + 1 :]
        for t in good:
            self.ts.append(int(t.ts_ms))
            self.side.append(1 if t.side > 0 else -1)
            size = float(t.size)
            self.cum_buy.append(self.cum_buy[-1] + (size if t.side > 0 else 0.0))
            self.cum_sell.append(self.cum_sell[-1] + (size if t.side < 0 else 0.0))
            self.cum_notional.append(self.cum_notional[-1] + size * float(t.price))
        return rejected

    def _as_trades(self, start: int) -> list[Trade]:
        out = []
        for i in range(start, len(self.ts)):
            ts = self.ts[i]
            buy = self.cum_buy[i + 1] - self.cum_buy[i]
            sell = self.cum_sell[i + 1] - self.cum_sell[i]
            size = buy + sell
            price = (self.cum_notional[i + 1] - self.cum_notional[i]) / size
            out.append(Trade(ts, price, size, self.side[i]))
        return out

    def features(self, t_ms: int, mid: float) -> tuple[float, float, float, float]:
        """(imbalance, log1p(count), VWAP deviation in bps, last side) over (t - 60 s, t].

        ``mid`` is the book's mid price at ``t_ms``, the reference of the VWAP
        deviation. With no trades in the window the result is (0, 0, 0, 0).
        """
        hi = bisect_right(self.ts, t_ms)
        lo = bisect_right(self.ts, t_ms - TRADE_WINDOW_MS, 0, hi)
        count = hi - lo
        if count == 0:
            return 0.0, 0.0, 0.0, 0.0
        buy = self.cum_buy[hi] - self.cum_buy[lo]
        sell = self.cum_sell[hi] - self.cum_sell[lo]
        total = buy + sell
        vwap = (self.cum_notional[hi] - self.cum_notional[lo]) / total
        return (buy - sell) / total, math.log1p(count), (vwap - mid) / mid * 1e4, float(self.side[hi - 1])

    def prune(self, before_ms: int) -> None:
        """Forget trades at or before ``before_ms`` (no later window can reach them)."""
        cut = bisect_right(self.ts, before_ms)
        if cut > 256 and cut * 2 > len(self.ts):
            del self.ts[:cut], self.side[:cut]
            # rebase the prefix sums so they do not grow (and lose precision) forever
            for name in ("cum_buy", "cum_sell", "cum_notional"):
                cum = getattr(self, name)
                base = cum[cut]
                setattr(self, name, [x - base for x in cum[cut:]])


def _positive(x) -> bool:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return False
    return math.isfinite(v) and v > 0


def _invalid(t: Trade) -> str | None:
    if not _positive(t.price):
        return f"price {t.price!r} is not a positive finite number"
    if not _positive(t.size):
        return f"size {t.size!r} is not a positive finite number"
    if t.side not in (1, -1):
        return f"side {t.side!r} is not +1 (buy) or -1 (sell)"
    return None
