import contextlib
import sys
from pathlib import Path

import pytest
from aiohttp import web

sys.path.insert(0, str(Path(__file__).parent))

from helpers import TOKEN, simulate_and_label  # noqa: E402

from backend.metrics import Metrics  # noqa: E402
from backend.ml_engine.training_orchestrator.tracking import default_tracking_uri  # noqa: E402
from backend.web.app import WebSettings, create_app  # noqa: E402
from backend.web.auth import ApiToken  # noqa: E402


@pytest.fixture
async def serve():
    """``await serve(data_dir, metrics=..., status_provider=..., tracking_uri=..., host=...)`` -> (base URL, app)
    of a real server bound to ``host`` (default 127.0.0.1; the URL is on 127.0.0.1 either way); the
    tracking URI defaults to the SQLite store under ``data_dir``."""
    runners = []

    async def _serve(data_dir: Path, **kwargs):
        host = kwargs.pop("host", "127.0.0.1")
        settings = WebSettings(
            data_dir=Path(data_dir),
            token=ApiToken(TOKEN, "test"),
            tracking_uri=kwargs.pop("tracking_uri", None) or default_tracking_uri(Path(data_dir)),
            events_interval_s=kwargs.pop("events_interval_s", 0.3),
            cancel_grace_s=1.0,
            mlflow_ui_url=kwargs.pop("mlflow_ui_url", None),
            host=host,
        )
        app = create_app(settings, metrics=kwargs.pop("metrics", None) or Metrics(), **kwargs)
        runner = web.AppRunner(app, shutdown_timeout=2)
        await runner.setup()
        site = web.TCPSite(runner, host, 0)
        await site.start()
        runners.append(runner)
        port = site._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}", app

    yield _serve
    for r in runners:
        with contextlib.suppress(Exception):
            await r.cleanup()


@pytest.fixture(scope="session")
def labelled_dir(tmp_path_factory):
    """Simulated bot (6 h, two symbols) + labeller: the data a user trains on."""
    d = tmp_path_factory.mktemp("labelled")
    simulate_and_label(d)
    return d
