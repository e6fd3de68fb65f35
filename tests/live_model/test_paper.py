"""Paper trading: fills never better than the book, fees on every fill, PnL identities, the policy."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backend.ml_engine.live.paper import (
    BUY, ENTER, EXIT, FLIP, NO_BOOK, SELL, THIN_BOOK, PaperConfig, PaperTrader, fill_orders, max_drawdown, walk_book,
)
from backend.venues.orderbook import OrderBook

T0 = 1_700_000_000_000


def book(symbol, mid, spread_bps=2.0, levels=10, size=1.0, tick_bps=1.0, seed=None):
    """A valid book around ``mid``: ``levels`` per side, ``tick_bps`` apart, sizes ``size`` (or random with a seed)."""
    rng = np.random.default_rng(seed)
    half = mid * spread_bps / 2e4
    steps = mid * tick_bps / 1e4 * np.arange(levels)
    sizes = rng.uniform(0.1, 2.0, levels) * size if seed is not None else np.full(levels, size)
    bids = np.c_[mid - half - steps, sizes]
    asks = np.c_[mid + half + steps, sizes[::-1]]
    return OrderBook.from_levels(symbol, bids, asks, T0, recv_ms=T0)


def preds(**probs):
    """A stand-in for a ``PredictionBatch``: symbol -> (p_down, p_neutral, p_up)."""
    return SimpleNamespace(symbols=list(probs), prob=np.array(list(probs.values()), dtype=np.float32))


levels = st.lists(st.tuples(st.floats(1e-3, 1e3), st.floats(1e-6, 1e3)), min_size=1, max_size=12)


@settings(max_examples=300, deadline=None)
# a fee is zero or a real rate: a subnormal rate (5e-324 bps) underflows to a zero fee
@given(levels, levels, st.floats(1e-3, 500.0), st.floats(50.0, 1e5), st.one_of(st.just(0.0), st.floats(1e-3, 20.0)),
       st.floats(0.0, 20.0), st.booleans(), st.sampled_from(["partial", "refuse"]))
def test_no_fill_is_better_than_its_book_and_every_fill_pays_its_fee(bid_lv, ask_lv, qty, mid, fee_bps, slip_bps, is_buy, thin):
    """Property (issue 17): a buy never averages below the best ask nor above the worst ask it took;
    a sell never above the best bid; the fee is fee_bps of the fill's notional, on every fill."""
    gaps_b = np.cumsum([g for g, _ in bid_lv]) * mid / 1e4
    gaps_a = np.cumsum([g for g, _ in ask_lv]) * mid / 1e4
    bids = np.c_[mid - gaps_b, [s for _, s in bid_lv]]
    asks = np.c_[mid + gaps_a, [s for _, s in ask_lv]]
    b = OrderBook.from_levels("XUSDT", bids, asks, T0, recv_ms=T0)
    cfg = PaperConfig(taker_fee_bps=fee_bps, slippage_bps=slip_bps, thin_book=thin)
    f = fill_orders([b], np.array([qty if is_buy else -qty]), cfg)
    side = b.ask_sizes if is_buy else b.bid_sizes
    filled = abs(f.qty[0])
    if filled == 0:
        assert thin == "refuse" and side.sum() < qty and f.fee[0] == 0 and np.isnan(f.price[0])
        return
    assert filled <= qty and (filled == qty or filled == pytest.approx(side.sum()))
    if is_buy:
        assert f.qty[0] > 0 and f.price[0] >= b.ask_prices[0]
        assert f.price[0] <= b.ask_prices[-1] * (1 + slip_bps / 1e4) * (1 + 1e-12)
    else:
        assert f.qty[0] < 0 and f.price[0] <= b.bid_prices[0]
        assert f.price[0] >= b.bid_prices[-1] * (1 - slip_bps / 1e4) * (1 - 1e-12)
    assert f.fee[0] == pytest.approx(filled * f.price[0] * fee_bps / 1e4, rel=1e-12)
    if fee_bps > 0:
        assert f.fee[0] > 0


def test_walk_book_takes_levels_in_order():
    px = np.array([[100.0, 101.0, 102.0]])
    sz = np.array([[1.0, 2.0, 3.0]])
    filled, vwap = walk_book(px, sz, np.array([2.5]))
    assert filled[0] == 2.5 and vwap[0] == pytest.approx((100 * 1 + 101 * 1.5) / 2.5)
    filled, vwap = walk_book(px, sz, np.array([10.0]))
    assert filled[0] == 6.0 and vwap[0] == pytest.approx((100 + 202 + 306) / 6)
    filled, vwap = walk_book(px, sz, np.array([10.0]), refuse_thin=True)
    assert filled[0] == 0 and np.isnan(vwap[0])


def test_policy_enters_flips_and_exits_after_the_horizon():
    cfg = PaperConfig(horizon_s=60, notional_quote=1000.0, taker_fee_bps=5.0, slippage_bps=0.0)
    tr = PaperTrader(["AUSDT", "BUSDT"], cfg, model_uri="models:/m/1")
    bk = {"AUSDT": book("AUSDT", 100.0, size=100), "BUSDT": book("BUSDT", 50.0, size=100)}
    s = tr.step(T0, bk, preds(AUSDT=(0.2, 0.2, 0.6), BUSDT=(0.3, 0.11, 0.59)))  # 0.6 enters, 0.59 does not
    assert [(t.symbol, t.side, t.reason) for t in s.trades] == [("AUSDT", BUY, ENTER)]
    t = s.trades[0]
    assert t.qty == pytest.approx(10.0) and t.price >= bk["AUSDT"].ask_prices[0] and t.model_uri == "models:/m/1"
    assert t.fee == pytest.approx(t.qty * t.price * 5e-4)
    s = tr.step(T0 + 30_000, bk, preds(AUSDT=(0.1, 0.1, 0.8)))  # same side: hold, no pyramiding
    assert not s.trades and tr.pos[0] == pytest.approx(10.0)
    s = tr.step(T0 + 60_000, bk, None)  # horizon reached: exit
    assert [(t.side, t.reason, t.qty) for t in s.trades] == [(SELL, EXIT, pytest.approx(10.0))]
    assert tr.pos[0] == 0 and len(tr.round_trips) == 1 and tr.round_trips[0].side == 1
    s = tr.step(T0 + 90_000, bk, preds(BUSDT=(0.7, 0.2, 0.1)))
    assert [(t.symbol, t.side, t.reason) for t in s.trades] == [("BUSDT", SELL, ENTER)] and tr.pos[1] == pytest.approx(-20.0)
    s = tr.step(T0 + 120_000, bk, preds(BUSDT=(0.1, 0.2, 0.7)))  # opposite signal: flip in one order
    assert [(t.side, t.reason, t.qty) for t in s.trades] == [(BUY, FLIP, pytest.approx(40.0))]
    assert tr.pos[1] == pytest.approx(20.0) and [r.side for r in tr.round_trips] == [1, -1]
    s = tr.step(T0 + 180_000, {"AUSDT": bk["AUSDT"]}, None)  # BUSDT's exit is due but it has no book
    assert not s.trades and s.missed == [("BUSDT", NO_BOOK)]
    s = tr.step(T0 + 183_000, bk, None)
    assert [(t.symbol, t.reason) for t in s.trades] == [("BUSDT", EXIT)] and not tr.pos.any()
    summ = tr.summary()
    assert summ.round_trips == 3 and summ.fills == 5 and summ.open_positions == 0
    # Each round trip crosses the spread and pays two fees: with a flat market every one loses.
    assert summ.hit_rate == 0 and summ.gross_pnl < 0 and summ.net_pnl == pytest.approx(summ.gross_pnl - summ.fees)


def test_thin_book_partial_and_refuse():
    thin = {"AUSDT": book("AUSDT", 100.0, levels=3, size=1.0)}  # 3 base units per side
    tr = PaperTrader(["AUSDT"], PaperConfig(notional_quote=1000.0))
    s = tr.step(T0, thin, preds(AUSDT=(0, 0, 1)))
    assert s.trades[0].qty == pytest.approx(3.0) and tr.pos[0] == pytest.approx(3.0)
    tr = PaperTrader(["AUSDT"], PaperConfig(notional_quote=1000.0, thin_book="refuse"))
    s = tr.step(T0, thin, preds(AUSDT=(0, 0, 1)))
    assert not s.trades and s.missed == [("AUSDT", THIN_BOOK)] and tr.pos[0] == 0


def test_pnl_of_a_known_round_trip():
    """Long 10 at 100.01 (ask), exit at 101.99 (bid) after a move: gross = 10 x 1.98, fees = 1 bp of each leg."""
    cfg = PaperConfig(notional_quote=1000.0, taker_fee_bps=1.0, slippage_bps=0.0, horizon_s=30)
    tr = PaperTrader(["AUSDT"], cfg)
    tr.step(T0, {"AUSDT": book("AUSDT", 100.0, spread_bps=2.0, size=100)}, preds(AUSDT=(0, 0, 1)))
    tr.step(T0 + 30_000, {"AUSDT": book("AUSDT", 102.0, spread_bps=1.9607843137254901, size=100)}, None)
    (rt,) = tr.round_trips
    assert rt.qty == pytest.approx(10.0) and rt.gross == pytest.approx(10 * (101.99 - 100.01))
    assert rt.fees == pytest.approx(10 * 100.01 * 1e-4 + 10 * 101.99 * 1e-4)
    s = tr.summary()
    assert s.gross_pnl == pytest.approx(rt.gross) and s.net_pnl == pytest.approx(rt.net) and s.hit_rate == 1.0
    assert s.turnover == pytest.approx(10 * 100.01 + 10 * 101.99)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 10_000), st.sampled_from(["partial", "refuse"]), st.floats(0.0, 10.0), st.floats(0.0, 5.0))
def test_accounting_identities_hold_on_random_runs(seed, thin, fee_bps, slip_bps):
    """Property: net = gross - fees at every tick; fees are the sum of the fills' fees; once flat, gross
    PnL is the sum of the round trips' gross, fees the sum of their fees; the running max drawdown
    equals the drawdown of the equity curve; every fill is within its book."""
    rng = np.random.default_rng(seed)
    syms = ["AUSDT", "BUSDT", "CUSDT"]
    cfg = PaperConfig(horizon_s=60, notional_quote=500.0, taker_fee_bps=fee_bps, slippage_bps=slip_bps, thin_book=thin)
    tr = PaperTrader(syms, cfg)
    mids = np.array([100.0, 20.0, 3.0])
    curve_g, curve_n, fees_seen = [], [], 0.0
    for k in range(80):
        mids *= np.exp(rng.normal(0, 0.002, 3))
        books = {s: book(s, m, spread_bps=rng.uniform(0.5, 5), size=rng.uniform(0.5, 40) / m * 10, seed=int(rng.integers(1 << 30)))
                 for s, m in zip(syms, mids) if rng.random() > 0.1}
        p = rng.dirichlet([1, 1, 1], size=3)
        step = tr.step(T0 + 30_000 * k, books, SimpleNamespace(symbols=syms, prob=p))
        for t in step.trades:
            b = books[t.symbol]
            assert t.qty > 0 and (t.price >= b.ask_prices[0] if t.side == BUY else t.price <= b.bid_prices[0])
            assert t.fee == pytest.approx(t.qty * t.price * fee_bps / 1e4)
            fees_seen += t.fee
        assert step.equity_net == pytest.approx(step.equity_gross - tr.fees.sum())
        curve_g.append(step.equity_gross)
        curve_n.append(step.equity_net)
    # Close everything: a final tick past the horizon with deep books and no predictions.
    for k in range(80, 84):
        step = tr.step(T0 + 30_000 * k + 600_000, {s: book(s, m, size=1e6) for s, m in zip(syms, mids)}, None)
        fees_seen += sum(t.fee for t in step.trades)
        curve_g.append(step.equity_gross)
        curve_n.append(step.equity_net)
    s = tr.summary()
    assert s.open_positions == 0
    assert s.fees == pytest.approx(fees_seen, rel=1e-9, abs=1e-12)
    assert s.net_pnl == pytest.approx(s.gross_pnl - s.fees)
    assert s.gross_pnl == pytest.approx(sum(r.gross for r in tr.round_trips), abs=1e-7)
    assert s.fees == pytest.approx(sum(r.fees for r in tr.round_trips), abs=1e-7)
    assert s.max_drawdown_gross == pytest.approx(max_drawdown(np.array(curve_g)))
    assert s.max_drawdown_net == pytest.approx(max_drawdown(np.array(curve_n)))
    if tr.round_trips:
        assert s.hit_rate == pytest.approx(np.mean([r.net > 0 for r in tr.round_trips]))


def test_max_drawdown():
    assert max_drawdown(np.array([])) == 0
    assert max_drawdown(np.array([1.0, 3.0, 2.0, 5.0, 1.0, 4.0])) == 4.0
    assert max_drawdown(np.array([-1.0, -3.0, -2.0])) == 3.0  # the peak starts at 0


@pytest.mark.parametrize("kwargs, message", [
    ({"enter_prob": 0.5}, "only one side"), ({"notional_quote": 0}, "notional"), ({"taker_fee_bps": -1}, "fee"),
    ({"thin_book": "maybe"}, "thin_book"), ({"horizon_s": 0}, "horizon"),
])
def test_config_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PaperConfig(**kwargs)
