"""Spool fuzz: single-bit flips and truncations of a recorded spool cost only the damaged records.

One real spool is recorded per module (a collector that flushed part of what it collected
and was then abandoned, as a crash leaves it). Each case copies it, damages one segment,
and recovers in-process. What recovery returns is compared with what the undamaged spool
gives: nothing comes back that the undamaged spool does not give (no duplicates: rows
already flushed stay done), and every row missing lies inside a damaged record.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

from backend.ml_engine.data_collection import MLDataCollector
from backend.ml_engine.data_collection.records import StreamKey
from backend.ml_engine.data_collection.spool import Spool
from backend.ml_engine.data_collection.spool_format import (
    BLOCK_HEAD,
    FRAME_HEAD,
    REC_BLOCK,
    REC_KEY,
    REC_ROW,
    ROW_HEAD,
    _valid_at,
)
from backend.ml_engine.data_collection.streams import default_streams
from backend.ml_engine.feature_store.feature_store import FeatureStore

T0 = 1_762_473_600_000
FLIPS, TRUNCATIONS = 200, 50


def _features(i: int) -> np.ndarray:
    return (np.arange(110, dtype=np.float32) * 0.5 + i).astype(np.float32)


def _layouts() -> dict:
    specs = default_streams(sample_group="training_features", max_samples_per_file=60, collection_interval=10)
    return {n: s.layout for n, s in specs.items()}


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> Path:
    """A spool as a crash leaves it: the segment left after rotations (the older ones, all
    flushed, were dropped by the checkpoints), finished and unfinished flushes, live rows."""
    root = tmp_path_factory.mktemp("recorded")
    c = MLDataCollector(storage_path=root / "ml_training", max_samples_per_file=60, source="sim", fsync=False,
                        spool_segment_bytes=60_000)
    c.recover()
    for i in range(330):
        for sym in ("BTCUSDT", "ETHUSDT"):
            assert c.collect_sample(sym, _features(i), T0 + i * 30_000, 100.0 + i)
        c.add_tape("BTCUSDT", T0 + i * 3000, 100.0 + i, 99.9 + i, 100.1 + i)
        c.maybe_flush()
        if i % 100 == 0:
            c.wait_for_flushes()
            c.checkpoint()
    c.wait_for_flushes()
    c.maybe_flush()
    copy = root / "spool_copy"
    shutil.copytree(c.spool.folder, copy, ignore=shutil.ignore_patterns(".lock"))
    c.close_sync()
    return copy


def _recovered_rows(folder: Path) -> tuple[dict[tuple, tuple], object]:
    """(key, seq) -> (ts, mid) of every row recovery would flush; asserts no row is given twice."""
    sp = Spool(folder, _layouts(), fsync=False)
    try:
        rec = sp.recover()
    finally:
        sp.close()
    out: dict[tuple, tuple] = {}
    groups = list(rec.pending_parts().values()) + [rec.live_rows()]
    for parts in groups:
        for key, cols in parts.items():
            for j, seq in enumerate(cols.seq.tolist()):
                k = (key.stream, key.symbol, seq)
                assert k not in out, f"row {k} recovered twice"
                out[k] = (int(cols.ints["ts"][j]), float(cols.floats["mid"][j]))
    return out, rec


def _record_map(data: bytes) -> list[tuple[int, int, list[tuple]]]:
    """(start, end, rows inside) of every record of a format-3 segment, in order."""
    out, keys, pos = [], {}, 0
    while pos < len(data):
        end = _valid_at(data, pos)
        assert end > 0, "the recorded spool itself is damaged"
        payload = data[pos + FRAME_HEAD.size:end]
        rows: list[tuple] = []
        if payload[0] == REC_KEY:
            keys[struct.unpack_from("<H", payload, 1)[0]] = StreamKey(*json.loads(payload[3:]))
        elif payload[0] == REC_ROW:
            _, kid, seq = ROW_HEAD.unpack_from(payload, 0)
            rows = [(keys[kid].stream, keys[kid].symbol, seq)]
        elif payload[0] == REC_BLOCK:
            _, kid, n = BLOCK_HEAD.unpack_from(payload, 0)
            seqs = np.frombuffer(payload, "<i8", n, BLOCK_HEAD.size)
            rows = [(keys[kid].stream, keys[kid].symbol, int(s)) for s in seqs]
        out.append((pos, end, rows))
        pos = end
    return out


def _check_case(case: Path, baseline: dict, allowed_loss: set, damaged_name: str | None) -> int:
    got, rec = _recovered_rows(case)
    extra = set(got) - set(baseline)
    assert not extra, f"rows that were already flushed came back (duplicates): {sorted(extra)[:5]}"
    for k, v in got.items():
        assert v == baseline[k], k
    lost = set(baseline) - set(got)
    assert lost <= allowed_loss, f"{len(lost - allowed_loss)} rows lost outside the damaged records"
    if damaged_name is not None:
        assert any(p.name == damaged_name for p in rec.damage), "the damage was not reported"
    return len(lost)


def test_bit_flips_and_truncations_cost_only_the_damaged_records(recorded, tmp_path):
    segments = sorted(recorded.glob("wal_*.log"))
    assert segments
    baseline, base_rec = _recovered_rows(recorded)
    assert not base_rec.damage and len(baseline) > 200
    maps = {p.name: _record_map(p.read_bytes()) for p in segments}
    sizes = [p.stat().st_size for p in segments]
    rng = random.Random(20251107)
    total_lost = 0
    for case_no in range(FLIPS + TRUNCATIONS):
        seg = rng.choices(segments, weights=sizes)[0]
        data = bytearray(seg.read_bytes())
        if case_no < FLIPS:
            at = rng.randrange(len(data))
            data[at] ^= 1 << rng.randrange(8)
            damaged = [r for r in maps[seg.name] if r[0] <= at < r[1]]
        else:
            at = rng.randrange(1, len(data))
            del data[at:]
            damaged = [r for r in maps[seg.name] if r[1] > at]
        allowed = {row for _, _, rows in damaged for row in rows}
        case = tmp_path / f"case{case_no}"
        case.mkdir()
        for p in segments:
            (case / p.name).write_bytes(bytes(data) if p == seg else p.read_bytes())
        # a cut exactly at a record's start leaves whole records only: a shorter, valid
        # segment, as a crash before those records leaves it, so there is no damage to report
        # (where the records fall varies with the flush thread's timing)
        clean_cut = case_no >= FLIPS and any(r[0] == at for r in maps[seg.name])
        total_lost += _check_case(case, baseline, allowed, None if clean_cut else seg.name)
        if case_no % 25 == 0 and not clean_cut:
            # the whole start-up path: good records go to a new segment, the damaged one is kept aside unchanged
            sp = Spool(case, _layouts(), fsync=False)
            rec = sp.recover()
            sp.begin(rec)
            sp.close()
            aside = list(case.glob(".damaged-*"))
            assert len(aside) == 1 and (aside[0] / seg.name).read_bytes() == bytes(data)
            assert seg.name in (aside[0] / "REASON.txt").read_text()
            again, _ = _recovered_rows(case)
            assert set(again) == _recovered_rows_safe(rec)  # the good rows, now in the new segment
        shutil.rmtree(case)
    assert total_lost < len(baseline) * (FLIPS + TRUNCATIONS) / 4  # most flips cost a row or nothing


def _recovered_rows_safe(rec) -> set:
    out = set()
    for parts in list(rec.pending_parts().values()) + [rec.live_rows()]:
        for key, cols in parts.items():
            out.update((key.stream, key.symbol, s) for s in cols.seq.tolist())
    return out


def test_a_damaged_spool_is_recovered_by_the_collector_and_reported(recorded, tmp_path, caplog):
    baseline, _ = _recovered_rows(recorded)
    spool = tmp_path / "spool"
    shutil.copytree(recorded, spool)
    seg = sorted(spool.glob("wal_*.log"))[-1]
    data = bytearray(seg.read_bytes())
    sample_rows = [r for r in _record_map(bytes(data)) if r[2] and r[2][0][0] == "sample"]
    start, end, rows = sample_rows[len(sample_rows) // 2]
    data[(start + end) // 2] ^= 0x10
    seg.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="backend.ml_engine.data_collection"):
        c = MLDataCollector(storage_path=tmp_path / "ml_training", max_samples_per_file=60, source="sim", fsync=False)
        c.recover()
        assert c.close_sync()
    expected = sum(1 for k in baseline if k[0] == "sample") - len(rows)
    df = FeatureStore(tmp_path / "feature_store" / "offline").read_offline_features("training_features")
    assert len(df) == expected and not df.duplicated(["symbol", "timestamp"]).any()
    assert f"skipped 1 damaged record(s), {end - start} bytes" in caplog.text and seg.name in caplog.text
    assert c.metrics.value("lobbot_spool_damaged_records_total") == 1
    aside = list(spool.glob(".damaged-*"))
    assert len(aside) == 1 and (aside[0] / seg.name).read_bytes() == bytes(data)
