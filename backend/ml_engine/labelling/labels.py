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
``np.searchsorted`` per (symbol, horizon, price source) over the whole array
(``window_search``, the one window search of the project: training's persistence
baseline uses it too, mirrored into the past).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from backend.contracts.labels import (
    DEFAULT_THRESHOLD_PCT,
    DEFAULT_TOLERANCE_S,
    DIRECTION_NEUTRAL,
    HORIZONS_S,
    LabelSetting,
    direction_column,
    direction_from_movement,
    movement_column,
)

DEFAULT_HORIZONS_S: tuple[int, ...] = tuple(HORIZONS_S)
MAX_LABEL_REACH_MS = 86_400_000  # horizon + tolerance must stay within one day of look-ahead
_NEVER = np.iinfo(np.int64).max


@dataclass(frozen=True)
class LabelConfig:
    """What to label and how: horizons (whole seconds), tolerance (seconds), threshold (percent).

    Raises ``ValueError`` when a horizon is not a positive whole second, horizons
    repeat, the tolerance is negative or not below the smallest horizon (a label
    would drift to a later horizon), the threshold is negative or not finite, or
    horizon + tolerance exceeds one day (the look-ahead the apply loop reads).
    """

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
        """The tolerance in whole milliseconds."""
        return int(round(self.tolerance_s * 1000))

    @property
    def reach_ms(self) -> int:
        """How far past a sample's time its labels may look (ms): longest horizon plus tolerance."""
        return int(max(self.horizons_s)) * 1000 + self.tolerance_ms

    @property
    def setting(self) -> LabelSetting:
        """The provenance entry of labels made with this configuration."""
        return LabelSetting(float(self.threshold_pct), float(self.tolerance_s))

    def direction_column(self, h: int) -> str:
        """Direction column of horizon ``h`` (see ``backend.contracts.labels.direction_column``)."""
        return direction_column(h)

    def movement_column(self, h: int) -> str:
        """Movement column of horizon ``h`` (see ``backend.contracts.labels.movement_column``)."""
        return movement_column(h)


@dataclass
class PriceRows:
    """Price rows of many symbols, row i of each array being one row.

    ``ts_ms``: (n,) int64 ms since epoch; ``codes``: (n,) integer symbol codes (see
    ``symbol_codes``); ``mid``: (n,) float64 prices. Raises ``ValueError`` when the
    arrays are not 1-D or differ in length.
    """

    ts_ms: np.ndarray
    codes: np.ndarray
    mid: np.ndarray

    def __post_init__(self) -> None:
        self.ts_ms = np.asarray(self.ts_ms, dtype=np.int64)
        self.codes = np.asarray(self.codes)
        self.mid = np.asarray(self.mid, dtype=np.float64)
        if not (self.ts_ms.shape == self.codes.shape == self.mid.shape) or self.ts_ms.ndim != 1:
            raise ValueError("ts_ms, codes and mid must be 1-D arrays of the same length")

    @classmethod
    def concat(cls, parts: Sequence["PriceRows"]) -> "PriceRows":
        """All rows of ``parts`` in order (an empty sequence gives no rows)."""
        if not parts:
            return cls(np.empty(0, np.int64), np.empty(0, np.int32), np.empty(0))
        if len(parts) == 1:
            return parts[0]
        return cls(
            np.concatenate([p.ts_ms for p in parts]),
            np.concatenate([p.codes for p in parts]),
            np.concatenate([p.mid for p in parts]),
        )


@dataclass
class HorizonLabels:
    """Labels of n samples at one horizon: ``direction`` (n,) int8 class codes, meaningful
    where ``valid``; ``movement`` (n,) float64 percent, NaN where not valid; ``valid`` (n,) bool."""

    direction: np.ndarray
    movement: np.ndarray
    valid: np.ndarray

    def slice(self, start: int, stop: int) -> "HorizonLabels":
        """Rows ``start:stop`` (views, no copy)."""
        return HorizonLabels(self.direction[start:stop], self.movement[start:stop], self.valid[start:stop])


def _code_dtype(n_codes: int) -> type:
    # Small unsigned codes sort with numpy's linear-time radix sort; fewer bytes, fewer passes.
    return np.uint8 if n_codes <= 256 else np.uint16 if n_codes <= 65_536 else np.int64


def window_search(ts: np.ndarray, lo: np.ndarray, hi: np.ndarray, *, last: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The one window search: per query, the first (or ``last``) index of sorted ``ts`` in ``[lo, hi]``.

    ``ts``: (m,) sorted int64; ``lo``, ``hi``: (q,) int64 window bounds (inclusive).
    Returns ``(index, found)``, both (q,): ``index`` is a valid position into ``ts``
    (0 when ``ts`` is empty) and means something only where ``found``. Among equal
    timestamps, first takes the earliest row and last the latest (input order).
    """
    if ts.size == 0:
        return np.zeros(lo.shape, np.intp), np.zeros(lo.shape, bool)
    if last:
        idx = np.searchsorted(ts, hi, side="right") - 1
        found = idx >= 0
        safe = np.maximum(idx, 0)
        found &= ts[safe] >= lo
    else:
        idx = np.searchsorted(ts, lo, side="left")
        found = idx < ts.size
        safe = np.minimum(idx, ts.size - 1)
        found &= ts[safe] <= hi
    return safe, found


class PriceIndex:
    """Price rows grouped by symbol code (stable), each group sorted by time.

    ``rows``: the price rows; ``n_codes``: size of the symbol-code space (codes in
    ``[0, n_codes)``). Only the timestamps are gathered; prices are looked up through
    the permutation for the rows a search finds, which saves a full pass over a large
    tape. Grouping costs one radix sort of small codes, or nothing when the rows are
    already grouped (one symbol, or files written per symbol).
    """

    def __init__(self, rows: PriceRows, n_codes: int):
        ts, codes = rows.ts_ms, rows.codes
        self.rows = rows
        self.n_codes = n_codes
        n = ts.size
        if n_codes == 1 or n == 0 or not (codes[1:] < codes[:-1]).any():
            perm = None
            self.ts = ts
            sorted_codes = codes
        else:
            small = codes.astype(_code_dtype(n_codes), copy=False)
            perm = runs_permutation(small)
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

    def __len__(self) -> int:
        return int(self.ts.size)

    def span(self, code: int) -> tuple[int, int]:
        """``[start, stop)`` of symbol ``code`` in grouped order."""
        return int(self.bounds[code]), int(self.bounds[code + 1])

    def original(self, idx: np.ndarray) -> np.ndarray:
        """Input-order row numbers of grouped positions ``idx``."""
        return idx if self.perm is None else self.perm[idx]

    def grouped(self, values: np.ndarray) -> np.ndarray:
        """``values`` given per input row, in grouped order."""
        return values if self.perm is None else values[self.perm]

    def to_input_order(self, values: np.ndarray) -> np.ndarray:
        """``values`` given in grouped order, back in input-row order."""
        if self.perm is None:
            return values
        out = np.empty_like(values)
        out[self.perm] = values
        return out

    def lookup(
        self,
        queries: "PriceIndex",
        lo_offset_ms: int,
        hi_offset_ms: int,
        *,
        last: bool = False,
        codes: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Price and time of the first (or ``last``) row of the query's symbol in ``[t + lo, t + hi]``.

        ``queries``: an index over the query rows (same code space); offsets in ms,
        negative to look into the past. ``codes``: optional (n_codes,) bool mask of the
        symbols to search (others find nothing). Returns ``(price, when_ms)`` in the
        queries' grouped order: float64 NaN and int64 max where nothing is found.
        """
        n = len(queries)
        price = np.full(n, np.nan)
        when = np.full(n, _NEVER, dtype=np.int64)
        for c in range(min(self.n_codes, queries.n_codes)):
            a, b = queries.span(c)
            ra, rb = self.span(c)
            if a == b or ra == rb or (codes is not None and not codes[c]):
                continue
            t = queries.ts[a:b]
            i, found = window_search(self.ts[ra:rb], t + lo_offset_ms, t + hi_offset_ms, last=last)
            hit = np.flatnonzero(found)
            price[a + hit] = self.rows.mid[self.original(ra + i[hit])]
            when[a + hit] = self.ts[ra + i[hit]]
        return price, when


def runs_permutation(codes: np.ndarray) -> np.ndarray | None:
    """Stable grouping permutation built from runs of equal codes, or None if runs are short.

    ``codes``: (n,) small unsigned integers. Returns the permutation a stable argsort
    of ``codes`` would give, or None when there are more than n/64 runs (then the
    argsort is cheaper). The store writes each flush as one run per symbol, so a tape
    read back is a few hundred long runs: ordering the runs and gathering them
    sequentially is several times cheaper than a full argsort followed by a
    random-access gather.
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


def usable(rows: PriceRows) -> PriceRows:
    """The rows with a finite positive price (no copy when all are fine)."""
    ok = np.isfinite(rows.mid) & (rows.mid > 0)
    if ok.all():
        return rows
    idx = np.flatnonzero(ok)
    return PriceRows(rows.ts_ms[idx], rows.codes[idx], rows.mid[idx])


def _n_codes(rows: Sequence[PriceRows]) -> int:
    return 1 + max((int(r.codes.max()) for r in rows if r.codes.size), default=-1)


def compute_labels(
    samples: PriceRows,
    tape: PriceRows | None,
    config: LabelConfig = LabelConfig(),
    n_codes: int | None = None,
    extra_prices: Sequence[PriceRows] = (),
) -> dict[int, HorizonLabels]:
    """Labels for every sample, per horizon (seconds), by the definition in the module docstring.

    ``samples``: the n rows to label (their mid is ``mid_price_t``), also a fallback
    price source. ``tape``: price-tape rows or None. ``extra_prices``: more sample
    rows used only as price sources (e.g. the look-ahead day). Symbol codes must index
    the same symbol space in all inputs; ``n_codes`` is its size (default: max code
    + 1). Returns ``{h: HorizonLabels}`` with arrays of length n in input order.
    """
    if n_codes is None:
        n_codes = _n_codes(([tape] if tape is not None else []) + [samples, *extra_prices])
    n = samples.ts_ms.size
    result = {
        h: HorizonLabels(
            np.full(n, DIRECTION_NEUTRAL, np.int8), np.full(n, np.nan, np.float64), np.zeros(n, dtype=bool)
        )
        for h in config.horizons_s
    }
    if n == 0:
        return result

    tape = usable(tape) if tape is not None and tape.ts_ms.size else None
    fallback = usable(PriceRows.concat([samples, *extra_prices]))
    tape_ix = PriceIndex(tape, n_codes) if tape is not None else None
    query_ix = PriceIndex(samples, n_codes)  # the rows to label
    fall_ix = query_ix if fallback is samples else PriceIndex(fallback, n_codes)
    p0 = query_ix.grouped(samples.mid)
    base_ok = np.isfinite(p0) & (p0 > 0)
    tol = config.tolerance_ms

    # A symbol whose fallback rows all sit on tape timestamps can never get a strictly
    # earlier price from them (the collector writes a tape row at every sample tick):
    # skip those searches.
    fallback_needed = np.ones(n_codes, dtype=bool)
    if tape_ix is not None:
        for c in range(n_codes):
            fa, fb = fall_ix.span(c)
            ta, tb = tape_ix.span(c)
            if fa < fb and ta < tb:
                f_ts, t_ts = fall_ix.ts[fa:fb], tape_ix.ts[ta:tb]
                j = np.minimum(np.searchsorted(t_ts, f_ts), t_ts.size - 1)
                fallback_needed[c] = not np.array_equal(t_ts[j], f_ts)

    for h in config.horizons_s:
        lo = int(h) * 1000
        if tape_ix is not None:
            price, when = tape_ix.lookup(query_ix, lo, lo + tol)
        else:
            price, when = np.full(n, np.nan), np.full(n, _NEVER, dtype=np.int64)
        if fallback_needed.any():
            f_price, f_when = fall_ix.lookup(query_ix, lo, lo + tol, codes=fallback_needed)
            earlier = f_when < when  # strictly earlier: the tape wins ties
            price[earlier] = f_price[earlier]
        with np.errstate(invalid="ignore", divide="ignore"):
            mov = (price / p0 - 1.0) * 100.0
        mov[~base_ok] = np.nan
        out = result[h]
        out.movement[:] = query_ix.to_input_order(mov)
        out.valid[:] = ~np.isnan(out.movement)
        out.direction[:] = direction_from_movement(out.movement, config.threshold_pct)
        out.direction[~out.valid] = DIRECTION_NEUTRAL
    return result


def class_balance(labels: dict[int, HorizonLabels]) -> dict[int, tuple[int, int, int, int]]:
    """Per horizon: (DOWN, NEUTRAL, UP, unlabelled) counts of ``compute_labels``' result."""
    out = {}
    for h, lab in labels.items():
        d = lab.direction[lab.valid]
        counts = np.bincount(d.astype(np.int64), minlength=3)
        out[h] = (int(counts[0]), int(counts[1]), int(counts[2]), int((~lab.valid).sum()))
    return out
