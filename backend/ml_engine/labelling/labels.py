"""The one labelling core: future price, movement and direction at fixed horizons.

For a sample of symbol s at time t (ms), horizon h and tolerance tol, the future
price is the mid-price of the first price row of symbol s with timestamp in
``[t + h, t + h + tol]``. Price rows are the ``price_tape`` group (one row per
tick, ~3 s apart) together with the samples' own mid prices: where the tape
exists the collector wrote a tape row at every sample tick too, so the samples
add nothing; where it does not (migrated legacy data, a symbol without tape) the
samples are the fallback (DESIGN §3.4: "the first tape (or sample) mid-price").
On an exact timestamp tie the tape row wins.

    future_movement = (p_future / mid_price_t - 1) * 100          (percent)
    future_direction = 2 if movement > threshold, 0 if < -threshold, else 1

Null (NaN movement, ``valid`` False) when no price row falls in the window.
Since ``h > 0``, nothing at or before t except ``mid_price_t`` enters a label.

Defaults:
* ``DEFAULT_TOLERANCE_S = 5``: one 3 s tape interval plus 2 s of scheduling and
  network jitter, so a healthy tape always has a row in the window, while staying
  well below the smallest horizon (10 s) so a label never drifts to a later horizon.
* ``DEFAULT_THRESHOLD_PCT = 0.02``: liquid perpetuals (BTCUSDT, ETHUSDT) move with
  a 1-minute volatility of roughly 0.05-0.08 %, i.e. a standard deviation of about
  0.03 % over 10 s and 0.065 % over 60 s. A threshold of 0.02 % is about 0.67 sigma
  at 10 s (≈50 % NEUTRAL, 25 % each side) and 0.3 sigma at 60 s (≈25 % NEUTRAL),
  so no horizon is degenerate; it is also ~200x the 0.0001 % price tick of BTCUSDT,
  so tick noise alone is not a move. The scripts print the class balance it gives on
  the actual data and warn when a class falls below 5 %.

Everything is vectorised: one stable sort of small integer symbol codes, then one
``np.searchsorted`` per (symbol, horizon, price source) over the whole array.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from backend.ml_engine.feature_store.feature_schema import (
    DIRECTION_DOWN,
    DIRECTION_NEUTRAL,
    DIRECTION_UP,
    HORIZONS_S,
)

DEFAULT_HORIZONS_S: tuple[int, ...] = tuple(HORIZONS_S)
DEFAULT_TOLERANCE_S = 5.0
DEFAULT_THRESHOLD_PCT = 0.02
MAX_LABEL_REACH_MS = 86_400_000  # horizon + tolerance must stay within one day of look-ahead


@dataclass(frozen=True)
class LabelConfig:
    horizons_s: tuple[int, ...] = DEFAULT_HORIZONS_S
    tolerance_s: float = DEFAULT_TOLERANCE_S
    threshold_pct: float = DEFAULT_THRESHOLD_PCT

    def __post_init__(self) -> None:
        if not self.horizons_s:
            raise ValueError("at least one horizon is required")
        if any(int(h) != h or h <= 0 for h in self.horizons_s):
            raise ValueError(f"horizons must be positive whole seconds, got {self.horizons_s}")
        if len(set(self.horizons_s)) != len(self.horizons_s):
            raise ValueError(f"duplicate horizons in {self.horizons_s}")
        if not (0 <= self.tolerance_s < min(self.horizons_s)):
            raise ValueError(
                f"tolerance must be >= 0 and smaller than the smallest horizon ({min(self.horizons_s)} s), "
                f"got {self.tolerance_s}"
            )
        if not (np.isfinite(self.threshold_pct) and self.threshold_pct >= 0):
            raise ValueError(f"threshold must be a non-negative percentage, got {self.threshold_pct}")
        if self.reach_ms > MAX_LABEL_REACH_MS:
            raise ValueError("horizon + tolerance must not exceed one day")

    @property
    def tolerance_ms(self) -> int:
        return int(round(self.tolerance_s * 1000))

    @property
    def reach_ms(self) -> int:
        """How far past a sample's time its labels may look."""
        return int(max(self.horizons_s)) * 1000 + self.tolerance_ms

    def direction_column(self, h: int) -> str:
        return f"future_direction_{h}s"

    def movement_column(self, h: int) -> str:
        return f"future_movement_{h}s"


@dataclass
class PriceRows:
    """Price rows of many symbols: timestamps (ms), integer symbol codes, mid prices."""

    ts_ms: np.ndarray
    codes: np.ndarray
    mid: np.ndarray

    def __post_init__(self) -> None:
        self.ts_ms = np.asarray(self.ts_ms, dtype=np.int64)
        self.codes = np.asarray(self.codes)
        self.mid = np.asarray(self.mid, dtype=np.float64)
        if not (self.ts_ms.shape == self.codes.shape == self.mid.shape) or self.ts_ms.ndim != 1:
            raise ValueError("ts_ms, codes and mid must be 1-D arrays of the same length")


@dataclass
class HorizonLabels:
    direction: np.ndarray  # int8; meaningful where valid
    movement: np.ndarray  # float64 percent; NaN where not valid
    valid: np.ndarray  # bool


class _Grouped:
    """Rows grouped by symbol code (stable), each group sorted by time."""

    def __init__(self, rows: PriceRows, n_codes: int, keep: np.ndarray | None = None):
        codes = rows.codes
        if keep is not None:
            idx = np.flatnonzero(keep)
            ts, mid, codes = rows.ts_ms[idx], rows.mid[idx], codes[idx]
        else:
            ts, mid = rows.ts_ms, rows.mid
        # Small unsigned codes sort with a linear-time radix sort.
        small = codes.astype(np.uint16 if n_codes <= 65_535 else np.int64, copy=False)
        order = np.argsort(small, kind="stable")
        self.ts = ts[order]
        self.mid = mid[order]
        counts = np.bincount(small, minlength=n_codes)
        self.bounds = np.concatenate([[0], np.cumsum(counts)])
        for c in np.flatnonzero(counts > 1):
            lo, hi = self.bounds[c], self.bounds[c + 1]
            seg = self.ts[lo:hi]
            if (seg[1:] < seg[:-1]).any():
                # stable: equal timestamps keep their input order ("first row" wins)
                sub = np.argsort(seg, kind="stable")
                self.ts[lo:hi] = seg[sub]
                self.mid[lo:hi] = self.mid[lo:hi][sub]

    def slice(self, code: int) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = self.bounds[code], self.bounds[code + 1]
        return self.ts[lo:hi], self.mid[lo:hi]


def _first_in_window(ts: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of the first ``ts`` >= lo per query, and whether it is <= hi."""
    idx = np.searchsorted(ts, lo, side="left")
    found = idx < ts.size
    safe = np.minimum(idx, max(ts.size - 1, 0))
    if ts.size:
        found &= ts[safe] <= hi
    return safe, found


def direction_from_movement(movement: np.ndarray, valid: np.ndarray, threshold_pct: float) -> np.ndarray:
    out = np.full(movement.shape, DIRECTION_NEUTRAL, dtype=np.int8)
    with np.errstate(invalid="ignore"):
        out[movement > threshold_pct] = DIRECTION_UP
        out[movement < -threshold_pct] = DIRECTION_DOWN
    out[~valid] = DIRECTION_NEUTRAL
    return out


def compute_labels(
    samples: PriceRows,
    tape: PriceRows | None,
    config: LabelConfig = LabelConfig(),
    n_codes: int | None = None,
    extra_prices: Sequence[PriceRows] = (),
) -> dict[int, HorizonLabels]:
    """Labels for every sample, per horizon (seconds).

    ``samples`` are the rows to label (their mid is ``mid_price_t``) and also a
    fallback price source. ``extra_prices`` are more sample rows used only as price
    sources (e.g. the look-ahead day). Symbol codes must index the same symbol
    space in all inputs; ``n_codes`` is its size (default: max code + 1).
    """
    sources_rows = ([tape] if tape is not None else []) + [samples, *extra_prices]
    if n_codes is None:
        n_codes = 1 + max((int(r.codes.max()) for r in sources_rows if r.codes.size), default=-1)
    n = samples.ts_ms.size
    result = {
        h: HorizonLabels(
            np.full(n, DIRECTION_NEUTRAL, np.int8), np.full(n, np.nan, np.float64), np.zeros(n, dtype=bool)
        )
        for h in config.horizons_s
    }
    if n == 0:
        return result

    def usable(rows: PriceRows) -> np.ndarray | None:
        ok = np.isfinite(rows.mid) & (rows.mid > 0)
        return None if ok.all() else ok

    tape_g = _Grouped(tape, n_codes, usable(tape)) if tape is not None and tape.ts_ms.size else None
    if extra_prices:
        merged = PriceRows(
            np.concatenate([samples.ts_ms, *[r.ts_ms for r in extra_prices]]),
            np.concatenate([samples.codes, *[r.codes for r in extra_prices]]),
            np.concatenate([samples.mid, *[r.mid for r in extra_prices]]),
        )
    else:
        merged = samples
    sample_g = _Grouped(merged, n_codes, usable(merged))

    # The samples to label, grouped the same way but remembering their input positions.
    order = np.argsort(samples.codes.astype(np.uint16 if n_codes <= 65_535 else np.int64, copy=False), kind="stable")
    counts = np.bincount(samples.codes, minlength=n_codes)
    bounds = np.concatenate([[0], np.cumsum(counts)])
    tol = config.tolerance_ms
    for c in np.flatnonzero(counts):
        pos = order[bounds[c] : bounds[c + 1]]
        t = samples.ts_ms[pos]
        p0 = samples.mid[pos]
        base_ok = np.isfinite(p0) & (p0 > 0)
        # searchsorted is fastest with ascending queries
        if (t[1:] < t[:-1]).any():
            srt = np.argsort(t, kind="stable")
            pos, t, p0, base_ok = pos[srt], t[srt], p0[srt], base_ok[srt]
        tape_ts, tape_mid = tape_g.slice(c) if tape_g is not None else (np.empty(0, np.int64), np.empty(0))
        smp_ts, smp_mid = sample_g.slice(c)
        for h in config.horizons_s:
            lo = t + int(h) * 1000
            hi = lo + tol
            if tape_ts.size:
                ti, tf = _first_in_window(tape_ts, lo, hi)
                t_when = np.where(tf, tape_ts[ti], np.iinfo(np.int64).max)
                price = np.where(tf, tape_mid[ti], np.nan)
            else:
                tf = np.zeros(t.size, dtype=bool)
                t_when = np.full(t.size, np.iinfo(np.int64).max, dtype=np.int64)
                price = np.full(t.size, np.nan)
            if smp_ts.size:
                si, sf = _first_in_window(smp_ts, lo, hi)
                use_sample = sf & (smp_ts[si] < t_when)  # strictly earlier: tape wins ties
                price = np.where(use_sample, smp_mid[si], price)
                found = tf | sf
            else:
                found = tf
            found &= base_ok
            with np.errstate(invalid="ignore", divide="ignore"):
                movement = (price / p0 - 1.0) * 100.0
            movement[~found] = np.nan
            out = result[h]
            out.movement[pos] = movement
            out.valid[pos] = found
    for h, out in result.items():
        out.direction[:] = direction_from_movement(out.movement, out.valid, config.threshold_pct)
    return result


def class_balance(labels: dict[int, HorizonLabels]) -> dict[int, tuple[int, int, int, int]]:
    """Per horizon: (DOWN, NEUTRAL, UP, unlabelled) counts."""
    out = {}
    for h, lab in labels.items():
        d = lab.direction[lab.valid]
        counts = np.bincount(d.astype(np.int64), minlength=3)
        out[h] = (int(counts[0]), int(counts[1]), int(counts[2]), int((~lab.valid).sum()))
    return out
