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


def _code_dtype(n_codes: int) -> type:
    # Small unsigned codes sort with numpy's linear-time radix sort; fewer bytes, fewer passes.
    return np.uint8 if n_codes <= 256 else np.uint16 if n_codes <= 65_536 else np.int64


class _Grouped:
    """Row positions grouped by symbol code (stable), each group sorted by time.

    Only the timestamps are gathered; prices are looked up through ``perm`` for the
    rows a search actually finds, which saves a full pass over a large tape.
    """

    def __init__(self, ts: np.ndarray, codes: np.ndarray, n_codes: int):
        n = ts.size
        if n_codes == 1 or n == 0 or not (codes[1:] < codes[:-1]).any():
            perm = None  # already grouped (one symbol, or files written per symbol)
            self.ts = ts
            sorted_codes = codes
        else:
            small = codes.astype(_code_dtype(n_codes), copy=False)
            perm = _runs_permutation(small)
            if perm is None:
                perm = np.argsort(small, kind="stable")
            self.ts = ts[perm]
            sorted_codes = small[perm]
        self.bounds = np.searchsorted(sorted_codes, np.arange(n_codes + 1), side="left")
        for c in range(n_codes):
            lo, hi = int(self.bounds[c]), int(self.bounds[c + 1])
            if hi - lo < 2:
                continue
            seg = self.ts[lo:hi]
            if (seg[1:] < seg[:-1]).any():
                if perm is None:
                    perm = np.arange(n)
                    self.ts = ts.copy()
                    seg = self.ts[lo:hi]
                # stable: equal timestamps keep their input order ("first row" wins)
                sub = np.argsort(seg, kind="stable")
                self.ts[lo:hi] = seg[sub]
                perm[lo:hi] = perm[lo:hi][sub]
        self.perm = perm

    def span(self, code: int) -> tuple[int, int]:
        return int(self.bounds[code]), int(self.bounds[code + 1])

    def original(self, idx: np.ndarray) -> np.ndarray:
        return idx if self.perm is None else self.perm[idx]


def _runs_permutation(codes: np.ndarray) -> np.ndarray | None:
    """Stable grouping permutation built from runs of equal codes, or None if runs are short.

    The store writes each flush as one run per symbol, so a tape read back is a few
    hundred long runs: ordering the runs and gathering them sequentially is several
    times cheaper than a full argsort followed by a random-access gather.
    """
    n = codes.size
    starts = np.flatnonzero(codes[1:] != codes[:-1]) + 1
    if starts.size > n // 64:
        return None
    starts = np.concatenate(([0], starts))
    lengths = np.diff(np.concatenate((starts, [n])))
    order = np.argsort(codes[starts], kind="stable")
    lengths = lengths[order]
    first = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    # position j of the output takes input row starts[run] + (j - first[run])
    return np.repeat(starts[order] - first, lengths) + np.arange(n)


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


def _usable(rows: PriceRows) -> PriceRows:
    """Drop price rows without a finite positive price (rare: no copy when all are fine)."""
    ok = np.isfinite(rows.mid) & (rows.mid > 0)
    if ok.all():
        return rows
    idx = np.flatnonzero(ok)
    return PriceRows(rows.ts_ms[idx], rows.codes[idx], rows.mid[idx])


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
    all_rows = ([tape] if tape is not None else []) + [samples, *extra_prices]
    if n_codes is None:
        n_codes = 1 + max((int(r.codes.max()) for r in all_rows if r.codes.size), default=-1)
    n = samples.ts_ms.size
    result = {
        h: HorizonLabels(
            np.full(n, DIRECTION_NEUTRAL, np.int8), np.full(n, np.nan, np.float64), np.zeros(n, dtype=bool)
        )
        for h in config.horizons_s
    }
    if n == 0:
        return result

    tape = _usable(tape) if tape is not None and tape.ts_ms.size else None
    if extra_prices:
        fallback = PriceRows(
            np.concatenate([samples.ts_ms, *[r.ts_ms for r in extra_prices]]),
            np.concatenate([samples.codes, *[r.codes for r in extra_prices]]),
            np.concatenate([samples.mid, *[r.mid for r in extra_prices]]),
        )
    else:
        fallback = samples
    fallback = _usable(fallback)
    tape_g = _Grouped(tape.ts_ms, tape.codes, n_codes) if tape is not None else None
    smp_g = _Grouped(samples.ts_ms, samples.codes, n_codes)  # the rows to label
    fall_g = smp_g if fallback is samples else _Grouped(fallback.ts_ms, fallback.codes, n_codes)
    p0_all = samples.mid if smp_g.perm is None else samples.mid[smp_g.perm]
    base_ok = np.isfinite(p0_all) & (p0_all > 0)
    tol = config.tolerance_ms
    never = np.iinfo(np.int64).max

    # A symbol whose fallback rows all sit on tape timestamps can never get a strictly
    # earlier price from them (the collector writes a tape row at every sample tick):
    # skip those searches.
    fallback_needed = np.ones(n_codes, dtype=bool)
    if tape_g is not None:
        for c in range(n_codes):
            fa, fb = fall_g.span(c)
            ta, tb = tape_g.span(c)
            if fa < fb and ta < tb:
                f_ts, t_ts = fall_g.ts[fa:fb], tape_g.ts[ta:tb]
                j = np.minimum(np.searchsorted(t_ts, f_ts), t_ts.size - 1)
                fallback_needed[c] = not np.array_equal(t_ts[j], f_ts)

    for h in config.horizons_s:
        mov = np.full(n, np.nan)  # in grouped order; scattered back once per horizon
        for c in range(n_codes):
            a, b = smp_g.span(c)
            if a == b:
                continue
            lo = smp_g.ts[a:b] + int(h) * 1000
            hi = lo + tol
            price = np.full(b - a, np.nan)
            when = np.full(b - a, never, dtype=np.int64)
            if tape_g is not None:
                ta, tb = tape_g.span(c)
                if ta < tb:
                    i, f = _first_in_window(tape_g.ts[ta:tb], lo, hi)
                    hit = np.flatnonzero(f)
                    price[hit] = tape.mid[tape_g.original(ta + i[hit])]
                    when[hit] = tape_g.ts[ta + i[hit]]
            fa, fb = fall_g.span(c)
            if fa < fb and fallback_needed[c]:
                i, f = _first_in_window(fall_g.ts[fa:fb], lo, hi)
                hit = np.flatnonzero(f)
                earlier = hit[fall_g.ts[fa + i[hit]] < when[hit]]  # strictly earlier: the tape wins ties
                price[earlier] = fallback.mid[fall_g.original(fa + i[earlier])]
            with np.errstate(invalid="ignore", divide="ignore"):
                mov[a:b] = (price / p0_all[a:b] - 1.0) * 100.0
        mov[~base_ok] = np.nan
        out = result[h]
        if smp_g.perm is None:
            out.movement[:] = mov
        else:
            out.movement[smp_g.perm] = mov
        out.valid[:] = ~np.isnan(out.movement)
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
