"""``python -m backend.i18n.compile [--check]``: compile every ``lobbot.po`` into its ``lobbot.mo``.

Uses Babel's reader and writer (a dev dependency). ``--check`` writes nothing and exits 1
when a committed ``.mo`` differs from what its ``.po`` compiles to.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

from backend.i18n import DOMAIN, LOCALE_DIR


def compiled(po: Path) -> bytes:
    """The ``.mo`` bytes of one ``.po`` file; raises ``ValueError`` on a catalog error."""
    from babel.messages.mofile import write_mo
    from babel.messages.pofile import read_po

    with po.open("rb") as fh:
        catalog = read_po(fh, abort_invalid=True)
    errors = [f"{po}: {msg.id!r}: {err}" for msg, errs in catalog.check() for err in errs]
    if errors:
        raise ValueError("; ".join(errors))
    buf = io.BytesIO()
    write_mo(buf, catalog, use_fuzzy=False)
    return buf.getvalue()


def catalogs() -> list[Path]:
    return sorted(LOCALE_DIR.glob(f"*/LC_MESSAGES/{DOMAIN}.po"))


def main(argv: list[str] | None = None) -> int:
    check = "--check" in (sys.argv[1:] if argv is None else argv)
    stale = []
    for po in catalogs():
        data = compiled(po)
        mo = po.with_suffix(".mo")
        if check:
            if not mo.exists() or mo.read_bytes() != data:
                stale.append(mo)
        else:
            mo.write_bytes(data)
            print(f"{po} -> {mo}")
    if stale:
        print("out of date (run python -m backend.i18n.compile): " + ", ".join(map(str, stale)), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
