"""Block bootstrap: exact resample counts, block length per time, coverage, and the verdict's error rates."""

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score

from backend.ml_engine.training_orchestrator.evaluate import score
from backend.ml_engine.training_orchestrator.evaluation import metrics
from backend.ml_engine.training_orchestrator.evaluation.bootstrap import (
    block_length,
    block_starts,
    compare,
    resampled_confusions,
    time_order,
)
from backend.ml_engine.training_orchestrator.evaluation.verdict import verdicts
from eval_synthetic import known_accuracy, no_signal, with_signal


@pytest.mark.parametrize("seed", range(5))
def test_batched_metrics_match_sklearn_and_the_orchestrators_score(seed):
    rng = np.random.default_rng(seed)
    cms, expected = [], []
    for _ in range(8):
        n = int(rng.integers(1, 60))
        y = rng.integers(0, 3, n)
        p = rng.integers(0, 2, n) * 2 if seed % 2 else rng.integers(0, 3, n)  # odd seeds: NEUTRAL never predicted
        cms.append(metrics.confusion(y, p))
        f1 = f1_score(y, p, labels=[0, 1, 2], average="macro", zero_division=0)
        expected.append((accuracy_score(y, p), f1, score("x", y, p).macro_f1))
    cms = np.stack(cms)
    np.testing.assert_allclose(metrics.accuracy(cms), [e[0] for e in expected])
    np.testing.assert_allclose(metrics.macro_f1(cms), [e[1] for e in expected])
    np.testing.assert_allclose(metrics.macro_f1(cms), [e[2] for e in expected])


def test_confusion_codes_reject_bad_input():
    with pytest.raises(ValueError, match="shape"):
        metrics.confusion_codes(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="classes 0..2"):
        metrics.confusion_codes(np.array([0, 3]), np.array([0, 1]))


@pytest.mark.parametrize("n,block", [(97, 10), (100, 10), (50, 50), (30, 64), (41, 1)])
def test_resampled_confusions_equal_explicit_index_arrays(n, block):
    rng = np.random.default_rng(n * block)
    y, p = rng.integers(0, 3, n), rng.integers(0, 3, n)
    starts = block_starts(n, block, 25, rng)
    got = resampled_confusions(metrics.confusion_codes(y, p), starts, block)
    b = min(block, n)
    for r in range(starts.shape[0]):
        # The resample written out: blocks with wrap-around, cut to n samples.
        idx = ((starts[r][:, None] + np.arange(b)[None, :]) % n).ravel()[:n]
        np.testing.assert_array_equal(got[r], metrics.confusion(y[idx], p[idx]))
        assert got[r].sum() == n


def test_block_starts_range_and_shape():
    rng = np.random.default_rng(0)
    s = block_starts(1000, 30, 200, rng)
    assert s.shape == (200, 34) and s.min() >= 0 and s.max() <= 999 and s.max() > 1000 - 30
    s = block_starts(1000, 30, 200, rng, circular=False)
    assert s.max() <= 970
    with pytest.raises(ValueError):
        block_starts(0, 5, 10, rng)


def test_block_length_counts_samples_of_every_symbol_in_the_stretch():
    dep = 960_000  # 30 samples of 30 s (span) + 60 s horizon
    one = np.arange(500) * 30_000
    assert block_length(one, dep, factor=1.0) == 32
    assert block_length(one, dep, factor=2.0) == 64
    three = np.concatenate([one, one + 1_000, one + 2_000])  # three symbols sampled together
    assert block_length(three[np.random.default_rng(0).permutation(three.size)], dep, factor=2.0) == 3 * 64
    with pytest.raises(ValueError):
        block_length(one, dep, factor=0.5)


def test_time_order_sorts_by_time_then_symbol():
    t = np.array([5, 1, 5, 1, 3])
    sym = np.array([1, 1, 0, 0, 2])
    o = time_order(t, sym)
    assert list(zip(t[o], sym[o])) == [(1, 0), (1, 1), (3, 2), (5, 0), (5, 1)]


def test_compare_is_seeded_and_centred_on_the_full_sample_metric():
    rng = np.random.default_rng(1)
    y, model, base = with_signal(1500, 16, rng, 0.6)
    a = compare(y, {"model": model, "base": base}, block=32, seed=7, resamples=300)
    b = compare(y, {"model": model, "base": base}, block=32, seed=7, resamples=300)
    c = compare(y, {"model": model, "base": base}, block=32, seed=8, resamples=300)
    assert a.scores == b.scores and a.diffs == b.diffs
    assert a.scores != c.scores
    s = a.scores["model"]["macro_f1"]
    assert s.estimate == pytest.approx(f1_score(y, model, average="macro"))
    assert s.low < s.estimate < s.high
    d = a.diffs["base"]["accuracy"]
    assert d.estimate == pytest.approx((y == model).mean() - (y == base).mean())


def test_paired_resamples_cancel_what_model_and_baseline_share():
    rng = np.random.default_rng(2)
    y, model = known_accuracy(3000, 16, 0.6, rng)
    base = model.copy()
    flip = rng.choice(3000, 30, replace=False)
    base[flip] = (base[flip] + 1) % 3  # the baseline is the model with 1 % of answers changed
    c = compare(y, {"model": model, "base": base, "same": model.copy()}, block=32, resamples=500)
    same = c.diffs["same"]["macro_f1"]
    assert same.low == same.high == 0.0
    paired = c.diffs["base"]["accuracy"]
    separate = c.scores["model"]["accuracy"].high - c.scores["base"]["accuracy"].low
    # The paired interval is far narrower than the gap between the two separate intervals.
    assert paired.high - paired.low < 0.1 * separate


def test_compare_rejects_bad_input():
    y = np.zeros(10, int)
    with pytest.raises(ValueError, match="include 'model'"):
        compare(y, {"base": y}, block=2)
    with pytest.raises(ValueError, match="empty"):
        compare(y[:0], {"model": y[:0]}, block=2)
    with pytest.raises(ValueError, match="level"):
        compare(y, {"model": y}, block=2, level=1.0)


def _coverage(reps, n, m, block, accuracy=0.55, resamples=300):
    hits = 0
    for r in range(reps):
        y, p = known_accuracy(n, m, accuracy, np.random.default_rng(r))
        hits += compare(y, {"model": p}, block=block, resamples=resamples, seed=r).scores["model"]["accuracy"].contains(accuracy)
    return hits / reps


def test_interval_covers_a_known_accuracy():
    # Errors dependent over m=16 samples; blocks of 2 x 16 (the default factor). The 95 % interval
    # should cover the truth about 90-95 % of the time (bench/eval_bench.py: 200 repetitions).
    assert 0.84 <= _coverage(100, 2000, 16, 32) <= 0.995


def test_sample_by_sample_bootstrap_is_too_narrow_for_dependent_errors():
    # The same data resampled sample by sample (block 1) pretends 2000 independent samples: the
    # check above must be able to fail, and this is the failure it guards against.
    assert _coverage(40, 2000, 16, 1, resamples=200) < 0.6


def _no_signal_outcomes(seeds, n, m, block, resamples=500):
    out = {"beats": 0, "not_distinguishable": 0, "worse": 0}
    for seed in seeds:
        y, (model, persistence, logreg) = no_signal(n, m, np.random.default_rng(10_000 + seed), k=3)
        c = compare(y, {"model": model, "persistence": persistence, "logreg": logreg}, block=block, resamples=resamples, seed=seed)
        for v in verdicts(c).values():
            out[v.outcome] += 1
    return out


def test_no_signal_is_rarely_called_a_win():
    # Model and baselines all independent of the labels. At a 95 % level about 2.5 % of verdicts
    # are "beats" by chance (the interval's upper tail); 100 seeds x 2 baselines = 200 verdicts.
    out = _no_signal_outcomes(range(100), 3000, 32, 64)
    assert out["not_distinguishable"] >= 0.88 * 200
    assert out["beats"] <= 0.06 * 200


def test_no_signal_with_sample_by_sample_bootstrap_claims_wins():
    out = _no_signal_outcomes(range(20), 1500, 32, 1, resamples=200)
    assert out["beats"] >= 4  # what block=1 does to the previous test


@pytest.mark.parametrize("seed", range(5))
def test_clear_signal_beats_and_its_mirror_is_worse(seed):
    y, model, base = with_signal(2000, 32, np.random.default_rng(seed), 0.6)
    c = compare(y, {"model": model, "base": base}, block=64, resamples=500, seed=seed)
    assert verdicts(c)["base"].outcome == "beats"
    mirror = compare(y, {"model": base, "base": model}, block=64, resamples=500, seed=seed)
    assert verdicts(mirror)["base"].outcome == "worse"
