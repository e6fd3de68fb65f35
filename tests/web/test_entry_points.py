"""What ``python -m backend.web`` and the bot's ``--api-port`` print around binding the port."""

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from backend.web.address import exposure_warning, is_loopback, page_url

REPO = Path(__file__).resolve().parents[2]


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOBBOT_") and k != "DATA_DIR"}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def taken_port():
    """A port something already listens on (127.0.0.1 and every interface alike)."""
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        s.listen()
        yield s.getsockname()[1]


@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0"])
def test_standalone_taken_port_prints_one_error_line_and_no_banner(tmp_path, taken_port, host):
    proc = subprocess.run([sys.executable, "-m", "backend.web", "--data-dir", str(tmp_path), "--port", str(taken_port),
                           "--api-host", host], cwd=REPO, env=_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stdout == ""  # no banner, no token line
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: cannot listen on {host}:{taken_port}: "), proc.stderr
    assert "address already in use" in lines[0] and "--port" in lines[0]


def test_standalone_on_every_interface_prints_a_usable_address_once_bound(tmp_path):
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "backend.web", "--data-dir", str(tmp_path), "--port", str(port),
                             "--api-host", "0.0.0.0"], cwd=REPO, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        banner = [proc.stdout.readline() for _ in range(3)]
        # the banner comes once the socket is bound: the address it names answers at once
        assert banner[0].startswith(f"ML Management: http://127.0.0.1:{port}/ "), banner
        assert "0.0.0.0" not in banner[0]
        assert banner[1].startswith("API token: in "), banner
        assert banner[2].startswith("warning: the page is reachable from the network on every network interface"), banner
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10) as r:
            assert json.loads(r.read()) == {"status": "ok"}
        with pytest.raises(urllib.error.HTTPError) as exc:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/config", timeout=10)
        assert exc.value.code == 401
    finally:
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, rest
    assert "Traceback" not in rest


def test_bot_taken_api_port_ends_with_one_line_before_collecting(tmp_path, taken_port):
    proc = subprocess.run([sys.executable, "-m", "backend.main", "--data-dir", str(tmp_path), "--source", "sim",
                           "--symbols", "BTCUSDT", "--api-port", str(taken_port)],
                          cwd=REPO, env=_env(), capture_output=True, text=True, timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert "ML Management page" not in out and "Traceback" not in out, out
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"cannot serve the web app on 127.0.0.1:{taken_port}: "), out
    assert "choose another --api-port" in lines[0]


def test_lang_help_says_what_the_page_does():
    """``--lang en`` does not force English: the page follows the browser unless the server says ru."""
    from backend.apps.web import build_parser

    text = " ".join(build_parser().format_help().split())
    assert "ru shows Russian; en (the default unless $LOBBOT_LANG=ru) follows the browser's language" in text
    i18n = (REPO / "backend" / "web" / "static" / "i18n.js").read_text()
    assert 'if (serverLang === "ru") return "ru";' in i18n and "navigator.language" in i18n
    docs = " ".join((REPO / "docs" / "web.md").read_text().split())
    assert "with `--lang en` or no `--lang` it follows the browser's language" in docs


@pytest.mark.parametrize(
    "host, url, loopback",
    [
        ("127.0.0.1", "http://127.0.0.1:8765/", True),
        ("localhost", "http://localhost:8765/", True),
        ("::1", "http://[::1]:8765/", True),
        ("0.0.0.0", "http://127.0.0.1:8765/", False),
        ("::", "http://[::1]:8765/", False),
        ("192.168.1.20", "http://192.168.1.20:8765/", False),
        ("fe80::1", "http://[fe80::1]:8765/", False),
    ],
)
def test_page_url_and_warning(host, url, loopback):
    assert page_url(host, 8765) == url
    assert is_loopback(host) is loopback
    warning = exposure_warning(host, 8765)
    assert (warning is None) is loopback
    if warning and host == "192.168.1.20":
        assert "at http://192.168.1.20:8765/" in warning

