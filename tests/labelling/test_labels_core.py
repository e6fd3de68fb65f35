"""The labelling core: a hand-computed example and the no-leak property."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backend.ml_engine.labelling import LabelConfig, PriceRows, compute_labels

# 2025-11-07 23:59:00 UTC: the 60 s horizon of the first sample lands exactly on midnight.
T = 1_762_559_940_000
A, B = 0, 1  # BTCUSDT has a tape, ETHUSDT has none (falls back to its samples)

SAMPLES = PriceRows(
    ts_ms=[T, T + 40_000, T, T + 30_000, T + 60_000],
    codes=[A, A, B, B, B],
    mid=[100.0, 100.02, 10.0, 10.01, 9.99],
)
TAPE = PriceRows(
    ts_ms=[
        T + 10_000,  # A: first row at t+10 s
        T + 12_000,  # later row in the same window: not used
        T + 29_999,  # 1 ms before A's 30 s window: never used
        T + 35_001,  # 1 ms after the 5 s tolerance: tape gap -> null
        T + 55_000,  # exactly t+10+5 of sample 2: inside (edge inclusive)
        T + 65_000,  # exactly t+60+5 of sample 1, after midnight: inside
        T + 70_000,  # sample 2's 30 s price
    ],
    codes=[A] * 7,
    mid=[100.05, 99.0, 50.0, 101.0, 100.03, 99.97, 99.97],
)
EXPECTED = {  # (direction, movement %) per sample; None = null
    10: [(2, 0.05), (1, (100.03 / 100.02 - 1) * 100), None, None, None],
    30: [None, (0, (99.97 / 100.02 - 1) * 100), (2, 0.1), (0, (9.99 / 10.01 - 1) * 100), None],
    60: [(0, -0.03), None, (0, -0.1), None, None],
}


def test_hand_computed_example():
    labels = compute_labels(SAMPLES, TAPE, LabelConfig(tolerance_s=5, threshold_pct=0.02))
    for h, expected in EXPECTED.items():
        got = labels[h]
        for i, exp in enumerate(expected):
            if exp is None:
                assert not got.valid[i] and np.isnan(got.movement[i]), (h, i)
            else:
                assert got.valid[i], (h, i)
                assert got.direction[i] == exp[0], (h, i)
                assert got.movement[i] == pytest.approx(exp[1], abs=1e-9), (h, i)


def test_tape_wins_ties_and_order_of_rows_does_not_matter():
    rng = np.random.default_rng(1)
    perm_s, perm_t = rng.permutation(5), rng.permutation(7)
    shuffled = compute_labels(
        PriceRows(np.asarray(SAMPLES.ts_ms)[perm_s], SAMPLES.codes[perm_s], SAMPLES.mid[perm_s]),
        PriceRows(TAPE.ts_ms[perm_t], TAPE.codes[perm_t], TAPE.mid[perm_t]),
    )
    plain = compute_labels(SAMPLES, TAPE)
    for h in (10, 30, 60):
        np.testing.assert_array_equal(shuffled[h].movement, plain[h].movement[perm_s])
    # a sample row at the same instant as a tape row never overrides the tape
    tie = compute_labels(
        PriceRows([0, 10_000], [0, 0], [100.0, 500.0]), PriceRows([10_000], [0], [101.0]), LabelConfig((10,), 5, 0.02)
    )
    assert tie[10].movement[0] == pytest.approx(1.0)


def test_config_validation():
    with pytest.raises(ValueError, match="smaller than the smallest horizon"):
        LabelConfig(tolerance_s=10)
    with pytest.raises(ValueError, match="positive"):
        LabelConfig(horizons_s=(0, 10))
    with pytest.raises(ValueError, match="threshold"):
        LabelConfig(threshold_pct=-1)


TOL = 5_000


@settings(max_examples=60, deadline=None)
@given(
    tape_ts=st.lists(st.integers(0, 120_000), min_size=0, max_size=60),
    sample_ts=st.lists(st.integers(0, 120_000), min_size=1, max_size=15),
    seed=st.integers(0, 2**32 - 1),
    target=st.integers(0, 14),
    h=st.sampled_from([10, 30, 60]),
)
def test_prices_outside_the_window_never_change_a_label(tape_ts, sample_ts, seed, target, h):
    rng = np.random.default_rng(seed)
    target %= len(sample_ts)
    tape = PriceRows(np.array(tape_ts, np.int64), np.zeros(len(tape_ts), int), rng.uniform(90, 110, len(tape_ts)))
    samples = PriceRows(np.array(sample_ts, np.int64), np.zeros(len(sample_ts), int), rng.uniform(90, 110, len(sample_ts)))
    cfg = LabelConfig(tolerance_s=TOL / 1000)
    before = compute_labels(samples, tape, cfg)[h]

    t = samples.ts_ms[target]
    lo, hi = t + h * 1000, t + h * 1000 + TOL
    outside_t = (tape.ts_ms < lo) | (tape.ts_ms > hi)
    outside_s = (samples.ts_ms < lo) | (samples.ts_ms > hi)
    outside_s[target] = False  # mid_price_t is the one past price a label may use
    tape2 = PriceRows(tape.ts_ms, tape.codes, np.where(outside_t, rng.uniform(1, 1000, tape.mid.size), tape.mid))
    samples2 = PriceRows(samples.ts_ms, samples.codes, np.where(outside_s, rng.uniform(1, 1000, samples.mid.size), samples.mid))
    # also add rows of another symbol everywhere: they must not matter either
    noise = PriceRows(rng.integers(0, 130_000, 30), np.ones(30, int), rng.uniform(1, 1000, 30))
    tape2 = PriceRows(np.concatenate([tape2.ts_ms, noise.ts_ms]), np.concatenate([tape2.codes, noise.codes]), np.concatenate([tape2.mid, noise.mid]))
    after = compute_labels(samples2, tape2, cfg)[h]
    assert before.valid[target] == after.valid[target]
    if before.valid[target]:
        assert before.direction[target] == after.direction[target]
        assert before.movement[target] == after.movement[target]


def test_run_grouping_matches_a_stable_argsort():
    from backend.ml_engine.labelling.labels import runs_permutation

    rng = np.random.default_rng(3)
    # the store's layout: blocks of long per-symbol runs
    codes = np.concatenate([np.repeat(rng.permutation(7), rng.integers(200, 400, 7)) for _ in range(20)]).astype(np.uint8)
    perm = runs_permutation(codes)
    assert perm is not None
    np.testing.assert_array_equal(perm, np.argsort(codes, kind="stable"))
    # short runs fall back to the argsort path
    assert runs_permutation(rng.integers(0, 7, 5000).astype(np.uint8)) is None
