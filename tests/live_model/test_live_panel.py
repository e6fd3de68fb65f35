"""The Live Model panel in real headless Chromium, fed by a real bot run with the sim-trained model.

The bot runs in this process (simulated market, virtual clock) with the ``--model`` service
the app builds; the web app is then served with that service's ``live_view`` behind
``GET /api/live``, and the page must draw the model, predictions with their realised class,
the rolling live macro-F1 beside the test macro-F1 and the equity curve.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest
from aiohttp import ClientSession, web

from backend.config import Settings
from backend.contracts.labels import DEFAULT_THRESHOLD_PCT
from backend.engine.bot import Bot
from backend.metrics import Metrics
from backend.ml_engine.feature_store.feature_schema import FEATURE_NAMES, FEATURE_SCHEMA_VERSION
from backend.ml_engine.live.model_loader import BotProfile, load_live_model
from backend.ml_engine.live.paper import PaperConfig
from backend.ml_engine.live.service import LiveModelService
from backend.web.app import WebSettings, create_app
from backend.web.auth import ApiToken

playwright_api = pytest.importorskip("playwright.async_api", reason="playwright is a dev dependency (pip install -e .[dev])")

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]


async def _serve(data_dir: Path, live_provider):
    settings = WebSettings(data_dir=data_dir, token=ApiToken("t" * 24, "test"), tracking_uri=f"sqlite:///{data_dir}/none.db")
    app = create_app(settings, metrics=Metrics(), live_provider=live_provider)
    runner = web.AppRunner(app, shutdown_timeout=2)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"


@contextlib.asynccontextmanager
async def _live_page(tmp_path: Path, base: str):
    """Headless Chromium on the page, the Live Model panel shown; yields (page, page errors)."""
    async with playwright_api.async_playwright() as p:
        ctx = await p.chromium.launch_persistent_context(str(tmp_path / "profile"), executable_path=CHROMIUM,
                                                         headless=True, args=CHROMIUM_ARGS,
                                                         viewport={"width": 1280, "height": 900})
        try:
            page = await ctx.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            await page.goto(base + "/")
            await page.wait_for_selector("body[data-ready='1']", timeout=60_000)
            await page.wait_for_selector("#live-body:not([hidden])", timeout=10_000)
            yield page, errors
        finally:
            await ctx.close()


async def test_live_panel_renders_a_real_run(sim_run, tmp_path):
    assert os.path.exists(CHROMIUM), "headless tests need Debian's chromium: apt-get install -y chromium"
    symbols = ["BTCUSDT", "ETHUSDT"]
    settings = Settings(data_dir=tmp_path / "data", source="sim", fast=True, duration="60m", symbols=symbols, seed=3,
                        sim_start="2025-11-07T04:00:00Z", use_legacy_format=False, spool_fsync=False)
    profile = BotProfile(tuple(FEATURE_NAMES), FEATURE_SCHEMA_VERSION, 30_000, DEFAULT_THRESHOLD_PCT)
    model = load_live_model(f"models:/{sim_run.name}/1", sim_run.tracking_uri, profile, symbols)
    service = LiveModelService(model, symbols, PaperConfig(horizon_s=model.spec.horizon_s, enter_prob=0.51))
    assert await Bot(settings, services=(service,)).run() == 0
    view = service.live_view()
    assert view["predictions"] > 50 and view["labelled"] > 30 and view["rolling_macro_f1"] and view["equity"]

    runner, base = await _serve(tmp_path, service.live_view)
    try:
        async with ClientSession() as http:
            async with http.get(base + "/api/live") as resp:
                body = await resp.json()
        assert body["loaded"] is True and body["model_uri"] == f"models:/{sim_run.name}/1"
        async with _live_page(tmp_path, base) as (page, errors):
            assert f"models:/{sim_run.name}/1" in await page.locator("#live-state").inner_text()
            summary = await page.locator("#live-summary").inner_text()
            assert str(view["predictions"]) in summary
            test_f1 = f"{view['test_macro_f1']:.3f}"
            assert await page.locator("#live-summary dd[data-key='test_macro_f1']").inner_text() == test_f1
            live_f1 = await page.locator("#live-summary dd[data-key='live_macro_f1']").inner_text()
            assert 0 <= float(live_f1) <= 1
            rows = page.locator("#live-preds tbody tr")
            assert await rows.count() == 20
            realised = await page.locator("#live-preds tbody td:nth-child(7)").all_inner_texts()
            assert set(realised) <= {"DOWN", "NEUTRAL", "UP", "pending"} and set(realised) - {"pending"}
            # both charts drew (uPlot canvases with their series legends)
            assert await page.locator("#live-f1-chart canvas").count() >= 1
            assert await page.locator("#live-equity-chart canvas").count() >= 1
            legend = await page.locator("#live-equity-chart").inner_text()
            assert "Gross PnL" in legend and "Net PnL" in legend
            await page.locator("#live").screenshot(path=str(tmp_path / "live.png"))
            assert errors == []
    finally:
        with contextlib.suppress(Exception):
            await runner.cleanup()


async def test_live_route_without_a_model(tmp_path):
    runner, base = await _serve(tmp_path, None)
    try:
        async with ClientSession() as http:
            async with http.get(base + "/api/live") as resp:
                assert resp.status == 200 and await resp.json() == {"loaded": False}
    finally:
        await runner.cleanup()


async def test_bot_server_serves_the_bots_model_service(sim_run, tmp_path):
    """``--api-port`` with ``--model``: the embedded web app finds the model service among the bot's services."""
    from backend.web.embed import BotServer

    symbols = ["BTCUSDT"]
    settings = Settings(data_dir=tmp_path / "data", source="sim", fast=True, symbols=symbols, use_legacy_format=False,
                        spool_fsync=False)
    profile = BotProfile(tuple(FEATURE_NAMES), FEATURE_SCHEMA_VERSION, 30_000, DEFAULT_THRESHOLD_PCT)
    model = load_live_model(f"models:/{sim_run.name}/1", sim_run.tracking_uri,
                            profile, symbols)
    service = LiveModelService(model, symbols, PaperConfig(horizon_s=model.spec.horizon_s))
    web_settings = WebSettings(data_dir=tmp_path, token=ApiToken("t" * 24, "test"), tracking_uri=sim_run.tracking_uri)
    server = BotServer(web_settings, 0)
    bot = Bot(settings, services=(service, server))
    try:
        await server.start(bot)
        async with ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{server.bound_port}/api/live") as resp:
                body = await resp.json()
        assert body["loaded"] is True and body["predictions"] == 0 and body["model_uri"] == f"models:/{sim_run.name}/1"
        assert body["test_macro_f1"] == pytest.approx(model.spec.test_metrics["test_macro_f1"])
    finally:
        await server.stop()
        bot.ml_data_collector.close_sync()


async def test_standalone_app_shows_the_stored_predictions(sim_run, tmp_path):
    """``python -m backend.web`` without a bot: the Live Model panel reads the ``predictions`` and
    ``paper_trades`` groups a ``--model`` bot run stored (labelled afterwards by the labeller)."""
    import subprocess
    import sys

    import numpy as np

    from backend.ml_engine.feature_store.feature_store import FeatureStore

    assert os.path.exists(CHROMIUM), "headless tests need Debian's chromium: apt-get install -y chromium"
    symbols = ["BTCUSDT", "ETHUSDT"]
    data_dir = tmp_path / "data"
    settings = Settings(data_dir=data_dir, source="sim", fast=True, duration="60m", symbols=symbols, seed=3,
                        sim_start="2025-11-07T04:00:00Z", use_legacy_format=False, spool_fsync=False)
    profile = BotProfile(tuple(FEATURE_NAMES), FEATURE_SCHEMA_VERSION, 30_000, DEFAULT_THRESHOLD_PCT)
    uri = f"models:/{sim_run.name}/1"
    model = load_live_model(uri, sim_run.tracking_uri, profile, symbols)
    service = LiveModelService(model, symbols, PaperConfig(horizon_s=model.spec.horizon_s, enter_prob=0.51))
    assert await Bot(settings, services=(service,)).run() == 0
    trader = service.trader.summary()
    assert trader.fills > 0 and trader.open_positions + trader.round_trips > 1
    repo = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOBBOT_", "MLFLOW_")) and k != "DATA_DIR"}
    lab = subprocess.run([sys.executable, str(repo / "preprocessing_add_future_labels_parquet.py"), "--data-dir", str(data_dir),
                          "--feature-group", "predictions", "--no-progress"], cwd=repo, env=env, capture_output=True,
                         text=True, timeout=240)
    assert lab.returncode == 0, lab.stdout[-2000:] + lab.stderr[-2000:]
    stored = FeatureStore(data_dir / "feature_store" / "offline").read_offline_features("predictions")
    h = model.spec.horizon_s
    labelled = stored[stored[f"future_direction_{h}s"].notna()]
    assert len(labelled) > 30

    settings = WebSettings(data_dir=data_dir, token=ApiToken("t" * 24, "test"), tracking_uri=sim_run.tracking_uri,
                           warm_audit=False)
    runner = web.AppRunner(create_app(settings, metrics=Metrics()), shutdown_timeout=2)  # no bot, no model
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    base = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
    try:
        async with ClientSession() as http:
            async with http.get(base + "/api/live") as resp:
                assert resp.status == 200
                body = await resp.json()
        assert body["loaded"] is True and body["source"] == "store" and body["model_uri"] == uri
        assert body["predictions"] == len(stored) == service.predictions and body["horizon_s"] == h
        assert body["labelled"] == len(labelled)
        hits = (labelled["predicted_direction"].astype(int) == labelled[f"future_direction_{h}s"].astype(int)).mean()
        assert body["live_accuracy"] == pytest.approx(float(hits))
        assert body["rolling_macro_f1"] and all(0 <= p["macro_f1"] <= 1 for p in body["rolling_macro_f1"])
        newest = stored.sort_values(["timestamp", "symbol"]).iloc[-1]
        assert body["recent"][-1]["ts"] == int(newest["timestamp"].timestamp() * 1000)
        assert body["recent"][-1]["symbol"] == newest["symbol"]
        # the paper account from the stored fills is the trader's own (open positions at the last tape mid)
        paper = body["paper"]
        assert paper["fills"] == trader.fills and paper["round_trips"] == trader.round_trips
        assert paper["gross_pnl"] == pytest.approx(trader.gross_pnl, abs=1e-6)
        assert paper["net_pnl"] == pytest.approx(trader.net_pnl, abs=1e-6)
        assert paper["fees"] == pytest.approx(trader.fees, abs=1e-9)
        assert trader.round_trips > 0 and paper["hit_rate"] == pytest.approx(trader.hit_rate)
        assert len(body["equity"]) == trader.fills
        # the model's test numbers come from its MLflow run
        assert body["test_macro_f1"] == pytest.approx(model.spec.test_metrics["test_macro_f1"])
        assert body["sequence_length"] == model.spec.sequence_length and body["run_id"] == sim_run.run_id
        assert np.isfinite(body["baselines"]["persistence"])

        async with _live_page(tmp_path, base) as (page, errors):
            assert await page.get_attribute("#live-source", "data-source") == "store"
            assert await page.locator("#live-summary dd[data-key='live_predictions']").inner_text() == str(len(stored))
            assert await page.locator("#live-summary dd[data-key='paper_fills']").inner_text() == str(trader.fills)
            realised = await page.locator("#live-preds tbody td:nth-child(7)").all_inner_texts()
            assert set(realised) - {"pending"}  # some rows show their realised class
            await page.locator("#live").screenshot(path=str(tmp_path / "live_stored.png"))
            assert errors == []
    finally:
        await runner.cleanup()
