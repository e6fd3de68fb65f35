"""Replay of the real Bybit capture through the fake WS server, and the fake server's CLI."""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np

from backend.metrics import Metrics
from backend.venues.bybit.messages import parse_ws_book
from backend.venues.bybit.ws import BybitWsClient
from backend.venues.local_book import ApplyResult
from backend.venues.orderbook import validate_book
from backend.testing.fake_bybit import FakeBybit

from .helpers import DictBook, levels, wait_for

CAPTURE = Path("/work/shared/data/bybit_xrpusdt_ob500.jsonl")
REPO = Path(__file__).resolve().parents[2]


async def test_replay_capture_matches_straightforward_reconstruction():
    lines = CAPTURE.read_text().splitlines()
    ref = DictBook()
    checked = []
    crossed = 0

    def on_book(sym, result, local):
        nonlocal crossed
        # the reference consumes the same message the client just applied, in the same order
        ref.apply(parse_ws_book(json.loads(lines[len(checked)])))
        assert result in (ApplyResult.RESET, ApplyResult.APPLIED), result
        book = local.book(50)
        if validate_book(book, book.ts_ms) is not None:
            crossed += 1
        assert levels(book, 50) == ref.top(50)  # identical top 50
        assert levels(local.book(500), 500) == ref.top(500)  # and the whole 500-level book
        checked.append(book.update_id)

    async with FakeBybit(["XRPUSDT"], replay_path=CAPTURE) as fake:
        metrics = Metrics()
        ws = BybitWsClient(fake.ws_url, ["XRPUSDT"], depth=500, trades=False, klines=False, on_book=on_book,
                           metrics=metrics)
        await ws.start()
        assert await wait_for(lambda: len(checked) == len(lines), 10)
        await ws.close()
    assert crossed == 0
    assert np.all(np.diff(checked) == 1) and len(checked) == 50
    assert metrics.value("lobbot_ws_resyncs_total", venue="bybit") == 0
    assert metrics.total("lobbot_venue_faults_total") == 0


def test_cli_serves_and_exits_cleanly_on_sigterm(tmp_path):
    port_file = tmp_path / "fake.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "backend.testing.fake_bybit", "--symbols", "BTCUSDT,ETHUSDT", "--port-file",
         str(port_file), "--seed", "3", "--fault-rate", "0.0"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while not port_file.exists():
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline, "port file never appeared"
            time.sleep(0.05)
        info = json.loads(port_file.read_text())
        assert info["ws_url"].startswith("ws://127.0.0.1:") and info["pid"] == proc.pid
        url = info["rest_url"] + "/v5/market/orderbook?category=linear&symbol=ETHUSDT&limit=5"
        body = json.loads(urllib.request.urlopen(url, timeout=5).read())
        assert body["retCode"] == 0 and len(body["result"]["b"]) == 5 and set(body) == {"retCode", "retMsg", "result", "retExtInfo", "time"}
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert not port_file.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_cli_help_and_bad_arguments():
    out = subprocess.run([sys.executable, "-m", "backend.testing.fake_bybit", "--help"], cwd=REPO,
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and "--fault-rate" in out.stdout and "--port-file" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "backend.testing.fake_bybit", "--symbols", "btc/../x"], cwd=REPO,
                         capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2 and "invalid symbol" in bad.stderr
