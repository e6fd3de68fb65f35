"""The data audit against a store whose rows, gaps and labels the test wrote itself."""

import pandas as pd
import pyarrow.parquet as pq
import pytest

from helpers import samples, write

from backend.ml_engine.feature_store.feature_store import FeatureStore, FeatureStoreError
from backend.ml_engine.feature_store.inspect import (
    CacheError,
    FileSummary,
    StoreInspector,
    cache_path,
    load_summaries,
    save_summaries,
)


@pytest.fixture
def store_root(tmp_path):
    btc = samples("BTCUSDT", 3000, gaps={1000: 600_000, 2000: 90_000, 1500: 20_000})
    eth = samples("ETHUSDT", 1000, interval_ms=60_000, labelled=0.5, seed=1)
    write(tmp_path, [btc, eth])
    return tmp_path, btc, eth


def _expected_rows(df):
    days = df["timestamp"].dt.strftime("%Y-%m-%d")
    return {k: int(v) for k, v in days.value_counts().sort_index().items()}


def test_rows_gaps_coverage_balance(store_root):
    root, btc, eth = store_root
    audit = StoreInspector(root).audit("training_features")
    assert audit.total_rows == 4000
    assert audit.rows == {"BTCUSDT": _expected_rows(btc), "ETHUSDT": _expected_rows(eth)}
    assert audit.interval_s == {"BTCUSDT": 30.0, "ETHUSDT": 60.0}
    ts = [int(t.timestamp() * 1000) for t in btc["timestamp"]]
    # 630 s and 120 s are gaps (> 2 x 30 s); the 50 s step at row 1500 is not
    assert audit.gap_count == 2
    got = [(g.symbol, g.start_ms, g.end_ms) for g in audit.gaps]
    assert got == [("BTCUSDT", int(ts[999]), int(ts[1000])), ("BTCUSDT", int(ts[1999]), int(ts[2000]))]
    assert audit.gaps[0].as_dict()["missing_samples"] == 20
    assert audit.label_coverage == {10: pytest.approx(3500 / 4000), 30: pytest.approx(3500 / 4000), 60: pytest.approx(3500 / 4000)}
    both = pd.concat([btc, eth])
    day = both["timestamp"].dt.strftime("%Y-%m-%d")
    for h in (10, 30, 60):
        col = both[f"future_direction_{h}s"].fillna(3).astype(int)
        want = {d: [int(((day == d) & (col == c)).sum()) for c in range(4)] for d in sorted(day.unique())}
        assert audit.class_balance[h] == want
    assert audit.feature_versions == [1]
    assert audit.files == len(list((root / "training_features").rglob("*.parquet")))
    assert audit.bytes == sum(p.stat().st_size for p in (root / "training_features").rglob("*.parquet"))


def test_cache_reads_only_changed_files(store_root):
    root, _, _ = store_root
    inspector = StoreInspector(root)
    first = inspector.audit("training_features")
    assert first.files_read == first.files
    assert inspector.audit("training_features").files_read == 0
    # the labeller rewrites one file with its labels filled: only that file is read again
    store = inspector.store
    target = next(p for p in store.list_files("training_features") if pq.read_table(p, columns=["future_direction_10s"]).column(0).null_count)
    table = pq.read_table(target)
    df = table.to_pandas()
    for h in (10, 30, 60):
        df[f"future_direction_{h}s"] = pd.array([1] * len(df), dtype="Int8")
    import os
    store.rewrite_file(target, df, None, "training_features")
    os.utime(target, ns=(1, os.stat(target).st_mtime_ns + 1_000_000))
    again = inspector.audit("training_features")
    assert again.files_read == 1
    assert again.label_coverage[10] > first.label_coverage[10]


def test_empty_and_invalid_group(tmp_path):
    inspector = StoreInspector(tmp_path)
    audit = inspector.audit("training_features")
    assert audit.total_rows == 0 and audit.files == 0 and audit.gaps == []
    with pytest.raises(FeatureStoreError):
        inspector.audit("../etc")


def test_price_tape_group_without_labels(tmp_path):
    df = pd.DataFrame({
        "timestamp": pd.to_datetime([0, 3000, 6000, 60_000], unit="ms", utc=True) + pd.Timedelta("20000D"),
        "symbol": "BTCUSDT", "mid_price": 1.0, "best_bid": 0.9, "best_ask": 1.1,
    })
    write(tmp_path, [df], group="price_tape")
    audit = StoreInspector(tmp_path).audit("price_tape")
    assert audit.total_rows == 4 and audit.label_coverage == {} and audit.gap_count == 1


def _same(a, b):
    x, y = a.as_dict(), b.as_dict()
    for k in ("seconds", "files_read"):
        x.pop(k), y.pop(k)
    return x == y


def test_disk_cache_after_a_restart_gives_the_same_audit(store_root):
    root, _, _ = store_root
    first = StoreInspector(root).audit("training_features")
    path = cache_path(root, "training_features")
    assert path.is_file() and first.files_read == first.files
    assert StoreInspector(root).groups() == ["training_features"]  # the cache folder is not a group
    restarted = StoreInspector(root).audit("training_features")  # a new process: memory cache empty
    assert restarted.files_read == 0
    assert _same(restarted, first)
    assert _same(restarted, StoreInspector(root, disk_cache=False).audit("training_features"))


def test_disk_cache_rereads_a_changed_file(store_root):
    root, _, _ = store_root
    before = StoreInspector(root).audit("training_features")
    store = FeatureStore(root)
    target = next(p for p in store.list_files("training_features")
                  if pq.read_table(p, columns=["future_direction_10s"]).column(0).null_count)
    df = pq.read_table(target).to_pandas()
    for h in (10, 30, 60):
        df[f"future_direction_{h}s"] = pd.array([2] * len(df), dtype="Int8")
    store.rewrite_file(target, df, None, "training_features")  # the labeller, while the app was down
    after = StoreInspector(root).audit("training_features")
    assert after.files_read == 1
    assert after.label_coverage[10] > before.label_coverage[10]
    assert _same(after, StoreInspector(root, disk_cache=False).audit("training_features"))
    # the cache now holds the new file: the next restart reads nothing
    assert StoreInspector(root).audit("training_features").files_read == 0


@pytest.mark.parametrize("damage", ["garbage", "truncated", "lying_index", "empty", "flipped_byte"])
def test_damaged_disk_cache_is_ignored_and_rebuilt(store_root, damage):
    root, _, _ = store_root
    truth = StoreInspector(root).audit("training_features")
    path = cache_path(root, "training_features")
    data = path.read_bytes()
    if damage == "garbage":
        path.write_bytes(b"not an arrow file at all" * 100)
    elif damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "flipped_byte":  # one byte of the index changed: still parses, no longer matches its digest
        i = data.rindex(b'"s":') + 4  # the footer's copy of the schema is the one read
        path.write_bytes(data[:i] + bytes([data[i] ^ 1]) + data[i + 1:])
    else:  # a well-formed file whose index counts more rows than it holds
        summaries = load_summaries(path, str(root))
        bad = [FileSummary(s.path, s.size, s.mtime_ns, s.rows + 5, s.ts_ms, s.symbols, s.symbol_codes, s.directions,
                           s.feature_versions) if i == 0 else s for i, s in enumerate(summaries)]
        save_summaries(path, str(root), bad)
    with pytest.raises(CacheError):
        load_summaries(path, str(root))
    again = StoreInspector(root).audit("training_features")
    assert again.files_read == again.files  # nothing trusted from the damaged file
    assert _same(again, truth)
    assert len(load_summaries(path, str(root))) == truth.files  # rebuilt
