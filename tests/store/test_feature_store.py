from __future__ import annotations

import datetime as dt
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from backend.ml_engine.feature_store.feature_schema import (
    FEATURE_NAMES,
    LABEL_COLUMNS,
    TRAINING_SCHEMA,
    SchemaValidationError,
)
from backend.ml_engine.feature_store.feature_store import FeatureStore, FeatureStoreError

from .helpers import candle_frame, price_tape_frame, training_frame


@pytest.fixture
def store(tmp_path: Path) -> FeatureStore:
    return FeatureStore(tmp_path / "offline")


def _sorted(df: pd.DataFrame) -> pd.DataFrame:
    return df.sort_values(["symbol", "timestamp"]).reset_index(drop=True)


def test_training_round_trip_keeps_values_and_types(store):
    df = training_frame(500)
    store.write_offline_features("training_features", df)
    out = _sorted(store.read_offline_features("training_features"))
    assert list(out.columns) == TRAINING_SCHEMA.names
    assert str(out["timestamp"].dtype) == "datetime64[ms, UTC]"
    np.testing.assert_array_equal(out[list(FEATURE_NAMES)].to_numpy(), df[list(FEATURE_NAMES)].to_numpy())
    np.testing.assert_array_equal(out["mid_price"].to_numpy(), df["mid_price"].to_numpy())
    assert (out["timestamp"].to_numpy() == df["timestamp"].to_numpy()).all()
    # labels absent on write become nulls of the contract dtype
    for col in LABEL_COLUMNS:
        assert out[col].isna().all()
    assert str(out["future_direction_60s"].dtype) == "Int8"


def test_labels_round_trip(store):
    df = training_frame(10)
    df["future_direction_10s"] = pd.array([0, 1, 2, None, 1, 1, 2, 0, None, 2], dtype="Int8")
    df["future_movement_10s"] = np.where(df["future_direction_10s"].isna(), np.nan, 0.5)
    store.write_offline_features("training_features", df)
    out = _sorted(store.read_offline_features("training_features"))
    assert out["future_direction_10s"].tolist() == df["future_direction_10s"].tolist()
    assert out["future_movement_10s"].isna().sum() == 2


@pytest.mark.parametrize(
    "group,frame,key",
    [("price_tape", price_tape_frame, "mid_price"), ("candles", candle_frame, "close")],
)
def test_aux_group_round_trip(store, group, frame, key):
    df = frame(300)
    store.write_offline_features(group, df)
    out = _sorted(store.read_offline_features(group))
    assert list(out.columns) == list(df.columns)
    np.testing.assert_array_equal(out[key].to_numpy(), df[key].to_numpy())


def test_batch_spanning_midnight_is_split_by_utc_date(store):
    df = training_frame(240, start="2025-11-07 23:00:00")  # 2 hours at 30 s
    written = store.write_offline_features("training_features", df)
    assert [w.path.parent.name for w in written] == ["date=2025-11-07", "date=2025-11-08"]
    assert [w.rows for w in written] == [120, 120]
    assert written[1].path.name.startswith("features_000000_")
    day1 = store.read_offline_features("training_features", start_date="2025-11-08", end_date="2025-11-08")
    assert len(day1) == 120 and (day1["timestamp"] >= pd.Timestamp("2025-11-08", tz="UTC")).all()
    # no date column inside the files: the partition lives only in the folder name
    assert "date" not in pq.read_schema(written[0].path).names


def test_read_filters_dates_symbols_columns(store):
    for i, sym in enumerate(["BTCUSDT", "ETHUSDT", "4USDT"]):
        store.write_offline_features("training_features", training_frame(2880 * 3, start="2025-11-01", symbol=sym, seed=i))
    out = store.read_offline_features(
        "training_features", start_date="2025-11-02", end_date=dt.date(2025, 11, 2), symbols=["ETHUSDT"], columns=["timestamp", "symbol", "ob_spread_bps"]
    )
    assert list(out.columns) == ["timestamp", "symbol", "ob_spread_bps"]
    assert set(out["symbol"]) == {"ETHUSDT"} and len(out) == 2880
    assert out["timestamp"].dt.date.unique().tolist() == [dt.date(2025, 11, 2)]
    with pytest.raises(FeatureStoreError, match="unknown columns"):
        store.read_offline_features("training_features", columns=["nope"])
    with pytest.raises(FeatureStoreError, match="YYYY-MM-DD"):
        store.read_offline_features("training_features", start_date="yesterday")


def test_empty_store_reads_empty_frame(store):
    out = store.read_offline_features("training_features")
    assert len(out) == 0 and list(out.columns) == TRAINING_SCHEMA.names


def test_bad_frame_is_rejected_with_a_report(store):
    df = training_frame(5).drop(columns=["ob_spread_bps"])
    df.loc[2, "ob_imbalance_1"] = np.nan
    with pytest.raises(SchemaValidationError) as err:
        store.write_offline_features("training_features", df)
    msg = str(err.value)
    assert "Schema validation failed" in msg
    assert "ob_spread_bps" in msg and "wrong feature count: 109" in msg
    assert "ob_imbalance_1 (1 rows)" in msg
    assert not store.list_files("training_features")


def test_invalid_group_and_file_id(store):
    with pytest.raises(FeatureStoreError):
        store.write_offline_features("../escape", training_frame(1))
    with pytest.raises(FeatureStoreError):
        store.write_offline_features("training_features", training_frame(1), file_id="a/b")


def test_file_id_makes_writes_idempotent(store):
    df = training_frame(100, start="2025-11-07 23:30:00")
    first = store.write_offline_features("training_features", df, file_id="flush-1")
    again = store.write_offline_features("training_features", df, file_id="flush-1")
    assert all(w.created for w in first) and not any(w.created for w in again)
    assert len(store.read_offline_features("training_features")) == 100


def _flush_in_same_second(root: str, symbol: str, barrier) -> None:
    store = FeatureStore(Path(root))
    df = training_frame(50, symbol=symbol)
    barrier.wait()
    store.write_offline_features("training_features", df)


def test_fifty_writers_in_the_same_second_give_fifty_intact_files(tmp_path):
    root = tmp_path / "offline"
    symbols = [f"SYM{i:02d}USDT" for i in range(50)]
    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(50)
    procs = [ctx.Process(target=_flush_in_same_second, args=(str(root), s, barrier)) for s in symbols]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    store = FeatureStore(root)
    files = store.list_files("training_features")
    assert len(files) == 50
    # identical HHMMSS prefix, still unique names
    assert len({f.name.split("_")[1] for f in files}) == 1
    for f in files:
        assert pq.read_metadata(f).num_rows == 50
    out = store.read_offline_features("training_features")
    assert sorted(out["symbol"].unique()) == symbols and len(out) == 2500


WRITER_SCRIPT = r"""
import sys, numpy as np
from pathlib import Path
sys.path.insert(0, sys.argv[2])
from tests.store.helpers import training_frame
from backend.ml_engine.feature_store.feature_store import FeatureStore
store = FeatureStore(Path(sys.argv[1]))
df = training_frame(20000, step_s=1.0)
print("ready", flush=True)
i = 0
while True:
    store.write_offline_features("training_features", df)
    i += 1
"""


def test_reader_never_sees_a_partial_file_when_writer_is_killed(tmp_path):
    root = tmp_path / "offline"
    repo = Path(__file__).resolve().parents[2]
    store = FeatureStore(root)
    for attempt in range(3):
        proc = subprocess.Popen([sys.executable, "-c", WRITER_SCRIPT, str(root), str(repo)], stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        deadline = time.monotonic() + 1.5 + attempt * 0.37
        reads = 0
        while time.monotonic() < deadline:
            # every file a reader can list must be complete and readable
            table = store.read_offline_table("training_features", columns=["timestamp", "ob_spread_bps"])
            assert table.num_rows % 20000 == 0
            reads += 1
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        assert reads > 0
    files = store.list_files("training_features")
    assert files, "the writer should have finished some files"
    for f in files:
        assert pq.read_metadata(f).num_rows == 20000
    # leftovers of the killed writes are hidden temp files that no reader lists
    leftovers = [p for p in (root / "training_features").rglob("*") if p.is_file() and p not in files]
    assert all(p.name.startswith(".") and p.name.endswith(".tmp") for p in leftovers)
    assert len(ds.dataset(root / "training_features", format="parquet", partitioning="hive").to_table()) == 20000 * len(files)


def test_other_engines_read_without_conversion(store):
    import duckdb  # test-only dependencies (the dev extra): a missing one must fail, not skip
    import polars as pl
    store.write_offline_features("training_features", training_frame(240, start="2025-11-07 23:00:00"))
    base = store.group_dir("training_features")

    rel = duckdb.sql(f"SELECT * FROM read_parquet('{base}/*/*.parquet', hive_partitioning = true)")
    cols = rel.columns
    types = dict(zip(cols, [str(t) for t in rel.types]))
    assert cols.count("date") == 1 and types["date"] == "DATE"
    assert types["timestamp"] == "TIMESTAMP WITH TIME ZONE"
    assert duckdb.sql(f"SELECT count(*), count(DISTINCT date) FROM read_parquet('{base}/*/*.parquet', hive_partitioning = true)").fetchall() == [(240, 2)]

    frame = pl.scan_parquet(f"{base}/**/*.parquet", hive_partitioning=True).collect()
    assert frame.columns.count("date") == 1
    assert frame.schema["date"] == pl.Date
    assert frame.schema["timestamp"] == pl.Datetime("ms", "UTC")
    assert frame.height == 240

    dataset = ds.dataset(base, format="parquet", partitioning=ds.HivePartitioning.discover(infer_dictionary=False, schema=pa.schema([("date", pa.date32())])))
    table = dataset.to_table()
    assert table.schema.names.count("date") == 1
    assert table.schema.field("date").type == pa.date32()
    assert table.schema.field("timestamp").type == pa.timestamp("ms", tz="UTC")
    # the store's own dataset view gives the same typed partition column
    assert store.dataset("training_features").to_table().schema.field("date").type == pa.date32()

    pdf = pd.read_parquet(base)
    assert str(pdf["timestamp"].dtype) == "datetime64[ms, UTC]"


def test_symbols_can_be_read_dictionary_encoded(store):
    store.write_offline_features("price_tape", price_tape_frame(50, symbol="BTCUSDT"))
    store.write_offline_features("price_tape", price_tape_frame(30, symbol="4USDT"))
    plain = store.read_offline_table("price_tape", columns=["symbol", "mid_price"])
    coded = store.read_offline_table("price_tape", columns=["symbol", "mid_price"], dictionary_columns=["symbol"])
    assert pa.types.is_dictionary(coded.schema.field("symbol").type)
    assert coded.column("symbol").to_pylist() == plain.column("symbol").to_pylist()
    assert store.read_offline_table("price_tape", symbols=["4USDT"], dictionary_columns=["symbol"]).num_rows == 30
    empty = FeatureStore(store.root / "none").read_offline_table("price_tape", dictionary_columns=["symbol"])
    assert empty.num_rows == 0 and pa.types.is_dictionary(empty.schema.field("symbol").type)
    with pytest.raises(FeatureStoreError, match="only string columns"):
        store.read_offline_table("price_tape", dictionary_columns=["mid_price"])
