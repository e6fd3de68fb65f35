"""The import-layer contracts of DESIGN.md §6.1 hold (``lint-imports`` reading ``.importlinter``).

Run as a test so that CI, which runs exactly the README's test command, checks them.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def test_import_contracts_are_kept():
    # The venv's own entry point, next to the interpreter running the tests.
    lint_imports = Path(sys.executable).parent / "lint-imports"
    assert lint_imports.exists(), f"{lint_imports} is missing: run `bash scripts/setup.sh dev`"
    assert (REPO_ROOT / ".importlinter").is_file()
    # With no argument lint-imports reads .importlinter from the current directory.
    result = subprocess.run(
        [str(lint_imports), "--no-cache"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, f"lint-imports failed:\n{result.stdout}\n{result.stderr}"
    assert " 0 broken" in result.stdout, result.stdout
