"""Persistence uses only the past with the labeller's threshold; metrics agree with scikit-learn."""

import numpy as np
from sklearn.metrics import confusion_matrix as sk_confusion
from sklearn.metrics import f1_score, precision_score, recall_score

from backend.contracts.labels import DEFAULT_THRESHOLD_PCT, direction_from_movement
from backend.ml_engine.training_orchestrator.baselines import (
    majority_predictions,
    persistence_predictions,
)
from backend.ml_engine.training_orchestrator.config import DataConfig
from backend.ml_engine.training_orchestrator.label_setting import choose_label_setting
from backend.ml_engine.training_orchestrator.evaluate import score


def test_threshold_default_is_the_labellers_when_the_labels_record_none():
    # Nothing passed, labels without provenance: the baseline assumes the labeller's default.
    assert DataConfig().threshold_pct is None
    choice = choose_label_setting([frozenset([None])], 60, None, None)
    assert choice.setting.threshold_pct == DEFAULT_THRESHOLD_PCT


def test_persistence_hand_example():
    # Tape for symbol 0 every 3 s from t=0 with prices 100, 100.1, ...; symbol 1 has no tape.
    tape_ts = np.arange(0, 100_000, 3_000, dtype=np.int64)
    tape_mid = 100.0 + 0.1 * np.arange(tape_ts.size)
    tape = (tape_ts, np.zeros(tape_ts.size, np.int32), tape_mid)
    # Samples: (t=90 s, sym 0, mid 100.0) -> past row at t-60=30 s is 30 s / 3 = row 10 -> 101.0: move -0.99 % -> DOWN
    #          (t=62 s, sym 0, mid 100.6) -> target 2 s: last row <= 2 s is t=0 (100.0), within 5 s -> +0.6 % -> UP
    #          (t=63 s, sym 0, mid 100.31) -> target 3 s: row t=3 s (100.1) -> +0.2098 % -> NEUTRAL at threshold 0.25
    #          (t=90 s, sym 1, mid 50.0) -> no tape: falls back to samples; sample of sym 1 at 28 s (49.0) is
    #                                        within [25, 30] s -> +2.04 % -> UP
    #          (t=50 s, sym 1, mid 50.0) -> nothing in [-15, -10] s -> no past price -> NEUTRAL
    t = np.array([90_000, 62_000, 63_000, 90_000, 50_000], np.int64)
    codes = np.array([0, 0, 0, 1, 1], np.int32)
    mid = np.array([100.0, 100.6, 100.31, 50.0, 50.0])
    samples = (np.array([28_000, 50_000, 90_000], np.int64), np.array([1, 1, 1], np.int32), np.array([49.0, 50.0, 50.0]))
    preds, info = persistence_predictions(t, codes, mid, 60, 0.25, 5.0, tape=tape, samples=samples)
    assert preds.tolist() == [0, 2, 1, 2, 1]
    assert info == {"from_tape": 3, "from_samples": 1, "no_past_price": 1}


def test_persistence_never_looks_at_the_future():
    rng = np.random.default_rng(0)
    tape_ts = np.arange(0, 600_000, 3_000, dtype=np.int64)
    tape_mid = 100 + rng.normal(size=tape_ts.size).cumsum() * 0.01
    t = np.arange(120_000, 500_000, 30_000, dtype=np.int64)
    codes = np.zeros(t.size, np.int32)
    mid = np.interp(t, tape_ts, tape_mid)
    a, _ = persistence_predictions(t, codes, mid, 60, 0.01, 5.0, tape=(tape_ts, np.zeros(tape_ts.size, np.int32), tape_mid))
    # Scramble every tape price after t-60s for the first sample: its prediction must not change.
    future = tape_ts > t[0] - 60_000
    tape_mid2 = tape_mid.copy()
    tape_mid2[future] = rng.uniform(50, 150, future.sum())
    b, _ = persistence_predictions(t[:1], codes[:1], mid[:1], 60, 0.01, 5.0, tape=(tape_ts, np.zeros(tape_ts.size, np.int32), tape_mid2))
    assert a[0] == b[0]


def test_direction_threshold_is_strict():
    assert direction_from_movement(np.array([0.02, 0.0201, -0.02, -0.0201, 0.0]), 0.02).tolist() == [1, 2, 1, 0, 1]


def test_scores_match_sklearn():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 500)
    p = np.where(rng.random(500) < 0.6, y, rng.integers(0, 3, 500))
    p[p == 1] = 2  # a class never predicted: precision 0 by convention
    s = score("x", y, p)
    assert np.array_equal(s.confusion, sk_confusion(y, p, labels=[0, 1, 2]))
    assert np.isclose(s.macro_f1, f1_score(y, p, average="macro", labels=[0, 1, 2], zero_division=0))
    np.testing.assert_allclose(s.precision, precision_score(y, p, average=None, labels=[0, 1, 2], zero_division=0))
    np.testing.assert_allclose(s.recall, recall_score(y, p, average=None, labels=[0, 1, 2], zero_division=0))


def test_majority_uses_training_labels():
    preds, cls = majority_predictions(np.array([2, 2, 1, 0, 2]), 4)
    assert cls == 2 and preds.tolist() == [2, 2, 2, 2]
