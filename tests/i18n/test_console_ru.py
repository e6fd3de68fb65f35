"""Russian console lines through gettext: the language choice, the catalog, and the guide's lines in real runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from backend import i18n
from backend.i18n import compile as catalog

REPO = Path(__file__).resolve().parents[2]


def _env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOBBOT_", "MLFLOW_", "LC_", "LANG"))}
    env.pop("DATA_DIR", None)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def _run(*cmd: str, env: dict, timeout: float = 300) -> subprocess.CompletedProcess:
    res = subprocess.run([sys.executable, *cmd], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    return res


def test_language_choice():
    assert i18n.resolve(None, {"LANG": "ru_RU.UTF-8"}) == "ru"
    assert i18n.resolve(None, {"LANG": "en_US.UTF-8", "LC_ALL": "ru_RU.UTF-8"}) == "ru"
    assert i18n.resolve(None, {"LANG": "C.UTF-8"}) == "en"
    assert i18n.resolve(None, {}) == "en"
    assert i18n.resolve(None, {"LANG": "ru_RU.UTF-8", "LOBBOT_LANG": "en"}) == "en"
    assert i18n.resolve("ru", {"LOBBOT_LANG": "en"}) == "ru"
    with pytest.raises(ValueError, match="LOBBOT_LANG must be one of en, ru"):
        i18n.resolve(None, {"LOBBOT_LANG": "de"})
    try:
        assert i18n.setup("ru") == "ru" and i18n._("MLDataCollector statistics:") == "MLDataCollector статистика:"
        assert i18n._("not in the catalog") == "not in the catalog"
    finally:
        i18n.setup("en")
    assert i18n._("MLDataCollector statistics:") == "MLDataCollector statistics:"


def test_compiled_catalogs_match_their_sources():
    pytest.importorskip("babel", reason="babel is a dev dependency (pip install -e .[dev])")
    assert catalog.catalogs(), "no .po catalog found"
    assert catalog.main(["--check"]) == 0, "run: python -m backend.i18n.compile"


def test_bot_migration_and_labelling_print_the_guides_russian_lines(tmp_path):
    data = str(tmp_path / "data")
    ru = _env(LANG="ru_RU.UTF-8")
    bot = _run("-m", "backend.main", "--source", "sim", "--fast", "--duration", "2h", "--symbols", "BTCUSDT",
               "--data-dir", data, "--stats-interval", "600", "--max-samples-per-file", "100", env=ru)
    assert "MLDataCollector статистика: collected=" in bot.stdout  # what the guide tells users to grep
    assert "warmup=done" in bot.stdout and "Все собранные семплы записаны на диск." in bot.stdout
    assert "Пропущено семплов по причинам: warming_up=" in bot.stdout  # the summary's own lines too
    en = _run("-m", "backend.main", "--source", "sim", "--max-iterations", "0", "--data-dir", data, env=_env(LANG="ru_RU.UTF-8", LOBBOT_LANG="en"))
    assert "MLDataCollector statistics: collected=" in en.stdout

    mig = _run("migrate_legacy_to_parquet.py", "--data-dir", data, "--dry-run", "--no-progress", "--lang", "ru", env=_env())
    assert "МИГРАЦИЯ: Legacy → Feature Store (Parquet)" in mig.stdout
    assert "Найдено символов: 1" in mig.stdout and "ИТОГИ МИГРАЦИИ" in mig.stdout

    lab = _run("preprocessing_add_future_labels_parquet.py", "--data-dir", data, "--no-progress", env=_env(LOBBOT_LANG="ru"))
    assert "PREPROCESSING: Добавление Future Labels (Parquet)" in lab.stdout
    assert "ИТОГИ PREPROCESSING" in lab.stdout and "✓ Помечено future labels: " in lab.stdout
    assert "Файлов перезаписано: " in lab.stdout and "Баланс классов (порог ±" in lab.stdout


def test_training_prints_its_title_in_russian(tmp_path):
    # an empty store: training stops with its data error, after its title line
    res = subprocess.run([sys.executable, "-m", "backend.ml_engine.training_orchestrator", "--data-dir", str(tmp_path),
                          "--epochs", "1", "--lang", "ru"], cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
    assert "ОБУЧЕНИЕ: модель направления движения цены по стакану" in res.stdout, res.stdout[-2000:] + res.stderr[-2000:]
