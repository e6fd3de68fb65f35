"""Console language of the apps: English, or Russian through gettext catalogs.

The language is chosen once per process by ``setup(lang)``: an explicit ``--lang``
wins, then ``$LOBBOT_LANG``, then the locale (``$LC_ALL``, ``$LC_MESSAGES``, ``$LANG``:
``ru_RU.UTF-8`` means Russian); anything else is English. ``_()`` translates one message
(the English text is the message id, so untranslated text stays English).

Catalogs: ``backend/i18n/locale/<lang>/LC_MESSAGES/lobbot.po`` are the sources; the
compiled ``lobbot.mo`` beside each is committed, so a clean clone needs nothing to
build. After editing a ``.po`` run ``python -m backend.i18n.compile`` (needs the
``babel`` dev dependency); ``tests/i18n`` fails when a ``.mo`` is out of date.
"""

from __future__ import annotations

import gettext
import os
from pathlib import Path
from typing import Mapping

__all__ = ["DOMAIN", "LANGUAGES", "LOCALE_DIR", "_", "add_lang_argument", "current", "resolve", "setup", "setup_or_exit"]

DOMAIN = "lobbot"
LOCALE_DIR = Path(__file__).resolve().parent / "locale"
LANGUAGES = ("en", "ru")

_translations: gettext.NullTranslations = gettext.NullTranslations()
_current = "en"


def resolve(lang: str | None = None, environ: Mapping[str, str] | None = None) -> str:
    """The language to use: ``lang`` if given, else ``$LOBBOT_LANG``, else the locale's; "en" or "ru".

    Raises ``ValueError`` for an explicit ``lang`` (or ``$LOBBOT_LANG``) other than en/ru.
    """
    env = os.environ if environ is None else environ
    for given, where in ((lang, "--lang"), (env.get("LOBBOT_LANG"), "LOBBOT_LANG")):
        if given:
            code = given.strip().lower().replace("-", "_").split("_")[0]
            if code not in LANGUAGES:
                raise ValueError(f"{where} must be one of {', '.join(LANGUAGES)}, got {given!r}")
            return code
    for var in ("LC_ALL", "LC_MESSAGES", "LANG"):
        value = env.get(var)
        if value:  # the first one set decides, as in POSIX
            return "ru" if value.lower().startswith("ru") else "en"
    return "en"


def setup(lang: str | None = None, environ: Mapping[str, str] | None = None) -> str:
    """Choose the process's console language (see ``resolve``); returns it."""
    global _translations, _current
    _current = resolve(lang, environ)
    if _current == "en":
        _translations = gettext.NullTranslations()
    else:
        _translations = gettext.translation(DOMAIN, localedir=str(LOCALE_DIR), languages=[_current])
    return _current


def current() -> str:
    """The language chosen by the last ``setup`` ("en" before any)."""
    return _current


def _(message: str) -> str:
    """``message`` in the chosen language (itself when English or untranslated)."""
    return _translations.gettext(message)


def add_lang_argument(parser) -> None:
    """Add ``--lang en|ru`` to an ``argparse`` parser (default: ``$LOBBOT_LANG``, else the locale)."""
    parser.add_argument("--lang", choices=LANGUAGES, default=None,
                        help="console language (default: $LOBBOT_LANG, else Russian under a ru_* locale, else English)")


def setup_or_exit(parser, lang: str | None) -> str:
    """``setup(lang)``; a bad ``$LOBBOT_LANG`` ends the program through ``parser.error`` (exit 2)."""
    try:
        return setup(lang)
    except ValueError as exc:
        parser.error(str(exc))
        raise  # unreachable: parser.error exits
