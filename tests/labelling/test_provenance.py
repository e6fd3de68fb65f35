"""The labeller stores the threshold and tolerance with the labels, in both formats, and keeps it true."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from backend.config import configure
from backend.contracts.labels import LABEL_PROVENANCE_KEY, LabelSetting, decode_provenance, merge_provenance
from backend.ml_engine.feature_store.feature_store import FeatureStore
from backend.ml_engine.feature_store.legacy_format import list_batches, read_batch
from backend.apps.label import main_legacy, main_parquet
from tests.labelling.test_scripts import _hand_example, _stats

ARGS = ["--no-progress", "--tolerance", "5"]


@pytest.fixture
def data_dir(tmp_path: Path):
    yield tmp_path
    configure()


def _store(d: Path) -> FeatureStore:
    return FeatureStore(d / "feature_store" / "offline")


def _by_symbol(store: FeatureStore) -> dict[str, dict]:
    """Provenance per symbol, over its files (BTCUSDT's samples span midnight: two files)."""
    records: dict[str, list] = {}
    for path in store.list_files("training_features"):
        symbol = store.read_file(path, "training_features", columns=["symbol"]).column("symbol")[0].as_py()
        records.setdefault(symbol, []).append(store.label_provenance(path))
    return {symbol: merge_provenance(*r) for symbol, r in records.items()}


def test_parquet_labels_record_their_threshold_and_tolerance(data_dir: Path):
    _hand_example(data_dir)
    store = _store(data_dir)
    assert all(p == {} for p in _by_symbol(store).values())  # collected, never labelled: nothing recorded
    assert main_parquet(["--data-dir", str(data_dir), *ARGS, "--threshold", "0.05"]) == 0
    got = _by_symbol(store)
    # BTCUSDT has 10/30/60 s labels, ETHUSDT 30/60 s (EXPECTED in test_labels_core); null columns record nothing.
    assert got["BTCUSDT"] == {h: frozenset({LabelSetting(0.05, 5.0)}) for h in (10, 30, 60)}
    assert got["ETHUSDT"] == {h: frozenset({LabelSetting(0.05, 5.0)}) for h in (30, 60)}

    # A new threshold re-labels everything computable and the record follows.
    assert main_parquet(["--data-dir", str(data_dir), *ARGS, "--threshold", "0.02"]) == 0
    assert _by_symbol(store)["BTCUSDT"][60] == frozenset({LabelSetting(0.02, 5.0)})
    before = _stats(store)
    assert main_parquet(["--data-dir", str(data_dir), *ARGS, "--threshold", "0.02"]) == 0
    assert _stats(store) == before  # same settings: nothing rewritten


def test_kept_labels_keep_their_own_setting(data_dir: Path):
    _hand_example(data_dir)
    store = _store(data_dir)
    assert main_parquet(["--data-dir", str(data_dir), *ARGS, "--threshold", "0.05"]) == 0
    shutil.rmtree(store.root / "price_tape")  # BTCUSDT's labels can no longer be computed: they are kept
    assert main_parquet(["--data-dir", str(data_dir), *ARGS, "--threshold", "0.02"]) == 0
    got = _by_symbol(store)
    assert got["BTCUSDT"][60] == frozenset({LabelSetting(0.05, 5.0)})  # no label was made now
    assert got["ETHUSDT"][30] == frozenset({LabelSetting(0.02, 5.0)})  # from its own samples


def test_legacy_metadata_records_it_and_stays_readable(data_dir: Path):
    _hand_example(data_dir)
    assert main_legacy(["--data-dir", str(data_dir), *ARGS, "--threshold", "0.05"]) == 0
    root = data_dir / "ml_training"
    records = []
    for ref in list_batches(root, "BTCUSDT"):
        read_batch(ref)  # the strict reader still accepts the batch
        records.append(decode_provenance(json.loads(ref.metadata_path.read_text())[LABEL_PROVENANCE_KEY]))
    assert merge_provenance(*records)[60] == frozenset({LabelSetting(0.05, 5.0)})
    before = {p: p.read_bytes() for p in root.rglob("*.json")}
    assert main_legacy(["--data-dir", str(data_dir), *ARGS, "--threshold", "0.05"]) == 0
    assert {p: p.read_bytes() for p in root.rglob("*.json")} == before
