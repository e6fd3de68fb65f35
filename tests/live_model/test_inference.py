"""Online windows equal training's windows; predictions equal offline ones; nothing looks ahead."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from backend.ml_engine.feature_store.feature_schema import FEATURE_NAMES, FEATURE_SCHEMA_VERSION
from backend.ml_engine.live.inference import GAP, NON_FINITE, OUT_OF_ORDER, UNKNOWN_SYMBOL, WARMING_UP, LivePredictor, WindowRing
from backend.ml_engine.live.model_loader import build_module, load_live_model, spec_from_logged
from backend.ml_engine.training_orchestrator.config import DataConfig
from backend.ml_engine.training_orchestrator.data import LoadedData, load_training_data
from backend.ml_engine.training_orchestrator.sequences import find_segments, gather_windows, sampling_intervals
from live_model.common import SEQ_LEN

F = len(FEATURE_NAMES)


def random_model(seq_len=5, interval_ms=30_000, seed=0, symbols=("AAAUSDT", "BBBUSDT")):
    """The training code's model class with random weights and a made-up normaliser, as a logged run would give it."""
    rng = np.random.default_rng(seed)
    params = {"sequence_length": str(seq_len), "horizon_s": "60", "gap_factor": "2.0", "clip": "10.0", "conv_channels": "8",
              "hidden_size": "8", "dropout": "0.2", "threshold_pct": "from labels", "data_label_thresholds_pct": "0.02",
              "data_sampling_interval_s": ",".join(f"{s}={interval_ms / 1000:g}" for s in symbols), "data_symbols": ",".join(symbols)}
    norm = {"features": list(FEATURE_NAMES), "mean": rng.normal(size=F).tolist(), "std": rng.uniform(0.5, 2, size=F).tolist(), "clip": 10.0}
    spec = spec_from_logged("models:/random/1", "run0", params, norm, {"features": list(FEATURE_NAMES), "feature_schema_version": FEATURE_SCHEMA_VERSION})
    torch.manual_seed(seed)
    from backend.ml_engine.training_orchestrator.model import LOBSequenceClassifier

    core = LOBSequenceClassifier(F, 8, 8, 0.2)
    return build_module(spec, core.state_dict()), spec


def feed_ticks(predictor, symbols, ts, feats):
    """Feed rows tick by tick (one tick = one timestamp, every symbol sampled then); returns {(sym, ts): prob} and skips."""
    out, skips = {}, []
    order = np.lexsort((symbols, ts))
    symbols, ts, feats = np.asarray(symbols)[order], ts[order], feats[order]
    bounds = np.r_[0, np.flatnonzero(np.diff(ts)) + 1, ts.size]
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        batch = predictor.step(list(symbols[lo:hi]), ts[lo:hi], feats[lo:hi])
        skips += batch.skips
        for s, t, p in zip(batch.symbols, batch.ts_ms, batch.prob):
            out[(s, int(t))] = p
    return out, skips


def test_online_predictions_equal_offline_on_the_stored_samples(trained_run):
    """Parity (issue 17): the stored day replayed tick by tick gives the offline predictions of the
    same model on the same samples, window for window (ETHUSDT's gap included)."""
    live = load_live_model(f"models:/{trained_run.name}/1", trained_run.tracking_uri)
    data = load_training_data(trained_run.store, DataConfig(sequence_length=SEQ_LEN, min_samples=100))
    # Offline, as training builds windows: segments, every row ending a full window, one batch.
    seg = find_segments(data, live.spec.gap_factor)
    ends = np.flatnonzero(seg.position >= SEQ_LEN - 1)
    with torch.inference_mode():
        offline = torch.softmax(live.module(torch.from_numpy(gather_windows(data.features, ends, SEQ_LEN))), dim=1).numpy()
    expected = {(data.symbols[data.symbol_codes[e]], int(data.timestamps_ms[e])): p for e, p in zip(ends, offline)}

    predictor = LivePredictor.from_live_model(live, data.symbols)
    names = np.array(data.symbols)[data.symbol_codes]
    online, skips = feed_ticks(predictor, names, data.timestamps_ms, data.features)
    assert online.keys() == expected.keys() and len(online) == ends.size
    diff = max(np.abs(online[k] - expected[k]).max() for k in expected)
    assert diff <= 1e-5, diff
    # Warm-up per symbol and once more after ETHUSDT's gap, nothing else.
    assert [s for s, r in skips if r == GAP] == ["ETHUSDT"]
    assert sum(r == WARMING_UP for _, r in skips) == 3 * (SEQ_LEN - 1) - 1


def test_predictions_before_a_regime_change_do_not_depend_on_later_data():
    """No look-ahead (issue 17): the market changes regime at T; predictions before T are the same
    whether the data after T exist or not, and a symbol's prediction does not depend on its batch mates."""
    module, spec = random_model(seq_len=5)
    rng = np.random.default_rng(3)
    syms = ["AAAUSDT", "BBBUSDT"]
    n = 60
    ts = 1_700_000_000_000 + 30_000 * np.arange(n)
    feats = rng.normal(size=(2, n, F)).astype(np.float32)
    t_change = 40
    feats[:, t_change:] = feats[:, t_change:] * 5 + 3  # the new regime
    sym = np.repeat(syms, n)
    all_ts = np.tile(ts, 2)
    full, _ = feed_ticks(LivePredictor(module, spec, syms), sym, all_ts, feats.reshape(-1, F))
    keep = all_ts < ts[t_change]
    cut, _ = feed_ticks(LivePredictor(module, spec, syms), sym[keep], all_ts[keep], feats.reshape(-1, F)[keep])
    assert cut and cut.keys() == {k for k in full if k[1] < ts[t_change]}
    for k, p in cut.items():
        np.testing.assert_array_equal(p, full[k])
    after = [k for k in full if k[1] >= ts[t_change]]
    assert after and any(np.abs(full[k] - cut.get((k[0], k[1] - 30_000 * 10), full[k])).max() > 0 for k in after)
    # Alone in its batch, AAAUSDT gets what it got beside BBBUSDT.
    alone, _ = feed_ticks(LivePredictor(module, spec, syms), sym[: n], all_ts[: n], feats[0])
    for k, p in alone.items():
        np.testing.assert_allclose(p, full[k], atol=1e-6)


def _loaded(ts, codes, feats, symbols):
    n = ts.size
    return LoadedData(feats, ts, codes.astype(np.int32), symbols, np.ones(n), np.zeros(n, np.int8), np.zeros(n), n)


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 6),
    st.lists(st.lists(st.sampled_from([1, 1, 1, 1, 2, 3, 5]), min_size=1, max_size=40), min_size=1, max_size=3),
    st.sampled_from([1.5, 2.0, 3.0]),
)
def test_ring_builds_exactly_the_windows_training_builds(L, steps_per_symbol, gap_factor):
    """Property: for random spacings (gaps of 2, 3 and 5 intervals), the windows the ring completes
    are training's windows (``find_segments`` + ``gather_windows``) at the same rows, byte for byte."""
    rows = []
    for code, steps in enumerate(steps_per_symbol):
        ts = 1_000_000 + 1_000 * np.cumsum(steps)
        rows += [(code, int(t)) for t in ts]
    codes = np.array([r[0] for r in rows])
    ts = np.array([r[1] for r in rows], dtype=np.int64)
    feats = np.arange(codes.size * 3, dtype=np.float32).reshape(-1, 3)
    symbols = [f"S{c}USDT" for c in range(len(steps_per_symbol))]
    data = _loaded(ts, codes, feats, symbols)
    seg = find_segments(data, gap_factor)
    ends = np.flatnonzero(seg.position >= L - 1)
    expected = {(int(codes[e]), int(ts[e])): w for e, w in zip(ends, gather_windows(feats, ends, L))}

    intervals = sampling_intervals(data)
    ring = WindowRing(len(symbols), 3, L, np.array([intervals[s] for s in symbols]), gap_factor)
    got = {}
    for j in np.argsort(ts, kind="stable"):  # global time order, one row per push
        status, _ = ring.push(codes[j : j + 1], ts[j : j + 1], feats[j : j + 1])
        if status[0] == 0:
            got[(int(codes[j]), int(ts[j]))] = ring.windows(codes[j : j + 1])[0]
    assert got.keys() == expected.keys()
    for k in expected:
        np.testing.assert_array_equal(got[k], expected[k])


def test_refused_samples_are_named_and_change_nothing():
    module, spec = random_model(seq_len=3)
    pred = LivePredictor(module, spec, ["AAAUSDT", "BBBUSDT"])
    x = np.random.default_rng(1).normal(size=(2, F)).astype(np.float32)
    t0 = 1_700_000_000_000
    for k in range(3):
        b = pred.step(["AAAUSDT", "BBBUSDT"], np.array([t0 + k * 30_000] * 2), x + k)
    assert b.symbols == ["AAAUSDT", "BBBUSDT"]
    assert b.prob.dtype == np.float32 and np.allclose(b.prob.sum(axis=1), 1, atol=1e-6)
    assert b.predicted_direction.dtype == np.int8 and (b.predicted_direction == b.prob.argmax(1)).all()
    before = pred.ring.buf.copy()
    bad = x.copy()
    bad[1, 7] = np.nan
    b = pred.step(["AAAUSDT", "BBBUSDT", "ZZZUSDT"], np.array([t0 + 60_000, t0 + 90_000, t0]), np.vstack([x[:1], bad[1:], x[:1]]))
    assert sorted(b.skips) == [("AAAUSDT", OUT_OF_ORDER), ("BBBUSDT", NON_FINITE), ("ZZZUSDT", UNKNOWN_SYMBOL)] and not b.symbols
    np.testing.assert_array_equal(pred.ring.buf, before)
    # 3 intervals later: a gap, then warming up again.
    b = pred.step(["AAAUSDT"], np.array([t0 + 60_000 + 90_001]), x[:1])
    assert b.skips == [("AAAUSDT", GAP)]
    with pytest.raises(ValueError, match="appears twice"):
        pred.step(["BBBUSDT", "BBBUSDT"], np.array([t0 + 10**6, t0 + 10**6 + 1]), x)
    with pytest.raises(ValueError, match=r"features must be \(k, 110\)"):
        pred.step(["BBBUSDT"], np.array([t0 + 10**7]), x[:, :5])


def test_prime_leaves_the_rings_as_a_live_run_would():
    module, spec = random_model(seq_len=4)
    syms = ["AAAUSDT", "BBBUSDT"]
    rng = np.random.default_rng(5)
    n = 9
    ts = np.concatenate([1_700_000_000_000 + 30_000 * np.arange(n), 1_700_000_000_000 + 30_000 * np.r_[np.arange(6), 10, 11, 12]])
    sym = np.repeat(syms, n)
    feats = rng.normal(size=(2 * n, F)).astype(np.float32)
    live = LivePredictor(module, spec, syms)
    feed_ticks(live, sym, ts, feats)
    primed = LivePredictor(module, spec, syms)
    shuffle = rng.permutation(ts.size)
    primed.prime(list(sym[shuffle]), ts[shuffle], feats[shuffle])
    nxt = np.array([ts[:n].max(), ts[n:].max()]) + 30_000
    x = rng.normal(size=(2, F)).astype(np.float32)
    a, b = live.step(syms, nxt, x), primed.step(syms, nxt, x)
    assert a.symbols == b.symbols == syms
    np.testing.assert_array_equal(a.prob, b.prob)
