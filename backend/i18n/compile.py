"""``python -m backend.i18n.compile [--check]``: compile every ``lobbot.po`` into its ``lobbot.mo``.

Uses Babel's reader and writer (a dev dependency). ``--check`` writes nothing and exits 1
when a committed ``.mo`` does not hold exactly the messages of its ``.po``.
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


def messages(po: Path) -> dict[str, str]:
    """The translated messages of one ``.po`` (id -> text), header left out."""
    from babel.messages.pofile import read_po

    with po.open("rb") as fh:
        return {m.id: m.string for m in read_po(fh) if m.id and m.string and not m.fuzzy}


def compiled_messages(mo: Path) -> dict[str, str]:
    """The messages a committed ``.mo`` holds, as gettext reads them, header left out."""
    import gettext

    with mo.open("rb") as fh:
        return {k: v for k, v in gettext.GNUTranslations(fh)._catalog.items() if k}


def catalogs() -> list[Path]:
    """Every ``.po`` catalog under the locale folder."""
    return sorted(LOCALE_DIR.glob(f"*/LC_MESSAGES/{DOMAIN}.po"))


def main(argv: list[str] | None = None) -> int:
    """Compile each ``.po`` to its ``.mo`` (Babel); exit 1 when one fails to parse."""
    check = "--check" in (sys.argv[1:] if argv is None else argv)
    stale = []
    for po in catalogs():
        data = compiled(po)  # also checks the catalog (placeholders, syntax)
        mo = po.with_suffix(".mo")
        if check:
            if not mo.exists() or compiled_messages(mo) != messages(po):
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
