"""The web app inside the bot: ``python -m backend.main ... --api-port 8765``.

``BotServer`` is one of the bot's services (``Bot(services=...)``): started on the bot's
event loop before the source connects, so ``/health`` answers (503 "down") while the
bot still waits for the exchange, and stopped after the run summary is made. The page
reads the bot's own ``Metrics`` registry and a ``MetricsStatus`` built from the bot.
"""

from __future__ import annotations

import logging

from aiohttp import web

from backend.engine.bot import StartupError
from backend.web.address import exposure_warning, page_url
from backend.web.app import WebSettings, create_app
from backend.web.status import MetricsStatus

__all__ = ["BotServer", "PortUnavailable"]

log = logging.getLogger("lobbot.web")


class PortUnavailable(StartupError):
    """``--api-port`` cannot be bound (taken, or not allowed): the bot ends with this one
    line and ``exit_code`` 2 (a bad argument: choose another port) before collecting."""

    exit_code = 2


class BotServer:
    """Serves ``create_app`` on ``host:port`` for the lifetime of a bot run.

    ``start`` raises ``PortUnavailable`` (a ``StartupError``) when the port cannot be bound
    (the bot then ends with that message before collecting anything); the page's address
    is logged only once the socket is bound.
    """

    def __init__(self, settings: WebSettings, port: int, shutdown_timeout_s: float = 2.0):
        self.settings = settings
        self.port = port
        self.shutdown_timeout_s = shutdown_timeout_s
        self.runner: web.AppRunner | None = None
        self.bound_port: int | None = None

    async def start(self, bot) -> None:
        """Bind the site on the running loop; raises ``PortUnavailable`` when the port cannot be bound."""
        s = bot.settings
        provider = MetricsStatus(
            bot.metrics, bot.symbols, s.source, lambda: bot.source_state,
            max_book_age_s=float(s.max_book_age_s), warmup=bot.warmup_progress, live_age=bot.book_age_s,
        )
        live = next((svc.live_view for svc in getattr(bot, "services", ()) if hasattr(svc, "live_view")), None)
        app = create_app(self.settings, metrics=bot.metrics, status_provider=provider, live_provider=live)
        runner = web.AppRunner(app, shutdown_timeout=self.shutdown_timeout_s, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self.settings.host, self.port)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise PortUnavailable(f"cannot serve the web app on {self.settings.host}:{self.port}: {exc.strerror or exc}; "
                                  "choose another --api-port") from None
        self.runner = runner
        self.bound_port = site._server.sockets[0].getsockname()[1] if site._server and site._server.sockets else self.port
        log.info("ML Management page: %s (/health, /metrics, API token: %s)",
                 page_url(self.settings.host, self.bound_port), "from $LOBBOT_API_TOKEN"
                 if self.settings.token.source == "env" else f"in {self.settings.token.source}")
        warning = exposure_warning(self.settings.host, self.bound_port)
        if warning:
            log.warning("%s", warning.removeprefix("warning: "))

    async def stop(self) -> None:
        """Cancel a running job and close the site; safe to call twice."""
        if self.runner is not None:
            runner, self.runner = self.runner, None
            await runner.cleanup()
