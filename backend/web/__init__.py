"""The ML Management web app: collector status, data audit, training and labelling jobs.

``create_app(settings, metrics=..., status_provider=...)`` builds the aiohttp application;
the bot mounts it on its own event loop (``--api-port``), ``python -m backend.web`` serves
it without a bot. The JSON API, ``/metrics`` and ``/health`` follow DESIGN.md §6.3; the page
at ``/`` reads nothing but that API. See ``docs/web.md``.
"""

from backend.web.app import WebSettings, create_app

__all__ = ["WebSettings", "create_app"]
