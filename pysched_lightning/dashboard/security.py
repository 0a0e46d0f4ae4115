"""Who may act on a live scheduler from the dashboard, and the headers every
answer carries.

Actions exist only with ``actions=True`` and a token. A browser shows the
token once (the sign-in form) and gets an HttpOnly, SameSite=Strict session
cookie; each action is a POST with the session's CSRF token and, when the
browser sends one, an Origin of this very host. A script may send
``Authorization: Bearer <token>`` instead (no cookie, so nothing to forge).
Session and CSRF values are HMACs under a key made per app, so they end
with the process and never reveal the token.
"""
from __future__ import annotations

import hashlib
import hmac
import os
from http.cookies import CookieError, SimpleCookie
from typing import Any, List, Mapping, Optional, Tuple

__all__ = ["Guard", "MIN_TOKEN", "SECURITY_HEADERS", "same_origin"]

#: Tokens shorter than this are refused: a guessable token is no protection.
MIN_TOKEN = 16
COOKIE = "pysched_dashboard"

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


class Guard:
    """Checks sign-in, sessions and CSRF tokens for one dashboard app."""

    def __init__(self, actions: bool, token: Optional[str]) -> None:
        if not isinstance(actions, bool):
            raise TypeError(f"actions must be True or False, not {actions!r}")
        if token is not None and not isinstance(token, str):
            raise TypeError(f"token must be a str, not {type(token).__name__}")
        if actions and token is None:
            raise ValueError("actions=True needs a token= (a secret of at least "
                             f"{MIN_TOKEN} characters) that viewers sign in with")
        if token is not None and not actions:
            raise ValueError("token= is only used with actions=True")
        if token is not None and (len(token) < MIN_TOKEN or not token.isprintable()
                                  or token != token.strip()):
            # The token itself is not shown: it is a secret, even when too weak.
            raise ValueError(f"token must be at least {MIN_TOKEN} printable characters "
                             f"without surrounding spaces (got {len(token)} characters)")
        self.enabled = actions
        self._token = token.encode() if token is not None else b""
        self._key = os.urandom(32)
        self._session = self._mac(b"session:" + self._token)
        self.csrf = self._mac(b"csrf:" + self._session.encode())

    def _mac(self, data: bytes) -> str:
        return hmac.new(self._key, data, hashlib.sha256).hexdigest()

    def token_matches(self, given: Any) -> bool:
        return (self.enabled and isinstance(given, str)
                and hmac.compare_digest(given.encode(), self._token))

    def signed_in(self, environ: Mapping[str, Any]) -> bool:
        """A valid session cookie or bearer token came with the request."""
        if not self.enabled:
            return False
        if self._bearer(environ):
            return True
        value = _cookie(environ, COOKIE)
        return value is not None and hmac.compare_digest(value, self._session)

    def _bearer(self, environ: Mapping[str, Any]) -> bool:
        header = environ.get("HTTP_AUTHORIZATION", "")
        scheme, _, given = header.partition(" ")
        return scheme.lower() == "bearer" and self.token_matches(given.strip())

    def refuse_action(self, environ: Mapping[str, Any], form: Mapping[str, str]) -> Optional[str]:
        """Why this POST may not act, or None when it may."""
        if not self.enabled:
            return "actions are off: this dashboard is read-only"
        if self._bearer(environ):
            return None
        if not self.signed_in(environ):
            return "sign in with the dashboard's token first"
        if not same_origin(environ):
            return "the request came from another site"
        given = form.get("csrf", "")
        if not hmac.compare_digest(given.encode(), self.csrf.encode()):
            return "the form's CSRF token is missing or wrong (reload the page)"
        return None

    def session_cookie(self, path: str, secure: bool) -> str:
        return _set_cookie(self._session, path, secure, 8 * 3600)

    @staticmethod
    def clear_cookie(path: str, secure: bool) -> str:
        return _set_cookie("", path, secure, 0)


def _set_cookie(value: str, path: str, secure: bool, max_age: int) -> str:
    parts: List[str] = [f"{COOKIE}={value}", f"Path={path}", f"Max-Age={max_age}", "HttpOnly",
                        "SameSite=Strict"]
    if secure:
        parts.append("Secure")
    return "; ".join(parts)


def _cookie(environ: Mapping[str, Any], name: str) -> Optional[str]:
    try:
        jar = SimpleCookie(environ.get("HTTP_COOKIE", ""))
    except CookieError:
        return None
    morsel = jar.get(name)
    return morsel.value if morsel is not None else None


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
