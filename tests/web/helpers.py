"""Shared pieces of the web tests: stores with known contents, an in-process server, a browser."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from backend.ml_engine.feature_store.feature_schema import FEATURE_NAMES, FEATURE_SCHEMA_VERSION, HORIZONS_S
from backend.ml_engine.feature_store.feature_store import FeatureStore

REPO = Path(__file__).resolve().parents[2]
T0_MS = 1_762_473_600_000  # 2025-11-07 00:00:00 UTC
TOKEN = "test-token-0123456789abcdef"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def samples(symbol: str, n: int, *, interval_ms: int = 30_000, t0_ms: int = T0_MS, gaps: dict[int, int] | None = None,
            labelled: float = 1.0, seed: int = 0) -> pd.DataFrame:
    """``n`` rows of ``symbol`` every ``interval_ms``; ``gaps`` maps row -> extra ms before it;
    the first ``labelled`` share of rows gets direction labels cycling DOWN, NEUTRAL, UP."""
    rng = np.random.default_rng(seed)
    steps = np.full(n, interval_ms, dtype=np.int64)
    steps[0] = 0
    for row, extra in (gaps or {}).items():
        steps[row] += extra
    ts = t0_ms + np.cumsum(steps)
    df = pd.DataFrame(rng.normal(size=(n, len(FEATURE_NAMES))).astype(np.float32), columns=list(FEATURE_NAMES))
    df.insert(0, "timestamp", pd.to_datetime(ts, unit="ms", utc=True))
    df.insert(1, "symbol", symbol)
    df.insert(2, "mid_price", 100.0 + np.arange(n) * 0.01)
    df.insert(3, "source", "sim")
    df.insert(4, "feature_version", np.int16(FEATURE_SCHEMA_VERSION))
    df.insert(5, "collected_at", df["timestamp"])
    cut = int(n * labelled)
    for h in HORIZONS_S:
        d = np.arange(n) % 3
        df[f"future_direction_{h}s"] = pd.array([int(x) if i < cut else None for i, x in enumerate(d)], dtype="Int8")
        df[f"future_movement_{h}s"] = np.where(np.arange(n) < cut, (d - 1) * 0.05, np.nan)
    return df


def write(root: Path, frames: list[pd.DataFrame], group: str = "training_features", batch: int = 500) -> FeatureStore:
    """Write frames in collector-sized batches (several files per day)."""
    store = FeatureStore(root)
    for df in frames:
        for i in range(0, len(df), batch):
            store.write_offline_features(group, df.iloc[i : i + batch].reset_index(drop=True), fsync=False)
    return store


def free_port() -> int:
    with contextlib.closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOBBOT_", "MLFLOW_"))}
    env.pop("DATA_DIR", None)
    env.update(extra)
    return env


def simulate_and_label(data_dir: Path, duration: str = "6h") -> None:
    """A simulated bot run on two symbols, then the parquet labeller: real labelled data."""
    for cmd in (
        [sys.executable, "-m", "backend.main", "--source", "sim", "--fast", "--duration", duration, "--seed", "5",
         "--symbols", "BTCUSDT,ETHUSDT", "--data-dir", str(data_dir)],
        [sys.executable, str(REPO / "preprocessing_add_future_labels_parquet.py"), "--data-dir", str(data_dir), "--no-progress"],
    ):
        proc = subprocess.run(cmd, cwd=REPO, env=clean_env(), capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead for our purpose
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False
