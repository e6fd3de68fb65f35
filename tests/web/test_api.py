"""The JSON API, /metrics and /health over real HTTP, with real training children."""

import asyncio
import time

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from helpers import TOKEN, pid_alive, samples, write

from backend.metrics import Metrics
from backend.web.app import STATIC
from backend.web.status import MetricsStatus

AUTH = {"Authorization": f"Bearer {TOKEN}"}


async def _get(session, url, **kw):
    async with session.get(url, **kw) as r:
        return r.status, await r.json()


async def test_auth_refusals_are_counted(tmp_path, serve):
    metrics = Metrics()
    base, _ = await serve(tmp_path, metrics=metrics)
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{base}/api/training", json={"epochs": 1}) as r:
            assert r.status == 401 and "missing token" in (await r.json())["error"]
        async with s.post(f"{base}/api/training", json={"epochs": 1}, headers={"Authorization": "Bearer wrong-token-xxxxxxxx"}) as r:
            assert r.status == 401 and "wrong token" in (await r.json())["error"]
        async with s.delete(f"{base}/api/training/abc") as r:
            assert r.status == 401
        # reads need no token on 127.0.0.1
        assert (await _get(s, f"{base}/api/training"))[0] == 200
        async with s.get(f"{base}/metrics") as r:
            text = await r.text()
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    fails = {s.labels["reason"]: s.value for s in fams["lobbot_api_auth_failures"].samples if s.name.endswith("_total")}
    assert fails == {"missing": 2.0, "wrong": 1.0}
    assert TOKEN not in text


async def test_metrics_parse_and_equal_the_registry(tmp_path, serve):
    metrics = Metrics()
    metrics.samples_collected.labels(symbol="BTCUSDT").inc(7)
    metrics.samples_skipped.labels(symbol="BTCUSDT", reason="warming_up").inc(3)
    metrics.books_rejected.labels(symbol="ETHUSDT", reason="crossed").inc(2)
    metrics.loop_lag.observe(0.0004)
    metrics.spool_bytes.set(1234)
    base, _ = await serve(tmp_path, metrics=metrics)
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{base}/metrics") as r:
            assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain")
            text = await r.text()
    values = {(x.name, tuple(sorted(x.labels.items()))): x.value for f in text_string_to_metric_families(text) for x in f.samples}
    assert values[("lobbot_samples_collected_total", (("symbol", "BTCUSDT"),))] == 7
    assert values[("lobbot_samples_skipped_total", (("reason", "warming_up"), ("symbol", "BTCUSDT")))] == 3
    assert values[("lobbot_books_rejected_total", (("reason", "crossed"), ("symbol", "ETHUSDT")))] == 2
    assert values[("lobbot_loop_lag_seconds_count", ())] == 1
    assert values[("lobbot_spool_bytes", ())] == 1234
    assert text.count("# HELP lobbot_samples_collected_total ") == 1


async def test_health_follows_the_books(tmp_path, serve):
    metrics = Metrics()
    state = {"source": "live"}
    provider = MetricsStatus(metrics, ["BTCUSDT", "ETHUSDT"], "sim", lambda: state["source"], max_book_age_s=15)
    base, _ = await serve(tmp_path, metrics=metrics, status_provider=provider)
    async with aiohttp.ClientSession() as s:
        code, body = await _get(s, f"{base}/health")
        assert code == 503 and body["status"] == "down"  # no book yet
        metrics.book_age.labels(symbol="BTCUSDT").set(1.0)
        code, body = await _get(s, f"{base}/health")
        assert code == 200 and body["status"] == "degraded"
        metrics.book_age.labels(symbol="ETHUSDT").set(2.0)
        metrics.samples_collected.labels(symbol="ETHUSDT").inc(4)
        metrics.last_sample_ms.labels(symbol="ETHUSDT").set(1_762_473_600_000)
        code, body = await _get(s, f"{base}/health")
        assert code == 200 and body["status"] == "ok"
        assert body["symbols"]["ETHUSDT"] == {"book_age_s": 2.0, "samples": 4, "last_sample": "2025-11-07T00:00:00.000Z"}
        state["source"] = "down"  # the source stopped
        code, body = await _get(s, f"{base}/health")
        assert code == 503 and body["status"] == "down"
        code, body = await _get(s, f"{base}/api/collector")
        assert code == 200 and body["symbols"][1]["samples"] == 4 and body["source_state"] == "down"


async def test_standalone_health_and_collector(tmp_path, serve):
    base, _ = await serve(tmp_path)
    async with aiohttp.ClientSession() as s:
        assert await _get(s, f"{base}/health") == (200, {"status": "ok", "bot": False, "symbols": {}})
        code, body = await _get(s, f"{base}/api/collector")
        assert code == 200 and body["bot"] is False and body["source_state"] == "no_bot"


async def test_400_per_field(tmp_path, serve):
    base, _ = await serve(tmp_path)
    async with aiohttp.ClientSession(headers=AUTH) as s:
        async with s.post(f"{base}/api/training", json={"epochs": 0, "horizon": 7, "symbols": "btc", "start_date": "2025-13-01"}) as r:
            body = await r.json()
        assert r.status == 400
        assert set(body["fields"]) == {"epochs", "horizon", "symbols", "start_date"}
        assert "epochs: must be between 1 and 1000, got 0" in body["error"]
        async with s.post(f"{base}/api/training", data="{not json", headers={"Content-Type": "application/json"}) as r:
            assert r.status == 400 and "not valid JSON" in (await r.json())["fields"]["body"]
        async with s.post(f"{base}/api/labelling", json={"horizons": [15]}) as r:
            assert r.status == 400 and "subset of 10, 30, 60" in (await r.json())["fields"]["horizons"]
        async with s.get(f"{base}/api/data?group=..%2Fetc") as r:
            assert r.status == 400 and "group" in (await r.json())["error"]
        async with s.get(f"{base}/api/runs/not-a-run") as r:
            assert r.status == 400


async def test_labelling_tolerance_follows_the_labellers_rule(tmp_path, serve):
    """Below the smallest horizon *chosen* (the labelling command's rule), not below 10 s."""
    # a store whose group exists but holds nothing yet: the labeller accepts the settings and has nothing to do
    (tmp_path / "feature_store" / "offline" / "training_features").mkdir(parents=True)
    base, _ = await serve(tmp_path)
    async with aiohttp.ClientSession(headers=AUTH) as s:
        async with s.post(f"{base}/api/labelling", json={"tolerance": 15}) as r:
            body = await r.json()
        assert r.status == 400
        assert body["fields"] == {"tolerance": "must be >= 0 and smaller than the smallest horizon (10 s), got 15.0"}
        async with s.post(f"{base}/api/labelling", json={"horizons": [30, 60], "tolerance": 15, "dry_run": True}) as r:
            assert r.status == 202, await r.text()
            job_id = (await r.json())["job_id"]
        end = time.monotonic() + 60
        while (job := (await _get(s, f"{base}/api/labelling/{job_id}"))[1])["state"] in ("queued", "running"):
            assert time.monotonic() < end, job
            await asyncio.sleep(0.2)
        assert job["state"] == "succeeded" and job["exit_code"] == 0, job
        assert "tolerance 15 s" in "".join(job["log_tail"]), job["log_tail"]


async def test_off_loopback_only_the_page_shell_and_a_bare_health_are_open(tmp_path, serve):
    """Bound to 0.0.0.0: every data endpoint and /metrics need the token; / and /static/ serve the
    page that asks for it; /health answers its status word and code only, the detail with the token."""
    metrics = Metrics()
    metrics.book_age.labels(symbol="BTCUSDT").set(1.0)
    provider = MetricsStatus(metrics, ["BTCUSDT"], "sim", lambda: "live", max_book_age_s=15)
    base, _ = await serve(tmp_path, metrics=metrics, status_provider=provider, host="0.0.0.0")
    async with aiohttp.ClientSession() as s:
        for path in ("/metrics", "/api/config", "/api/collector", "/api/events", "/api/data", "/api/live",
                     "/api/runs", "/api/training", "/api/labelling", "/api/training/x"):
            async with s.get(base + path) as r:
                assert r.status == 401, path
                assert "missing token" in (await r.json())["error"]
        async with s.get(base + "/") as r:
            page = await r.text()
            assert r.status == 200 and page == (STATIC / "index.html").read_text()  # the static shell, no data
        async with s.get(base + "/static/app.js") as r:
            assert r.status == 200
        assert await _get(s, f"{base}/health") == (200, {"status": "ok"})
        assert await _get(s, f"{base}/health", headers={"Authorization": "Bearer wrong-token-xxxxxxxx"}) == (200, {"status": "ok"})
        code, body = await _get(s, f"{base}/health", headers=AUTH)
        assert code == 200 and body["symbols"]["BTCUSDT"]["book_age_s"] == 1.0
        code, body = await _get(s, f"{base}/api/collector", headers=AUTH)
        assert code == 200 and body["symbols"][0]["symbol"] == "BTCUSDT"
        async with s.get(f"{base}/metrics", headers=AUTH) as r:
            text = await r.text()
    fails = {x.labels["reason"]: x.value for f in text_string_to_metric_families(text) if f.name == "lobbot_api_auth_failures"
             for x in f.samples if x.name.endswith("_total")}
    assert fails == {"missing": 10.0, "wrong": 1.0}  # a probe without a token is not a failure


async def _wait_job(s, base, job_id, pred, timeout):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        code, job = await _get(s, f"{base}/api/training/{job_id}")
        assert code == 200
        if pred(job):
            return job
        await asyncio.sleep(0.2)
    raise AssertionError(f"job never reached the state wanted: {job}")


async def test_409_then_delete_stops_the_child(tmp_path, serve):
    write(tmp_path / "feature_store" / "offline", [samples("BTCUSDT", 800)])
    base, _ = await serve(tmp_path)
    async with aiohttp.ClientSession(headers=AUTH) as s:
        async with s.post(f"{base}/api/training", json={"epochs": 500, "threads": 1}) as r:
            assert r.status == 202
            job_id = (await r.json())["job_id"]
        job = await _wait_job(s, base, job_id, lambda j: j["pid"] and j["state"] == "running", 10)
        pid = job["pid"]
        assert pid_alive(pid)
        async with s.post(f"{base}/api/training", json={"epochs": 1}) as r:
            assert r.status == 409 and (await r.json())["job_id"] == job_id
        async with s.post(f"{base}/api/labelling", json={}) as r:
            assert r.status == 409
        t0 = time.monotonic()
        async with s.delete(f"{base}/api/training/{job_id}") as r:
            assert r.status == 200
            body = await r.json()
        assert time.monotonic() - t0 < 8
        assert body["state"] == "cancelled" and body["exit_code"] is not None
        assert not pid_alive(pid)
        code, jobs = await _get(s, f"{base}/api/training")
        assert code == 200 and jobs[0]["job_id"] == job_id and jobs[0]["state"] == "cancelled"


@pytest.mark.slow
async def test_training_job_reports_epochs_and_run(labelled_dir, serve, tmp_path, monkeypatch):
    # What an in-process MLflow user earlier in this pytest worker leaves behind:
    # mlflow.set_tracking_uri() writes MLFLOW_TRACKING_URI into os.environ. A child that
    # inherited it tracked its run there, and /api/runs (reading the data dir's store)
    # came back empty: the intermittent CI failure of issue 14.
    elsewhere = tmp_path / "elsewhere" / "mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{elsewhere}")
    base, _ = await serve(labelled_dir)
    async with aiohttp.ClientSession(headers=AUTH) as s:
        async with s.post(f"{base}/api/training", json={"epochs": 2, "sequence_length": 10, "batch_size": 128, "threads": 1}) as r:
            assert r.status == 202, await r.text()
            job_id = (await r.json())["job_id"]
        job = await _wait_job(s, base, job_id, lambda j: j["state"] not in ("queued", "running"), 400)
        assert job["state"] == "succeeded", job["log_tail"]
        assert job["exit_code"] == 0 and job["epoch"] == 2 and [m["epoch"] for m in job["metrics"]] == [1, 2]
        assert all(0 <= m["val_macro_f1"] <= 1 for m in job["metrics"])
        assert job["mlflow_run_id"], job
        # the child has exited, its run is committed: the first read lists it
        code, runs = await _get(s, f"{base}/api/runs")
        assert code == 200
        run = next((r for r in runs if r["run_id"] == job["mlflow_run_id"]), None)
        assert run is not None, (job["mlflow_run_id"], [r["run_id"] for r in runs])
        assert not elsewhere.exists()
        assert {"test_macro_f1", "baseline_majority_macro_f1", "baseline_persistence_macro_f1", "baseline_logreg_macro_f1"} <= set(run["metrics"])
        code, detail = await _get(s, f"{base}/api/runs/{job['mlflow_run_id']}")
        assert code == 200
        assert [p[0] for p in detail["curves"]["val_macro_f1"]] == [1, 2]
        assert detail["curves"]["val_macro_f1"][1][1] == pytest.approx(job["metrics"][1]["val_macro_f1"], abs=5e-4)
        assert sum(map(sum, detail["confusion"]["matrix"])) > 0


@pytest.mark.parametrize("source, venue", [("binance-ws", "binance"), ("bybit", "bybit"), ("replay", "replay")])
async def test_collector_and_metrics_carry_the_venue(tmp_path, serve, source, venue):
    metrics = Metrics()
    provider = MetricsStatus(metrics, ["BTCUSDT", "ETHUSDT"], source, lambda: "live")
    metrics.ws_reconnects.labels(venue=venue).inc(2)
    metrics.venue_faults.labels(venue=venue, reason="http_429").inc(3)
    metrics.clock_offset.labels(venue=venue).set(-0.25)
    base, _ = await serve(tmp_path, metrics=metrics, status_provider=provider)
    async with aiohttp.ClientSession() as s:
        code, body = await _get(s, f"{base}/api/collector")
        async with s.get(f"{base}/metrics") as r:
            text = await r.text()
    assert code == 200 and [x["venue"] for x in body["symbols"]] == [venue, venue]
    assert body["venues"] == {venue: {"symbols": ["BTCUSDT", "ETHUSDT"], "reconnects": 2, "resyncs": 0, "retries": 0,
                                      "bans": 0, "faults": {"http_429": 3}, "clock_offset_s": -0.25}}
    joined = {(x.labels["symbol"], x.labels["venue"]): x.value for f in text_string_to_metric_families(text)
              for x in f.samples if x.name == "lobbot_symbol_venue"}
    assert joined == {("BTCUSDT", venue): 1.0, ("ETHUSDT", venue): 1.0}
    assert text.count("# HELP lobbot_symbol_venue ") == 1


def test_symbol_venue_follows_the_symbol_list():
    """``--symbols all`` changes the list while the bot runs: the venue gauge follows it."""
    metrics = Metrics()
    symbols = ["BTCUSDT"]
    provider = MetricsStatus(metrics, symbols, "bybit-ws", lambda: "live")
    symbols.append("SOLUSDT")
    assert [s.venue for s in provider.status().symbols] == ["bybit", "bybit"]
    symbols.remove("BTCUSDT")
    provider.status()
    assert {labels["symbol"] for labels, _ in metrics.samples("lobbot_symbol_venue")} == {"SOLUSDT"}


def test_health_sees_a_stuck_tick_through_the_live_book_age():
    """The age gauge is updated by ticks; a tick stuck in a hung poll never updates it. With the
    bot's live age the status goes 503 anyway once the last book is older than the limit."""
    from backend.web.status import health

    metrics = Metrics()
    metrics.book_age.labels(symbol="BTCUSDT").set(0.5)  # what the last tick before the hang set
    ages = {"BTCUSDT": 0.5}
    provider = MetricsStatus(metrics, ["BTCUSDT"], "bybit", lambda: "live", max_book_age_s=2.0, live_age=ages.get)
    code, body = health(provider.status())
    assert code == 200 and body["symbols"]["BTCUSDT"]["book_age_s"] == 0.5
    ages["BTCUSDT"] = 7.0  # seconds pass; no tick ends
    code, body = health(provider.status())
    assert code == 503 and body["symbols"]["BTCUSDT"]["book_age_s"] == 7.0
    plain = MetricsStatus(metrics, ["BTCUSDT"], "bybit", lambda: "live", max_book_age_s=2.0)
    assert health(plain.status())[0] == 200  # the gauge alone cannot tell
