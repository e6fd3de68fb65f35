"""Walk-forward folds: K=1 is today's purged split; test windows tile the tail; no window overlaps training."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backend.ml_engine.training_orchestrator.config import DataConfig
from backend.ml_engine.training_orchestrator.data import load_training_data
from backend.ml_engine.training_orchestrator.errors import TrainingDataError
from backend.ml_engine.training_orchestrator.evaluation.folds import default_test_fraction, rows_read_mask, walk_forward
from backend.ml_engine.training_orchestrator.sequences import find_segments, purged_split, sequence_ends
from synthetic import make_samples, write_store

L = 12


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("folds")
    frames = [
        make_samples("BTCUSDT", 1200, seed=1, gaps={500: 600_000}),
        make_samples("ETHUSDT", 1200, seed=2),
        make_samples("4USDT", 1200, seed=3, interval_ms=10_000),
    ]
    return write_store(root, frames, tape=False)


def test_one_fold_reproduces_the_purged_split(store):
    cfg = DataConfig(sequence_length=L)
    data = load_training_data(store, cfg)
    seg = find_segments(data, cfg.gap_factor)
    split = purged_split(data, cfg, seg)
    ends = sequence_ends(data, seg, L)
    (fold,) = walk_forward(
        data.timestamps_ms[ends], folds=1, purge_ms=split.purge_ms, val_fraction=cfg.val_fraction, test_fraction=cfg.test_fraction
    )
    np.testing.assert_array_equal(ends[fold.train], split.train)
    np.testing.assert_array_equal(ends[fold.val], split.val)
    np.testing.assert_array_equal(ends[fold.test], split.test)
    assert (fold.train_end_ms, fold.val_start_ms, fold.val_end_ms, fold.test_start_ms) == (
        split.train_end_ms,
        split.val_start_ms,
        split.val_end_ms,
        split.test_start_ms,
    )
    np.testing.assert_array_equal(rows_read_mask(ends[fold.train], L, data.n), split.train_rows_mask)


@pytest.mark.parametrize("window_s", [None, 3 * 3600])
def test_no_test_window_shares_rows_or_prices_with_training(store, window_s):
    cfg = DataConfig(sequence_length=L, horizon_s=60)
    data = load_training_data(store, cfg)
    seg = find_segments(data, cfg.gap_factor)
    split = purged_split(data, cfg, seg)
    ends = sequence_ends(data, seg, L)
    t = data.timestamps_ms
    folds = walk_forward(
        t[ends], folds=4, purge_ms=split.purge_ms, test_fraction=default_test_fraction(4), window_ms=window_s and window_s * 1000
    )
    assert len(folds) == 4
    h_ms = cfg.horizon_s * 1000
    for f in folds:
        train, later = ends[f.train], np.concatenate([ends[f.val], ends[f.test]])
        # Rows: no row read by a training window is read by a validation or test window.
        assert not (rows_read_mask(train, L, data.n) & rows_read_mask(later, L, data.n)).any()
        # Prices: every later window starts after the last training label's horizon has passed.
        first_row_time = t[later - (L - 1)]
        assert first_row_time.min() > t[train].max() + h_ms
        val_first = t[ends[f.val] - (L - 1)].min()
        assert t[ends[f.test] - (L - 1)].min() > t[ends[f.val]].max() + h_ms
        assert val_first > t[train].max() + h_ms
        if window_s:
            assert t[train].min() >= f.train_end_ms - window_s * 1000
    if window_s is None:
        # Expanding: each fold trains on everything the one before did, and more.
        for a, b in zip(folds, folds[1:]):
            assert np.isin(a.train, b.train).all() and b.train.size > a.train.size


@settings(max_examples=60, deadline=None)
@given(
    n_times=st.integers(200, 2000),
    symbols=st.integers(1, 4),
    folds=st.integers(1, 6),
    purge=st.integers(0, 40),
    rolling=st.booleans(),
    seed=st.integers(0, 2**31),
)
def test_folds_tile_the_tail_and_respect_the_purge(n_times, symbols, folds, purge, rolling, seed):
    rng = np.random.default_rng(seed)
    # Several symbols share each timestamp; the input is shuffled: the split must not care about order.
    t = np.repeat(np.cumsum(rng.integers(1, 4, n_times)) * 1000, symbols)
    t = t[rng.permutation(t.size)]
    purge_ms = purge * 1000
    window_ms = int(rng.integers(50, 500)) * 1000 if rolling else None
    try:
        out = walk_forward(t, folds=folds, purge_ms=purge_ms, test_fraction=default_test_fraction(folds), window_ms=window_ms)
    except TrainingDataError as err:
        assert "fold" in str(err) or "purge" in str(err)
        return
    tests = np.concatenate([f.test for f in out])
    assert np.unique(tests).size == tests.size, "test windows overlap"
    np.testing.assert_array_equal(np.sort(tests), np.flatnonzero(t >= out[0].test_start_ms))
    assert out[-1].test_end_ms == t.max()
    for a, b in zip(out, out[1:]):
        assert b.test_start_ms == a.test_end_ms + 1
    for f in out:
        assert t[f.train].max() + purge_ms < t[f.val].min()
        assert t[f.val].max() + purge_ms < t[f.test].min()
        assert f.test_start_ms <= t[f.test].min() and t[f.test].max() <= f.test_end_ms
        expected_train = (t <= f.train_end_ms) & (t >= (f.train_end_ms - window_ms if rolling else t.min()))
        np.testing.assert_array_equal(f.train, np.flatnonzero(expected_train))


def test_too_many_folds_names_the_short_fold():
    t = np.arange(0, 300_000, 1000)
    with pytest.raises(TrainingDataError, match=r"fold 1 has train=\d+, val=\d+, test=\d+"):
        walk_forward(t, folds=6, purge_ms=10_000, test_fraction=0.5, min_sequences=30)


def test_data_shorter_than_the_purges_is_refused():
    with pytest.raises(TrainingDataError, match="purge"):
        walk_forward(np.arange(0, 60_000, 1000), purge_ms=30_000)


@pytest.mark.parametrize(
    "kwargs",
    [{"folds": 0}, {"purge_ms": -1}, {"val_fraction": 0.5, "test_fraction": 0.45}, {"window_ms": 0}],
)
def test_bad_arguments_are_value_errors(kwargs):
    args = {"folds": 2, "purge_ms": 1000, **kwargs}
    with pytest.raises(ValueError):
        walk_forward(np.arange(0, 10**6, 1000), **args)


def test_rows_read_mask_matches_a_direct_count():
    rng = np.random.default_rng(3)
    ends = np.unique(rng.integers(9, 500, 60))
    direct = np.zeros(500, bool)
    for e in ends:
        direct[e - 9 : e + 1] = True
    np.testing.assert_array_equal(rows_read_mask(ends, 10, 500), direct)


def test_default_test_fraction():
    assert default_test_fraction(1) == 0.15
    assert default_test_fraction(2) == pytest.approx(0.3)
    assert default_test_fraction(5) == 0.5
    with pytest.raises(ValueError):
        default_test_fraction(0)
