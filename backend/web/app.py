"""The aiohttp application: routes of DESIGN.md §6.3, the page and its static files.

``create_app(settings, metrics=None, status_provider=None)`` works in two places:

* standalone (``python -m backend.web``): ``metrics`` is a fresh ``Metrics`` and the
  provider is ``NoBot``;
* inside the bot (``--api-port``): the bot passes its own ``Metrics`` and a
  ``StatusProvider`` (e.g. ``backend.web.status.MetricsStatus``) and runs the app on its
  event loop with ``aiohttp.web.AppRunner``.

Routes::

    GET  /                       the page (static, reads only the API below)
    GET  /health                 200 ok|degraded, 503 down (JSON)
    GET  /metrics                Prometheus text format of the bot's registry
    GET  /api/collector          collector status (JSON); GET /api/events pushes it (SSE)
    GET  /api/data?group=G       data audit (backend.ml_engine.feature_store.inspect)
    POST /api/training           start a training job (202 {"job_id"}), 400/401/409
    GET  /api/training[/<job>]   jobs / one job; DELETE /api/training/<job> cancels
    POST /api/labelling          start a labelling job; GET/DELETE /api/labelling/<job>
    GET  /api/runs[/<run_id>]    MLflow runs beside baselines / one run with curves
    GET  /api/live               Live Model panel: the bot's --model service, else the store
    GET  /api/config             what the page needs: options' limits, MLflow UI link, bot

Authorisation: POST and DELETE always need ``Authorization: Bearer <token>``; GETs need it
too unless the server is bound to a loopback address. Open in every case: ``/`` and
``/static/`` (the page's own code, no data; it asks for the token) and ``/health``, which
off loopback answers only ``{"status"}`` with its HTTP code unless the request carries the
token. Refusals are counted in ``lobbot_api_auth_failures_total{reason}``. Errors are JSON
``{"error": message, ...}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from backend.metrics import CONTENT_TYPE_LATEST, Metrics
from backend.ml_engine.feature_store.feature_store import FeatureStoreError
from backend.ml_engine.feature_store.inspect import StoreInspector
from backend.ml_engine.training_orchestrator.tracking import mask_uri, scrub
from backend.web.address import is_loopback
from backend.web.auth import ApiToken, auth_failure_counter, bearer
from backend.web.jobs import JobBusy, JobRunner
from backend.web.live_store import StoredLive
from backend.web.options import (
    GROUP_RE,
    LABELLING_OPTIONS,
    TRAINING_OPTIONS,
    OptionsError,
    labelling_argv,
    training_argv,
)
from backend.web.runs import RunNotFound, RunsReader
from backend.web.status import MetricsStatus, NoBot, Snapshot, StatusProvider, collector_view, health

log = logging.getLogger("lobbot.web")

REPO_ROOT = Path(__file__).resolve().parents[2]
STATIC = Path(__file__).resolve().parent / "static"
LABELLER = REPO_ROOT / "preprocessing_add_future_labels_parquet.py"


@dataclass
class WebSettings:
    """What the app needs to know; built by ``backend.apps.web`` or by the bot.

    ``data_dir``: root of all data (store under ``feature_store/offline``); ``host``: the
    bind address (loopback unless the user says otherwise); ``tracking_uri``: the
    normalised MLflow URI runs are read from (may hold a password, never shown);
    ``mlflow_ui_url``: base URL of an MLflow UI the user runs, for links (``None``: no
    links); ``feature_group``: default group of the Data panel; ``events_interval_s``:
    period of the SSE push; ``python``: interpreter of the child jobs.
    """

    data_dir: Path
    token: ApiToken
    tracking_uri: str
    host: str = "127.0.0.1"
    mlflow_ui_url: str | None = None
    feature_group: str = "training_features"
    events_interval_s: float = 1.0
    python: str = sys.executable
    cancel_grace_s: float = 2.0
    lang: str = "en"
    warm_audit: bool = True
    extra: dict = field(default_factory=dict)

    @property
    def loopback(self) -> bool:
        """True when the server binds a loopback address (read-only GETs then need no token)."""
        return is_loopback(self.host)


def _error(status: int, message: str, **extra) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status)


KEY_SETTINGS = web.AppKey("settings", WebSettings)
KEY_METRICS = web.AppKey("metrics", Metrics)
KEY_STATUS = web.AppKey("status", object)
KEY_JOBS = web.AppKey("jobs", JobRunner)
KEY_INSPECTOR = web.AppKey("inspector", StoreInspector)
KEY_RUNS = web.AppKey("runs", RunsReader)
KEY_STOP = web.AppKey("stop", asyncio.Event)
KEY_WARM = web.AppKey("warm", asyncio.Future)
KEY_LIVE = web.AppKey("live", object)
HEALTH_DETAIL = web.RequestKey("health_detail", bool)  # may /health show per-symbol detail


def create_app(
    settings: WebSettings,
    *,
    metrics: Metrics | None = None,
    status_provider: StatusProvider | None = None,
    job_runner: JobRunner | None = None,
    live_provider=None,
) -> web.Application:
    """The application; run it with ``web.run_app`` or an ``AppRunner`` on any loop.

    Nothing here blocks the loop: the data audit and MLflow reads run in worker threads,
    jobs are child processes. On cleanup the active job is cancelled. ``live_provider``: a
    callable returning the Live Model panel's data (the bot's ``--model`` service's
    ``live_view``); None without a model in this process: the panel then shows what is
    stored in the ``predictions`` and ``paper_trades`` groups (``backend.web.live_store``).
    """
    metrics = metrics if metrics is not None else Metrics()
    failures = auth_failure_counter(metrics)

    @web.middleware
    async def auth(request: web.Request, handler):
        open_path = request.path in ("/", "/health") or request.path.startswith("/static/")
        needs = request.method not in ("GET", "HEAD", "OPTIONS") or not settings.loopback
        request[HEALTH_DETAIL] = settings.loopback
        if request.path == "/health" and not settings.loopback:
            presented = bearer(request.headers.get("Authorization"))
            if presented is not None:  # a probe without a token gets the status word only
                request[HEALTH_DETAIL] = settings.token.matches(presented)
                if not request[HEALTH_DETAIL]:
                    failures.labels(reason="wrong").inc()
        elif needs and not open_path:
            presented = bearer(request.headers.get("Authorization"))
            if presented is None:
                failures.labels(reason="missing").inc()
                return _error(401, "missing token: send 'Authorization: Bearer <token>' (the token is in <data_dir>/api_token "
                              "or $LOBBOT_API_TOKEN)")
            if not settings.token.matches(presented):
                failures.labels(reason="wrong").inc()
                return _error(401, "wrong token: use the one in <data_dir>/api_token or $LOBBOT_API_TOKEN")
        resp = await handler(request)
        resp.headers.setdefault("Cache-Control", "no-store")
        resp.headers.setdefault("X-Content-Type-Options", "nosniff")
        return resp

    app = web.Application(middlewares=[auth], client_max_size=64 * 1024)
    app[KEY_SETTINGS] = settings
    app[KEY_METRICS] = metrics
    app[KEY_STATUS] = status_provider or NoBot()
    # the child tracks into the store the runs list reads, never into whatever
    # MLFLOW_TRACKING_URI this process inherited or had set by mlflow.set_tracking_uri
    app[KEY_JOBS] = job_runner or JobRunner(REPO_ROOT, grace_s=settings.cancel_grace_s,
                                            overrides={"MLFLOW_TRACKING_URI": settings.tracking_uri})
    app[KEY_INSPECTOR] = StoreInspector(Path(settings.data_dir) / "feature_store" / "offline")
    app[KEY_RUNS] = RunsReader(settings.tracking_uri)
    app[KEY_STOP] = asyncio.Event()
    # without a model in this process the panel reads what a bot run with --model stored
    app[KEY_LIVE] = live_provider if live_provider is not None else StoredLive(
        Path(settings.data_dir) / "feature_store" / "offline", app[KEY_RUNS])

    r = app.router
    r.add_get("/", index)
    r.add_get("/health", get_health)
    r.add_get("/metrics", get_metrics)
    r.add_get("/api/config", get_config)
    r.add_get("/api/collector", get_collector)
    r.add_get("/api/events", get_events)
    r.add_get("/api/data", get_data)
    r.add_get("/api/live", get_live)
    r.add_post("/api/training", post_training)
    r.add_get("/api/training", list_jobs)
    r.add_get("/api/training/{job}", get_job)
    r.add_delete("/api/training/{job}", delete_job)
    r.add_post("/api/labelling", post_labelling)
    r.add_get("/api/labelling", list_jobs)
    r.add_get("/api/labelling/{job}", get_job)
    r.add_delete("/api/labelling/{job}", delete_job)
    r.add_get("/api/runs", get_runs)
    r.add_get("/api/runs/{run_id}", get_run)
    r.add_static("/static/", STATIC, follow_symlinks=False)

    async def on_startup(app: web.Application) -> None:
        if settings.warm_audit:
            # the first audit of a big store decodes every footer: do it before anyone asks
            loop = asyncio.get_running_loop()
            app[KEY_STOP].clear()
            fut = loop.run_in_executor(None, _warm, app[KEY_INSPECTOR], settings.feature_group)
            app[KEY_WARM] = fut

    async def on_shutdown(app: web.Application) -> None:
        app[KEY_STOP].set()  # ends SSE streams

    async def on_cleanup(app: web.Application) -> None:
        await app[KEY_JOBS].close()
        warm = app.get(KEY_WARM)
        if warm is not None:
            with contextlib.suppress(Exception):
                await warm

    app.on_startup.append(on_startup)
    app.on_shutdown.append(on_shutdown)
    app.on_cleanup.append(on_cleanup)
    return app


def _warm(inspector: StoreInspector, group: str) -> None:
    try:
        inspector.audit(group)
    except Exception as exc:  # a broken file is reported when the page asks, not here
        log.warning("data audit at start failed: %s", exc)


# --- handlers -------------------------------------------------------------------------------
async def index(request: web.Request) -> web.StreamResponse:
    """``GET /``: the one page (Collector, Data, ML Management)."""
    return web.FileResponse(STATIC / "index.html", headers={"Content-Type": "text/html; charset=utf-8"})


async def get_health(request: web.Request) -> web.Response:
    """``GET /health``: ok/degraded/down per DESIGN.md §6.3; HTTP 503 when down.

    Off loopback without the token only ``{"status": ...}`` (and the code) is answered:
    enough for a probe, nothing about symbols or sources."""
    code, body = health(request.app[KEY_STATUS].status())
    if not request.get(HEALTH_DETAIL, False):
        body = {"status": body["status"]}
    return web.json_response(body, status=code)


async def get_metrics(request: web.Request) -> web.Response:
    """``GET /metrics``: the registry in Prometheus text format."""
    body = request.app[KEY_METRICS].exposition()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def get_config(request: web.Request) -> web.Response:
    """``GET /api/config``: what the page needs to draw its forms (defaults, symbols, group, MLflow UI link)."""
    s = request.app[KEY_SETTINGS]

    def spec(options):
        return {k: {"flag": o.flag, "help": o.help} for k, o in options.items()}

    return web.json_response(
        {
            "feature_group": s.feature_group,
            "mlflow_ui_url": s.mlflow_ui_url,
            "lang": s.lang,
            "bot": request.app[KEY_STATUS].status().running,
            "training_options": spec(TRAINING_OPTIONS),
            "labelling_options": spec(LABELLING_OPTIONS),
            "token_required_for_reads": not s.loopback,
        }
    )


def _collector(app: web.Application) -> dict:
    snap = Snapshot(app[KEY_METRICS])  # one pass over the registry for the whole view
    provider = app[KEY_STATUS]
    status = provider.status(snap) if isinstance(provider, MetricsStatus) else provider.status()
    return collector_view(snap, status)


async def get_collector(request: web.Request) -> web.Response:
    """``GET /api/collector``: the Collector panel snapshot (also pushed by ``/api/events``)."""
    return web.json_response(_collector(request.app))


async def get_events(request: web.Request) -> web.StreamResponse:
    """Server-sent events: ``collector`` every ``events_interval_s``, ``job`` on each change."""
    app = request.app
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"})
    await resp.prepare(request)
    stop = app[KEY_STOP]
    last_job = None
    try:
        while not stop.is_set():
            await resp.write(f"event: collector\ndata: {json.dumps(_collector(app))}\n\n".encode())
            job = app[KEY_JOBS].recent()
            body = json.dumps(job[0].as_dict()) if job else "null"
            if body != last_job:
                await resp.write(f"event: job\ndata: {body}\n\n".encode())
                last_job = body
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), app[KEY_SETTINGS].events_interval_s)
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    return resp


async def get_live(request: web.Request) -> web.Response:
    """``GET /api/live``: the Live Model panel (DESIGN.md §6.6): the model, recent predictions with their
    realised class, the rolling live macro-F1 beside the test macro-F1, the paper equity curve (gross
    and net) and the paper totals; from the bot's ``--model`` service, else from the store
    (``"source": "store"``), ``{"loaded": false}`` when neither has any."""
    provider = request.app[KEY_LIVE]
    if isinstance(provider, StoredLive):  # file and MLflow reads: off the loop
        try:
            view = await asyncio.get_running_loop().run_in_executor(None, provider.view)
        except (FeatureStoreError, OSError, ValueError) as exc:
            return _error(502, f"cannot read the stored predictions: {str(exc).splitlines()[0][:300]}")
        return web.json_response(view)
    return web.json_response({"loaded": True, **provider()})


async def get_data(request: web.Request) -> web.Response:
    """``GET /api/data?group=G``: the data audit of one feature group (rows per day, gaps, labels); 400 on a bad group name."""
    s = request.app[KEY_SETTINGS]
    group = request.query.get("group", s.feature_group)
    if not GROUP_RE.match(group):
        return _error(400, f"group: must be a feature group name of lower-case letters, digits and _, got {group[:64]!r}")
    inspector = request.app[KEY_INSPECTOR]
    loop = asyncio.get_running_loop()
    try:
        audit = await loop.run_in_executor(None, inspector.audit, group)
    except FeatureStoreError as exc:
        return _error(400, str(exc))
    body = audit.as_dict()
    body["groups"] = await loop.run_in_executor(None, inspector.groups)
    return web.json_response(body)


async def _json_body(request: web.Request):
    try:
        return await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise OptionsError({"body": "is not valid JSON; send a JSON object, e.g. {\"epochs\": 5}"}) from None


async def _start(request: web.Request, kind: str) -> web.Response:
    s = request.app[KEY_SETTINGS]
    runner = request.app[KEY_JOBS]
    busy = runner.active()
    if busy is not None:
        return _error(409, str(JobBusy(busy)), job_id=busy.job_id)
    try:
        body = await _json_body(request)
        if kind == "training":
            argv, checked = training_argv(body, python=s.python, data_dir=str(s.data_dir))
        else:
            argv, checked = labelling_argv(body, python=s.python, script=str(LABELLER), data_dir=str(s.data_dir))
    except OptionsError as exc:
        return _error(400, "invalid options: " + str(exc), fields=exc.fields)
    try:
        job = await runner.start(kind, argv, checked, epochs=int(checked.get("epochs", 50)) if kind == "training" else None)
    except JobBusy as exc:
        return _error(409, str(exc), job_id=exc.job.job_id)
    log.info("%s job %s started (pid %s): %s", kind, job.job_id, job.pid, " ".join(argv[1:]))
    return web.json_response({"job_id": job.job_id}, status=202)


async def post_training(request: web.Request) -> web.Response:
    """``POST /api/training``: validate the options and start a training child; 202, 400, 401 or 409."""
    return await _start(request, "training")


async def post_labelling(request: web.Request) -> web.Response:
    """``POST /api/labelling``: validate the options and start the parquet labeller; 202, 400, 401 or 409."""
    return await _start(request, "labelling")


def _kind(request: web.Request) -> str:
    return "training" if request.path.startswith("/api/training") else "labelling"


async def list_jobs(request: web.Request) -> web.Response:
    """``GET /api/training`` (or ``/api/labelling``): recent jobs of that kind, without log tails."""
    kind = _kind(request)
    return web.json_response([j.as_dict(lines=0) for j in request.app[KEY_JOBS].recent() if j.kind == kind])


async def get_job(request: web.Request) -> web.Response:
    """``GET /api/training/<job>``: one job in the §6.3 shape; 404 when unknown."""
    job = request.app[KEY_JOBS].get(request.match_info["job"])
    if job is None or job.kind != _kind(request):
        return _error(404, f"no {_kind(request)} job {request.match_info['job'][:40]!r}")
    return web.json_response(job.as_dict())


async def delete_job(request: web.Request) -> web.Response:
    """``DELETE /api/training/<job>``: cancel the job (its whole process group); 401 without the token."""
    runner = request.app[KEY_JOBS]
    job = runner.get(request.match_info["job"])
    if job is None or job.kind != _kind(request):
        return _error(404, f"no {_kind(request)} job {request.match_info['job'][:40]!r}")
    job = await runner.cancel(job.job_id)
    log.info("%s job %s: %s (exit code %s)", job.kind, job.job_id, job.state, job.exit_code)
    return web.json_response(job.as_dict())


async def get_runs(request: web.Request) -> web.Response:
    """``GET /api/runs``: MLflow runs with test metrics beside every baseline; 503 when the tracking store fails."""
    reader = request.app[KEY_RUNS]
    try:
        runs = await asyncio.get_running_loop().run_in_executor(None, reader.list_runs)
    except Exception as exc:  # tracking store unreachable: say so, the page shows it
        text = scrub(f"{type(exc).__name__}: {exc}", reader.tracking_uri).splitlines()[0][:300]
        return _error(502, f"cannot read MLflow runs from {mask_uri(reader.tracking_uri)}: {text}")
    return web.json_response(runs)


async def get_run(request: web.Request) -> web.Response:
    """``GET /api/runs/<run_id>``: one run with per-epoch curves and the confusion matrix; 404 when unknown."""
    reader = request.app[KEY_RUNS]
    run_id = request.match_info["run_id"]
    try:
        run = await asyncio.get_running_loop().run_in_executor(None, reader.run_detail, run_id)
    except ValueError as exc:
        return _error(400, str(exc))
    except RunNotFound:
        return _error(404, f"no MLflow run {run_id!r}")
    except Exception as exc:  # tracking store unreachable or refused: said as for the list, masked
        text = scrub(f"{type(exc).__name__}: {exc}", reader.tracking_uri).splitlines()[0][:300]
        return _error(502, f"cannot read MLflow run {run_id!r} from {mask_uri(reader.tracking_uri)}: {text}")
    return web.json_response(run)
