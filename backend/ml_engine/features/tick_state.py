"""Per-symbol tick history (previous book, mids, spreads, order flow), vectorised.

State lives in (n_symbols, ...) arrays indexed by the pipeline's symbol index, so a
tick for any subset of symbols is a handful of fancy-indexed numpy operations.
Ring buffers are written at ``count % length`` where ``count`` is the number of
books seen since the symbol's history (re)started.

History restarts when a symbol's book is older than its previous one or comes
more than ``max_gap_ms`` after it: order flow or returns across a long outage
would mix two unrelated markets.
"""

from __future__ import annotations

import numpy as np

from backend.ml_engine.features.book_arrays import BookArrays
from backend.ml_engine.features.orderbook_features import OFI_LEVELS, normalised_ofi, order_flow_per_level

OFI_DEPTH = max(OFI_LEVELS)
MID_RET_TICKS = 10
OFI_SUM_TICKS = 10
TICK_VOL_TICKS = 20
SPREAD_Z_TICKS = 100
EMA_SPAN_TICKS = 10
# Books needed before every tick-history feature is defined and the EMAs have
# forgotten their first value ((9/11)^100 ~ 2e-9).
TICKS_NEEDED = SPREAD_Z_TICKS
_EMA_ALPHA = 2.0 / (EMA_SPAN_TICKS + 1)
# A standard deviation this small relative to the level is rounding noise, not
# variation: z-scores of it would be noise that changes with the price scale.
_REL_STD_FLOOR = 1e-9


class TickState:
    """Tick history of ``n_symbols`` symbols: the previous book and ring buffers.

    ``max_gap_ms``: a book more than this many milliseconds after the symbol's
    previous one (or older than it) restarts its history; None never restarts on a
    gap. ``restarts`` counts restarts.
    """

    def __init__(self, n_symbols: int, max_gap_ms: int | None):
        s = n_symbols
        self.max_gap_ms = max_gap_ms
        self.count = np.zeros(s, dtype=np.int64)
        self.last_ts = np.zeros(s, dtype=np.int64)
        self.prev_bid_px = np.full((s, OFI_DEPTH), np.nan)
        self.prev_bid_sz = np.zeros((s, OFI_DEPTH))
        self.prev_ask_px = np.full((s, OFI_DEPTH), np.nan)
        self.prev_ask_sz = np.zeros((s, OFI_DEPTH))
        self.prev_mid = np.full(s, np.nan)
        self.mid_ring = np.full((s, MID_RET_TICKS + 1), np.nan)
        self.ret_ring = np.full((s, TICK_VOL_TICKS), np.nan)
        self.spread_ring = np.full((s, SPREAD_Z_TICKS), np.nan)
        self.ofi_ring = np.full((s, OFI_SUM_TICKS), np.nan)
        self.ema_imb = np.full(s, np.nan)
        self.ema_micro = np.full(s, np.nan)
        self.restarts = 0

    def update(
        self,
        idx: np.ndarray,
        ts: np.ndarray,
        books: BookArrays,
        mid: np.ndarray,
        spread_bps: np.ndarray,
        imbalance_1: np.ndarray,
        micro_dev_bps: np.ndarray,
    ) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Advance the history of ``idx`` by one book each.

        Args:
            idx: (n,) int64 symbol indices, each at most once.
            ts: (n,) int64 book times, epoch ms.
            books: the n books stacked, rows matching ``idx``.
            mid, spread_bps, imbalance_1, micro_dev_bps: (n,) float64 snapshot
                features of those books (mid in quote currency, the others as the
                schema defines ``ob_spread_bps``, ``ob_imbalance_1`` and
                ``ob_microprice_dev_bps``).

        Returns:
            The 11 tick-history features (name -> (n,) float64, NaN until enough
            history: OFI ratios, mid log-returns and tick volatility in bps, spread
            z-score, EMAs with alpha 2/(span+1)) and, per row, the (n,) int64 number
            of books in the symbol's history including this one.
        """
        n = idx.size
        count = self.count[idx]
        restart = count > 0
        if self.max_gap_ms is not None:
            restart &= (ts < self.last_ts[idx]) | (ts - self.last_ts[idx] > self.max_gap_ms)
        else:
            restart &= ts < self.last_ts[idx]
        if restart.any():
            self.restarts += int(restart.sum())
            count = np.where(restart, 0, count)
        has_prev = count > 0
        f: dict[str, np.ndarray] = {}

        # --- order flow and best-price changes vs the previous book -------------------
        L = min(OFI_DEPTH, books.depth)
        cur = (books.bid_px[:, :L], books.bid_sz[:, :L], books.ask_px[:, :L], books.ask_sz[:, :L])
        prev = (self.prev_bid_px[idx, :L], self.prev_bid_sz[idx, :L], self.prev_ask_px[idx, :L], self.prev_ask_sz[idx, :L])
        e = order_flow_per_level(*prev, *cur)
        prev_cum = np.cumsum(prev[1] + prev[3], axis=1)
        cur_cum = np.cumsum(cur[1] + cur[3], axis=1)
        nan = np.full(n, np.nan)
        for k in OFI_LEVELS:
            f[f"ob_ofi_{k}"] = np.where(has_prev, normalised_ofi(e, prev_cum, cur_cum, k), nan)
        changed = (books.bid_px[:, 0] != prev[0][:, 0]).astype(np.float64) + (books.ask_px[:, 0] != prev[2][:, 0])
        f["ob_best_price_changed"] = np.where(has_prev, changed, nan)

        # --- returns of the mid over ticks --------------------------------------------
        with np.errstate(invalid="ignore", divide="ignore"):
            ret1 = np.log(mid / self.prev_mid[idx]) * 1e4
        ret1 = np.where(has_prev, ret1, nan)
        f["ob_mid_ret_1_bps"] = ret1
        L_mid = self.mid_ring.shape[1]
        mid_10_ago = self.mid_ring[idx, (count - MID_RET_TICKS) % L_mid]
        with np.errstate(invalid="ignore", divide="ignore"):
            f["ob_mid_ret_10_bps"] = np.where(count >= MID_RET_TICKS, np.log(mid / mid_10_ago) * 1e4, nan)
        self.mid_ring[idx, count % L_mid] = mid

        p = idx[has_prev]
        self.ret_ring[p, (count[has_prev] - 1) % TICK_VOL_TICKS] = ret1[has_prev]
        self.ofi_ring[p, (count[has_prev] - 1) % OFI_SUM_TICKS] = f["ob_ofi_1"][has_prev]
        self.spread_ring[idx, count % SPREAD_Z_TICKS] = spread_bps
        n_books = count + 1

        vol_ok = count >= TICK_VOL_TICKS  # count = number of returns so far
        vol = np.full(n, np.nan)
        if vol_ok.any():
            vol[vol_ok] = np.std(self.ret_ring[idx[vol_ok]], axis=1, ddof=1)
        f["ob_tick_volatility_20_bps"] = vol

        ofi_ok = count >= OFI_SUM_TICKS
        ofi_sum = np.full(n, np.nan)
        if ofi_ok.any():
            ofi_sum[ofi_ok] = self.ofi_ring[idx[ofi_ok]].sum(axis=1)
        f["ob_ofi_1_sum_10"] = ofi_sum

        z_ok = n_books >= SPREAD_Z_TICKS
        z = np.full(n, np.nan)
        if z_ok.any():
            window = self.spread_ring[idx[z_ok]]
            mean = window.mean(axis=1)
            std = window.std(axis=1)
            flat = std <= _REL_STD_FLOOR * np.abs(mean)
            z[z_ok] = np.where(flat, 0.0, (spread_bps[z_ok] - mean) / np.where(flat, 1.0, std))
        f["ob_spread_z_100"] = z

        # --- EMAs over ticks, started at the first value --------------------------------
        ema_i = np.where(has_prev, self.ema_imb[idx] + _EMA_ALPHA * (imbalance_1 - self.ema_imb[idx]), imbalance_1)
        ema_m = np.where(has_prev, self.ema_micro[idx] + _EMA_ALPHA * (micro_dev_bps - self.ema_micro[idx]), micro_dev_bps)
        self.ema_imb[idx] = ema_i
        self.ema_micro[idx] = ema_m
        f["ob_imbalance_1_ema_10"] = ema_i
        f["ob_microprice_dev_ema_10"] = ema_m

        # --- remember this book ------------------------------------------------------------
        self.prev_bid_px[idx, :L], self.prev_bid_sz[idx, :L], self.prev_ask_px[idx, :L], self.prev_ask_sz[idx, :L] = cur
        self.prev_mid[idx] = mid
        self.last_ts[idx] = ts
        self.count[idx] = n_books
        return f, n_books
