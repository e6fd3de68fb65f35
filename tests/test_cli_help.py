"""Every command's ``--help`` states each option's default once (issue 10, Deliver 1).

Each entry point the guide and README name is asked for ``--help`` in-process (its
``main(["--help"])``, which the top-level scripts and ``python -m`` modules call). An
option's entry may mention its default once, and a default that is a number or a path
is not restated elsewhere in the help (an epilog repeating it would go stale, or say
something different, when the option's default changes).
"""

from __future__ import annotations

import re

import pytest

from backend.apps import bot, label, live_report, migrate, mlflow_ui, train, web

COMMANDS = {
    "python -m backend.main": bot.main,
    "preprocessing_add_future_labels_parquet.py": label.main_parquet,
    "preprocessing_add_future_labels.py": label.main_legacy,
    "migrate_legacy_to_parquet.py": migrate.main,
    "python -m backend.ml_engine.training_orchestrator": train.main,
    "python -m backend.web": web.main,
    "python -m backend.apps.live_report": live_report.main,
    "python -m backend.apps.mlflow_ui": mlflow_ui.main,
}
# "(default: 3.0)", "(default 50; ...", "(default: 10,30,60)" -> the value
_DEFAULT = re.compile(r"\bdefault:? ([^;)\s]+)")


def _help(main, capsys, monkeypatch) -> str:
    monkeypatch.setenv("COLUMNS", "100")
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    return capsys.readouterr().out


def _split(text: str) -> tuple[list[str], list[str]]:
    """(option entries, other paragraphs): each whitespace-joined; the usage lines are left out."""
    entries: list[list[str]] = []
    prose: list[list[str]] = [[]]
    current: list[str] | None = None
    for line in text.split("\n\n", 1)[1].splitlines():
        if re.match(r"^ {2}-", line):
            current = [line]
            entries.append(current)
        elif current is not None and line.startswith(" " * 6) and line.strip():
            current.append(line)
        else:
            current = None
            if line.strip():
                prose[-1].append(line)
            elif prose[-1]:
                prose.append([])
    return [" ".join(" ".join(e).split()) for e in entries], [" ".join(" ".join(p).split()) for p in prose if p]


@pytest.mark.parametrize("command", list(COMMANDS))
def test_help_states_each_default_once(command, capsys, monkeypatch):
    text = _help(COMMANDS[command], capsys, monkeypatch)
    entries, prose = _split(text)
    assert len(entries) >= 2, text  # at least --help and one option were found
    about_defaults = [p for p in prose if re.search(r"(?i)\bdefaults?\b", p)]
    for entry in entries:
        assert len(re.findall(r"\bdefault\b", entry)) <= 1, f"{command}: {entry}"
        for value in _DEFAULT.findall(entry):
            value = value.rstrip(",.")
            if not re.search(r"[0-9/]", value):
                continue  # a word ("all", "none") may well recur in other sense
            token = re.compile(rf"(?<![\w.,/-]){re.escape(value)}(?![\w,/-])")
            for paragraph in about_defaults:
                assert not token.search(paragraph), f"{command}: default {value!r} of {entry!r} restated in {paragraph!r}"
