"""Acceptance (issue 16): ``python -m backend.main --source binance-ws`` against the fake Binance stores true mids.

The fake exchange runs in the test's event loop, so the test can ask it what its true
book's mid was at every sample's time; the bot is a child process. Samples need 60 s of
trade feed after the first book, so the run lasts about 70 s (ticks of 0.5 s, a sample
every tick once warm).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from backend.ml_engine.feature_store.feature_store import FeatureStore
from backend.testing.fake_binance import FakeBinance
from tests.replay.test_replay_process import _assert_bit_equal, _samples

REPO = Path(__file__).resolve().parents[3]
pytestmark = pytest.mark.slow
SYMS = ["BTCUSDT", "ETHUSDT"]
TICKS = 132  # the first sample comes at tick 120 (60 s of trades at 0.5 s)


async def test_binance_ws_run_stores_the_true_book_mid_at_every_sample(tmp_path):
    async with FakeBinance(SYMS, seed=11, push_interval_s=0.1) as fake:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LOBBOT_") and k != "DATA_DIR"}
        env.update(PYTHONUNBUFFERED="1", BINANCE_REST_URL=fake.rest_url, LOBBOT_BINANCE_WS_URL=fake.ws_url,
                   LOBBOT_HTTP_TIMEOUT_S="2", LOBBOT_WS_PING_INTERVAL_S="1", LOBBOT_SPOOL_FSYNC="false")

        async def gap_once_connected() -> None:  # a resync early in the run, before samples start
            while fake.connections == 0:
                await asyncio.sleep(0.05)
            await asyncio.sleep(2.0)
            fake.inject("pu_gap", symbol="ETHUSDT")

        gap = asyncio.ensure_future(gap_once_connected())
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "backend.main", "--data-dir", str(tmp_path), "--no-legacy", "--source",
            "binance-ws", "--symbols", ",".join(SYMS), "--interval", "0.5", "--collection-interval", "1",
            "--max-iterations", str(TICKS), "--stats-interval", "40",
            cwd=REPO, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), 150)
        except asyncio.TimeoutError:
            proc.kill()
            raise
        gap.cancel()
        text = out.decode()
        assert proc.returncode == 0 and "Traceback" not in text, text[-3000:]
        assert "Source: binance-ws faults=1 (sequence_gap=1) reconnects=0 resyncs=1" in text, text[-2000:]
        store = FeatureStore(tmp_path / "feature_store" / "offline")
        df = store.read_offline_features("training_features")
        assert set(df["source"]) == {"binance"}  # the venue, not the transport (DESIGN.md §6.5)
        for sym in SYMS:
            rows = df[df["symbol"] == sym]
            assert len(rows) >= 5, (sym, len(rows), text[-2000:])
            ts = rows["timestamp"].astype("int64").to_numpy() // 1_000_000 \
                if str(rows["timestamp"].dtype).startswith("datetime64[ns") else rows["timestamp"].astype("int64").to_numpy()
            exact = 0
            for t, mid in zip(ts.tolist(), rows["mid_price"].tolist()):
                # the sample is stamped as of the poll; a state published a few ms before may still be in flight
                assert mid in (fake.true_mid(sym, t), fake.true_mid(sym, t - 150)), (sym, t, mid)
                exact += mid == fake.true_mid(sym, t)
            assert exact >= 0.8 * len(rows), (sym, exact, len(rows))
    # the run was recorded in the delta form (REST snapshot, then the diffs with U/u/pu): replayed, the local
    # books are rebuilt from them and every feature comes back bit for bit (DESIGN.md §6.4)
    raw = store.read_offline_table("raw_events", columns=["kind", "seq", "trade_ts"])
    kinds = raw.column("kind").to_pylist()
    assert "book" not in kinds and kinds.count("book_snapshot") >= 3 and kinds.count("book_delta") > kinds.count("book_ref")
    ids = [t for k, t in zip(kinds, raw.column("trade_ts").to_pylist()) if k == "book_delta"]
    assert all(len(t) == 2 for t in ids)  # [U, pu] of every applied diff
    res = subprocess.run([sys.executable, "-m", "backend.main", "--data-dir", str(tmp_path), "--no-legacy", "--source",
                          "replay", "--feature-store-group", "replayed", "--stats-interval", "100000"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "cannot be rebuilt" not in res.stdout + res.stderr, (res.stdout + res.stderr)[-3000:]
    _assert_bit_equal(_samples(tmp_path, "training_features"), _samples(tmp_path, "replayed"))
