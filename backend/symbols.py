"""Symbol validation (a symbol reaches file paths, so it is checked before use) and ``--symbols @FILE`` lists."""

from __future__ import annotations

import os
import re
from pathlib import Path

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


class SymbolsFileError(ValueError):
    """A ``--symbols @FILE`` list cannot be used: the file is unreadable, empty, or a line is not a symbol."""


def read_symbols_file(path: str | os.PathLike) -> list[str]:
    """The symbols listed in ``path``, one per line, in file order.

    Blank lines and ``#`` comments (whole lines or the rest of a line) are ignored;
    surrounding spaces are stripped; each symbol must pass ``validate_symbol``.

    Raises:
        SymbolsFileError: one line naming the file (and the line number for a bad
            or repeated entry) and what is wrong.
    """
    try:
        text = Path(path).read_text(encoding="utf-8-sig")  # Windows editors save a BOM
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise SymbolsFileError(f"symbols file {path}: cannot read it ({reason})") from None
    out: list[str] = []
    first_line: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        entry = line.split("#", 1)[0].strip()
        if not entry:
            continue
        if not SYMBOL_RE.fullmatch(entry):
            raise SymbolsFileError(f"symbols file {path}, line {number}: {entry!r} is not a symbol "
                                   "(expected 2-30 characters of A-Z and 0-9, e.g. BTCUSDT, one per line)")
        if entry in first_line:
            raise SymbolsFileError(f"symbols file {path}, line {number}: {entry} repeats line {first_line[entry]}")
        first_line[entry] = number
        out.append(entry)
    if not out:
        raise SymbolsFileError(f"symbols file {path}: no symbols in it (one per line; # starts a comment)")
    return out
