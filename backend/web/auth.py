"""The API token: where it comes from, how it is checked, and how failures are counted.

The token comes from ``LOBBOT_API_TOKEN``; without it one is generated and written to
``<data_dir>/api_token`` (mode 0600), or read back from there when a valid one exists, so
a restart does not log the page out. The token is never logged, returned or put on a
command line; ``describe_token`` says where it came from without showing it.
"""

from __future__ import annotations

import hmac
import os
import re
import secrets
import weakref
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import Counter

TOKEN_ENV = "LOBBOT_API_TOKEN"
TOKEN_FILE = "api_token"
_TOKEN_RE = re.compile(r"^[A-Za-z0-9_\-.~+/=]{16,512}\Z")


class TokenError(ValueError):
    """The configured token is unusable (too short, odd characters)."""


@dataclass(frozen=True)
class ApiToken:
    """The secret and where it came from (``env`` or the file path). ``repr`` hides the value."""

    value: str
    source: str

    def __repr__(self) -> str:
        return f"ApiToken(source={self.source!r})"

    def matches(self, presented: str | None) -> bool:
        """Constant-time comparison with a presented token; ``None`` never matches."""
        if not presented:
            return False
        return hmac.compare_digest(presented.encode("utf-8", "replace"), self.value.encode("utf-8"))


def load_or_create_token(data_dir: Path, environ: dict | None = None) -> ApiToken:
    """The token from ``LOBBOT_API_TOKEN``, else from / into ``<data_dir>/api_token`` (0600).

    Raises:
        TokenError: ``LOBBOT_API_TOKEN`` is set but shorter than 16 characters or holds
            characters other than letters, digits and ``_-.~+/=``.
        OSError: the token file cannot be written.
    """
    env = os.environ if environ is None else environ
    given = env.get(TOKEN_ENV)
    if given:
        if not _TOKEN_RE.match(given):
            raise TokenError(
                f"{TOKEN_ENV} must be 16-512 characters of letters, digits and _-.~+/= "
                "(generate one with: python -c 'import secrets; print(secrets.token_urlsafe(32))')"
            )
        return ApiToken(given, "env")
    path = Path(data_dir) / TOKEN_FILE
    try:
        st = path.stat()
        text = path.read_text().strip()
        if (st.st_mode & 0o077) == 0 and _TOKEN_RE.match(text):
            return ApiToken(text, str(path))
    except (FileNotFoundError, UnicodeDecodeError):
        pass
    value = secrets.token_urlsafe(32)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{TOKEN_FILE}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, (value + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return ApiToken(value, str(path))


def describe_token(token: ApiToken) -> str:
    """One log line saying where the token is, never what it is."""
    if token.source == "env":
        return f"API token: from ${TOKEN_ENV}"
    return f"API token: in {token.source} (mode 0600); the page asks for it once per browser session"


def bearer(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, else ``None``."""
    if not header:
        return None
    scheme, _, rest = header.partition(" ")
    if scheme.lower() != "bearer" or not rest.strip():
        return None
    return rest.strip()


_failures: "weakref.WeakKeyDictionary[object, Counter]" = weakref.WeakKeyDictionary()


def auth_failure_counter(metrics) -> Counter:
    """``lobbot_api_auth_failures_total{reason}`` on ``metrics``' registry, registered once.

    Kept here so the web app adds its own counter to the bot's one registry without the
    registry module knowing about the web app.
    """
    counter = _failures.get(metrics)
    if counter is None:
        counter = Counter(
            "lobbot_api_auth_failures",
            "API requests refused for a missing or wrong bearer token, by reason.",
            ["reason"],
            registry=metrics.registry,
        )
        _failures[metrics] = counter
    return counter
