"""Feature pipeline speed: microseconds per symbol per tick, beside a plain pandas baseline.

    .venv/bin/python bench/feature_bench.py            # 1, 10, 100, 500 symbols
    .venv/bin/python bench/feature_bench.py --full     # more ticks per size (steadier numbers)

Two kinds of tick are timed separately (both include add_candles/add_trades):
  steady     an ordinary 3-second tick: 110 features per symbol from cached
             candle/indicator features, order-book and tick-history work only;
  bar close  the tick right after a 1-minute bar closed for every symbol, so
             candle and indicator features are recomputed for all of them.
The baseline computes the same features the straightforward way: one symbol at a
time, one pandas expression per feature (indicators still through TA-Lib). Its
rows are checked against the pipeline's so both time the same work.
Goal from the issue: all 110 features for 500 symbols <= 10 ms per steady tick.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backend.venues.orderbook import OrderBook  # noqa: E402
from backend.venues.types import CANDLE_MS, Candle, Trade  # noqa: E402
from backend.ml_engine.feature_store.feature_schema import FEATURE_INDEX, FEATURE_NAMES  # noqa: E402
from backend.ml_engine.features import MIN_CANDLES, TICKS_NEEDED, FeaturePipeline  # noqa: E402
from backend.ml_engine.features.indicator_features import indicator_features  # noqa: E402

T0 = 1_700_000_040_000
TICK_MS = 3000
DEPTH = 50


# --- synthetic market --------------------------------------------------------------------
def make_bars(rng, n, start_ms, p0):
    close = p0 * np.exp(np.cumsum(rng.normal(0, 1e-3, n)))
    open_ = np.r_[p0, close[:-1]]
    high = np.maximum(open_, close) * (1 + np.abs(rng.normal(0, 3e-4, n)))
    low = np.minimum(open_, close) * (1 - np.abs(rng.normal(0, 3e-4, n)))
    vol = rng.lognormal(2, 0.7, n)
    return [Candle(start_ms + i * CANDLE_MS, open_[i], high[i], low[i], close[i], vol[i]) for i in range(n)]


def make_book(rng, symbol, mid, ts):
    tick = mid * 1e-4
    bid = mid - tick * np.cumsum(rng.integers(1, 3, DEPTH))
    ask = mid + tick * np.cumsum(rng.integers(1, 3, DEPTH))
    return OrderBook(symbol, bid, rng.lognormal(0, 1, DEPTH), ask, rng.lognormal(0, 1, DEPTH), ts, ts)


class Market:
    def __init__(self, n_symbols, seed=0):
        self.rng = np.random.default_rng(seed)
        self.symbols = [f"SYM{i}USDT" for i in range(n_symbols)]
        self.mid = {s: float(self.rng.uniform(0.01, 90_000)) for s in self.symbols}
        self.backfill = {s: make_bars(self.rng, 400, T0 - 400 * CANDLE_MS, self.mid[s]) for s in self.symbols}
        for s in self.symbols:
            self.mid[s] = self.backfill[s][-1].close

    def tick(self, ts):
        books, trades = {}, {}
        for s in self.symbols:
            self.mid[s] *= math.exp(self.rng.normal(0, 2e-4))
            books[s] = make_book(self.rng, s, self.mid[s], ts)
            n = int(self.rng.integers(0, 4))
            trades[s] = [Trade(ts - int(self.rng.integers(0, TICK_MS)), self.mid[s], float(self.rng.lognormal(0, 1)), int(self.rng.choice((-1, 1)))) for _ in range(n)]
        return books, trades

    def new_bar(self, start_ms):
        return {s: [make_bars(self.rng, 1, start_ms, self.mid[s])[0]] for s in self.symbols}


# --- the straightforward baseline --------------------------------------------------------
class PandasBaseline:
    """One symbol at a time, one pandas expression per feature."""

    def __init__(self, symbols):
        self.hist = {s: pd.DataFrame(columns=["mid", "spread", "imb1", "micro", "ofi1"], dtype=float) for s in symbols}
        self.prev = {}
        self.trades = {s: pd.DataFrame(columns=["ts", "price", "size", "side"]) for s in symbols}
        self.bars = {s: pd.DataFrame(columns=["start", "open", "high", "low", "close", "volume"]) for s in symbols}
        self.cache = {}

    def add_candles(self, s, candles):
        new = pd.DataFrame([(c.start_ms, c.open, c.high, c.low, c.close, c.volume) for c in candles], columns=self.bars[s].columns)
        self.bars[s] = new if self.bars[s].empty else pd.concat([self.bars[s], new], ignore_index=True)

    def add_trades(self, s, trades):
        if trades:
            new = pd.DataFrame([(t.ts_ms, t.price, t.size, t.side) for t in trades], columns=self.trades[s].columns)
            self.trades[s] = new if self.trades[s].empty else pd.concat([self.trades[s], new], ignore_index=True)

    def update(self, books):
        return {s: self.features(s, b) for s, b in books.items()}

    def features(self, s, book):
        f = {}
        bids = pd.DataFrame({"price": book.bid_prices, "size": book.bid_sizes})
        asks = pd.DataFrame({"price": book.ask_prices, "size": book.ask_sizes})
        mid = (bids["price"].iloc[0] + asks["price"].iloc[0]) / 2
        f["ob_spread_bps"] = (asks["price"].iloc[0] - bids["price"].iloc[0]) / mid * 1e4
        B1, A1 = bids["size"].iloc[0], asks["size"].iloc[0]
        micro = (asks["price"].iloc[0] * B1 + bids["price"].iloc[0] * A1) / (B1 + A1)
        f["ob_microprice_dev_bps"] = (micro - mid) / mid * 1e4
        b5, a5 = bids.head(5), asks.head(5)
        vw = ((b5["price"] * b5["size"]).sum() / b5["size"].sum() + (a5["price"] * a5["size"]).sum() / a5["size"].sum()) / 2
        f["ob_weighted_mid_dev_5_bps"] = (vw - mid) / mid * 1e4
        for k in (1, 5, 10, 20):
            sb, sa = bids["size"].head(k).sum(), asks["size"].head(k).sum()
            f[f"ob_imbalance_{k}"] = (sb - sa) / (sb + sa)
        tb, ta = bids["size"].sum(), asks["size"].sum()
        f["ob_imbalance_50"] = (tb - ta) / (tb + ta)
        bids["dist"] = (mid - bids["price"]) / mid * 1e4
        asks["dist"] = (asks["price"] - mid) / mid * 1e4
        for n in (10, 25, 50):
            db = bids.loc[bids["dist"] <= n + 1e-7, "size"].sum()
            da = asks.loc[asks["dist"] <= n + 1e-7, "size"].sum()
            f[f"ob_depth_bid_{n}bps"], f[f"ob_depth_ask_{n}bps"] = db / (tb + ta), da / (tb + ta)
            f[f"ob_depth_imbalance_{n}bps"] = (db - da) / (db + da) if db + da > 0 else 0.0
        for k in (5, 10, 20):
            f[f"ob_bid_dist_{k}_bps"] = bids["dist"].iloc[min(k, len(bids)) - 1]
            f[f"ob_ask_dist_{k}_bps"] = asks["dist"].iloc[min(k, len(asks)) - 1]
        f["ob_slope_bid"] = bids["size"].head(10).sum() / (tb + ta) / f["ob_bid_dist_10_bps"]
        f["ob_slope_ask"] = asks["size"].head(10).sum() / (tb + ta) / f["ob_ask_dist_10_bps"]
        f["ob_slope_log_ratio"] = math.log(f["ob_slope_bid"] / f["ob_slope_ask"])
        f["ob_bid_conc_1_5"], f["ob_ask_conc_1_5"] = B1 / b5["size"].sum(), A1 / a5["size"].sum()
        f["ob_bid_conc_5_20"] = b5["size"].sum() / bids["size"].head(20).sum()
        f["ob_ask_conc_5_20"] = a5["size"].sum() / asks["size"].head(20).sum()
        f["ob_log_depth_ratio"] = math.log(tb / ta)
        f["ob_bid_size_cv_10"] = bids["size"].head(10).std(ddof=0) / bids["size"].head(10).mean()
        f["ob_ask_size_cv_10"] = asks["size"].head(10).std(ddof=0) / asks["size"].head(10).mean()
        f["ob_bid_levels_filled"], f["ob_ask_levels_filled"] = len(bids) / DEPTH, len(asks) / DEPTH
        # order flow vs the previous book, level by level
        prev = self.prev.get(s)
        ofi = {1: np.nan, 5: np.nan, 10: np.nan}
        changed = np.nan
        if prev is not None:
            pb, pa = prev
            e = []
            for i in range(10):
                eb = (bids["size"].iloc[i] if bids["price"].iloc[i] >= pb["price"].iloc[i] else 0) - (pb["size"].iloc[i] if bids["price"].iloc[i] <= pb["price"].iloc[i] else 0)
                ea = (asks["size"].iloc[i] if asks["price"].iloc[i] <= pa["price"].iloc[i] else 0) - (pa["size"].iloc[i] if asks["price"].iloc[i] >= pa["price"].iloc[i] else 0)
                e.append(eb - ea)
            for k in (1, 5, 10):
                den = (bids["size"].head(k).sum() + asks["size"].head(k).sum() + pb["size"].head(k).sum() + pa["size"].head(k).sum()) / 2
                ofi[k] = sum(e[:k]) / den
            changed = float(bids["price"].iloc[0] != pb["price"].iloc[0]) + float(asks["price"].iloc[0] != pa["price"].iloc[0])
        for k in (1, 5, 10):
            f[f"ob_ofi_{k}"] = ofi[k]
        f["ob_best_price_changed"] = changed
        self.prev[s] = (bids, asks)
        h = self.hist[s]
        h.loc[len(h)] = [mid, f["ob_spread_bps"], f["ob_imbalance_1"], f["ob_microprice_dev_bps"], ofi[1]]
        logret = np.log(h["mid"]).diff() * 1e4
        f["ob_mid_ret_1_bps"] = logret.iloc[-1]
        f["ob_mid_ret_10_bps"] = math.log(mid / h["mid"].iloc[-11]) * 1e4 if len(h) > 10 else np.nan
        sp = h["spread"].tail(100)
        f["ob_spread_z_100"] = ((sp.iloc[-1] - sp.mean()) / sp.std(ddof=0) if sp.std(ddof=0) > 1e-9 * abs(sp.mean()) else 0.0) if len(h) >= 100 else np.nan
        f["ob_imbalance_1_ema_10"] = h["imb1"].ewm(alpha=2 / 11, adjust=False).mean().iloc[-1]
        f["ob_microprice_dev_ema_10"] = h["micro"].ewm(alpha=2 / 11, adjust=False).mean().iloc[-1]
        f["ob_ofi_1_sum_10"] = h["ofi1"].tail(10).sum() if len(h) > 10 else np.nan
        f["ob_tick_volatility_20_bps"] = logret.tail(20).std(ddof=1) if len(h) > 20 else np.nan
        tr = self.trades[s]
        win = tr[(tr["ts"] > book.ts_ms - 60_000) & (tr["ts"] <= book.ts_ms)]
        if len(win):
            buy, sell = win.loc[win["side"] > 0, "size"].sum(), win.loc[win["side"] < 0, "size"].sum()
            f["ob_trade_imbalance"] = (buy - sell) / (buy + sell)
            f["ob_trade_intensity_log"] = math.log1p(len(win))
            f["ob_trade_vwap_dev_bps"] = ((win["price"] * win["size"]).sum() / win["size"].sum() - mid) / mid * 1e4
            f["ob_trade_last_side"] = float(win.sort_values("ts")["side"].iloc[-1])
        else:
            f.update(ob_trade_imbalance=0.0, ob_trade_intensity_log=0.0, ob_trade_vwap_dev_bps=0.0, ob_trade_last_side=0.0)
        f.update(self.slow(s, book.ts_ms))
        return np.array([f[n] for n in FEATURE_NAMES], dtype=np.float32)

    def slow(self, s, t):
        bars = self.bars[s]
        closed = bars[bars["start"] + CANDLE_MS <= t].tail(MIN_CANDLES)
        key = (s, len(bars[bars["start"] + CANDLE_MS <= t]))
        if key in self.cache:
            return self.cache[key]
        o, h, l, c, v = (closed[k].astype(float) for k in ("open", "high", "low", "close", "volume"))
        r = np.log(c / c.shift(1))
        f = {}
        for k in (1, 5, 15, 30, 60):
            f[f"candle_ret_{k}m"] = math.log(c.iloc[-1] / c.iloc[-1 - k])
        f["candle_rvol_15m"] = math.sqrt((r.tail(15) ** 2).sum())
        f["candle_rvol_60m"] = math.sqrt((r.tail(60) ** 2).sum())
        hl = np.log(h / l).tail(15)
        f["candle_parkinson_vol_15m"] = math.sqrt((hl ** 2).mean() / (4 * math.log(2)))
        f["candle_garman_klass_vol_15m"] = math.sqrt(max(0.0, (0.5 * hl ** 2 - (2 * math.log(2) - 1) * np.log(c / o).tail(15) ** 2).mean()))
        rng = h.iloc[-1] - l.iloc[-1]
        f["candle_body_ratio"] = (c.iloc[-1] - o.iloc[-1]) / rng if rng > 0 else 0.0
        f["candle_upper_wick_ratio"] = (h.iloc[-1] - max(o.iloc[-1], c.iloc[-1])) / rng if rng > 0 else 0.0
        f["candle_lower_wick_ratio"] = (min(o.iloc[-1], c.iloc[-1]) - l.iloc[-1]) / rng if rng > 0 else 0.0
        f["candle_range_bps"] = rng / c.iloc[-1] * 1e4
        f["candle_range_mean_15m_bps"] = ((h - l) / c).tail(15).mean() * 1e4
        hh, ll = h.tail(15).max(), l.tail(15).min()
        f["candle_close_pos_15m"] = (c.iloc[-1] - ll) / (hh - ll) if hh > ll else 0.5
        v60 = v.tail(60)
        f["candle_volume_z_60m"] = (v.iloc[-1] - v60.mean()) / v60.std(ddof=0)
        f["candle_volume_ratio_5_60"] = v.tail(5).mean() / v60.mean()
        f["candle_log_volume_change"] = math.log((v.iloc[-1] + 1) / (v.iloc[-2] + 1))
        r60 = r.tail(60)
        d = r60 - r60.mean()
        m2 = (d ** 2).mean()
        f["candle_ret_skew_60m"] = (d ** 3).mean() / m2 ** 1.5
        f["candle_ret_kurt_60m"] = (d ** 4).mean() / m2 ** 2 - 3
        f["candle_up_bar_share_15m"] = (c.tail(15) > o.tail(15)).mean()
        tp = ((h + l + c) / 3).tail(15)
        f["candle_vwap_dev_15m_bps"] = (c.iloc[-1] - (tp * v.tail(15)).sum() / v.tail(15).sum()) / c.iloc[-1] * 1e4
        f["candle_high_dist_60m_bps"] = (h.tail(60).max() - c.iloc[-1]) / c.iloc[-1] * 1e4
        f["candle_low_dist_60m_bps"] = (c.iloc[-1] - l.tail(60).min()) / c.iloc[-1] * 1e4
        f["candle_rvol_ratio_15_60"] = f["candle_rvol_15m"] / (f["candle_rvol_60m"] * 0.5)
        ind = indicator_features(np.vstack([o.to_numpy(), h.to_numpy(), l.to_numpy(), c.to_numpy(), v.to_numpy()]))
        f.update(zip(FEATURE_NAMES[FEATURE_INDEX["ind_rsi_14"] :], ind))
        self.cache[key] = f
        return f


# --- timing ------------------------------------------------------------------------------
def run_engine(engine, market, ticks, bar_close_every, only=None, keep_at=None):
    """Returns (steady tick seconds, bar-close tick seconds, outputs of tick ``keep_at`` or the last).

    ``only``: feed just these symbols (the market still draws all of them, so a
    replay with the same seed sees identical books)."""
    steady, close = [], []
    out = None
    ts = T0
    for k in range(ticks):
        books, trades = market.tick(ts)
        bars = market.new_bar(ts - CANDLE_MS) if k and k % bar_close_every == 0 else None
        if only is not None:
            books = {s: books[s] for s in only}
            trades = {s: trades[s] for s in only}
            bars = {s: bars[s] for s in only} if bars else None
        t = time.perf_counter()
        if bars:
            for s, b in bars.items():
                engine.add_candles(s, b)
        for s, tr in trades.items():
            engine.add_trades(s, tr)
        res = engine.update(books)
        (close if bars else steady).append(time.perf_counter() - t)
        if keep_at is None or k == keep_at:
            out = res
        ts += TICK_MS if not (k + 1) % bar_close_every == 0 else CANDLE_MS - (bar_close_every - 1) * TICK_MS
        # keep every bar-close tick one minute after the previous one
    return steady, close, out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--symbols", default="1,10,100,500", help="comma-separated symbol counts (default: 1,10,100,500)")
    ap.add_argument("--ticks", type=int, default=40, help="timed ticks for the pipeline per size, after warm-up (default 40)")
    ap.add_argument("--baseline-ticks", type=int, default=12, help="timed ticks for the pandas baseline per size (default 12)")
    ap.add_argument("--baseline-symbols", type=int, default=4,
                    help="symbols the baseline runs per size (default 4): it loops symbol by symbol, so its cost per "
                    "symbol does not depend on how many there are, and all of them would take minutes")
    ap.add_argument("--full", action="store_true", help="200 pipeline and 40 baseline ticks per size, baseline on 10 symbols")
    args = ap.parse_args(argv)
    if args.full:
        args.ticks, args.baseline_ticks, args.baseline_symbols = 200, 40, 10
    sizes = [int(x) for x in args.symbols.split(",")]
    every = 6  # a bar closes every 6th timed tick (so both kinds get samples)

    print(f"feature_bench: {len(FEATURE_NAMES)} features, book depth {DEPTH}, {MIN_CANDLES}-bar windows, one core")
    print(f"{'symbols':>8} | {'pipeline steady':>15} {'pandas steady':>14} {'speed-up':>8} | {'pipeline bar close':>18} {'pandas bar close':>16} {'speed-up':>8} | {'pipeline ms/tick':>16}")
    print("-" * 125)
    for n in sizes:
        market = Market(n, seed=n)
        pipe = FeaturePipeline(market.symbols, DEPTH)
        base_syms = market.symbols[: args.baseline_symbols]
        base = PandasBaseline(base_syms)
        for s in market.symbols:
            pipe.add_candles(s, market.backfill[s])
        for s in base_syms:
            base.add_candles(s, market.backfill[s])
        # warm-up: the pipeline's tick history; the baseline gets the same books
        ts = T0 - TICKS_NEEDED * 100
        for k in range(TICKS_NEEDED):
            books, trades = market.tick(ts + k * 100)
            for s, tr in trades.items():
                pipe.add_trades(s, tr)
            for s in base_syms:
                base.add_trades(s, trades[s])
            pipe.update(books)
            base.update({s: books[s] for s in base_syms})
        # the same market twice: pipeline, then baseline on a replay of the same ticks
        rng_state = market.rng.bit_generator.state
        mids = dict(market.mid)
        n_base_ticks = min(args.ticks, args.baseline_ticks)
        p_steady, p_close, p_out = run_engine(pipe, market, args.ticks, every, keep_at=n_base_ticks - 1)
        market.rng.bit_generator.state = rng_state
        market.mid = mids
        b_steady, b_close, b_out = run_engine(base, market, n_base_ticks, every, base_syms)
        check(p_out, b_out)
        us = lambda xs, m: np.median(xs) / m * 1e6 if xs else float("nan")  # noqa: E731
        ps, pc = us(p_steady, n), us(p_close, n)
        bs, bc = us(b_steady, len(base_syms)), us(b_close, len(base_syms))
        print(f"{n:>8} | {ps:>12.1f} us {bs:>11.1f} us {bs / ps:>7.0f}x | {pc:>15.1f} us {bc:>13.1f} us {bc / pc:>7.0f}x | {np.median(p_steady) * 1e3:>7.2f} steady")
        sys.stdout.flush()
    print("us = microseconds per symbol per tick (median over ticks); goal: 500 symbols <= 10 ms per steady tick")
    return 0


def check(p_out, b_out):
    """The baseline must compute the same numbers, or the comparison means nothing."""
    mism = []
    for s, ref in b_out.items():
        got = p_out.row(s)
        bad = ~np.isclose(got, ref, rtol=1e-4, atol=1e-4, equal_nan=True)
        mism += [f"{s}:{FEATURE_NAMES[j]} {got[j]} vs {ref[j]}" for j in np.flatnonzero(bad)]
    if mism:
        print(f"  WARNING: pipeline and baseline differ in {len(mism)} values, e.g. {mism[:3]}")


if __name__ == "__main__":
    raise SystemExit(main())
