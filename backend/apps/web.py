"""``python -m backend.web``: the ML Management web app without a bot.

Argument parsing and printing only; the app is ``backend.web.create_app``. Serves until
SIGINT/SIGTERM, then cancels a running job and exits 0.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from backend.config import add_data_dir_argument

DEFAULT_PORT = 8765

EPILOG = """
The page: open http://127.0.0.1:PORT/ in a browser. Starting or cancelling a job asks
for the API token once per browser session: it is $LOBBOT_API_TOKEN, else the content of
<data-dir>/api_token (created at the first start, mode 0600).

On a remote server leave --api-host alone (loopback only) and tunnel the port:
  ssh -N -L PORT:127.0.0.1:PORT user@server     then open http://127.0.0.1:PORT/
See docs/web.md.
"""


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m backend.web`` argument parser."""
    p = argparse.ArgumentParser(
        prog="python -m backend.web",
        description="ML Management web app: data audit, training and labelling jobs, MLflow runs, /metrics and /health.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_data_dir_argument(p)
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"TCP port (default {DEFAULT_PORT})")
    p.add_argument(
        "--api-host",
        default="127.0.0.1",
        help="address to bind (default 127.0.0.1; anything else makes every request but the page itself "
        "and /health need the token, and /health then shows only ok/degraded/down)",
    )
    p.add_argument("--feature-group", default=None, help="group shown by the Data panel (default: the configured one)")
    p.add_argument("--mlflow-ui-url", default=None, help="base URL of an MLflow UI you run, e.g. http://127.0.0.1:5000, for run links")
    p.add_argument("--lang", choices=("en", "ru"), default=None,
                   help="page language where the browser has saved no choice in the page's Language switch: "
                   "ru shows Russian; en (the default unless $LOBBOT_LANG=ru) follows the browser's language")
    return p


def _check_port(port: int) -> int:
    if not 1 <= port <= 65535:
        raise ValueError(f"--port must be between 1 and 65535, got {port}")
    return port


def _check_url(url: str | None) -> str | None:
    if url is None:
        return None
    if not url.startswith(("http://", "https://")) or any(c in url for c in "\"'<> "):
        raise ValueError(f"--mlflow-ui-url must be an http(s) URL such as http://127.0.0.1:5000, got {url!r}")
    return url.rstrip("/")


def main(argv: list[str] | None = None) -> int:
    """Serve the web app until SIGINT/SIGTERM; exit code 0, or 2 on bad arguments or a port that cannot be bound.

    The banner (URL, token location, and a warning off loopback) is printed only once the
    socket is bound; when it cannot be, one ``error:`` line and nothing else."""
    import os

    from aiohttp import web

    from pydantic import ValidationError

    from backend.config import configure, settings_error_text
    from backend.ml_engine.training_orchestrator.tracking import mask_uri, resolve_tracking
    from backend.web.address import exposure_warning, page_url
    from backend.web.app import WebSettings, create_app
    from backend.web.auth import TokenError, describe_token, load_or_create_token

    args = build_parser().parse_args(argv)
    try:
        _check_port(args.port)
        ui = _check_url(args.mlflow_ui_url)
        settings = configure(data_dir=args.data_dir)
        token = load_or_create_token(settings.data_dir)
    except ValidationError as exc:
        print(f"error: invalid settings: {settings_error_text(exc)}", file=sys.stderr)
        return 2
    except (ValueError, TokenError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    lang = args.lang or os.environ.get("LOBBOT_LANG", "en")
    lang = lang if lang in ("en", "ru") else "en"
    target = resolve_tracking(None, settings.mlflow_tracking_uri, settings.data_dir)
    web_settings = WebSettings(
        data_dir=Path(settings.data_dir),
        token=token,
        tracking_uri=target.uri,
        host=args.api_host,
        mlflow_ui_url=ui,
        feature_group=args.feature_group or settings.feature_store_group,
        lang=lang,
    )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    app = create_app(web_settings)

    def banner(_aiohttp_line: str) -> None:  # run_app calls it once every site is bound
        print(f"ML Management: {page_url(args.api_host, args.port)}  (data: {settings.data_dir}, MLflow: {mask_uri(target.uri)})")
        print(describe_token(token))
        warning = exposure_warning(args.api_host, args.port)
        if warning:
            print(warning)
        sys.stdout.flush()

    try:
        web.run_app(app, host=args.api_host, port=args.port, print=banner, handle_signals=True, shutdown_timeout=5)
    except OSError as exc:
        print(f"error: cannot listen on {args.api_host}:{args.port}: {exc.strerror or exc}; choose another --port",
              file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
