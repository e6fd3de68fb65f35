"""Closed 1-minute bars of one symbol, append-only, with the bars closed by a time t.

Bars are stored in numpy arrays (oldest first) so windows go to TA-Lib and the
vectorised candle features without copying. Indices handed out are absolute
(they survive trimming of old bars).

Gaps: a missing minute inside a short gap becomes a flat, zero-volume bar at the
previous close (what exchanges publish for a minute without trades), so "60 bars"
still means 60 minutes. A longer gap starts a new segment: features never span
it, and the symbol warms up again.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from typing import Sequence

import numpy as np

from backend.venues.types import CANDLE_MS, Candle

MAX_FILLED_GAP_BARS = 10
_FIELDS = ("open", "high", "low", "close", "volume")


class CandleHistory:
    """Closed 1-minute bars of one symbol in growable numpy arrays, oldest first.

    ``capacity`` is the initial number of bars allocated; storage doubles when full.
    ``add`` validates and appends bars, filling short gaps; ``closed_count``,
    ``available`` and ``window`` hand out (5, length) OHLCV windows by absolute index.
    Times are epoch milliseconds (UTC) of the bar start.
    """

    def __init__(self, capacity: int = 512):
        self.start = np.zeros(capacity, dtype=np.int64)
        self.ohlcv = np.zeros((5, capacity))  # rows: open, high, low, close, volume
        self.n = 0  # bars stored
        self.dropped = 0  # bars trimmed off the front; absolute index = dropped + local
        self.segments: list[int] = [0]  # absolute indices where a contiguous run starts
        self.filled = 0  # flat bars synthesised for missing minutes

    # --- writing -----------------------------------------------------------------------
    def add(self, candles: Sequence[Candle]) -> tuple[int, int, list[str]]:
        """Append newer bars; return (appended, ignored as duplicate/older, rejections).

        Bars must be oldest first. A bar is rejected (and described in the returned
        list, never raised) when a value is not a finite number, a price is not
        positive, the volume is negative, high/low do not bound open/close, or it is
        off the previous bar's 1-minute grid. A gap of at most ``MAX_FILLED_GAP_BARS``
        minutes is filled with flat zero-volume bars; a longer one starts a segment.
        """
        added = ignored = 0
        rejected: list[str] = []
        for c in candles:
            why = _invalid(c)
            if why:
                rejected.append(f"bar starting {c.start_ms}: {why}")
                continue
            start = int(c.start_ms)
            if self.n:
                last = int(self.start[self.n - 1])
                if start <= last:
                    ignored += 1
                    continue
                step, rem = divmod(start - last, CANDLE_MS)
                if rem:
                    rejected.append(f"bar starting {start}: not on the 1-minute grid of the previous bar ({last})")
                    continue
                if step - 1 > MAX_FILLED_GAP_BARS:
                    self.segments.append(self.dropped + self.n)
                else:
                    prev_close = float(self.ohlcv[3, self.n - 1])
                    for k in range(1, step):
                        self._append(last + k * CANDLE_MS, prev_close, prev_close, prev_close, prev_close, 0.0)
                        self.filled += 1
            self._append(start, float(c.open), float(c.high), float(c.low), float(c.close), float(c.volume))
            added += 1
        return added, ignored, rejected

    def _append(self, start: int, o: float, h: float, l: float, c: float, v: float) -> None:
        if self.n == self.start.size:
            self.start = np.concatenate([self.start, np.zeros_like(self.start)])
            self.ohlcv = np.concatenate([self.ohlcv, np.zeros_like(self.ohlcv)], axis=1)
        self.start[self.n] = start
        self.ohlcv[:, self.n] = (o, h, l, c, v)
        self.n += 1

    def trim(self, keep_from: int) -> None:
        """Drop bars with absolute index < ``keep_from`` (only when it frees a lot)."""
        cut = keep_from - self.dropped
        if cut < 512 or cut > self.n:
            return
        self.start = self.start[cut:].copy()
        self.ohlcv = self.ohlcv[:, cut:].copy()
        self.n -= cut
        self.dropped += cut

    # --- reading -----------------------------------------------------------------------
    @property
    def end(self) -> int:
        """Absolute index one past the newest stored bar."""
        return self.dropped + self.n

    def closed_count(self, t_ms: int) -> int:
        """Absolute count of bars with close time <= t (a bar still forming is excluded)."""
        local = int(np.searchsorted(self.start[: self.n], t_ms - CANDLE_MS, side="right"))
        return self.dropped + local

    def close_ms(self, abs_index: int) -> float:
        """Close time of bar ``abs_index``, or +inf if it is not stored yet."""
        local = abs_index - self.dropped
        if 0 <= local < self.n:
            return float(self.start[local] + CANDLE_MS)
        return math.inf

    def available(self, count: int) -> int:
        """Contiguous bars ending just before absolute index ``count``."""
        seg = self.segments[bisect_right(self.segments, count - 1) - 1] if count > 0 else 0
        return count - seg

    def window(self, count: int, length: int) -> np.ndarray:
        """(5, length) view of OHLCV for the ``length`` bars ending before ``count``."""
        hi = count - self.dropped
        return self.ohlcv[:, hi - length : hi]


def _invalid(c: Candle) -> str | None:
    vals = {}
    for name in _FIELDS:
        try:
            vals[name] = float(getattr(c, name))
        except (TypeError, ValueError):
            return f"{name} {getattr(c, name)!r} is not a number"
        if not math.isfinite(vals[name]):
            return f"{name} is {vals[name]}"
    if min(vals["open"], vals["high"], vals["low"], vals["close"]) <= 0:
        return "non-positive price"
    if vals["volume"] < 0:
        return f"negative volume {vals['volume']}"
    if vals["high"] < max(vals["open"], vals["close"], vals["low"]) or vals["low"] > min(vals["open"], vals["close"]):
        return f"high/low do not bound open/close (o={vals['open']}, h={vals['high']}, l={vals['low']}, c={vals['close']})"
    return None
