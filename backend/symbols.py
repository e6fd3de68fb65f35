"""Symbol validation: a symbol reaches file paths, so it is checked before use."""

from __future__ import annotations

import re

#: matched in full (``fullmatch``): ``$`` would also accept a trailing newline
SYMBOL_RE = re.compile(r"[A-Z0-9]{2,30}")


class InvalidSymbolError(ValueError):
    """A symbol is not a plain exchange ticker (2-30 characters of ``A-Z`` and ``0-9``)."""


def validate_symbol(symbol: str) -> str:
    """Return ``symbol`` if it is a plain exchange ticker such as ``BTCUSDT``.

    Anything else (lower case, separators, ``..``, slashes) is rejected, so a
    symbol can safely become a folder name.

    Raises:
        InvalidSymbolError: ``symbol`` is not a string matching ``SYMBOL_RE``.
    """
    if not isinstance(symbol, str) or not SYMBOL_RE.fullmatch(symbol):
        raise InvalidSymbolError(f"invalid symbol {symbol!r}: expected 2-30 characters of A-Z and 0-9, e.g. BTCUSDT")
    return symbol
