"""Console helpers of the offline apps (label, migrate, train): the guide's section layout, safe symbols, progress.

The check and cross marks fall back to ``+`` and ``x`` on a terminal whose encoding
cannot show them (e.g. a Windows code page), so output never raises UnicodeEncodeError.
"""

from __future__ import annotations

import sys
from typing import Iterable, TypeVar

from tqdm import tqdm

T = TypeVar("T")
WIDE = "=" * 80
NARROW = "=" * 70


def _can_encode(text: str) -> bool:
    try:
        text.encode(sys.stdout.encoding or "ascii")
    except (UnicodeEncodeError, LookupError):
        return False
    return True


#: marks of success, failure and "already there"
OK = "✓" if _can_encode("✓✗") else "+"
FAIL = "✗" if _can_encode("✓✗") else "x"
SKIP = "="


def out(line: str = "") -> None:
    """Print one line to stdout."""
    # tqdm.write keeps an active progress bar intact below the printed line.
    tqdm.write(line, file=sys.stdout)


def header(title: str) -> None:
    """A title line followed by an 80-wide rule (the guide's section start)."""
    out(title)
    out(WIDE)


def section(title: str) -> None:
    """A blank line and a 70-wide ruled title (a per-symbol section)."""
    out()
    out(NARROW)
    out(title)
    out(NARROW)


def footer() -> None:
    """An 80-wide rule closing a section."""
    out(WIDE)


def pct(part: int, whole: int) -> str:
    """``part / whole`` as a percentage with one decimal, ``0.0%`` when ``whole`` is 0."""
    return f"{(100.0 * part / whole) if whole else 0.0:.1f}%"


def progress(items: Iterable[T], *, total: int | None = None, desc: str, enabled: bool = True, unit: str = "it"):
    """``items`` wrapped in a tqdm bar on stderr; hidden when disabled or when stderr is not a terminal."""
    return tqdm(items, total=total, desc=desc, unit=unit, disable=None if enabled else True, leave=False, file=sys.stderr)
