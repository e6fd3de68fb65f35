"""Record a simulated run's raw events, replay them as a real process, compare every feature bit for bit."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from backend.ml_engine.feature_store.feature_schema import FEATURE_NAMES
from backend.ml_engine.feature_store.feature_store import FeatureStore
from backend.venues.replay.source import raw_event_chunks
from tests.collector.bot_helpers import run_bot, start_bot, stats_lines

SYMBOLS = "BTCUSDT,4USDT"
SIM_START = "2025-11-07T22:30:00Z"  # the run crosses midnight: two date partitions of raw events


def _samples(data: Path, group: str) -> pd.DataFrame:
    df = FeatureStore(data / "feature_store" / "offline").read_offline_features(group)
    return df.sort_values(["symbol", "timestamp"]).reset_index(drop=True)


def _assert_bit_equal(recorded: pd.DataFrame, replayed: pd.DataFrame) -> None:
    assert len(recorded) > 0
    assert recorded["symbol"].tolist() == replayed["symbol"].tolist()
    assert (recorded["timestamp"].to_numpy() == replayed["timestamp"].to_numpy()).all()
    a = recorded[list(FEATURE_NAMES)].to_numpy(np.float32)
    b = replayed[list(FEATURE_NAMES)].to_numpy(np.float32)
    assert a.view(np.uint32).tobytes() == b.view(np.uint32).tobytes()  # bit for bit, NaN-safe
    assert recorded["mid_price"].to_numpy().view(np.uint64).tobytes() == replayed["mid_price"].to_numpy().view(np.uint64).tobytes()


def _replay(data: Path, group: str) -> str:
    res = run_bot(data, "--source", "replay", "--replay-from", "2025-11-07", "--replay-to", "2025-11-08",
                  "--feature-store-group", group, "--stats-interval", "100000")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res.stdout


@pytest.mark.slow
def test_replay_of_a_recorded_run_reproduces_its_features_bit_for_bit(tmp_path):
    data = tmp_path / "data"
    res = run_bot(data, "--source", "sim", "--fast", "--record-raw", "--duration", "3h", "--symbols", SYMBOLS,
                  "--sim-start", SIM_START, "--seed", "11", "--stats-interval", "100000", "--max-samples-per-file", "97")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    raw_dir = data / "feature_store" / "offline" / "raw_events"
    files = sorted(raw_dir.glob("date=*/*.parquet"))
    assert {f.parent.name for f in files} == {"date=2025-11-07", "date=2025-11-08"}
    # several flushes: the replay reads and decodes them a group at a time, not all at once
    assert len(raw_event_chunks(data / "feature_store" / "offline", "2025-11-07", "2025-11-08")) > 2
    meta = pq.ParquetFile(files[0]).metadata
    assert meta.row_group(0).column(0).compression == "ZSTD"
    raw = pq.read_table(files[0]).to_pandas()
    assert set(raw["kind"]) >= {"history", "book", "trades", "candle"}
    book = raw[raw["kind"] == "book"].iloc[0]
    nb = book["n_bids"]
    assert nb == 50 and len(book["price"]) == 100 and book["price"][0] < book["price"][nb]  # bids first, then asks
    assert (raw["venue"] == "sim").all()

    out = _replay(data, "replayed")
    recorded, replayed = _samples(data, "training_features"), _samples(data, "replayed")
    assert (replayed["source"] == "replay").all() and (recorded["source"] == "sim").all()
    _assert_bit_equal(recorded, replayed)
    assert stats_lines(out)[-1]["collected"] == len(recorded)
    # the replay wrote no second price tape
    tape = FeatureStore(data / "feature_store" / "offline").read_offline_features("price_tape")
    assert not tape.duplicated(["symbol", "timestamp"]).any()


@pytest.mark.slow
def test_replay_after_kill_9_in_the_middle_of_recording_matches_the_collected_rows(tmp_path):
    data = tmp_path / "data"
    log = tmp_path / "record.log"
    proc = start_bot(data, "--source", "sim", "--fast", "--record-raw", "--duration", "30d", "--symbols", SYMBOLS,
                     "--sim-start", SIM_START, "--seed", "5", "--stats-interval", "300", "--max-samples-per-file", "60",
                     log_path=log)
    deadline = time.monotonic() + 180
    while len(stats_lines(log.read_text())) < 6:  # 1800 ticks: flushed raw files and rows still in the spool
        assert proc.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.kill()  # SIGKILL: no flush, no cleanup
    proc.wait()
    assert list((data / "spool").glob("wal_*.log"))
    # recovery only (no new run): every spooled sample and raw event lands in the store exactly once
    res = run_bot(data, "--source", "sim", "--max-iterations", "0", "--symbols", SYMBOLS)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    recorded = _samples(data, "training_features")
    assert not recorded.duplicated(["symbol", "timestamp"]).any()
    raw = FeatureStore(data / "feature_store" / "offline").read_offline_features("raw_events",
                                                                                 columns=["timestamp", "symbol", "kind"])
    assert not raw[raw["kind"] != "history"].duplicated().any()

    _replay(data, "replayed")
    replayed = _samples(data, "replayed")
    # every collected row is reproduced; the replay may add samples only at the very last
    # recorded tick (its raw events were spooled, the kill came before its samples were)
    last_tick = raw["timestamp"].max()
    merged = replayed.merge(recorded[["symbol", "timestamp"]], on=["symbol", "timestamp"], how="left", indicator=True)
    extra = merged[merged["_merge"] == "left_only"]
    assert len(extra) <= len(SYMBOLS.split(","))
    assert (extra["timestamp"] >= last_tick - pd.Timedelta(seconds=3)).all()
    kept = replayed.merge(recorded[["symbol", "timestamp"]], on=["symbol", "timestamp"]).sort_values(["symbol", "timestamp"])
    _assert_bit_equal(recorded, kept.reset_index(drop=True))
