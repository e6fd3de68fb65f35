"""Database and HTTP URLs that may carry a password or token: parse once, connect and mask alike.

A URL is parsed here by the same parser as the library that will use it: SQLAlchemy's
``make_url`` for database URLs (MLflow hands its tracking URI to SQLAlchemy), ``yarl``
for HTTP and WebSocket URLs (aiohttp's own parser). The masked form and the list of
secrets to scrub from any text therefore come from exactly the parts the library will
send, so no part of a password or token can slip past the mask because two parsers
disagreed about where it ends.

A URL the library would split somewhere other than where the user meant (a raw ``@`` in
a password, or ``/ ? #`` in an HTTP password) is refused with ``CredentialError``, whose
message shows only the masked form and says how to percent-encode the password.

Typical use::

    parsed = parse_url(uri)           # raises CredentialError for an ambiguous URL
    engine = create_engine(uri)       # the library sees what parse_url saw
    log.info("using %s", parsed.masked)
    print(parsed.scrub(str(exc)))     # driver errors quote DSNs: scrub before showing
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import quote, quote_plus

__all__ = ["CredentialError", "ParsedURL", "mask_url", "parse_url", "scrub"]

MASK = "***"
#: query parameters whose values are secrets wherever they appear
_SECRET_KEYS = re.compile(r"(?i)(pass(word)?|pwd|token|secret|api[_-]?key|key|signature|sig|auth)")
_HTTP_SCHEMES = ("http", "https", "ws", "wss")
_DSN_PASSWORD = re.compile(r"(?i)(password\s*=\s*)('[^']*'|\"[^\"]*\"|\S+)")


class CredentialError(ValueError):
    """A URL whose credentials the library would read differently from what was meant; the
    message shows only the masked URL and how to fix it (percent-encode the password)."""


@dataclass(frozen=True)
class ParsedURL:
    """One parsed URL: ``kind`` ("database", "http" or "other"), ``masked`` (safe to print,
    log or store), ``has_secret``. ``scrub(text)`` removes every form of the secret from a
    text. The raw URL and the secrets never appear in ``repr`` or ``str``."""

    kind: str
    masked: str
    raw: str = field(repr=False)
    secrets: tuple[str, ...] = field(default=(), repr=False)

    @property
    def has_secret(self) -> bool:
        """True when the URL carries a password, a token or a secret query value."""
        return bool(self.secrets)

    def scrub(self, text: str) -> str:
        """``text`` with the raw URL replaced by the masked one and every secret by ``***``."""
        text = str(text).replace(self.raw, self.masked)
        for secret in sorted(self.secrets, key=len, reverse=True):
            text = text.replace(secret, MASK)
        return _DSN_PASSWORD.sub(lambda m: m.group(1) + MASK, text)

    def __str__(self) -> str:
        return self.masked


def _forms(secret: str) -> set[str]:
    """The ways a secret may be spelled in a URL or an error message (at least 2 characters)."""
    out = {secret, quote(secret, safe=""), quote_plus(secret), quote(secret), quote(secret, safe="/?:@!$'()*,;")}
    return {s for s in out if len(s) >= 2}


def _blind_mask(text: str) -> str:
    """A mask that trusts no parser: everything between ``://`` and the last ``@`` is hidden."""
    scheme, sep, rest = text.partition("://")
    if not sep:
        return MASK if "@" in text else text
    at = rest.rfind("@")
    return f"{scheme}://{MASK}@{rest[at + 1:]}" if at >= 0 else text


def _query_secrets(query_items) -> set[str]:
    return {str(v) for k, v in query_items if _SECRET_KEYS.fullmatch(str(k)) and v}


def _parse_database(text: str) -> ParsedURL:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(text)
    except (ArgumentError, ValueError, TypeError):
        raise CredentialError(
            f"cannot parse the database URL {_blind_mask(text)}: expected "
            "dialect[+driver]://user:password@host:port/database (percent-encode special characters "
            "in the password, e.g. @ as %40)"
        ) from None
    if url.host and "@" in url.host:
        raise CredentialError(
            f"the password in the database URL {_blind_mask(text)} contains a raw '@', so the database "
            "library would read part of it as the host name: percent-encode it (@ -> %40; likewise "
            "% -> %25), e.g. python -c \"import urllib.parse; print(urllib.parse.quote('PASSWORD', safe=''))\""
        )
    secrets: set[str] = set()
    if url.password:
        secrets |= _forms(str(url.password))
        rest = text.partition("://")[2]
        userinfo = rest.split("@", 1)[0]
        written = userinfo.split(":", 1)[1] if ":" in userinfo else ""
        secrets |= _forms(written)
    secrets |= set().union(*(_forms(v) for v in _query_secrets(url.query.items()))) if url.query else set()
    masked = url.render_as_string(hide_password=True)
    for s in sorted(secrets, key=len, reverse=True):
        masked = masked.replace(s, MASK)
    return ParsedURL("database", masked, text, tuple(secrets))


def _parse_http(text: str) -> ParsedURL:
    import yarl

    rest = text.partition("://")[2]
    cut = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    authority, after = rest[:cut], rest[cut:]
    path = re.split(r"[?#]", after, maxsplit=1)[0]
    if authority.count("@") > 1 or ("@" not in authority and ("@" in path or "@" in after.partition("#")[2])):
        raise CredentialError(
            f"the credentials in the URL {_blind_mask(text)} contain a character that must be percent-encoded "
            "(@ / ? # or %): the HTTP client would read part of them as the host or path. Encode the password "
            "or token, e.g. python -c \"import urllib.parse; print(urllib.parse.quote('TOKEN', safe=''))\""
        )
    try:
        url = yarl.URL(text)
    except (ValueError, TypeError):
        raise CredentialError(
            f"cannot parse the URL {_blind_mask(text)}: expected scheme://[user:password@]host[:port]/path "
            "(percent-encode special characters in a password or token)"
        ) from None
    secrets: set[str] = set()
    masked = url
    if url.password:
        secrets |= _forms(url.password) | _forms(url.raw_password or "")
        masked = masked.with_password(None).with_user(url.user)
        shown = str(masked).replace(f"{url.raw_user}@", f"{url.raw_user}:{MASK}@", 1)
    elif url.user:  # a bare userinfo is as likely a token as a name
        secrets |= _forms(url.user) | _forms(url.raw_user or "")
        shown = str(masked.with_user(None)).replace("://", f"://{MASK}@", 1)
    else:
        shown = str(masked)
    query = _query_secrets(url.query.items())
    for value in query:
        secrets |= _forms(value)
    if query:
        masked_query = [(k, MASK if _SECRET_KEYS.fullmatch(k) and v else v) for k, v in url.query.items()]
        shown = str(yarl.URL(shown).with_query(masked_query))
    for s in sorted(secrets, key=len, reverse=True):
        shown = shown.replace(s, MASK)
    return ParsedURL("http", shown, text, tuple(secrets))


def parse_url(text: str) -> ParsedURL:
    """Parse a database, HTTP(S) or WebSocket URL as its library will (see the module docstring).

    Other URLs (``file:``, paths, ``databricks``) are returned unmasked, apart from
    secret-looking query values.

    Raises:
        CredentialError: the URL cannot be parsed, or its password or token holds a
            character that must be percent-encoded; the message shows the masked URL.
    """
    text = str(text)
    scheme = text.partition("://")[0].lower() if "://" in text else ""
    if scheme.split("+", 1)[0] in _HTTP_SCHEMES:
        return _parse_http(text)
    if scheme and not scheme.startswith(("file", "databricks", "sqlite")):
        return _parse_database(text)
    if scheme.startswith("sqlite"):
        return ParsedURL("database", text, text)
    secrets = set()
    if "?" in text:
        from urllib.parse import parse_qsl

        secrets = set().union(*(_forms(v) for v in _query_secrets(parse_qsl(text.partition("?")[2]))), set())
    masked = text
    for s in sorted(secrets, key=len, reverse=True):
        masked = masked.replace(s, MASK)
    return ParsedURL("other", masked, text, tuple(secrets))


def mask_url(text: str) -> str:
    """The URL safe to print or log; never raises (an unparseable URL is masked blindly)."""
    try:
        return parse_url(text).masked
    except CredentialError:
        return _blind_mask(str(text))


def scrub(text: str, url: str) -> str:
    """``text`` with every form of ``url``'s secrets masked; never raises."""
    try:
        return parse_url(url).scrub(text)
    except CredentialError:
        out = str(text).replace(str(url), _blind_mask(str(url)))
        rest = str(url).partition("://")[2]
        userinfo = rest[: rest.rfind("@")] if "@" in rest else ""
        for piece in sorted({userinfo, *re.split(r"[:@/#?]", userinfo)} - {""}, key=len, reverse=True):
            if len(piece) >= 2:
                out = out.replace(piece, MASK)
        return _DSN_PASSWORD.sub(lambda m: m.group(1) + MASK, out)
