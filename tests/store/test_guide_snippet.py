"""The user guide's data-check snippet (workflow step 4) runs unchanged."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from backend.ml_engine.feature_store.feature_store import FeatureStore

from .helpers import training_frame

REPO = Path(__file__).resolve().parents[2]

GUIDE_SNIPPET = """
import pandas as pd
from pathlib import Path
from backend.ml_engine.feature_store.feature_store import get_feature_store

fs = get_feature_store()
df = fs.read_offline_features('training_features')
print(f'Всего семплов: {len(df):,}')
print(f'Символы: {df[\"symbol\"].unique()}')
print(f'С метками: {df[\"future_direction_60s\"].notna().sum():,}')
"""


def test_guide_snippet_prints_sensible_numbers(tmp_path):
    store = FeatureStore(tmp_path / "feature_store" / "offline")
    labelled = training_frame(1200, symbol="BTCUSDT")
    labelled["future_direction_60s"] = np.where(np.arange(1200) < 1000, 1, np.nan)
    store.write_offline_features("training_features", labelled)
    store.write_offline_features("training_features", training_frame(300, symbol="4USDT"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOBBOT_")}
    env["DATA_DIR"] = str(tmp_path)
    out = subprocess.run([sys.executable, "-c", GUIDE_SNIPPET], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "Всего семплов: 1,500"
    assert "BTCUSDT" in lines[1] and "4USDT" in lines[1]
    assert lines[2] == "С метками: 1,000"
