from __future__ import annotations

import numpy as np
import pyarrow as pa

from backend.ml_engine.feature_store import feature_schema as fs

from .helpers import training_frame


def test_feature_contract():
    assert len(fs.FEATURE_NAMES) == 110 == fs.FEATURE_COUNT
    assert [s.group for s in fs.FEATURE_SPECS].count("orderbook") == 50
    assert [s.group for s in fs.FEATURE_SPECS].count("candle") == 25
    assert [s.group for s in fs.FEATURE_SPECS].count("indicator") == 35
    for spec in fs.FEATURE_SPECS:
        assert spec.formula and spec.unit
        prefix = {"orderbook": "ob_", "candle": "candle_", "indicator": "ind_"}[spec.group]
        assert spec.name.startswith(prefix)
    for must in ["ind_rsi_14", "ind_adx_14", "ind_cci_20", "ind_willr_14", "ind_mfi_14", "ob_spread_bps",
                 "ob_imbalance_1", "ob_imbalance_5", "ob_imbalance_10", "ob_imbalance_20"]:
        assert must in fs.FEATURE_INDEX


def test_arrow_schema():
    schema = fs.TRAINING_SCHEMA
    assert schema.field("timestamp").type == pa.timestamp("ms", tz="UTC")
    assert schema.field("future_direction_60s").type == pa.int8()
    assert schema.field("future_movement_10s").type == pa.float64()
    assert all(schema.field(n).type == pa.float32() for n in fs.FEATURE_NAMES)
    assert "date" not in schema.names
    assert len(schema) == 6 + 110 + 6


def test_validate_good_frame_passes():
    report = fs.validate(training_frame(10))
    # labels are optional on write but reported as missing for a full-schema check
    assert set(report.missing_columns) == set(fs.LABEL_COLUMNS)
    assert not report.non_finite and not report.wrong_dtypes and report.feature_count == 110


def test_validate_names_every_problem():
    df = training_frame(10)
    for col in fs.LABEL_COLUMNS:
        df[col] = np.nan
    assert fs.validate(df).ok, str(fs.validate(df))
    df = df.drop(columns=["ind_rsi_14"])
    df["bogus"] = 1
    df["symbol"] = 5
    df.loc[3, "ob_spread_bps"] = np.inf
    report = fs.validate(df)
    text = str(report)
    assert not report.ok
    assert text.startswith("Schema validation failed")
    assert "missing columns (1): ind_rsi_14" in text
    assert "unexpected columns (1): bogus" in text
    assert "symbol: expected string, got int64" in text
    assert "ob_spread_bps (1 rows)" in text
    assert "wrong feature count: 109, expected 110" in text


def test_validate_arrow_table():
    df = training_frame(4)
    table = pa.Table.from_pandas(df, preserve_index=False)
    report = fs.validate(table)
    assert report.feature_count == 110 and not report.wrong_dtypes, str(report)


def test_describe_lists_every_feature():
    text = fs.describe_features()
    assert all(name in text for name in fs.FEATURE_NAMES)
