"""Labels take their future price only from rows of the sample's own source (sim vs live in one store)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from backend.apps.label import main_parquet
from backend.config import configure
from backend.ml_engine.feature_store.feature_store import FeatureStore
from backend.ml_engine.labelling.sources import UNATTRIBUTED, attribute_tape, run_of_file
from tests.labelling.helpers import sample_frame, tape_frame

T0 = 1_762_509_600_000  # 2025-11-07 10:00 UTC


@pytest.fixture
def data_dir(tmp_path: Path):
    yield tmp_path
    configure()


def _collect(store: FeatureStore, source: str, start_ms: int, price: float, minutes: int = 10) -> None:
    """What a collector run writes: a tape row every 3 s, a sample every 30 s on a tape tick, flushed in 5-minute runs."""
    tape_ts = start_ms + np.arange(minutes * 20) * 3_000
    tape_mid = price * (1 + 1e-5 * np.sin(np.arange(tape_ts.size)))
    for part in np.array_split(np.arange(tape_ts.size), minutes // 5):
        store.write_offline_features("price_tape", tape_frame("BTCUSDT", tape_ts[part], tape_mid[part]), fsync=False)
    idx = np.arange(0, tape_ts.size, 10)
    df = sample_frame("BTCUSDT", tape_ts[idx], tape_mid[idx])
    df["source"] = source
    store.write_offline_features("training_features", df, fsync=False)


def test_live_rows_never_take_the_simulators_price(data_dir: Path):
    store = FeatureStore(data_dir / "feature_store" / "offline")
    _collect(store, "sim", T0, 95_000.0)  # the README's sim run, "now"
    _collect(store, "bybit", T0 + 1_500, 87_000.0)  # a live run over the same minutes, ticks 1.5 s apart
    assert main_parquet(["--data-dir", str(data_dir), "--no-progress"]) == 0
    df = store.read_offline_features("training_features")
    for h in (10, 30, 60):
        moves = df[f"future_movement_{h}s"].dropna()
        assert len(moves) > 0.8 * len(df)
        # sin-wiggle of 1e-5 relative: every true move is below 0.003 %; a cross-source one is ~9 %
        assert moves.abs().max() < 0.01, (h, moves.abs().max())


def _ms(col) -> np.ndarray:
    return col.dt.tz_convert(None).to_numpy().astype("datetime64[ms]").astype(np.int64)


def test_a_single_source_store_labels_as_before(data_dir: Path):
    store = FeatureStore(data_dir / "feature_store" / "offline")
    _collect(store, "bybit", T0, 87_000.0)
    assert main_parquet(["--data-dir", str(data_dir), "--no-progress"]) == 0
    df = store.read_offline_features("training_features").sort_values("timestamp")
    tape = store.read_offline_features("price_tape").sort_values("timestamp")
    ts, mid = _ms(tape["timestamp"]), tape["mid_price"].to_numpy()
    t = _ms(df["timestamp"])
    for h in (10, 30, 60):
        j = np.searchsorted(ts, t + h * 1000)
        ok = j < ts.size
        ok[ok] = ts[j[ok]] <= t[ok] + h * 1000 + 5_000
        expect = np.full(t.size, np.nan)
        expect[ok] = (mid[j[ok]] / df["mid_price"].to_numpy()[ok] - 1) * 100
        np.testing.assert_allclose(df[f"future_movement_{h}s"].to_numpy(), expect, rtol=0, atol=1e-12)


def test_attribution_rules():
    # run 0: anchored by source 1 at its second row; run 1: no anchor, right after run 0;
    # run 2: no anchor, far away (another group's collector); run 3: anchors of two sources.
    ts = np.array([0, 3_000, 6_000, 9_000, 12_000, 500_000, 503_000, 900_000, 903_000, 906_000])
    run = np.array([0, 0, 0, 1, 1, 2, 2, 3, 3, 3])
    codes = np.zeros(ts.size, np.int64)
    got = attribute_tape(codes, ts, run, np.array([0, 0, 0]), np.array([3_000, 900_000, 906_000]), np.array([1, 0, 1]))
    assert got.tolist() == [1, 1, 1, 1, 1, UNATTRIBUTED, UNATTRIBUTED, 0, 0, 1]
    assert run_of_file("features_235959_ab12cd.parquet") == run_of_file("features_000000_ab12cd.parquet") == "ab12cd"


def test_a_group_that_does_not_exist_is_an_error(data_dir: Path, capsys):
    store = FeatureStore(data_dir / "feature_store" / "offline")
    _collect(store, "sim", T0, 95_000.0, minutes=5)
    (store.root / "empty_group").mkdir()
    assert main_parquet(["--data-dir", str(data_dir), "--no-progress", "--feature-group", "nope"]) == 2
    err = capsys.readouterr().err
    assert "feature group 'nope' does not exist" in err and "groups present: empty_group, training_features" in err
    # an existing group without samples is still "nothing to label", exit 0
    assert main_parquet(["--data-dir", str(data_dir), "--no-progress", "--feature-group", "empty_group"]) == 0
    assert "nothing to label" in capsys.readouterr().out
    # a data dir where nothing was ever collected is most likely the wrong one: said, exit 1
    assert main_parquet(["--data-dir", str(data_dir / "elsewhere"), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "does not exist: no sample was ever stored under this data dir" in err and "--data-dir" in err


def test_legacy_batches_never_take_another_sources_price(data_dir: Path):
    from backend.apps.label import main_legacy
    from backend.ml_engine.feature_store.legacy_format import LegacyBatchWriter, list_batches, read_batch
    from backend.ml_engine.feature_store.feature_schema import FEATURE_NAMES

    store = FeatureStore(data_dir / "feature_store" / "offline")
    _collect(store, "sim", T0, 95_000.0)
    _collect(store, "bybit", T0 + 1_500, 87_000.0)
    writer = LegacyBatchWriter(data_dir / "ml_training", fsync=False)
    for source in ("sim", "bybit"):
        df = store.read_offline_features("training_features")
        df = df[df["source"] == source].sort_values("timestamp")
        writer.write_batch("BTCUSDT", df[list(FEATURE_NAMES)].to_numpy(np.float32), _ms(df["timestamp"]),
                           df["mid_price"].to_numpy(), source)
    assert main_legacy(["--data-dir", str(data_dir), "--no-progress"]) == 0
    moves = [r["future_movement_10s"] for ref in list_batches(data_dir / "ml_training", "BTCUSDT")
             for r in read_batch(ref, load_features=False).labels if r["future_movement_10s"] is not None]
    assert len(moves) > 30 and max(abs(m) for m in moves) < 0.01
