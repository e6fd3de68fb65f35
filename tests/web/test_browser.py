"""The page in real headless Chromium (Debian's package, driven by Playwright).

Each test saves a screenshot under its tmp dir; with ``LOBBOT_DOCS_SCREENSHOTS=1`` the
screenshots also go to ``docs/img/`` (how the docs' pictures are made).
"""

import os
import shutil

import pytest

from helpers import CHROMIUM, CHROMIUM_ARGS, REPO, TOKEN, samples, write

from backend.metrics import Metrics
from backend.web.status import MetricsStatus

playwright_api = pytest.importorskip("playwright.async_api", reason="playwright is a dev dependency (pip install -e .[dev])")


@pytest.fixture
async def browser(tmp_path):
    assert os.path.exists(CHROMIUM), "headless tests need Debian's chromium: apt-get install -y chromium"
    async with playwright_api.async_playwright() as p:
        ctx = await p.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 900},
        )
        try:
            yield ctx
        finally:
            await ctx.close()


async def _open(ctx, url):
    page = await ctx.new_page()
    errors = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    await page.goto(url)
    await page.wait_for_selector("body[data-ready='1']", timeout=60_000)
    return page, errors


async def _shot(page, tmp_path, name, selector=None):
    path = tmp_path / f"{name}.png"
    if selector:
        await page.locator(selector).screenshot(path=str(path))
    else:
        await page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 1000
    if os.environ.get("LOBBOT_DOCS_SCREENSHOTS"):
        (REPO / "docs" / "img").mkdir(parents=True, exist_ok=True)
        shutil.copy(path, REPO / "docs" / "img" / f"web_{name}.png")
    return path


async def test_data_panel_rows_and_gaps(tmp_path, serve, browser):
    btc = samples("BTCUSDT", 3000, gaps={1000: 600_000, 2000: 90_000})
    eth = samples("ETHUSDT", 1000, interval_ms=60_000, labelled=0.5, seed=1)
    write(tmp_path / "feature_store" / "offline", [btc, eth])
    base, _ = await serve(tmp_path)
    page, errors = await _open(browser, base + "/")
    for df in (btc, eth):
        sym = df["symbol"].iloc[0]
        days = df["timestamp"].dt.strftime("%Y-%m-%d").value_counts()
        for day, n in days.items():
            cell = page.locator(f"#heatmap tr[data-symbol='{sym}'] td[data-day='{day}']")
            assert await cell.get_attribute("data-rows") == str(n)
    rows = page.locator("#gaps tbody tr")
    assert await rows.count() == 2
    first = await rows.nth(0).locator("td").all_inner_texts()
    assert first[0] == "BTCUSDT" and first[3] == "630" and first[4] == "20"
    assert (await rows.nth(1).locator("td").all_inner_texts())[3] == "120"
    assert "87.5 %" in await page.locator("#coverage tr[data-horizon='60']").inner_text()
    await _shot(page, tmp_path, "data", "#data")
    assert errors == []


async def test_data_panel_names_skipped_files(tmp_path, serve, browser):
    """A truncated file and one of int-seconds timestamps in the store: the panel counts only the
    good rows (no 1970 day) and lists each bad file with its reason."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    btc = samples("BTCUSDT", 200)
    store = write(tmp_path / "feature_store" / "offline", [btc])
    day_dir = store.group_dir("training_features") / "date=2025-11-07"
    good_file = sorted(day_dir.glob("*.parquet"))[0]
    table = pq.read_table(good_file)
    secs = pa.compute.divide(table.column("timestamp").cast(pa.int64()), 1000)
    pq.write_table(table.set_column(0, "timestamp", secs), day_dir / "features_000000_seconds.parquet")
    (day_dir / "features_000000_cut.parquet").write_bytes(good_file.read_bytes()[:3000])
    base, _ = await serve(tmp_path)
    page, errors = await _open(browser, base + "/")
    items = page.locator("#data-skipped li")
    assert await items.count() == 2
    texts = await items.all_inner_texts()
    assert "features_000000_cut.parquet" in texts[0] and "truncated or corrupt footer" in texts[0]
    assert "features_000000_seconds.parquet" in texts[1] and "refused rather than guessed" in texts[1]
    assert await page.locator("#heatmap tr[data-symbol='BTCUSDT'] td").count() == 1  # one day, no 1970 column
    assert "Files skipped (not counted)" in await page.locator("#data-summary").inner_text()
    assert errors == []


async def test_collector_updates_live(tmp_path, serve, browser):
    metrics = Metrics()
    provider = MetricsStatus(metrics, ["BTCUSDT", "ETHUSDT"], "sim", lambda: "live")
    base, _ = await serve(tmp_path, metrics=metrics, status_provider=provider)
    page, errors = await _open(browser, base + "/")
    cell = page.locator("#collector-table tr[data-symbol='BTCUSDT'] td.samples")
    await page.wait_for_function("document.querySelector(\"#collector-table tr[data-symbol='BTCUSDT'] td.samples\")?.textContent === '0'")
    metrics.samples_collected.labels(symbol="BTCUSDT").inc(42)
    metrics.book_age.labels(symbol="BTCUSDT").set(0.8)
    metrics.samples_skipped.labels(symbol="BTCUSDT", reason="warming_up").inc(5)
    # pushed by the server (SSE), no reload
    await page.wait_for_function("document.querySelector(\"#collector-table tr[data-symbol='BTCUSDT'] td.samples\").textContent === '42'", timeout=10_000)
    assert "warming_up=5" in await page.locator("#collector-table tr[data-symbol='BTCUSDT']").inner_text()
    assert await cell.inner_text() == "42"
    await _shot(page, tmp_path, "collector", "#collector")
    assert errors == []


async def test_collector_groups_symbols_by_venue(tmp_path, serve, browser):
    metrics = Metrics()
    provider = MetricsStatus(metrics, ["BTCUSDT", "ETHUSDT"], "binance-ws", lambda: "live")
    metrics.ws_reconnects.labels(venue="binance").inc(2)
    metrics.clock_offset.labels(venue="binance").set(0.125)
    base, _ = await serve(tmp_path, metrics=metrics, status_provider=provider)
    page, errors = await _open(browser, base + "/")
    await page.wait_for_selector("#collector-table tr.venue[data-venue='binance']")
    head = await page.locator("#collector-table tr.venue[data-venue='binance']").inner_text()
    assert head.startswith("binance: 2 symbols") and "reconnects 2" in head and "clock offset 0.125 s" in head
    for sym in ("BTCUSDT", "ETHUSDT"):
        row = page.locator(f"#collector-table tr[data-symbol='{sym}']")
        assert await row.get_attribute("data-venue") == "binance"
        assert await row.locator("td.venue").inner_text() == "binance"
    await _shot(page, tmp_path, "collector_venue", "#collector")
    assert errors == []


@pytest.mark.slow
async def test_start_training_shows_epochs_and_run_beside_baselines(labelled_dir, tmp_path, serve, browser, monkeypatch):
    # an MLFLOW_TRACKING_URI left in this worker's environment by an earlier in-process
    # MLflow user must not send the job's run elsewhere (see test_api.py)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'elsewhere.db'}")
    base, _ = await serve(labelled_dir, mlflow_ui_url="http://127.0.0.1:5000")
    page, errors = await _open(browser, base + "/")
    await page.fill("#token-input", TOKEN)
    await page.click("#token-save")
    form = page.locator("#train-form")
    await form.locator("input[name=epochs]").fill("3")
    await form.locator("input[name=sequence_length]").fill("10")
    await form.locator("input[name=batch_size]").fill("128")
    await form.locator("input[name=threads]").fill("1")
    await page.click("#train-start")
    await page.wait_for_selector("#job:not([hidden])")
    # per-epoch progress: the chart grows epoch by epoch
    # at least one epoch drawn while the job runs or just after (a small run can finish
    # several epochs between two polls, so the count may jump past 1)
    await page.wait_for_function(
        "Number(document.querySelector('#epoch-chart').getAttribute('data-epochs') || 0) >= 1", timeout=240_000)
    await page.wait_for_function("document.querySelector('#job-state').textContent === 'succeeded'", timeout=300_000)
    assert await page.get_attribute("#epoch-chart", "data-epochs") == "3"
    assert await page.locator("#epoch-chart canvas").count() >= 1
    run_text = await page.inner_text("#job-run")
    run_id = run_text.split(":")[-1].strip()
    row = page.locator(f"#runs tr[data-run='{run_id}']")
    await row.wait_for(timeout=60_000)
    assert not (tmp_path / "elsewhere.db").exists()
    for cls in ("model", "baseline-majority", "baseline-persistence", "baseline-logreg"):
        value = await row.locator(f"td.{cls}").inner_text()
        assert 0 <= float(value) <= 1, (cls, value)
    await _shot(page, tmp_path, "training", "#ml")
    await row.locator("button").click()
    await page.wait_for_selector("#run-detail:not([hidden]) #confusion tr:nth-child(4)")
    assert await page.get_attribute("#run-link", "href") == f"http://127.0.0.1:5000/#/experiments/-/runs/{run_id}"
    await _shot(page, tmp_path, "run_detail", "#run-detail")
    assert errors == []


async def test_runs_list_shows_each_verdict_and_the_persistence_warning(tmp_path, serve, browser):
    """The runs list reads the evaluation's verdict tags: green only when every verdict is "beats" (a
    model ahead of logreg by 0.004 is not), the persistence warning shown, the form offers --folds."""
    from mlflow import MlflowClient

    from backend.ml_engine.training_orchestrator.evaluation.verdict import BEATS, NOT_DISTINGUISHABLE, PHRASES, WORSE

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    writer = MlflowClient(tracking_uri=uri)
    exp = writer.create_experiment("lob_direction", artifact_location=(tmp_path / "artifacts").as_uri())

    def run(metrics, verdicts, warning=None):
        r = writer.create_run(exp).info.run_id
        for k, v in metrics.items():
            writer.log_metric(r, k, v)
        for b, outcome in verdicts.items():
            writer.set_tag(r, f"verdict_{b}", PHRASES[outcome])
        if verdicts:
            writer.set_tag(r, "verdict_summary", "Model macro-F1 ...")
        if warning:
            writer.set_tag(r, "evaluation_warning", warning)
        writer.set_terminated(r)
        return r

    ahead = {"test_macro_f1": 0.548, "baseline_majority_macro_f1": 0.2, "baseline_persistence_macro_f1": 0.45, "baseline_logreg_macro_f1": 0.544}
    close = run(ahead, {"majority": BEATS, "persistence": BEATS, "logreg": NOT_DISTINGUISHABLE})
    clear = run(ahead, {"majority": BEATS, "persistence": BEATS, "logreg": BEATS})
    warning = "WARNING: the model scores below the persistence baseline on macro-F1 (difference -0.050)."
    weak = run({**ahead, "test_macro_f1": 0.243}, {"logreg": NOT_DISTINGUISHABLE, "persistence": WORSE, "majority": BEATS}, warning)
    before = run(ahead, {})  # a run logged before the evaluation had verdicts

    base, _ = await serve(tmp_path, tracking_uri=uri)
    page, errors = await _open(browser, base + "/")
    row = lambda r: page.locator(f"#runs tr[data-run='{r}']")  # noqa: E731
    await row(before).wait_for(timeout=30_000)
    assert await row(close).locator("td.verdict").inner_text() == "beats majority, persistence; not distinguishable from logreg"
    assert await row(close).locator("td.baseline-logreg").get_attribute("data-verdict") == "not distinguishable from"
    assert "best" not in await row(close).locator("td.model").get_attribute("class")
    assert await row(clear).locator("td.verdict").inner_text() == "beats majority, persistence, logreg"
    assert "best" in await row(clear).locator("td.model").get_attribute("class")
    cell = row(weak).locator("td.verdict")
    text = await cell.inner_text()
    assert text.startswith("beats majority; not distinguishable from logreg; worse than persistence"), text
    assert "does not beat persistence" in text and await cell.get_attribute("title") == warning
    assert "warn" in await cell.get_attribute("class")
    assert await row(before).locator("td.verdict").inner_text() == "no verdict (run before the evaluation)"
    assert "best" not in await row(before).locator("td.model").get_attribute("class")
    form = page.locator("#train-form")
    assert "5 recommended" in await form.locator("input[name=folds]").get_attribute("placeholder")
    assert await form.locator("input[name=window]").count() == 1
    await _shot(page, tmp_path, "runs_verdicts", "#runs")
    assert errors == []


async def test_page_in_russian_follows_the_browser_and_switches(tmp_path, serve):
    base, _ = await serve(tmp_path)
    async with playwright_api.async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            ctx = await browser.new_context(locale="ru-RU", viewport={"width": 1280, "height": 900})
            page, errors = await _open(ctx, base + "/")
            assert await page.get_attribute("html", "lang") == "ru"
            assert await page.inner_text("#collector h2") == "Сборщик"
            assert (await page.inner_text("#collector-state")).startswith("В этом процессе бот не работает")
            assert "Начать обучение" in await page.inner_text("#ml")
            await _shot(page, tmp_path, "ru")
            await page.select_option("#lang-switch", "en")  # the user's choice wins and is kept
            assert await page.inner_text("#collector h2") == "Collector"
            await page.reload()
            await page.wait_for_selector("body[data-ready='1']")
            assert await page.inner_text("#collector h2") == "Collector"
            assert errors == []
        finally:
            await browser.close()


async def test_off_loopback_page_asks_for_the_token_then_loads(tmp_path, serve, browser):
    """Bound to 0.0.0.0 the page loads without data, says why, and shows everything once given the token."""
    write(tmp_path / "feature_store" / "offline", [samples("BTCUSDT", 200)])
    base, _ = await serve(tmp_path, host="0.0.0.0")
    page, errors = await _open(browser, base + "/")
    assert await page.locator("#token-box").is_visible()
    assert "reachable from the network" in await page.locator("#message").inner_text()
    assert await page.locator("#heatmap tr[data-symbol='BTCUSDT']").count() == 0
    await page.fill("#token-input", TOKEN)
    await page.click("#token-save")
    await page.wait_for_selector("#heatmap tr[data-symbol='BTCUSDT']", timeout=60_000)
    assert not await page.locator("#token-box").is_visible()
    assert [e for e in errors if "401" not in e] == []  # the refused reads before the token are expected
