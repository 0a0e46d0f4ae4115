"""What every request is checked against before the app answers it: the
Host it names, the site it came from, where a sign-in may send the browser
on to, and the headers every answer carries.

The Host guard stops DNS rebinding: a web page elsewhere that renames its
own server to 127.0.0.1 still sends its own name as the Host, which a
dashboard answers only when told to (``allowed_hosts``).
"""
from __future__ import annotations

import ipaddress
from typing import Any, FrozenSet, Iterable, List, Mapping, Optional, Tuple

__all__ = ["SECURITY_HEADERS", "HostGuard", "ANY_HOST", "host_name", "hosts_for_address", "is_loopback",
           "safe_next", "same_origin"]

#: Sent with every answer: no framing, no sniffing, scripts and styles only
#: from the dashboard itself, forms only to it.
SECURITY_HEADERS: Tuple[Tuple[str, str], ...] = (
    ("Content-Security-Policy",
     "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
     "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "same-origin"),
    ("Cache-Control", "no-store"),
)

#: ``allowed_hosts=[ANY_HOST]`` answers every Host (behind a proxy that checks it).
ANY_HOST = "*"


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and the addresses 127.0.0.0/8 and ::1."""
    name = host.strip("[]").rstrip(".").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def host_name(header: str) -> str:
    """The host of a Host header, without its port, IPv6 brackets or the
    final dot of a fully qualified name."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:header.find("]")] if "]" in header else header[1:]
    name = header.rsplit(":", 1)[0] if header.count(":") == 1 else header
    return name.rstrip(".")


class HostGuard:
    """Which Host names are answered: by default only this machine's own
    (``localhost``, 127.0.0.0/8, ::1), else the names in *allowed* (any
    port), or every name when *allowed* holds ``"*"``."""

    def __init__(self, allowed: Optional[Iterable[str]] = None) -> None:
        if isinstance(allowed, (str, bytes)):
            raise TypeError(f"allowed_hosts must be a list of host names, not {allowed!r}")
        names: Optional[FrozenSet[str]] = None
        if allowed is not None:
            names = frozenset(_allowed_name(host) for host in allowed)
        self._names = names

    @property
    def allowed(self) -> Optional[FrozenSet[str]]:
        """The names answered besides the loopback ones; None: loopback only."""
        return self._names

    def refusal(self, environ: Mapping[str, Any]) -> Optional[str]:
        """Why the request's Host is not answered, or None when it is."""
        header = str(environ.get("HTTP_HOST") or "")
        name = host_name(header)
        if self._names is None:
            if is_loopback(name):
                return None
        elif ANY_HOST in self._names or name in self._names:
            return None
        return (f"this dashboard does not answer to the host {header!r}; name it in "
                "app(..., allowed_hosts=[...]) (['*'] for any)")


def hosts_for_address(host: str) -> Optional[List[str]]:
    """The ``allowed_hosts`` of a server bound to *host*: None (this
    machine's names) on a loopback address; every name on one that other
    machines reach, since they name it by an address or a name of their own."""
    return None if is_loopback(host) else [ANY_HOST]


def _allowed_name(host: Any) -> str:
    name = host.strip().lower().strip("[]").rstrip(".") if isinstance(host, str) else ""
    if not name:
        raise ValueError(f"allowed_hosts must hold host names, not {host!r}")
    return name


def safe_next(target: Optional[str]) -> str:
    """*target* when it is a path on this site (``/tasks?q=x``), else ``/``.

    Browsers read ``//evil.example``, ``/\\evil.example`` and ``/\t/evil``
    as another host (a backslash is a slash to them, tabs and newlines are
    dropped), so only a plain path of printable ASCII passes."""
    if not target or not target.startswith("/") or target.startswith("//"):
        return "/"
    if any(not " " < char < "\x7f" or char == "\\" for char in target):
        return "/"
    return target


def same_origin(environ: Mapping[str, Any]) -> bool:
    """False when the browser says the request came from another origin
    (Origin, else Referer); True when it says nothing (not a browser)."""
    host = environ.get("HTTP_HOST") or environ.get("SERVER_NAME", "")
    own = f"{environ.get('wsgi.url_scheme', 'http')}://{host}"
    origin = environ.get("HTTP_ORIGIN")
    if origin:
        return origin == own
    referer = environ.get("HTTP_REFERER")
    if referer:
        return referer == own or referer.startswith(own + "/")
    return True
