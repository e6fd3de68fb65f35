"""A replay refuses, before writing anything, a group that would get rows twice or mix feature versions."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from backend.config import configure, settings_error_text

from backend.ml_engine.feature_store.feature_schema import FEATURE_SCHEMA_VERSION
from tests.collector.bot_helpers import run_bot

SYMBOLS = "BTCUSDT,ETHUSDT"


def _tree(data: Path) -> dict[str, tuple[int, int]]:
    """Every file under the store: path -> (size, mtime ns)."""
    root = data / "feature_store"
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


def _replay(data: Path, *extra: str):
    return run_bot(data, "--source", "replay", "--replay-from", "2025-11-07", "--replay-to", "2025-11-07",
                   "--symbols", SYMBOLS, "--stats-interval", "100000", *extra)


def _refused(res, *needles: str) -> str:
    out = res.stdout + res.stderr
    assert res.returncode != 0, out[-2000:]
    assert "Traceback" not in out, out[-3000:]
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert lines and all(n in lines[-1] for n in needles), res.stderr[-2000:]  # one line says it all
    return lines[-1]


def test_replay_refuses_duplicate_rows_and_other_feature_versions_writing_nothing(tmp_path):
    data = tmp_path / "data"
    res = run_bot(data, "--source", "sim", "--fast", "--record-raw", "--duration", "40m", "--symbols", SYMBOLS,
                  "--sim-start", "2025-11-07T10:00:00Z", "--seed", "2", "--stats-interval", "100000")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]

    # 1. into the recorded run's own group: every sample would be stored twice
    before = _tree(data)
    line = _refused(_replay(data), "'training_features'", "twice", "--feature-store-group", "BTCUSDT")
    assert f"feature version {FEATURE_SCHEMA_VERSION}" in line
    assert _tree(data) == before  # nothing written

    # 2. into a new group it runs; a second replay into that group is refused the same way
    res = _replay(data, "--feature-store-group", "replayed")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    before = _tree(data)
    _refused(_replay(data, "--feature-store-group", "replayed"), "'replayed'", "twice")
    assert _tree(data) == before
    # 3. a group of another feature version: refused unless told, then written beside them
    old_dir = data / "feature_store" / "offline" / "old_version" / "date=2025-11-07"
    old_dir.mkdir(parents=True)
    src = next((data / "feature_store" / "offline" / "training_features").glob("date=*/*.parquet"))
    table = pq.read_table(src)
    i = table.schema.get_field_index("feature_version")
    older = pa.array([FEATURE_SCHEMA_VERSION - 1] * table.num_rows, table.schema.field(i).type)
    pq.write_table(table.set_column(i, table.schema.field(i), older), old_dir / "part-0.parquet")
    before = _tree(data)
    _refused(_replay(data, "--feature-store-group", "old_version"), "'old_version'", "--allow-mixed-versions",
             f"version {FEATURE_SCHEMA_VERSION - 1}")
    assert _tree(data) == before
    res = _replay(data, "--feature-store-group", "old_version", "--allow-mixed-versions")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    got = pq.read_table(data / "feature_store" / "offline" / "old_version", columns=["feature_version"])
    assert set(got.column(0).to_pylist()) == {FEATURE_SCHEMA_VERSION - 1, FEATURE_SCHEMA_VERSION}


def test_replay_dates_are_checked_and_legacy_batches_never_written():
    """Bad or reversed dates are settings errors (one line, no traceback); a replay never writes the
    legacy format, which has no groups and would hold every replayed sample beside the recorded one."""
    for bad, expected in ((dict(replay_from="2025-11-31"), "'2025-11-31' is not a date"),
                          (dict(replay_from="2025-11-09", replay_to="2025-11-07"), "is after --replay-to")):
        with pytest.raises(ValidationError) as err:
            configure(source="replay", **bad)
        assert expected in settings_error_text(err.value)
    s = configure(source="replay", replay_from=" 2025-11-07", replay_to="2025-11-08", use_legacy_format=True)
    assert s.replay_from == "2025-11-07" and s.use_legacy_format is False
    assert configure(source="sim").use_legacy_format is True
