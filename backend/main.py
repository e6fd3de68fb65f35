"""The bot's entry point: ``python -m backend.main`` (see ``backend/apps/bot.py`` for the options)."""

from __future__ import annotations

import sys

from backend.apps.bot import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
