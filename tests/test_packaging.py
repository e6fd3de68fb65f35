"""Every non-Python file the package needs at run time is declared as package data.

Editable installs and checkouts read the files in place, so a missing declaration only
shows in a built wheel (a page with no script, English-only output); this test catches it
from the declaration itself, without building a wheel.
"""

from __future__ import annotations

import fnmatch
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _declared() -> dict[str, list[str]]:
    with open(REPO / "pyproject.toml", "rb") as fh:
        return tomllib.load(fh)["tool"]["setuptools"]["package-data"]


def _covered(path: Path, declared: dict[str, list[str]]) -> bool:
    for package, patterns in declared.items():
        root = REPO / package.replace(".", "/")
        if root in path.parents:
            rel = path.relative_to(root).as_posix()
            # setuptools globs do not cross "/" with "*": match segment by segment
            if any(fnmatch.fnmatch(rel, p) and rel.count("/") == p.count("/") for p in patterns):
                return True
    return False


def test_static_files_and_catalogues_are_package_data():
    declared = _declared()
    needed = [p for d in ("backend/web/static", "backend/i18n/locale") for p in (REPO / d).rglob("*") if p.is_file()]
    assert any(p.suffix == ".mo" for p in needed) and any(p.name == "index.html" for p in needed)
    missing = [str(p.relative_to(REPO)) for p in needed if not _covered(p, declared)]
    assert not missing, f"not declared in [tool.setuptools.package-data]: {missing}"
