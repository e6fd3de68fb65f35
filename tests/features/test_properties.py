"""Property tests: price-scale invariance, finiteness once warm, no look-ahead."""

from __future__ import annotations

import copy

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backend.venues.orderbook import OrderBook, validate_book
from backend.venues.types import CANDLE_MS, Trade
from backend.ml_engine.features import TICKS_NEEDED, FeaturePipeline
from tests.features.helpers import T0, random_bars, random_book, scale_bars, trades_between

SYM = "BTCUSDT"
PROPS = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def run(books, bars, trades, divide: float = 1.0):
    """Feed everything just in time; prices divided by ``divide``."""
    pipe = FeaturePipeline([SYM])
    pipe.add_candles(SYM, scale_bars(bars, 1.0 / divide) if divide != 1.0 else bars)
    rows, warm = [], []
    j = 0
    for b in books:
        k = j
        while k < len(trades) and trades[k].ts_ms <= b.ts_ms:
            k += 1
        pipe.add_trades(SYM, [Trade(t.ts_ms, t.price / divide, t.size, t.side) for t in trades[j:k]])
        j = k
        if divide != 1.0:
            b = OrderBook(b.symbol, b.bid_prices / divide, b.bid_sizes, b.ask_prices / divide, b.ask_sizes, b.ts_ms, b.recv_ms)
        batch = pipe.update({SYM: b})
        rows.append(batch.features[0])
        warm.append(batch.warm[0])
    return np.array(rows), np.array(warm)


def market(seed: int, n_books: int, tick_ms: int, p0: float, levels: int, tick_bps: float):
    rng = np.random.default_rng(seed)
    bars = random_bars(400, start_ms=T0 - 400 * CANDLE_MS, p0=p0, seed=seed)
    mids = bars[-1].close * np.exp(np.cumsum(rng.normal(0, 3e-4, n_books)))
    books = [random_book(rng, float(m), T0 + i * tick_ms, SYM, levels, tick_bps) for i, m in enumerate(mids)]
    trades = trades_between(rng, T0 - 120_000, T0 + n_books * tick_ms, float(mids[0]), 4 * n_books)
    return books, bars, trades


@PROPS
@given(
    seed=st.integers(0, 2**32 - 1),
    levels=st.integers(1, 50),
    tick_bps=st.sampled_from([0.01, 0.1, 1.0, 7.0]),
    p0=st.sampled_from([90_000.0, 97_123.45, 61_000.5]),
)
def test_a_book_divided_by_10000_gives_the_same_features(seed, levels, tick_bps, p0):
    books, bars, trades = market(seed, TICKS_NEEDED + 25, 3000, p0, levels, tick_bps)
    a, warm_a = run(books, bars, trades)
    b, warm_b = run(books, bars, trades, divide=10_000.0)
    assert np.array_equal(warm_a, warm_b) and warm_a[-1]
    assert np.array_equal(np.isnan(a), np.isnan(b))
    np.testing.assert_allclose(b, a, rtol=2e-5, atol=2e-6, equal_nan=True)


_WARM: dict[str, FeaturePipeline] = {}


def warm_pipeline() -> FeaturePipeline:
    if "p" not in _WARM:
        books, bars, trades = market(3, TICKS_NEEDED + 25, 3000, 100.0, 50, 1.0)
        pipe = FeaturePipeline([SYM])
        pipe.add_candles(SYM, bars)
        pipe.add_trades(SYM, trades)
        for b in books:
            batch = pipe.update({SYM: b})
        assert batch.warm[0]
        _WARM["p"] = pipe
    return copy.deepcopy(_WARM["p"])


@st.composite
def valid_books(draw, ts_ms: int):
    """Arbitrary valid books: any scale, 1..50 levels, tiny to huge sizes, any gaps."""
    mid = draw(st.floats(1e-6, 1e6))
    tick = mid * draw(st.sampled_from([1e-6, 1e-4, 1e-2, 0.2]))
    sizes = st.floats(1e-8, 1e8)
    nb, na = draw(st.integers(1, 50)), draw(st.integers(1, 50))
    gaps_b = draw(st.lists(st.integers(1, 1000), min_size=nb, max_size=nb))
    gaps_a = draw(st.lists(st.integers(1, 1000), min_size=na, max_size=na))
    bid = mid - tick * np.cumsum(gaps_b) / 2
    ask = mid + tick * np.cumsum(gaps_a) / 2
    if bid[-1] <= 0:
        bid = bid[bid > 0]
        if bid.size == 0:
            bid = np.array([mid / 2])
    bsz = np.array(draw(st.lists(sizes, min_size=bid.size, max_size=bid.size)))
    asz = np.array(draw(st.lists(sizes, min_size=na, max_size=na)))
    book = OrderBook(SYM, bid, bsz, ask, asz, ts_ms, ts_ms)
    assert validate_book(book, ts_ms) is None
    return book


@PROPS
@given(data=st.data())
def test_warm_rows_are_finite_on_arbitrary_valid_books(data):
    pipe = warm_pipeline()
    t = T0 + (TICKS_NEEDED + 25) * 3000
    for i in range(3):
        book = data.draw(valid_books(t + i * 3000))
        batch = pipe.update({SYM: book})
        assert batch.warm[0], batch.not_warm
        assert np.isfinite(batch.features).all()


@PROPS
@given(
    seed=st.integers(0, 2**32 - 1),
    n_books=st.integers(5, 40),
    tick_ms=st.sampled_from([1000, 3000, 7000, 20_000]),
)
def test_later_books_candles_and_trades_never_change_earlier_features(seed, n_books, tick_ms):
    books, bars, trades = market(seed, n_books, tick_ms, 100.0, 20, 1.0)
    # the bars keep coming after T0: 400 closed before the first book, the rest later
    bars = bars + random_bars(n_books * tick_ms // CANDLE_MS + 2, start_ms=T0, p0=bars[-1].close, seed=seed + 1)
    just_in_time, _ = run_jit(books, bars, trades)
    # everything in the future handed over before the first tick
    pipe = FeaturePipeline([SYM])
    pipe.add_candles(SYM, bars)
    pipe.add_trades(SYM, trades)
    early = np.array([pipe.update({SYM: b}).features[0] for b in books])
    np.testing.assert_allclose(early, just_in_time, rtol=1e-6, atol=1e-9, equal_nan=True)
    # and a run over a prefix of the books matches the full run on that prefix
    cut = n_books // 2
    prefix, _ = run_jit(books[:cut], bars, trades)
    np.testing.assert_array_equal(prefix, just_in_time[:cut])


def run_jit(books, bars, trades):
    """Bars are added only once closed, trades only once their time has come."""
    pipe = FeaturePipeline([SYM])
    rows = []
    bi = ti = 0
    for b in books:
        bj = bi
        while bj < len(bars) and bars[bj].close_ms <= b.ts_ms:
            bj += 1
        pipe.add_candles(SYM, bars[bi:bj])
        bi = bj
        tj = ti
        while tj < len(trades) and trades[tj].ts_ms <= b.ts_ms:
            tj += 1
        pipe.add_trades(SYM, trades[ti:tj])
        ti = tj
        rows.append(pipe.update({SYM: b}).features[0])
    return np.array(rows), None
