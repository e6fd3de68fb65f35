"""Run the bot as a real process and read back what it stored."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from backend.ml_engine.feature_store.feature_schema import FEATURE_NAMES
from backend.ml_engine.feature_store.feature_store import FeatureStore
from backend.ml_engine.feature_store.legacy_format import list_batches, read_batch

REPO = Path(__file__).resolve().parents[2]
STATS_RE = re.compile(r"MLDataCollector statistics: collected=(\d+) buffered=(\d+) flushed=(\d+) files=(\d+) skipped=(\d+) memory_mb=([\d.]+)")
RECOVERED_RE = re.compile(r"Recovered and flushed (\d+) samples")


def bot_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOBBOT_") and k not in ("DATA_DIR",)}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def bot_cmd(data_dir: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "backend.main", "--data-dir", str(data_dir), *args]


def start_bot(data_dir: Path, *args: str, env: dict | None = None, log_path: Path | None = None) -> subprocess.Popen:
    out = open(log_path, "w") if log_path else subprocess.PIPE
    return subprocess.Popen(bot_cmd(data_dir, *args), cwd=REPO, env=env or bot_env(), stdout=out, stderr=subprocess.STDOUT, text=True)


def run_bot(data_dir: Path, *args: str, timeout: float = 240, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(bot_cmd(data_dir, *args), cwd=REPO, env=env or bot_env(), capture_output=True, text=True, timeout=timeout)


def stats_lines(text: str) -> list[dict[str, float]]:
    keys = ("collected", "buffered", "flushed", "files", "skipped", "memory_mb")
    return [dict(zip(keys, map(float, m.groups()))) for m in STATS_RE.finditer(text)]


def parquet_samples(data_dir: Path) -> pd.DataFrame:
    store = FeatureStore(data_dir / "feature_store" / "offline")
    df = store.read_offline_features("training_features")
    return df.sort_values(["symbol", "timestamp"]).reset_index(drop=True)


def legacy_samples(data_dir: Path) -> dict[str, tuple[np.ndarray, np.ndarray, int]]:
    """symbol -> (timestamps ms, features, number of batches); raises on any unreadable batch."""
    out = {}
    root = data_dir / "ml_training"
    if not root.exists():
        return out
    for sym_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        refs = list_batches(root, sym_dir.name)
        batches = [read_batch(r) for r in refs]
        ts = np.concatenate([np.asarray(b.metadata["timestamps"], np.int64) for b in batches])
        feats = np.concatenate([b.features for b in batches])
        order = np.argsort(ts, kind="stable")
        out[sym_dir.name] = (ts[order], feats[order], len(batches))
    return out


def assert_formats_identical(data_dir: Path) -> pd.DataFrame:
    df = parquet_samples(data_dir)
    legacy = legacy_samples(data_dir)
    assert sorted(legacy) == sorted(df["symbol"].unique())
    for sym, (ts, feats, _) in legacy.items():
        part = df[df["symbol"] == sym]
        np.testing.assert_array_equal(part["timestamp"].astype("int64").to_numpy(), ts)
        np.testing.assert_array_equal(part[list(FEATURE_NAMES)].to_numpy(np.float32), feats)
    return df
