"""Acceptance (issue 12): the bot as a real process against the fake Bybit, one situation per test.

The fake exchange runs in the test's event loop (so the test can count its requests and
switch its faults), the bot is ``python -m backend.main`` in a child process. Runs are
short: a few seconds of ticks at 0.2 s. Features need 60 s of trade feed before the first
sample, so "samples keep flowing" is read on what every tick produces: an accepted book
(one price-tape row per symbol per tick) and no skip other than ``warming_up``.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

import pytest

from backend.ml_engine.feature_store.feature_store import FeatureStore
from backend.testing.fake_bybit import FakeBybit

REPO = Path(__file__).resolve().parents[2]
CAPTURE = Path("/work/shared/data/bybit_xrpusdt_ob500.jsonl")
pytestmark = pytest.mark.slow


def env_for(fake: FakeBybit, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOBBOT_") and k != "DATA_DIR"}
    env.update(PYTHONUNBUFFERED="1", BYBIT_REST_URL=fake.rest_url, BYBIT_WS_URL=fake.ws_url,
               LOBBOT_HTTP_TIMEOUT_S="2", LOBBOT_HTTP_MAX_RETRIES="1", LOBBOT_SPOOL_FSYNC="false")
    env.update(extra)
    return env


async def run_bot(data: Path, env: dict, *args: str, timeout: float = 90) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "backend.main", "--data-dir", str(data), "--no-legacy", *args,
        cwd=REPO, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except asyncio.TimeoutError:
        proc.kill()
        out, _ = await proc.communicate()
        raise AssertionError(out.decode()[-3000:])
    return proc.returncode, out.decode()


def reasons(out: str, prefix: str) -> dict[str, int]:
    line = next((x for x in out.splitlines() if x.startswith(prefix)), "")
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", line.split(":", 1)[-1])} if line else {}


def rejected(out: str) -> dict[str, int]:
    m = re.search(r"books_rejected=(\d+) \(([^)]*)\)", out)
    assert m, out[-3000:]
    return {} if m.group(2) == "none" else {k: int(v) for k, v in (kv.split("=") for kv in m.group(2).split(", "))}


def tape(data: Path):
    return FeatureStore(data / "feature_store" / "offline").read_offline_features("price_tape")


def offset_shown(out: str) -> float:
    m = re.search(r"Exchange clock: bybit minus local = ([+-][\d.]+) s", out)
    assert m, out[-3000:]
    return float(m.group(1))


TICKS = 20
RUN = ("--interval", "0.2", "--collection-interval", "1", "--max-iterations", str(TICKS), "--stats-interval", "10")


async def test_quiet_book_gives_a_book_every_tick(tmp_path):
    """No deltas for longer than max_book_age_s, pings answered: the book stays current."""
    async with FakeBybit(["BTCUSDT", "ETHUSDT"], seed=1, push_interval_s=0.05, quiet=["BTCUSDT"]) as fake:
        code, out = await run_bot(tmp_path, env_for(fake, LOBBOT_WS_PING_INTERVAL_S="0.3", LOBBOT_MAX_BOOK_AGE_S="1"),
                                  "--source", "bybit-ws", "--symbols", "BTCUSDT,ETHUSDT", *RUN)
    assert code == 0 and "Traceback" not in out, out[-3000:]
    assert rejected(out) == {}
    assert set(reasons(out, "Skipped samples by reason")) <= {"warming_up"}, out[-2000:]
    t = tape(tmp_path)
    quiet = t[t["symbol"] == "BTCUSDT"]["timestamp"].astype("int64").to_numpy()
    assert len(quiet) == TICKS  # one accepted book per tick
    assert (quiet[1:] > quiet[:-1]).all()  # stamped as of each tick, in exchange time


@pytest.mark.parametrize("source,offset_ms", [("bybit", 8_000), ("bybit", -20_000), ("bybit-ws", 8_000)])
async def test_exchange_clock_off_samples_flow_and_offset_is_reported(tmp_path, source, offset_ms):
    async with FakeBybit(["BTCUSDT"], seed=2, push_interval_s=0.05, clock_offset_ms=offset_ms) as fake:
        code, out = await run_bot(tmp_path, env_for(fake, LOBBOT_WS_PING_INTERVAL_S="0.5"),
                                  "--source", source, "--symbols", "BTCUSDT", *RUN)
    assert code == 0 and "Traceback" not in out, out[-3000:]
    assert rejected(out) == {}, out[-2000:]
    assert set(reasons(out, "Skipped samples by reason")) <= {"warming_up"}
    assert len(tape(tmp_path)) == TICKS
    assert abs(offset_shown(out) - offset_ms / 1000) < 0.5
    assert out.count("The local clock is") == 1  # warned once, with the offset
    assert f"{abs(offset_ms) / 1000:.0f}." in out.split("The local clock is", 1)[1][:12]


async def test_silent_connection_stops_samples_with_reason_ws_silent(tmp_path):
    async with FakeBybit(["BTCUSDT"], seed=3, push_interval_s=0.05) as fake:
        async def silence_once_collecting() -> None:
            while fake.counts.get("pings", 0) < 3:  # connected and pinging
                await asyncio.sleep(0.05)
            fake.silent = True

        silencer = asyncio.ensure_future(silence_once_collecting())
        code, out = await run_bot(tmp_path, env_for(fake, LOBBOT_WS_PING_INTERVAL_S="0.3"),
                                  "--source", "bybit-ws", "--symbols", "BTCUSDT", "--interval", "0.2",
                                  "--collection-interval", "1", "--max-iterations", "40")
        silencer.cancel()
        assert fake.counts.get("pings_unanswered", 0) >= 1
    assert code == 0 and "Traceback" not in out, out[-3000:]
    skipped = reasons(out, "Skipped samples by reason")
    assert skipped.get("ws_silent", 0) >= 10, out[-2000:]
    assert reasons(out, "Source:").get("ws_silent", 0) >= 1  # the disconnect, by its reason
    assert "disconnected (ws_silent" in out
    assert len(tape(tmp_path)) < 40


async def test_ban_stops_all_rest_traffic_and_is_said_once(tmp_path):
    async with FakeBybit(["BTCUSDT", "ETHUSDT"], seed=4) as fake:
        async def ban_once_polling() -> None:
            while fake.counts.get("rest:/v5/market/orderbook", 0) < 8:  # the bot is collecting
                await asyncio.sleep(0.05)
            fake.ban(60.0)

        banner = asyncio.ensure_future(ban_once_polling())
        code, out = await run_bot(tmp_path, env_for(fake), "--source", "bybit", "--symbols", "BTCUSDT,ETHUSDT",
                                  "--interval", "0.2", "--collection-interval", "1", "--max-iterations", "45")
        banned, late = fake.counts.get("rest_banned", 0), fake.counts.get("rest_banned_late", 0)
        banner.cancel()
    assert code == 0 and "Traceback" not in out, out[-3000:]
    assert banned >= 1 and late == 0, fake.counts  # only the requests already in flight met the 403
    assert out.count("BYBIT IP BAN") == 1
    assert reasons(out, "Skipped samples by reason").get("banned", 0) >= 10, out[-2000:]
    assert reasons(out, "Source:").get("http_403", 0) >= 1


async def test_start_under_a_ban_says_so(tmp_path):
    async with FakeBybit(["BTCUSDT"], seed=5) as fake:
        fake.ban(60.0)
        code, out = await run_bot(tmp_path, env_for(fake), "--source", "bybit", "--symbols", "BTCUSDT", *RUN)
        assert fake.counts["rest_banned"] == 1  # one request learned of the ban; nothing more was sent
    assert code == 1 and "Traceback" not in out
    assert "banned this IP" in out and "Cannot reach" not in out and "firewall" not in out


async def test_flapping_connection_reconnects_stay_under_the_bound(tmp_path):
    """Close after every snapshot for 8 s: the policy's floor (a tenth of 0.5 * 2**k s) allows at most 8."""
    async with FakeBybit(["BTCUSDT"], seed=6, close_after_snapshot=True) as fake:
        code, out = await run_bot(tmp_path, env_for(fake), "--source", "bybit-ws", "--symbols", "BTCUSDT",
                                  "--interval", "0.2", "--collection-interval", "1", "--max-iterations", "40")
        conns = fake.counts.get("ws_connections", 0)
    assert code == 0 and "Traceback" not in out, out[-3000:]
    m = re.search(r"reconnects=(\d+)", out)
    assert m and 1 <= int(m.group(1)) <= 8, out[-2000:]
    assert conns <= 9
    assert out.count("disconnected (closed_by_server") == int(m.group(1))  # each one logged with its reason


async def test_unknown_symbol_exits_non_zero_naming_it(tmp_path):
    async with FakeBybit(["BTCUSDT"], seed=7) as fake:
        code, out = await run_bot(tmp_path, env_for(fake), "--source", "bybit-ws", "--symbols", "BTCUSDT,FOOUSDT", *RUN)
    assert code == 1 and "Traceback" not in out
    assert "unknown symbol FOOUSDT" in out
    assert "Cannot reach" not in out and "connection" not in out.split("unknown symbol", 1)[1]


@pytest.mark.skipif(not CAPTURE.exists(), reason="the real Bybit capture is not available")
@pytest.mark.parametrize("offset_ms", [8_000, -20_000])
async def test_replayed_capture_with_the_clock_shifted_stores_every_tick(tmp_path, offset_ms):
    async with FakeBybit(["XRPUSDT"], seed=8, replay_path=CAPTURE, clock_offset_ms=offset_ms) as fake:
        code, out = await run_bot(tmp_path, env_for(fake, LOBBOT_WS_PING_INTERVAL_S="0.5"),
                                  "--source", "bybit-ws", "--symbols", "XRPUSDT", *RUN)
    assert code == 0 and "Traceback" not in out, out[-3000:]
    assert rejected(out) == {}, out[-2000:]
    assert set(reasons(out, "Skipped samples by reason")) <= {"warming_up"}
    assert len(tape(tmp_path)) == TICKS
    assert abs(offset_shown(out) - offset_ms / 1000) < 0.5
