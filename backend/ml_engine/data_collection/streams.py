"""One spec per collected stream: its row layout, store group, flush rule, Arrow table and sinks.

The collector, the spool and the sinks know streams only through these specs, so a new
stream (raw venue events, model predictions; DESIGN.md §6.4, §6.6) is a new spec in
``default_streams``, not a new branch in the collector.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pyarrow as pa

from backend.contracts.groups import CANDLES, PAPER_TRADES, PREDICTIONS, PRICE_TAPE, RAW_EVENTS
from backend.ml_engine.data_collection.buffers import Columns
from backend.ml_engine.data_collection.records import RowLayout, StreamKey
from backend.ml_engine.data_collection.tables import candle_table, sample_table, tape_table
from backend.ml_engine.feature_store.feature_schema import (
    FEATURE_COUNT,
    LABEL_FIELDS,
    PAPER_TRADES_SCHEMA,
    PREDICTIONS_SCHEMA,
    TIMESTAMP_TYPE,
)
from backend.venues.raw import RAW_FLOATS, RAW_INTS, raw_table

SAMPLE, TAPE, CANDLE = "sample", "tape", "candle"
RAW = "raw_events"
#: raw event rows (one per book level or trade, ~88 bytes each) of one symbol that make a flush due:
#: about 25 min of a 50-level book polled every 3 s
RAW_FLUSH_ROWS = 50_000


def raw_events_table(parts: dict[StreamKey, Columns]) -> pa.Table:
    """Raw event rows -> ``RAW_EVENTS_SCHEMA`` (one row per event; ``backend.venues.raw``)."""
    return raw_table((k.symbol, k.source, c.ints, c.floats) for k, c in parts.items())


#: the model in the loop (DESIGN.md §6.6): one row per prediction and per paper fill. Their lanes'
#: ``StreamKey.source`` holds the model URI (one model per bot run), so the URI survives the spool.
PREDICTION, PAPER_TRADE = "prediction", "paper_trade"
#: codes of the paper-trade int fields (``side``: +1 buy, -1 sell; ``reason``: index in this tuple)
PAPER_REASONS = ("enter", "exit", "flip")


def _keyed(parts: dict[StreamKey, Columns]) -> list[StreamKey]:
    return sorted(parts, key=lambda k: (k.symbol, k.source))


def _repeat(keys: list[StreamKey], parts: dict[StreamKey, Columns], attr: str) -> pa.Array:
    return pa.array([getattr(k, attr) for k in keys for _ in range(len(parts[k]))], pa.string())


def predictions_table(parts: dict[StreamKey, Columns]) -> pa.Table:
    """Prediction rows -> ``PREDICTIONS_SCHEMA`` (label columns null until the labeller runs)."""
    keys = _keyed(parts)
    ints = {f: np.concatenate([parts[k].ints[f] for k in keys]) for f in ("ts", "horizon_s", "direction")}
    probs = {f: np.concatenate([parts[k].floats[f] for k in keys]).astype(np.float32) for f in ("p_down", "p_neutral", "p_up")}
    n = len(ints["ts"])
    cols = {
        "timestamp": pa.array(ints["ts"].astype(np.int64), pa.int64()).cast(TIMESTAMP_TYPE),
        "symbol": _repeat(keys, parts, "symbol"),
        "model_uri": _repeat(keys, parts, "source"),
        "horizon_s": pa.array(ints["horizon_s"].astype(np.int16)),
        "prob_down": pa.array(probs["p_down"]),
        "prob_neutral": pa.array(probs["p_neutral"]),
        "prob_up": pa.array(probs["p_up"]),
        "predicted_direction": pa.array(ints["direction"].astype(np.int8)),
    }
    for f in LABEL_FIELDS:
        cols[f.name] = pa.nulls(n, f.type)
    return pa.table(cols, schema=PREDICTIONS_SCHEMA)


def paper_trades_table(parts: dict[StreamKey, Columns]) -> pa.Table:
    """Paper fills -> ``PAPER_TRADES_SCHEMA`` (side and reason decoded from their int codes)."""
    keys = _keyed(parts)
    side = np.concatenate([parts[k].ints["side"] for k in keys])
    reason = np.concatenate([parts[k].ints["reason"] for k in keys])
    cols = {
        "timestamp": pa.array(np.concatenate([parts[k].ints["ts"] for k in keys]).astype(np.int64), pa.int64()).cast(TIMESTAMP_TYPE),
        "symbol": _repeat(keys, parts, "symbol"),
        "side": pa.array(np.where(side > 0, "buy", "sell").tolist(), pa.string()),
        "qty": pa.array(np.concatenate([parts[k].floats["qty"] for k in keys])),
        "price": pa.array(np.concatenate([parts[k].floats["price"] for k in keys])),
        "fee": pa.array(np.concatenate([parts[k].floats["fee"] for k in keys])),
        "reason": pa.array([PAPER_REASONS[int(r)] for r in reason], pa.string()),
        "model_uri": _repeat(keys, parts, "source"),
    }
    return pa.table(cols, schema=PAPER_TRADES_SCHEMA)


@dataclass(frozen=True)
class StreamSpec:
    """How one stream is buffered, spooled and written.

    * ``layout``: the fixed row (int64 ``ts`` first: event time in ms since the epoch).
    * ``group``: the feature-store group its rows go to.
    * ``per_symbol``: True when a flush holds one symbol (samples: legacy batches are per
      symbol), False when one flush gathers every symbol's buffer of the stream.
    * ``flush_rows``: a buffer of this many rows makes a flush due (for a stream that is
      not per symbol, any one symbol's buffer reaching it flushes the whole stream).
    * ``to_table``: ``{StreamKey: Columns}`` -> Arrow table in the group's schema.
    * ``sinks``: names of the sinks that write it (``parquet``, ``legacy``); a sink the
      collector has disabled is left out when the job is made.
    * ``counts_as_samples``: its rows are what ``collected=``/``flushed=`` count.
    """

    name: str
    layout: RowLayout
    group: str
    per_symbol: bool
    flush_rows: int
    to_table: Callable[[dict[StreamKey, Columns]], pa.Table]
    sinks: tuple[str, ...]
    counts_as_samples: bool = False


def default_streams(*, sample_group: str, max_samples_per_file: int, collection_interval: int) -> dict[str, StreamSpec]:
    """The sample, tape and candle specs of a collector, by stream name.

    Samples flush per symbol at ``max_samples_per_file`` rows into ``sample_group`` (parquet
    and legacy); the tape, one row per tick, flushes all symbols at
    ``max_samples_per_file * collection_interval`` rows (the same wall time as a sample
    batch); candles flush all symbols at ``max_samples_per_file`` bars.
    """
    return {
        SAMPLE: StreamSpec(SAMPLE, RowLayout(("ts", "collected_at"), ("mid",), FEATURE_COUNT), sample_group,
                           per_symbol=True, flush_rows=max_samples_per_file, to_table=sample_table,
                           sinks=("parquet", "legacy"), counts_as_samples=True),
        TAPE: StreamSpec(TAPE, RowLayout(("ts",), ("mid", "bid", "ask")), PRICE_TAPE,
                         per_symbol=False, flush_rows=max_samples_per_file * collection_interval, to_table=tape_table,
                         sinks=("parquet",)),
        CANDLE: StreamSpec(CANDLE, RowLayout(("ts",), ("open", "high", "low", "close", "volume", "turnover")), CANDLES,
                           per_symbol=False, flush_rows=max_samples_per_file, to_table=candle_table,
                           sinks=("parquet",)),
        # recorded only with --record-raw (``MLDataCollector.add_raw_events``); one symbol's
        # tick is appended whole and flushes run between ticks, so no event is ever split
        RAW: StreamSpec(RAW, RowLayout(RAW_INTS, RAW_FLOATS), RAW_EVENTS, per_symbol=False,
                        flush_rows=RAW_FLUSH_ROWS, to_table=raw_events_table, sinks=("parquet",)),
        # written only with --model (``MLDataCollector.add_record``); the key's source is the model URI
        PREDICTION: StreamSpec(PREDICTION, RowLayout(("ts", "horizon_s", "direction"), ("p_down", "p_neutral", "p_up")),
                               PREDICTIONS, per_symbol=False, flush_rows=max_samples_per_file,
                               to_table=predictions_table, sinks=("parquet",)),
        PAPER_TRADE: StreamSpec(PAPER_TRADE, RowLayout(("ts", "side", "reason"), ("qty", "price", "fee")), PAPER_TRADES,
                                per_symbol=False, flush_rows=max_samples_per_file, to_table=paper_trades_table,
                                sinks=("parquet",)),
    }
