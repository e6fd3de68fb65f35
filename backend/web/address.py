"""What the bind address means for the user: loopback or not, the URL to open, the warning.

Pure: no I/O. ``--api-host 0.0.0.0`` binds every interface, but ``http://0.0.0.0:P/`` is
not an address a browser can be sent to, so ``page_url`` names one that works on this
machine (the loopback address of the same family) and ``exposure_warning`` says, for any
non-loopback bind, that the page is reachable from the network and what then needs the
token. Both entry points (``python -m backend.web`` and the bot's ``--api-port``) print
these once the socket is bound.
"""

from __future__ import annotations

import ipaddress


def is_loopback(host: str) -> bool:
    """True for a loopback address (``127.0.0.0/8``, ``::1``) or the name ``localhost``."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host.strip().lower() == "localhost"


def _unspecified(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return None
    return addr if addr.is_unspecified else None


def page_url(host: str, port: int) -> str:
    """The URL of the page for a server bound to ``host:port``, one a browser can open.

    ``0.0.0.0`` (every IPv4 interface) gives ``http://127.0.0.1:P/``, ``::`` gives
    ``http://[::1]:P/``; an IPv6 literal is put in brackets; anything else is used as is.
    """
    any_addr = _unspecified(host)
    if any_addr is not None:
        host = "127.0.0.1" if any_addr.version == 4 else "::1"
    try:
        if ipaddress.ip_address(host).version == 6:
            host = f"[{host}]"
    except ValueError:
        pass
    return f"http://{host}:{port}/"


def exposure_warning(host: str, port: int) -> str | None:
    """One line warning that the page is reachable from the network; ``None`` on loopback."""
    if is_loopback(host):
        return None
    where = (f"on every network interface ({host} port {port})" if _unspecified(host) is not None
             else f"at {page_url(host, port)}")
    return (f"warning: the page is reachable from the network {where}; every API request and /metrics need the "
            "token, / serves only the page that asks for it and /health only the status word; plain HTTP does not "
            "encrypt the token: prefer the default --api-host 127.0.0.1 with an SSH tunnel (docs/web.md)")
