"""Sequences never cross a gap or a symbol, the purge gap holds, normalisation sees only training rows."""

import numpy as np
import pytest
import torch

from backend.ml_engine.training_orchestrator.config import DataConfig
from backend.ml_engine.training_orchestrator.data import load_training_data
from backend.ml_engine.training_orchestrator.orchestrator import prepare
from backend.ml_engine.training_orchestrator.sequences import (
    find_segments,
    gather_windows,
    purged_split,
    sampling_intervals,
)
from synthetic import make_samples, write_store

L = 12


@pytest.fixture
def gappy(tmp_path):
    # BTCUSDT: a 10-minute hole at row 400; ETHUSDT: a 61 s hole (just over 2 intervals) at row 300
    # and a 59 s one (not a gap) at row 500; 4USDT samples every 10 s.
    frames = [
        make_samples("BTCUSDT", 900, seed=1, gaps={400: 600_000}),
        make_samples("ETHUSDT", 900, seed=2, gaps={300: 31_000, 500: 29_000}),
        make_samples("4USDT", 900, seed=3, interval_ms=10_000),
    ]
    return write_store(tmp_path, frames, tape=False)


def _row_origin(data):
    """(symbol code, timestamp) per row: lets a test check windows against the raw data, not our segmenting."""
    return data.symbol_codes, data.timestamps_ms


def test_sampling_interval_inferred_per_symbol(gappy):
    data = load_training_data(gappy, DataConfig())
    assert sampling_intervals(data) == {"4USDT": 10_000, "BTCUSDT": 30_000, "ETHUSDT": 30_000}


def test_no_window_crosses_a_gap_or_symbol(gappy):
    cfg = DataConfig(sequence_length=L)
    data = load_training_data(gappy, cfg)
    seg = find_segments(data, cfg.gap_factor)
    assert seg.count == 5  # 3 symbols + BTC hole + ETH 61 s hole; the 59 s step is not a gap
    split = purged_split(data, cfg, seg)
    ends = np.concatenate([split.train, split.val, split.test])
    codes, ts = _row_origin(data)
    win_codes = gather_windows(codes[:, None], ends, L)[..., 0]
    win_ts = gather_windows(ts[:, None], ends, L)[..., 0]
    assert np.all(win_codes == win_codes[:, :1]), "a window mixes symbols"
    steps = np.diff(win_ts, axis=1)
    limit = np.where(win_codes[:, 1:] == data.symbols.index("4USDT"), 20_000, 60_000)
    assert np.all(steps > 0) and np.all(steps <= limit), "a window spans a gap"
    # Every row that could end a window (full history, labelled) is used: nothing lost but the warm-up.
    assert ends.size == np.unique(ends).size


def test_purge_gap_holds(gappy):
    cfg = DataConfig(sequence_length=L, horizon_s=60)
    data = load_training_data(gappy, cfg)
    split = purged_split(data, cfg)
    ts = data.timestamps_ms
    max_interval = 30_000
    span_plus_h = L * max_interval + 60_000
    for earlier, later in ((split.train, split.val), (split.val, split.test)):
        last_end = ts[earlier].max()
        first_end = ts[later].min()
        assert first_end - last_end >= span_plus_h
        # The earliest row any later window reads is after every earlier label's horizon.
        first_row_read = ts[later - (L - 1)].min()
        assert first_row_read > last_end + 60_000
    # No row is shared between windows of different splits.
    def rows(ends):
        return set((ends[:, None] + np.arange(-(L - 1), 1)).ravel().tolist())

    assert not rows(split.train) & rows(split.val)
    assert not rows(split.val) & rows(split.test)
    # Chronological: all training ends come first.
    assert ts[split.train].max() < ts[split.val].min() <= ts[split.val].max() < ts[split.test].min()


def test_normalisation_uses_training_rows_only(tmp_path):
    frames = [make_samples("BTCUSDT", 1200, seed=5)]
    # Shift the later rows far away: if val/test rows leaked into the statistics the mean would move.
    frames[0].iloc[950:, 6:116] = frames[0].iloc[950:, 6:116] + 1000.0
    store = write_store(tmp_path, frames, tape=False)
    cfg = DataConfig(sequence_length=L)
    raw = load_training_data(store, cfg).features.copy()
    p = prepare(store, cfg)
    mask = p.split.train_rows_mask
    assert mask.sum() == p.normalizer.fitted_rows
    rows_read = np.unique((p.split.train[:, None] + np.arange(-(L - 1), 1)).ravel())
    assert np.array_equal(np.flatnonzero(mask), rows_read)
    np.testing.assert_allclose(p.normalizer.mean, raw[mask].mean(axis=0), rtol=1e-4, atol=1e-4)
    assert np.all(np.abs(p.normalizer.mean) < 1.0)  # the +1000 rows are all outside training
    # Features were normalised in place with those statistics (and clipped).
    expected = np.clip((raw[:5] - p.normalizer.mean) / p.normalizer.std, -cfg.clip, cfg.clip)
    np.testing.assert_allclose(p.data.features[:5], expected, rtol=1e-5, atol=1e-5)


def test_windows_are_views_over_one_array(gappy):
    cfg = DataConfig(sequence_length=L)
    p = prepare(gappy, cfg)
    X = p.data.features
    assert X.flags.c_contiguous and X.dtype == np.float32
    t = torch.from_numpy(X)
    assert t.data_ptr() == X.ctypes.data  # the trainer's tensor is the same memory
    ends = torch.as_tensor(p.split.train[:4])
    batch = gather_windows(t, ends, L)
    assert batch.shape == (4, L, X.shape[1])
    np.testing.assert_array_equal(batch[2].numpy(), X[p.split.train[2] - L + 1 : p.split.train[2] + 1])
