from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from backend.config import REPO_ROOT, Settings, configure, get_settings
from backend.ml_engine.feature_store.feature_store import get_feature_store
from backend.symbols import InvalidSymbolError, validate_symbol


def test_data_dir_defaults_to_repo_data_independent_of_cwd(tmp_path, monkeypatch):
    monkeypatch.delenv("DATA_DIR", raising=False)
    monkeypatch.delenv("LOBBOT_DATA_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    out = subprocess.run(
        [sys.executable, "-c", "from backend.config import Settings; print(Settings().data_dir)"],
        capture_output=True, text=True, check=True, cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if k not in ("DATA_DIR", "LOBBOT_DATA_DIR")},
    )
    assert Path(out.stdout.strip()) == REPO_ROOT / "data"


def test_environment_with_and_without_prefix(monkeypatch, tmp_path):
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "a"))
    monkeypatch.setenv("LOBBOT_INTERVAL", "1.5")
    monkeypatch.setenv("LOBBOT_SYMBOLS", "BTCUSDT, 4USDT")
    monkeypatch.setenv("BYBIT_REST_URL", "http://127.0.0.1:9999")
    s = Settings()
    assert s.data_dir == tmp_path / "a"
    assert s.interval == 1.5
    assert s.symbols == ["BTCUSDT", "4USDT"]
    assert s.bybit_rest_url == "http://127.0.0.1:9999"
    monkeypatch.setenv("LOBBOT_DATA_DIR", str(tmp_path / "b"))
    assert Settings().data_dir == tmp_path / "b"


def test_cli_overrides_win_and_reset_the_store(monkeypatch, tmp_path):
    monkeypatch.setenv("LOBBOT_INTERVAL", "1.5")
    s = configure(interval=0.5, data_dir=tmp_path, seed=None)
    assert s.interval == 0.5 and get_settings() is s
    assert get_feature_store().root == tmp_path / "feature_store" / "offline"
    configure(data_dir=tmp_path / "other")
    assert get_feature_store().root == tmp_path / "other" / "feature_store" / "offline"


def test_relative_data_dir_is_relative_to_the_repo():
    assert Settings(data_dir="somewhere").data_dir == REPO_ROOT / "somewhere"


@pytest.mark.parametrize("bad", ["btcusdt", "../etc", "BTC/USDT", "B", "A" * 31, "", "BTC USDT"])
def test_bad_symbols_are_rejected(bad):
    with pytest.raises(InvalidSymbolError):
        validate_symbol(bad)
    with pytest.raises(ValidationError):
        Settings(symbols=bad)


def test_dotenv_file_is_read(monkeypatch, tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text("LOBBOT_COLLECTION_INTERVAL=7\n")
    monkeypatch.delenv("LOBBOT_COLLECTION_INTERVAL", raising=False)
    assert Settings(_env_file=env_file).collection_interval == 7
