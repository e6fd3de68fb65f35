"""The contract of a training sample: 110 features in canonical order, metadata and labels.

Every feature is scale-free (bps, ratios, z-scores, log-returns, bounded oscillators)
so BTCUSDT at 90,000 and a coin at 0.004 look alike to a model. Raw prices are
metadata (``mid_price``), never features.

Notation: ``mid = (bid1 + ask1) / 2``; ``B_k``/``A_k`` are bid/ask sizes at level k
(1 = best); "bps" = 1e-4 of mid; "bars" are closed 1-minute candles, the last one
being the most recent bar closed at or before the sample time; indicator names
follow TA-Lib, which computes them.

Changing a name, order, meaning or dtype is a schema change: bump
``FEATURE_SCHEMA_VERSION``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np
import pyarrow as pa

# Label names, horizons and class codes live in the shared vocabulary; re-exported here.
from backend.contracts.labels import (  # noqa: F401
    DIRECTION_COLUMNS,
    DIRECTION_DOWN,
    DIRECTION_NEUTRAL,
    DIRECTION_UP,
    HORIZONS_S,
    MOVEMENT_COLUMNS,
)

FEATURE_SCHEMA_VERSION = 1
FEATURE_COUNT = 110


@dataclass(frozen=True)
class FeatureSpec:
    """One feature: its column name, group, defining formula and unit (see the notation above)."""

    name: str
    group: str  # "orderbook" | "candle" | "indicator"
    formula: str
    unit: str


def _specs(group: str, rows: Iterable[tuple[str, str, str]]) -> list[FeatureSpec]:
    return [FeatureSpec(name, group, formula, unit) for name, formula, unit in rows]


# fmt: off
_ORDERBOOK = _specs("orderbook", [
    ("ob_spread_bps", "(ask1 - bid1) / mid * 1e4", "bps"),
    ("ob_microprice_dev_bps", "(microprice - mid) / mid * 1e4, microprice = (ask1*B1 + bid1*A1) / (B1 + A1)", "bps"),
    ("ob_weighted_mid_dev_5_bps", "((VWAP of bid levels 1..5 + VWAP of ask levels 1..5) / 2 - mid) / mid * 1e4 (levels that exist)", "bps"),
    ("ob_imbalance_1", "(B1 - A1) / (B1 + A1)", "ratio [-1, 1]"),
    ("ob_imbalance_5", "(sum B1..5 - sum A1..5) / (sum B1..5 + sum A1..5); a missing level counts 0", "ratio [-1, 1]"),
    ("ob_imbalance_10", "(sum B1..10 - sum A1..10) / (sum B1..10 + sum A1..10)", "ratio [-1, 1]"),
    ("ob_imbalance_20", "(sum B1..20 - sum A1..20) / (sum B1..20 + sum A1..20)", "ratio [-1, 1]"),
    ("ob_imbalance_50", "(total bid size - total ask size) / total size over all kept levels (<= book depth)", "ratio [-1, 1]"),
    ("ob_ofi_1", "Cont-Kukanov-Stoikov e_1 = 1{b1>=b1'}B1 - 1{b1<=b1'}B1' - 1{a1<=a1'}A1 + 1{a1>=a1'}A1' (' = previous book) / mean of (B1 + A1) over both books", "ratio"),
    ("ob_ofi_5", "sum of per-level CKS e_i over levels 1..5 / mean of sum(B_i + A_i, i<=5) over both books; a missing level is a bid at -inf / ask at +inf of size 0", "ratio"),
    ("ob_ofi_10", "sum of per-level CKS e_i over levels 1..10 / mean of sum(B_i + A_i, i<=10) over both books", "ratio"),
    ("ob_depth_bid_10bps", "bid size at levels with (mid - price) / mid * 1e4 <= 10 / total kept size (both sides)", "ratio [0, 1]"),
    ("ob_depth_ask_10bps", "ask size within 10 bps of mid / total kept size (both sides)", "ratio [0, 1]"),
    ("ob_depth_bid_25bps", "bid size within 25 bps of mid / total kept size", "ratio [0, 1]"),
    ("ob_depth_ask_25bps", "ask size within 25 bps of mid / total kept size", "ratio [0, 1]"),
    ("ob_depth_bid_50bps", "bid size within 50 bps of mid / total kept size", "ratio [0, 1]"),
    ("ob_depth_ask_50bps", "ask size within 50 bps of mid / total kept size", "ratio [0, 1]"),
    ("ob_depth_imbalance_10bps", "(bid - ask size within 10 bps) / (bid + ask size within 10 bps), 0 if none", "ratio [-1, 1]"),
    ("ob_depth_imbalance_25bps", "(bid - ask size within 25 bps) / (bid + ask size within 25 bps), 0 if none", "ratio [-1, 1]"),
    ("ob_depth_imbalance_50bps", "(bid - ask size within 50 bps) / (bid + ask size within 50 bps), 0 if none", "ratio [-1, 1]"),
    ("ob_slope_bid", "book slope: (sum B1..10 / total kept size) / ob_bid_dist_10_bps", "1/bps"),
    ("ob_slope_ask", "book slope: (sum A1..10 / total kept size) / ob_ask_dist_10_bps", "1/bps"),
    ("ob_slope_log_ratio", "log(ob_slope_bid / ob_slope_ask)", "log-ratio"),
    ("ob_bid_dist_5_bps", "(mid - bid5) / mid * 1e4; deepest bid level if fewer than 5", "bps"),
    ("ob_ask_dist_5_bps", "(ask5 - mid) / mid * 1e4; deepest ask level if fewer than 5", "bps"),
    ("ob_bid_dist_10_bps", "(mid - bid10) / mid * 1e4; deepest bid level if fewer than 10", "bps"),
    ("ob_ask_dist_10_bps", "(ask10 - mid) / mid * 1e4; deepest ask level if fewer than 10", "bps"),
    ("ob_bid_dist_20_bps", "(mid - bid20) / mid * 1e4; deepest bid level if fewer than 20", "bps"),
    ("ob_ask_dist_20_bps", "(ask20 - mid) / mid * 1e4; deepest ask level if fewer than 20", "bps"),
    ("ob_bid_conc_1_5", "B1 / sum B1..5", "ratio [0, 1]"),
    ("ob_ask_conc_1_5", "A1 / sum A1..5", "ratio [0, 1]"),
    ("ob_bid_conc_5_20", "sum B1..5 / sum B1..20", "ratio [0, 1]"),
    ("ob_ask_conc_5_20", "sum A1..5 / sum A1..20", "ratio [0, 1]"),
    ("ob_log_depth_ratio", "log(total kept bid size / total kept ask size)", "log-ratio"),
    ("ob_bid_size_cv_10", "population std / mean of the sizes of bid levels 1..10 that exist", "ratio"),
    ("ob_ask_size_cv_10", "population std / mean of the sizes of ask levels 1..10 that exist", "ratio"),
    ("ob_bid_levels_filled", "number of bid levels / book depth", "ratio [0, 1]"),
    ("ob_ask_levels_filled", "number of ask levels / book depth", "ratio [0, 1]"),
    ("ob_mid_ret_1_bps", "log(mid / mid one tick earlier) * 1e4", "bps"),
    ("ob_mid_ret_10_bps", "log(mid / mid ten ticks earlier) * 1e4", "bps"),
    ("ob_spread_z_100", "(spread - mean) / population std of ob_spread_bps over the last 100 ticks incl. this one; 0 if it did not vary", "z-score"),
    ("ob_imbalance_1_ema_10", "EMA (alpha 2/11, started at the first value) of ob_imbalance_1 over ticks", "ratio [-1, 1]"),
    ("ob_ofi_1_sum_10", "sum of ob_ofi_1 over the last 10 ticks (incl. this one)", "ratio"),
    ("ob_microprice_dev_ema_10", "EMA (alpha 2/11, started at the first value) of ob_microprice_dev_bps over ticks", "bps"),
    ("ob_tick_volatility_20_bps", "sample std (ddof 1) of the last 20 tick log-returns of mid * 1e4", "bps"),
    ("ob_trade_imbalance", "(buy size - sell size) / total size of trades in (t - 60 s, t]; 0 if none", "ratio [-1, 1]"),
    ("ob_trade_intensity_log", "log1p(number of trades in (t - 60 s, t])", "log-count"),
    ("ob_trade_vwap_dev_bps", "(VWAP of trades in (t - 60 s, t] - mid) / mid * 1e4; 0 if none", "bps"),
    ("ob_trade_last_side", "+1 if the last trade was a buy, -1 a sell, 0 none in the last 60 s", "sign"),
    ("ob_best_price_changed", "(bid1 changed) + (ask1 changed) vs the previous book", "count {0, 1, 2}"),
])

_CANDLE = _specs("candle", [
    ("candle_ret_1m", "log(close / close 1 bar earlier)", "log-return"),
    ("candle_ret_5m", "log(close / close 5 bars earlier)", "log-return"),
    ("candle_ret_15m", "log(close / close 15 bars earlier)", "log-return"),
    ("candle_ret_30m", "log(close / close 30 bars earlier)", "log-return"),
    ("candle_ret_60m", "log(close / close 60 bars earlier)", "log-return"),
    ("candle_rvol_15m", "realized volatility: sqrt(sum of squared 1-bar log-returns over 15 bars)", "log-return"),
    ("candle_rvol_60m", "realized volatility over 60 bars", "log-return"),
    ("candle_parkinson_vol_15m", "sqrt(mean(log(high/low)^2) / (4 ln 2)) over 15 bars", "log-return"),
    ("candle_garman_klass_vol_15m", "sqrt(max(0, mean(0.5 log(h/l)^2 - (2 ln2 - 1) log(c/o)^2))) over 15 bars", "log-return"),
    ("candle_body_ratio", "(close - open) / (high - low) of the last bar, 0 if high == low", "ratio [-1, 1]"),
    ("candle_upper_wick_ratio", "(high - max(open, close)) / (high - low) of the last bar, 0 if high == low", "ratio [0, 1]"),
    ("candle_lower_wick_ratio", "(min(open, close) - low) / (high - low) of the last bar, 0 if high == low", "ratio [0, 1]"),
    ("candle_range_bps", "(high - low) / close * 1e4 of the last bar", "bps"),
    ("candle_range_mean_15m_bps", "mean of (high - low) / close * 1e4 over 15 bars", "bps"),
    ("candle_close_pos_15m", "(close - min low) / (max high - min low) over 15 bars, 0.5 if flat", "ratio [0, 1]"),
    ("candle_volume_z_60m", "(last volume - mean) / population std of volume over 60 bars, 0 if constant", "z-score"),
    ("candle_volume_ratio_5_60", "mean volume of 5 bars / mean volume of 60 bars, 1 if no volume", "ratio"),
    ("candle_log_volume_change", "log((volume + 1) / (previous volume + 1))", "log-ratio"),
    ("candle_ret_skew_60m", "population skewness m3 / m2^1.5 of 1-bar log-returns over 60 bars, 0 if no variance", "unitless"),
    ("candle_ret_kurt_60m", "population excess kurtosis m4 / m2^2 - 3 of 1-bar log-returns over 60 bars, 0 if no variance", "unitless"),
    ("candle_up_bar_share_15m", "share of the last 15 bars with close > open", "ratio [0, 1]"),
    ("candle_vwap_dev_15m_bps", "(close - VWAP of 15 bars of typical price (h+l+c)/3; mean typical price if no volume) / close * 1e4", "bps"),
    ("candle_high_dist_60m_bps", "(max high of 60 bars - close) / close * 1e4", "bps"),
    ("candle_low_dist_60m_bps", "(close - min low of 60 bars) / close * 1e4", "bps"),
    ("candle_rvol_ratio_15_60", "candle_rvol_15m / (candle_rvol_60m * sqrt(15/60)), 1 if candle_rvol_60m == 0", "ratio"),
])

_INDICATOR = _specs("indicator", [
    ("ind_rsi_14", "TA-Lib RSI(close, 14), Wilder smoothing (TA-Lib gives 0 when the market never moved)", "0..100"),
    ("ind_rsi_6", "TA-Lib RSI(close, 6)", "0..100"),
    ("ind_macd_bps", "TA-Lib MACD(12, 26, 9) line / close * 1e4", "bps"),
    ("ind_macd_signal_bps", "TA-Lib MACD(12, 26, 9) signal / close * 1e4", "bps"),
    ("ind_macd_hist_bps", "TA-Lib MACD(12, 26, 9) histogram / close * 1e4", "bps"),
    ("ind_bb_pctb_20", "Bollinger %B: (close - lower) / (upper - lower), TA-Lib BBANDS(20, 2, 2, SMA); 0.5 if upper == lower", "ratio"),
    ("ind_bb_width_20", "Bollinger width: (upper - lower) / middle, BBANDS(20, 2, 2)", "ratio"),
    ("ind_atr_pct_14", "TA-Lib NATR(14) = ATR(14) / close * 100", "percent"),
    ("ind_stoch_k", "TA-Lib STOCH(14, 3 SMA, 3 SMA) slow %K", "0..100"),
    ("ind_stoch_d", "TA-Lib STOCH(14, 3 SMA, 3 SMA) slow %D", "0..100"),
    ("ind_stochrsi_k", "TA-Lib STOCHRSI(14, 5, 3) fast %K", "0..100"),
    ("ind_adx_14", "TA-Lib ADX(14)", "0..100"),
    ("ind_plus_di_14", "TA-Lib PLUS_DI(14)", "0..100"),
    ("ind_minus_di_14", "TA-Lib MINUS_DI(14)", "0..100"),
    ("ind_cci_20", "TA-Lib CCI(20)", "unitless"),
    ("ind_willr_14", "TA-Lib WILLR(14)", "-100..0"),
    ("ind_mfi_14", "TA-Lib MFI(14)", "0..100"),
    ("ind_roc_10", "TA-Lib ROC(close, 10)", "percent"),
    ("ind_mom_10_bps", "TA-Lib MOM(close, 10) / close * 1e4", "bps"),
    ("ind_ema_dev_9_bps", "(close - EMA(9)) / close * 1e4", "bps"),
    ("ind_ema_dev_21_bps", "(close - EMA(21)) / close * 1e4", "bps"),
    ("ind_ema_dev_50_bps", "(close - EMA(50)) / close * 1e4", "bps"),
    ("ind_sma_dev_20_bps", "(close - SMA(20)) / close * 1e4", "bps"),
    ("ind_ema_cross_9_21_bps", "(EMA(9) - EMA(21)) / close * 1e4", "bps"),
    ("ind_aroonosc_25", "TA-Lib AROONOSC(25)", "-100..100"),
    ("ind_ultosc", "TA-Lib ULTOSC(7, 14, 28)", "0..100"),
    ("ind_obv_z_20", "(OBV - mean) / population std of TA-Lib OBV over the last 20 bars, 0 if constant", "z-score"),
    ("ind_bop", "TA-Lib BOP of the last bar", "ratio [-1, 1]"),
    ("ind_trix_15", "TA-Lib TRIX(15)", "percent"),
    ("ind_ppo", "TA-Lib PPO(close, 12, 26, matype EMA)", "percent"),
    ("ind_cmo_14", "TA-Lib CMO(14)", "-100..100"),
    ("ind_dx_14", "TA-Lib DX(14)", "0..100"),
    ("ind_linreg_slope_14_bps", "TA-Lib LINEARREG_SLOPE(close, 14) / close * 1e4", "bps per bar"),
    ("ind_kama_dev_bps", "(close - TA-Lib KAMA(30)) / close * 1e4", "bps"),
    ("ind_sar_dev_bps", "(close - TA-Lib SAR(0.02, 0.2)) / close * 1e4", "bps"),
])
# fmt: on

FEATURE_SPECS: tuple[FeatureSpec, ...] = tuple(_ORDERBOOK + _CANDLE + _INDICATOR)
FEATURE_NAMES: tuple[str, ...] = tuple(s.name for s in FEATURE_SPECS)
ORDERBOOK_FEATURES = tuple(s.name for s in _ORDERBOOK)
CANDLE_FEATURES = tuple(s.name for s in _CANDLE)
INDICATOR_FEATURES = tuple(s.name for s in _INDICATOR)
FEATURE_INDEX = {name: i for i, name in enumerate(FEATURE_NAMES)}

assert len(ORDERBOOK_FEATURES) == 50 and len(CANDLE_FEATURES) == 25 and len(INDICATOR_FEATURES) == 35
assert len(FEATURE_NAMES) == FEATURE_COUNT == len(set(FEATURE_NAMES))

# --- columns --------------------------------------------------------------------------
TIMESTAMP_TYPE = pa.timestamp("ms", tz="UTC")

METADATA_FIELDS: tuple[pa.Field, ...] = (
    pa.field("timestamp", TIMESTAMP_TYPE, nullable=False),  # exchange time: the book's event time, or the tick's for a live WS book (data/README.md)
    pa.field("symbol", pa.string(), nullable=False),
    pa.field("mid_price", pa.float64(), nullable=False),
    pa.field("source", pa.string(), nullable=False),
    pa.field("feature_version", pa.int16(), nullable=False),
    pa.field("collected_at", TIMESTAMP_TYPE, nullable=False),  # wall-clock time of collection
)
METADATA_COLUMNS = tuple(f.name for f in METADATA_FIELDS)

LABEL_FIELDS: tuple[pa.Field, ...] = tuple(
    [pa.field(c, pa.int8(), nullable=True) for c in DIRECTION_COLUMNS]
    + [pa.field(c, pa.float64(), nullable=True) for c in MOVEMENT_COLUMNS]
)
LABEL_COLUMNS = tuple(f.name for f in LABEL_FIELDS)

FEATURE_FIELDS: tuple[pa.Field, ...] = tuple(pa.field(n, pa.float32(), nullable=False) for n in FEATURE_NAMES)

TRAINING_SCHEMA = pa.schema(
    list(METADATA_FIELDS) + list(FEATURE_FIELDS) + list(LABEL_FIELDS),
    metadata={b"feature_schema_version": str(FEATURE_SCHEMA_VERSION).encode()},
)

PRICE_TAPE_SCHEMA = pa.schema(
    [
        pa.field("timestamp", TIMESTAMP_TYPE, nullable=False),
        pa.field("symbol", pa.string(), nullable=False),
        pa.field("mid_price", pa.float64(), nullable=False),
        pa.field("best_bid", pa.float64(), nullable=False),
        pa.field("best_ask", pa.float64(), nullable=False),
    ]
)

CANDLE_SCHEMA = pa.schema(
    [
        pa.field("timestamp", TIMESTAMP_TYPE, nullable=False),  # bar open time; the bar closes 60 s later
        pa.field("symbol", pa.string(), nullable=False),
        pa.field("open", pa.float64(), nullable=False),
        pa.field("high", pa.float64(), nullable=False),
        pa.field("low", pa.float64(), nullable=False),
        pa.field("close", pa.float64(), nullable=False),
        pa.field("volume", pa.float64(), nullable=False),
        pa.field("turnover", pa.float64(), nullable=False),
    ]
)

#: what a venue delivered, one row per event (columns explained in ``backend/contracts/raw_events.py``)
RAW_EVENTS_SCHEMA = pa.schema(
    [
        pa.field("timestamp", TIMESTAMP_TYPE, nullable=False),  # the bot's local time of the tick
        pa.field("symbol", pa.string(), nullable=False),
        pa.field("venue", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),
        pa.field("venue_ts", TIMESTAMP_TYPE, nullable=True),
        pa.field("seq", pa.int64(), nullable=True),
        pa.field("recv_ts", TIMESTAMP_TYPE, nullable=True),
        pa.field("cts", TIMESTAMP_TYPE, nullable=True),
        pa.field("clock_offset_ms", pa.int64(), nullable=False),
        pa.field("collect", pa.bool_(), nullable=False),
        pa.field("live", pa.bool_(), nullable=False),
        pa.field("reason", pa.string(), nullable=True),
        pa.field("n_bids", pa.int32(), nullable=False),
        pa.field("price", pa.list_(pa.float64()), nullable=False),
        pa.field("size", pa.list_(pa.float64()), nullable=False),
        pa.field("trade_ts", pa.list_(pa.int64()), nullable=False),
        pa.field("side", pa.list_(pa.int8()), nullable=False),
    ]
)

#: the model in the loop (DESIGN.md §6.6): one row per prediction, the six label columns filled by the labeller
PREDICTIONS_SCHEMA = pa.schema(
    [
        pa.field("timestamp", TIMESTAMP_TYPE, nullable=False),  # the predicted sample's event time
        pa.field("symbol", pa.string(), nullable=False),
        pa.field("model_uri", pa.string(), nullable=False),
        pa.field("horizon_s", pa.int16(), nullable=False),
        pa.field("prob_down", pa.float32(), nullable=False),
        pa.field("prob_neutral", pa.float32(), nullable=False),
        pa.field("prob_up", pa.float32(), nullable=False),
        pa.field("predicted_direction", pa.int8(), nullable=False),  # 0 DOWN, 1 NEUTRAL, 2 UP
        *LABEL_FIELDS,
    ]
)

#: the model in the loop: one row per simulated fill of paper trading (nothing is ever sent to a venue)
PAPER_TRADES_SCHEMA = pa.schema(
    [
        pa.field("timestamp", TIMESTAMP_TYPE, nullable=False),  # decision time: the filled book's event time
        pa.field("symbol", pa.string(), nullable=False),
        pa.field("side", pa.string(), nullable=False),  # buy | sell
        pa.field("qty", pa.float64(), nullable=False),  # base units, > 0
        pa.field("price", pa.float64(), nullable=False),  # average fill, quote per base
        pa.field("fee", pa.float64(), nullable=False),  # quote
        pa.field("reason", pa.string(), nullable=False),  # enter | exit | flip
        pa.field("model_uri", pa.string(), nullable=False),
    ]
)

GROUP_SCHEMAS: dict[str, pa.Schema] = {
    "training_features": TRAINING_SCHEMA,
    "price_tape": PRICE_TAPE_SCHEMA,
    "candles": CANDLE_SCHEMA,
    "raw_events": RAW_EVENTS_SCHEMA,
    "predictions": PREDICTIONS_SCHEMA,
    "paper_trades": PAPER_TRADES_SCHEMA,
}


def schema_for_group(group: str) -> pa.Schema:
    """Feature groups other than the two auxiliary ones hold training samples."""
    return GROUP_SCHEMAS.get(group, TRAINING_SCHEMA)


def describe_features() -> str:
    """A plain-text table of every feature, for docs and ``--help`` epilogs."""
    lines = [f"{'#':>3}  {'name':<30} {'group':<10} {'unit':<14} formula"]
    for i, s in enumerate(FEATURE_SPECS):
        lines.append(f"{i:>3}  {s.name:<30} {s.group:<10} {s.unit:<14} {s.formula}")
    return "\n".join(lines)


# --- validation -------------------------------------------------------------------------
@dataclass
class ValidationReport:
    """What ``validate`` found wrong with a table; empty fields mean nothing wrong.

    ``non_finite`` and ``null_metadata`` map a column to its count of bad rows;
    ``feature_count`` is the number of feature-like columns seen (110 expected);
    ``rows`` is the table's row count.
    """

    missing_columns: list[str]
    extra_columns: list[str]
    wrong_dtypes: list[str]  # "column: expected X, got Y"
    non_finite: dict[str, int]  # feature -> count of NaN/inf values
    feature_count: int
    null_metadata: dict[str, int]
    rows: int

    @property
    def ok(self) -> bool:
        """True when the table matches the schema and every feature is finite."""
        return not (
            self.missing_columns
            or self.extra_columns
            or self.wrong_dtypes
            or self.non_finite
            or self.null_metadata
            or self.feature_count != FEATURE_COUNT
        )

    def problems(self) -> list[str]:
        """One readable line per kind of problem (at most 8 columns named in each)."""
        out: list[str] = []
        if self.feature_count != FEATURE_COUNT:
            out.append(f"wrong feature count: {self.feature_count}, expected {FEATURE_COUNT}")
        if self.missing_columns:
            out.append(f"missing columns ({len(self.missing_columns)}): {_short(self.missing_columns)}")
        if self.extra_columns:
            out.append(f"unexpected columns ({len(self.extra_columns)}): {_short(self.extra_columns)}")
        if self.wrong_dtypes:
            out.append(f"wrong dtypes ({len(self.wrong_dtypes)}): {_short(self.wrong_dtypes)}")
        if self.non_finite:
            items = [f"{k} ({v} rows)" for k, v in self.non_finite.items()]
            out.append(f"non-finite feature values in {len(items)} columns: {_short(items)}")
        if self.null_metadata:
            items = [f"{k} ({v} rows)" for k, v in self.null_metadata.items()]
            out.append(f"null metadata values: {_short(items)}")
        return out

    def __str__(self) -> str:
        if self.ok:
            return f"Schema validation passed: {self.rows} rows, {FEATURE_COUNT} features, version {FEATURE_SCHEMA_VERSION}"
        return "Schema validation failed:\n" + "\n".join(f"  - {p}" for p in self.problems())


class SchemaValidationError(ValueError):
    """Raised by writers and readers when ``validate`` finds problems.

    ``report`` holds the ``ValidationReport``; ``where`` (a file or group) prefixes
    the message.
    """

    def __init__(self, report: ValidationReport, where: str = ""):
        self.report = report
        prefix = f"{where}: " if where else ""
        super().__init__(prefix + str(report))


def _short(items: list[str], limit: int = 8) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... (+{len(items) - limit} more)" if len(items) > limit else "")


def _arrow_type_of_pandas(series) -> pa.DataType | None:
    """The Arrow type a pandas column maps to, read from its dtype (no data conversion)."""
    import pandas as pd

    dtype = series.dtype
    if isinstance(dtype, pd.DatetimeTZDtype):
        return pa.timestamp(dtype.unit, tz=str(dtype.tz))
    if isinstance(dtype, pd.CategoricalDtype):
        return _arrow_type_of_pandas(pd.Series(dtype.categories))
    if isinstance(dtype, pd.StringDtype):
        return pa.string()
    if isinstance(dtype, pd.ArrowDtype):
        return dtype.pyarrow_dtype
    if hasattr(dtype, "numpy_dtype") and not isinstance(dtype, np.dtype):  # Int8, Float64, boolean
        return pa.from_numpy_dtype(dtype.numpy_dtype)
    if dtype == object:
        sample = series.dropna()
        if len(sample) == 0:
            return pa.null()
        try:
            return pa.array(sample.iloc[:16].tolist()).type
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError):
            return None
    try:
        return pa.from_numpy_dtype(dtype)
    except (NotImplementedError, TypeError, pa.ArrowNotImplementedError):
        return None


def _compatible(expected: pa.DataType, got: pa.DataType) -> bool:
    if expected.equals(got):
        return True
    if pa.types.is_timestamp(expected) and pa.types.is_timestamp(got):
        return got.tz is not None and got.tz.upper() in ("UTC", "+00:00", "ETC/UTC")
    if pa.types.is_string(expected) and (pa.types.is_large_string(got) or pa.types.is_string_view(got)):
        return True
    if pa.types.is_dictionary(got):
        return _compatible(expected, got.value_type)
    # nullable integer labels may arrive as float with NaN from pandas
    if pa.types.is_int8(expected) and (pa.types.is_integer(got) or pa.types.is_floating(got) or pa.types.is_null(got)):
        return True
    if pa.types.is_floating(expected) and pa.types.is_null(got):
        return True
    if pa.types.is_int16(expected) and pa.types.is_integer(got):
        return True
    return False


_SCHEMA_INFO: dict[int, tuple[pa.Schema, dict[str, pa.Field], list[str]]] = {}


def _schema_info(schema: pa.Schema) -> tuple[dict[str, pa.Field], list[str]]:
    """(fields by name, non-nullable non-feature columns), computed once per schema object."""
    hit = _SCHEMA_INFO.get(id(schema))
    if hit is None or hit[0] is not schema:
        fields = {f.name: f for f in schema}
        required = [f.name for f in schema if not f.nullable and f.name not in FEATURE_INDEX]
        hit = _SCHEMA_INFO[id(schema)] = (schema, fields, required)
    return hit[1], hit[2]


def validate(df, schema: pa.Schema = TRAINING_SCHEMA) -> ValidationReport:
    """Check a pandas DataFrame or pyarrow Table against ``schema``.

    Reports missing/extra columns, wrong dtypes, NaN/inf features, nulls in
    metadata and the feature count. Never raises for bad data.
    """
    exact = isinstance(df, pa.Table) and df.schema.equals(schema, check_metadata=False)
    if isinstance(df, pa.Table):
        columns = list(df.column_names)
        types = dict(zip(columns, df.schema.types))
    else:
        columns = [str(c) for c in df.columns]
        types = {str(c): _arrow_type_of_pandas(df[c]) for c in df.columns}
    expected, required = _schema_info(schema)
    missing = [n for n in expected if n not in types]
    extra = [c for c in columns if c not in expected and c != "date"]
    wrong: list[str] = []
    for name, got in types.items() if not exact else ():  # an identical schema has nothing to report
        field = expected.get(name)
        if field is None:
            continue
        if got is None or not _compatible(field.type, got):
            wrong.append(f"{name}: expected {field.type}, got {got}")
    feature_cols = [c for c in columns if c in FEATURE_INDEX] if schema is TRAINING_SCHEMA else []
    if schema is TRAINING_SCHEMA:
        # Unknown columns that look like features count toward the feature total.
        feature_count = len(feature_cols) + sum(1 for c in extra if c.startswith(("ob_", "candle_", "ind_")))
    else:
        feature_count = FEATURE_COUNT
    non_finite = _non_finite_counts(df, feature_cols)
    null_meta: dict[str, int] = {}
    for name in required:
        # feature nulls surface as NaN above; only metadata needs a null check
        if name in types:
            n = _null_count(df, name)
            if n:
                null_meta[name] = n
    return ValidationReport(missing, extra, wrong, non_finite, feature_count, null_meta, len(df))


def _non_finite_counts(df, names: list[str]) -> dict[str, int]:
    if isinstance(df, pa.Table) and names:
        selected = df.select(names)
        types = set(selected.schema.types)
        if len(types) == 1 and pa.types.is_floating(types.pop()):
            # one concatenated buffer, one isfinite: the common all-finite case costs a single pass
            whole = pa.concat_arrays([chunk for col in selected.columns for chunk in col.chunks])
            if np.isfinite(whole.to_numpy(zero_copy_only=False)).all():
                return {}
    arrays = []
    if isinstance(df, pa.Table):
        position = {n: i for i, n in enumerate(df.column_names)}
        df = {name: df.column(position[name]) for name in names}  # positional lookups are cheaper
    for name in names:
        values = _to_numpy(df, name)
        if values is not None and values.dtype.kind in "fiu":
            arrays.append((name, values))
    if not arrays:
        return {}
    # one vectorised pass over all features; per-column counts only when something is wrong
    if np.isfinite(np.concatenate([v.astype(np.float64, copy=False) if v.dtype.kind != "f" else v for _, v in arrays])).all():
        return {}
    out = {}
    for name, values in arrays:
        bad = int(values.size - np.count_nonzero(np.isfinite(values)))
        if bad:
            out[name] = bad
    return out


def _to_numpy(df, name: str) -> np.ndarray | None:
    try:
        if isinstance(df, (pa.Table, dict)):
            col = df[name] if isinstance(df, dict) else df.column(name)
            if col.num_chunks == 1 and col.null_count == 0:
                return col.chunk(0).to_numpy(zero_copy_only=False)
            return col.to_numpy(zero_copy_only=False)
        return df[name].to_numpy()
    except (TypeError, ValueError, pa.ArrowInvalid):
        return None


def _null_count(df, name: str) -> int:
    if isinstance(df, pa.Table):
        return df.column(name).null_count
    return int(df[name].isna().sum())
