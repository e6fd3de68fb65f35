"""Every reader of the store checks each file's schema first: bad files are named and left
untouched (byte for byte), the rest are used; training refuses naming the file."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from backend.apps.label import main_parquet
from backend.config import configure
from backend.ml_engine.feature_store.feature_schema import TRAINING_SCHEMA
from backend.ml_engine.feature_store.feature_store import FeatureStore
from backend.ml_engine.feature_store.file_check import BadStoreFileWarning, check_file
from backend.ml_engine.training_orchestrator.config import DataConfig
from backend.ml_engine.training_orchestrator.data import load_training_data
from backend.ml_engine.training_orchestrator.errors import TrainingDataError
from tests.integrity.bad_files import good_table, snapshot, write_bad_files
from tests.labelling.helpers import tape_frame

DAY_MS = 86_400_000
DAY0 = 20_399 * DAY_MS  # 2025-11-07
GROUP = "training_features"


@pytest.fixture
def store(tmp_path: Path):
    yield FeatureStore(tmp_path / "feature_store" / "offline")
    configure()


def _fill(store: FeatureStore) -> tuple[list[Path], dict[str, Path]]:
    good = []
    for day in range(2):
        start = DAY0 + day * DAY_MS + 3_600_000
        for k in range(5):
            written = store.write_offline_features(GROUP, good_table(20, start + k * 600_000), fsync=False)
            good += [w.path for w in written]
        ts = start + np.arange(0, 3 * 3_600_000, 3_000)
        store.write_offline_features("price_tape", tape_frame("BTCUSDT", ts, 100 + np.arange(ts.size) * 0.001), fsync=False)
    empty_dir = store.group_dir(GROUP) / "date=2025-11-07"
    pq.write_table(TRAINING_SCHEMA.empty_table(), empty_dir / "features_000000_empty.parquet")
    bad = write_bad_files(store.group_dir(GROUP) / "date=2025-11-08", DAY0 + DAY_MS + 7_200_000)
    return good, bad


def test_check_file_names_each_kind(store):
    _, bad = _fill(store)
    reasons = {kind: check_file(path, TRAINING_SCHEMA) for kind, path in bad.items()}
    assert not any(r.ok for r in reasons.values())
    assert "cannot be known" in reasons["int_seconds"].reason and "refused rather than guessed" in reasons["int_seconds"].reason
    assert "no time zone" in reasons["naive_ns"].reason
    assert "is double, expected float" in reasons["float64_column"].reason
    assert "missing columns (1)" in reasons["missing_column"].reason
    assert "missing columns" in reasons["foreign"].reason
    assert "truncated or corrupt footer" in reasons["truncated"].reason
    empty = check_file(store.group_dir(GROUP) / "date=2025-11-07" / "features_000000_empty.parquet", TRAINING_SCHEMA)
    assert empty.exact and empty.rows == 0


def test_labeller_names_bad_files_rewrites_none_and_labels_the_rest(store, capsys):
    good, bad = _fill(store)
    before = snapshot(bad.values())
    code = main_parquet(["--data-dir", str(store.root.parent.parent), "--no-progress"])
    out = capsys.readouterr().out
    assert code == 1, out
    assert "Traceback" not in out
    for kind, path in bad.items():
        assert str(path) in out, kind
    assert snapshot(bad.values()) == before  # not one byte, not one mtime changed
    for path in good:
        table = pq.read_table(path)
        assert table.column("future_direction_10s").null_count < table.num_rows, path
    assert "Files rewritten: 10 of" in out


def test_labeller_does_not_rewrite_a_readable_file_that_is_not_the_stores_own(store, capsys):
    _fill(store)
    # a us-precision, large_string file: readable, but another tool's layout
    t = good_table(20, DAY0 + 10_000_000)
    t = t.set_column(0, "timestamp", t.column("timestamp").cast(pa.timestamp("us", tz="UTC")))
    t = t.set_column(1, "symbol", t.column("symbol").cast(pa.large_string()))
    other = store.group_dir(GROUP) / "date=2025-11-07" / "features_000000_othertool.parquet"
    pq.write_table(t, other)
    before = snapshot([other])
    main_parquet(["--data-dir", str(store.root.parent.parent), "--no-progress"])
    out = capsys.readouterr().out
    assert str(other) in out and "not the store's own schema" in out
    assert snapshot([other]) == before
    # readers still read it
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        df = store.read_offline_features(GROUP, "2025-11-07", "2025-11-07")
    assert len(df) == 5 * 20 + 20


def test_read_offline_features_warns_names_and_skips(store):
    good, bad = _fill(store)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        df = store.read_offline_features(GROUP)
    texts = [str(w.message) for w in caught if issubclass(w.category, BadStoreFileWarning)]
    for kind, path in bad.items():
        assert any(str(path) in t for t in texts), kind
    assert len(texts) == len(bad)
    assert len(df) == 10 * 20
    assert not df.duplicated(["symbol", "timestamp"]).any()
    assert df["timestamp"].min().year == 2025  # no 1970 rows from the int-seconds file


def test_training_refuses_naming_the_file(store):
    _fill(store)
    cfg = DataConfig(feature_group=GROUP, min_samples=1, min_label_coverage=0.0)
    with pytest.raises(TrainingDataError) as err:
        load_training_data(store, cfg)
    text = str(err.value)
    for kind in ("int_seconds", "naive_ns", "float64_column", "missing_column", "foreign", "truncated"):
        assert f"features_000000_{kind}.parquet" in text, kind


def test_web_data_audit_names_bad_files_and_counts_only_the_good(store):
    """The web app's Data panel reader: each bad file is named with its reason, counts no rows
    (no 1970 day from the int-seconds file, no exception from the truncated or foreign one),
    is left untouched, and a restarted app (disk cache) says the same."""
    from backend.ml_engine.feature_store.inspect import StoreInspector, cache_path

    good, bad = _fill(store)
    before = snapshot(bad.values())
    first = StoreInspector(store.root).audit(GROUP)
    assert cache_path(store.root, GROUP).exists()
    again = StoreInspector(store.root).audit(GROUP)  # a restart: summaries from the disk cache, bad files checked again
    for audit in (first, again):
        body = audit.as_dict()
        assert body["total_rows"] == len(good) * 20
        assert body["days"] == ["2025-11-07", "2025-11-08"] and body["first"].startswith("2025-11-07")
        skipped = {row["path"]: row["reason"] for row in body["skipped_files"]}
        assert set(skipped) == {str(p) for p in bad.values()}
        assert "refused rather than guessed" in skipped[str(bad["int_seconds"])]
        assert "truncated or corrupt footer" in skipped[str(bad["truncated"])]
        assert "is double, expected float" in skipped[str(bad["float64_column"])]
        assert body["files"] == len(good) + 1 + len(bad)  # on disk: the good, the empty one, the bad
    assert snapshot(bad.values()) == before
    # a bad file replaced by a good one is counted from then on
    bad["int_seconds"].unlink()
    store.write_offline_features(GROUP, good_table(20, DAY0 + DAY_MS + 30_000_000), fsync=False)
    later = StoreInspector(store.root).audit(GROUP).as_dict()
    assert later["total_rows"] == len(good) * 20 + 20 and len(later["skipped_files"]) == len(bad) - 1


def test_check_schema_names_duplicates_missing_extra_and_types():
    from backend.ml_engine.feature_store.file_check import check_schema

    fields = list(TRAINING_SCHEMA)
    assert check_schema(TRAINING_SCHEMA, TRAINING_SCHEMA) == ([], [])
    dup = pa.schema(fields + [fields[5]])
    problems, _ = check_schema(dup, TRAINING_SCHEMA)
    assert problems == [f"duplicate columns ['{fields[5].name}']"]
    changed = pa.schema([pa.field(f.name, pa.float64()) if i == 7 else f for i, f in enumerate(fields[:-1])]
                        + [pa.field("foreign", pa.int8())])
    problems, differences = check_schema(changed, TRAINING_SCHEMA)
    assert any(fields[-1].name in p and p.startswith("missing columns (1)") for p in problems), problems
    assert any(repr(fields[7].name) in p for p in problems + differences), (problems, differences)
    assert "extra columns ['foreign']" in differences
    assert check_schema(pa.schema(fields[::-1]), TRAINING_SCHEMA) == ([], ["columns in another order"])
