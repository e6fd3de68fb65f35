"""What the live process tests share: the bot's environment against a fake Bybit, running the bot, reading its
count lines."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

from backend.testing.fake_bybit import FakeBybit

REPO = Path(__file__).resolve().parents[2]


def env_for(fake: FakeBybit, **extra: str) -> dict[str, str]:
    """The bot's environment pointed at ``fake`` (no inherited ``LOBBOT_*``), short timeouts, ``extra`` on top."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOBBOT_") and k != "DATA_DIR"}
    env.update(PYTHONUNBUFFERED="1", BYBIT_REST_URL=fake.rest_url, BYBIT_WS_URL=fake.ws_url,
               LOBBOT_HTTP_TIMEOUT_S="2", LOBBOT_HTTP_MAX_RETRIES="1", LOBBOT_SPOOL_FSYNC="false")
    env.update(extra)
    return env


async def run_bot(data: Path, env: dict, *args: str, timeout: float = 90) -> tuple[int, str]:
    """Run ``python -m backend.main`` on ``data`` to its end: (exit code, output); fails with the output's tail
    when it runs past ``timeout`` seconds."""
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
    """The ``word=count`` pairs of the first output line starting with ``prefix``."""
    line = next((x for x in out.splitlines() if x.startswith(prefix)), "")
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", line.split(":", 1)[-1])} if line else {}
