"""The web app inside a real bot process (``python -m backend.main ... --api-port``).

Each test starts the bot as a child process on a free port: the simulated market, or
Bybit's REST source pointed at ``backend.testing.fake_bybit`` run as its own process.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from helpers import CHROMIUM, CHROMIUM_ARGS, REPO, clean_env, free_port, pid_alive

playwright_api = pytest.importorskip("playwright.async_api", reason="playwright is a dev dependency (pip install -e .[dev])")


def _start(data_dir: Path, port: int, *args: str, env: dict | None = None, log: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "backend.main", "--data-dir", str(data_dir), "--api-port", str(port), *args]
    env = env or clean_env()
    env["PYTHONUNBUFFERED"] = "1"
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT, text=True)


def _get(url: str, timeout: float = 2.0):
    try:
        return requests.get(url, timeout=timeout)
    except requests.ConnectionError:
        return None


def _wait(pred, timeout: float, what: str, proc: subprocess.Popen | None = None, log: Path | None = None):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = pred()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            break
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}" + (f"; log:\n{log.read_text()[-3000:]}" if log else ""))


def _stop(proc: subprocess.Popen, limit_s: float = 10.0) -> float:
    """SIGTERM; returns the seconds the bot took to exit (asserting exit code 0)."""
    t = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout=60)
    took = time.monotonic() - t
    assert code == 0, code
    assert took < limit_s, f"took {took:.1f} s to stop"
    return took


def _counters(text: str) -> dict[tuple[str, tuple], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _sum(counters: dict, name: str, **where) -> int:
    return int(sum(v for (n, labels), v in counters.items()
                   if n == name and all(dict(labels).get(k) == w for k, w in where.items())))


def test_metrics_parse_and_equal_the_run_summary(tmp_path):
    port = free_port()
    log = tmp_path / "bot.log"
    # a virtual clock (--fast): the warm-up (100 ticks, 60 s of trades) takes no wall time
    proc = _start(tmp_path / "d", port, "--source", "sim", "--fast", "--duration", "30d",
                  "--symbols", "BTCUSDT,ETHUSDT", "--stats-interval", "100000", log=log)
    try:
        base = f"http://127.0.0.1:{port}"
        _wait(lambda: (r := _get(base + "/health")) is not None and r.status_code == 200, 60, "/health 200", proc, log)
        collected = lambda: _sum(_counters(_get(base + "/metrics").text), "lobbot_samples_collected_total")  # noqa: E731
        _wait(lambda: collected() >= 100, 60, "samples after the warm-up", proc, log)
        proc.send_signal(signal.SIGTERM)
        # the server answers until the summary is made (it stops last): the last scrape has the final counts
        resp = None
        while (r := _get(base + "/metrics", timeout=5.0)) is not None:
            resp = r
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert resp.headers["Content-Type"].startswith("text/plain")
    helps = re.findall(r"^# HELP (\S+) ", resp.text, re.M)
    assert len(helps) == len(set(helps)) and "lobbot_loop_lag_seconds" in helps
    c = _counters(resp.text)
    out = log.read_text()
    stats = re.search(r"^MLDataCollector statistics: collected=(\d+) buffered=\d+ flushed=\d+ files=\d+ skipped=(\d+)", out, re.M)
    summary = re.search(r"^Run summary: ticks=(\d+) overruns=(\d+) books_rejected=(\d+)", out, re.M)
    source = re.search(r"^Source: sim faults=(\d+) .*reconnects=(\d+) resyncs=(\d+) retries=(\d+)", out, re.M)
    assert stats and summary and source, out[-2000:]
    assert int(stats[1]) == _sum(c, "lobbot_samples_collected_total") > 0
    assert int(stats[2]) == _sum(c, "lobbot_samples_skipped_total")
    assert int(summary[1]) == _sum(c, "lobbot_ticks_total")
    assert int(summary[2]) == _sum(c, "lobbot_tick_overruns_total")
    assert int(summary[3]) == _sum(c, "lobbot_books_rejected_total")
    assert int(source[1]) == _sum(c, "lobbot_venue_faults_total")
    assert int(source[2]) == _sum(c, "lobbot_ws_reconnects_total")
    skipped = re.search(r"^Skipped samples by reason: (.*)$", out, re.M)
    if skipped:
        for part in skipped[1].split(", "):
            reason, n = part.split("=")
            assert int(n) == _sum(c, "lobbot_samples_skipped_total", reason=reason), part
    assert "API token" in out and not re.search(r"[A-Za-z0-9_-]{40,}", out.replace(str(tmp_path), ""))


def test_health_follows_the_exchange_and_sigterm_always_stops(tmp_path):
    """Unreachable at start: the bot waits (503, retries logged); books arrive: 200; the
    fake exchange is killed: 503 again; SIGTERM ends the bot with 0 in a few seconds."""
    venue_port, port = free_port(), free_port()
    log = tmp_path / "bot.log"
    env = clean_env(BYBIT_REST_URL=f"http://127.0.0.1:{venue_port}", LOBBOT_HTTP_MAX_RETRIES="0",
                    LOBBOT_HTTP_TIMEOUT_S="1", LOBBOT_MAX_BOOK_AGE_S="2")
    bot = _start(tmp_path / "d", port, "--source", "bybit", "--interval", "0.5", "--symbols", "BTCUSDT", env=env, log=log)
    fake = None
    base = f"http://127.0.0.1:{port}"
    try:
        (r,) = _wait(lambda: (r := _get(base + "/health")) is not None and (r,), 60, "the web app", bot, log)
        assert r.status_code == 503 and r.json()["status"] == "down"
        _wait(lambda: "Retrying in" in log.read_text(), 30, "a retry in the log", bot, log)
        assert bot.poll() is None
        fake = subprocess.Popen([sys.executable, "-m", "backend.testing.fake_bybit", "--symbols", "BTCUSDT",
                                 "--port", str(venue_port), "--log-level", "WARNING"], cwd=REPO, env=clean_env())
        (r,) = _wait(lambda: (r := _get(base + "/health")) is not None and r.status_code == 200 and (r,), 90, "200 once books arrive",
                  bot, log)
        body = r.json()
        assert body["status"] == "ok" and body["source_state"] == "live"
        assert body["symbols"]["BTCUSDT"]["book_age_s"] <= 2
        fake.kill()  # the source stops: no fresh book any more
        fake.wait()
        (r,) = _wait(lambda: (r := _get(base + "/health")) is not None and r.status_code == 503 and (r,), 30, "503 after the kill",
                  bot, log)
        assert r.json()["status"] == "down" and r.json()["symbols"]["BTCUSDT"]["book_age_s"] > 2
        _stop(bot)
    finally:
        for p in (bot, fake):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
    assert "Cannot reach the exchange" in log.read_text() and "Traceback" not in log.read_text()


def test_sigterm_while_waiting_for_the_exchange(tmp_path):
    port = free_port()
    log = tmp_path / "bot.log"
    env = clean_env(BYBIT_REST_URL=f"http://127.0.0.1:{free_port()}", LOBBOT_HTTP_MAX_RETRIES="0", LOBBOT_HTTP_TIMEOUT_S="1")
    bot = _start(tmp_path / "d", port, "--source", "bybit", "--symbols", "BTCUSDT", env=env, log=log)
    try:
        _wait(lambda: "Retrying in" in log.read_text(), 60, "a retry in the log", bot, log)
        _stop(bot, limit_s=5)
    finally:
        if bot.poll() is None:
            bot.kill()
            bot.wait()
    assert not pid_alive(bot.pid)


async def test_collector_panel_follows_a_running_bot(tmp_path):
    from test_browser import _shot

    port = free_port()
    log = tmp_path / "bot.log"
    bot = _start(tmp_path / "d", port, "--source", "sim", "--fast", "--duration", "30d", "--symbols", "BTCUSDT,ETHUSDT",
                 "--stats-interval", "100000", log=log)
    try:
        _wait(lambda: _get(f"http://127.0.0.1:{port}/health") is not None, 60, "the web app", bot, log)
        async with playwright_api.async_playwright() as p:
            browser = await p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            try:
                page = await browser.new_page(viewport={"width": 1280, "height": 900})
                errors = []
                page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
                page.on("pageerror", lambda e: errors.append(str(e)))
                await page.goto(f"http://127.0.0.1:{port}/")
                await page.wait_for_selector("body[data-ready='1']", timeout=60_000)
                sel = "#collector-table tr[data-symbol='BTCUSDT'] td.samples"
                await page.wait_for_selector(sel, timeout=30_000)
                # samples arrive: the cell counts up, pushed by the server (no reload)
                await page.wait_for_function(f"Number(document.querySelector(\"{sel}\").textContent) > 0", timeout=60_000)
                first = int(await page.locator(sel).inner_text())
                await page.wait_for_function(f"Number(document.querySelector(\"{sel}\").textContent) > {first}", timeout=30_000)
                await _shot(page, tmp_path, "collector_bot", "#collector")
                assert errors == []
            finally:
                await browser.close()
        _stop(bot)
    finally:
        if bot.poll() is None:
            bot.kill()
            bot.wait()
