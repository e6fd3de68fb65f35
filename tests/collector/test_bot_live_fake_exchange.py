"""The bot against a fake Bybit v5 exchange (separate process) that injects faults."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from backend.ml_engine.feature_store.feature_store import FeatureStore
from backend.testing.fake_server import fake_process

from .bot_helpers import REPO, assert_formats_identical, bot_env, run_bot, stats_lines

SYMBOLS = "BTCUSDT,ETHUSDT"


@pytest.fixture
def fake_exchange(tmp_path):
    with fake_process("backend.testing.fake_bybit", tmp_path / "fake.json", "--symbols", SYMBOLS, "--fault-rate",
                      "0.05", "--ws-fault-rate", "0.2", "--seed", "5", "--push-interval", "0.05", cwd=REPO) as info:
        yield info


@pytest.mark.slow
def test_live_sources_survive_faults_and_store_only_valid_rows(tmp_path, fake_exchange):
    """REST and WebSocket bots run side by side against one faulty fake exchange.

    600 ticks at 0.12 s: the features need about 60 s of trade feed before the first
    sample, so roughly the last 10 s of each run collects samples.
    """
    env = bot_env(
        BYBIT_REST_URL=fake_exchange["rest_url"],
        BYBIT_WS_URL=fake_exchange["ws_url"],
        LOBBOT_HTTP_TIMEOUT_S="1.0",
        LOBBOT_HTTP_MAX_RETRIES="2",
    )
    procs = {}
    for source in ("bybit", "bybit-ws"):
        data = tmp_path / source
        procs[source] = (data, subprocess.Popen(
            [sys.executable, "-m", "backend.main", "--data-dir", str(data), "--source", source, "--symbols", SYMBOLS,
             "--interval", "0.12", "--collection-interval", "5", "--max-iterations", "600", "--stats-interval", "100",
             "--max-samples-per-file", "10"],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        ))
    for source, (data, proc) in procs.items():
        out, _ = proc.communicate(timeout=300)
        check_live_run(source, data, proc.returncode, out)


def check_live_run(source: str, data: Path, returncode: int, out: str) -> None:
    assert returncode == 0, (source, out[-4000:])
    assert "Traceback" not in out, (source, out[-4000:])
    assert "Run summary: ticks=600" in out
    stats = stats_lines(out)
    assert len(stats) >= 6 and stats[-1]["buffered"] == 0
    # faults really happened, and the run summary counted them by reason (read from the registry)
    source_line = next(line for line in out.splitlines() if line.startswith("Source: "))
    m = re.match(rf"Source: {source} faults=(\d+) \(([^)]*)\) reconnects=(\d+) resyncs=(\d+) retries=(\d+)$", source_line)
    assert m, source_line
    faults = dict(kv.split("=") for kv in m.group(2).split(", ")) if m.group(2) != "none" else {}
    assert int(m.group(1)) > 0 and sum(map(int, faults.values())) == int(m.group(1)), (source, source_line)
    if source == "bybit":
        assert int(m.group(5)) > 0, source_line  # transient REST faults were retried
    else:
        assert int(m.group(3)) + int(m.group(4)) > 0, source_line  # reconnects or resyncs happened

    df = assert_formats_identical(data)
    store = FeatureStore(data / "feature_store" / "offline")
    tape = store.read_offline_features("price_tape")
    # zero invalid rows: every stored book was sound, every sample finite
    assert (tape["best_bid"] < tape["best_ask"]).all() and (tape["best_bid"] > 0).all()
    feats = df.filter(regex=r"^(ob_|candle_|ind_)").to_numpy(np.float32)
    assert np.isfinite(feats).all()
    assert (df["mid_price"] > 0).all()
    # every symbol recovered from the faults and kept producing data to the end of the run
    last_ms = tape["timestamp"].astype("int64").max()
    for sym in SYMBOLS.split(","):
        t = tape[tape["symbol"] == sym]["timestamp"].astype("int64")
        assert len(t) >= 400, (source, sym, len(t))
        assert last_ms - t.max() < 5_000, (source, sym)
        assert (df["symbol"] == sym).sum() >= 5, (source, sym, out[-3000:])
