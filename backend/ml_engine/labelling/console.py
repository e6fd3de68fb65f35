"""Console helpers shared by the offline scripts: the guide's section layout, safe symbols, progress."""

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


OK = "✓" if _can_encode("✓✗") else "+"
FAIL = "✗" if _can_encode("✓✗") else "x"
SKIP = "="


def out(line: str = "") -> None:
    # tqdm.write keeps an active progress bar intact below the printed line.
    tqdm.write(line, file=sys.stdout)


def header(title: str) -> None:
    out(title)
    out(WIDE)


def section(title: str) -> None:
    out()
    out(NARROW)
    out(title)
    out(NARROW)


def footer() -> None:
    out(WIDE)


def pct(part: int, whole: int) -> str:
    return f"{(100.0 * part / whole) if whole else 0.0:.1f}%"


def progress(items: Iterable[T], *, total: int | None = None, desc: str, enabled: bool = True, unit: str = "it"):
    """A tqdm bar on stderr; hidden when disabled or when stderr is not a terminal."""
    return tqdm(items, total=total, desc=desc, unit=unit, disable=None if enabled else True, leave=False, file=sys.stderr)
