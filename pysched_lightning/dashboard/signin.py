"""Who may act on a live scheduler from the dashboard: the token, the
sessions it opens, their CSRF tokens, and the back-off after wrong tokens.

Actions exist only with ``actions=True`` and a token. A browser shows the
token once (the sign-in form) and gets an HttpOnly, SameSite=Strict cookie
holding a random session id, new at each sign-in; the app keeps the ids it
gave (in memory: a dashboard is one process) with their expiry, and forgets
one at sign-out. Each action, and the sign-out, is a POST with the
session's CSRF token and, when the browser sends one, an Origin of this
very host. A script may send ``Authorization: Bearer <token>`` instead (no
cookie, so nothing to forge). A wrong token makes its client wait before
the next token is even compared, twice as long after each further miss.
"""
from __future__ import annotations

import collections
import hashlib
import hmac
import math
import secrets
import threading
from http.cookies import CookieError, SimpleCookie
from typing import Any, Callable, List, Mapping, Optional, Tuple

from .security import same_origin

__all__ = ["Guard", "MIN_TOKEN", "COOKIE", "SESSION_SECONDS", "Throttled"]

#: Tokens shorter than this are refused: a guessable token is no protection.
MIN_TOKEN = 16
COOKIE = "pysched_dashboard"
#: How long a sign-in lasts.
SESSION_SECONDS = 8 * 3600.0
#: Sessions kept at most; the oldest go first (each sign-in makes one).
MAX_SESSIONS = 1000
#: The wait after a client's first wrong token, doubled after each further
#: one up to BACKOFF_MAX; a client's misses are forgotten after BACKOFF_FORGET.
BACKOFF_FIRST, BACKOFF_MAX, BACKOFF_FORGET = 1.0, 60.0, 900.0
#: Clients whose misses are remembered at most (the oldest are forgotten).
MAX_CLIENTS = 1000


class Throttled(Exception):
    """A token came before its client's back-off ended; nothing was compared."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"too many wrong tokens: try again in {math.ceil(retry_after)} s")
        self.retry_after = retry_after


class Guard:
    """Checks the token, sessions and CSRF tokens for one dashboard app;
    *clock* gives the time (POSIX seconds) that sessions expire by."""

    def __init__(self, actions: bool, token: Optional[str],
                 clock: Callable[[], float]) -> None:
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
        self._key = secrets.token_bytes(32)  # CSRF tokens are HMACs of session ids under it
        self._clock = clock
        self._lock = threading.Lock()
        # hash of a session id -> (created, expires); insertion order is age
        self._sessions: "collections.OrderedDict[str, Tuple[float, float]]" = \
            collections.OrderedDict()
        # client address -> (misses, time of the last miss)
        self._misses: "collections.OrderedDict[str, Tuple[int, float]]" = \
            collections.OrderedDict()

    # -- the token ------------------------------------------------------------------

    def check_token(self, given: Any, environ: Mapping[str, Any]) -> bool:
        """Whether *given* is the token; a miss starts or lengthens the
        client's back-off. Raises Throttled during a back-off."""
        client = str(environ.get("REMOTE_ADDR") or "")
        now = self._clock()
        with self._lock:
            wait = self._backoff_left(client, now)
            if wait > 0:
                raise Throttled(wait)
            matches = (self.enabled and isinstance(given, str)
                       and hmac.compare_digest(given.encode("utf-8", "replace"), self._token))
            if matches:
                self._misses.pop(client, None)
            else:
                self._miss(client, now)
        return matches

    def _backoff_left(self, client: str, now: float) -> float:
        misses, last = self._misses.get(client, (0, 0.0))
        if not misses or not last <= now < last + BACKOFF_FORGET:
            return 0.0
        return last + min(BACKOFF_FIRST * 2 ** (misses - 1), BACKOFF_MAX) - now

    def _miss(self, client: str, now: float) -> None:
        misses, last = self._misses.pop(client, (0, now))
        if not last <= now < last + BACKOFF_FORGET:
            misses = 0
        self._misses[client] = (misses + 1, now)
        while len(self._misses) > MAX_CLIENTS:
            self._misses.popitem(last=False)

    def bearer(self, environ: Mapping[str, Any]) -> bool:
        """An ``Authorization: Bearer`` header with the token came (a wrong
        one counts as a miss; Throttled during a back-off)."""
        scheme, _, given = str(environ.get("HTTP_AUTHORIZATION", "")).partition(" ")
        if scheme.lower() != "bearer":
            return False
        return self.check_token(given.strip(), environ)

    # -- sessions -------------------------------------------------------------------

    def open_session(self) -> str:
        """A new session (after a right token): its id, for the cookie."""
        session = secrets.token_urlsafe(32)
        now = self._clock()
        with self._lock:
            self._drop_expired(now)
            self._sessions[_digest(session)] = (now, now + SESSION_SECONDS)
            while len(self._sessions) > MAX_SESSIONS:
                self._sessions.popitem(last=False)
        return session

    def close_session(self, environ: Mapping[str, Any]) -> None:
        """Forget the request's session: its cookie opens nothing any more."""
        session = _cookie(environ, COOKIE)
        if session:
            with self._lock:
                self._sessions.pop(_digest(session), None)

    def session(self, environ: Mapping[str, Any]) -> Optional[str]:
        """The request's session id, if it is one this app gave and it has
        not expired nor been closed."""
        if not self.enabled:
            return None
        session = _cookie(environ, COOKIE)
        if not session:
            return None
        now = self._clock()
        with self._lock:
            times = self._sessions.get(_digest(session))
            if times is None:
                return None
            if not times[0] <= now < times[1]:  # expired (or the clock went back)
                del self._sessions[_digest(session)]
                return None
        return session

    def _drop_expired(self, now: float) -> None:
        for key in [key for key, (start, end) in self._sessions.items()
                    if not start <= now < end]:
            del self._sessions[key]

    def signed_in(self, environ: Mapping[str, Any]) -> bool:
        """A live session cookie came with the request (pages show the
        actions then); a bearer token is checked only where it acts."""
        return self.session(environ) is not None

    def csrf(self, environ: Mapping[str, Any]) -> str:
        """The CSRF token of the request's session ('' without one)."""
        session = self.session(environ)
        return _mac(self._key, session) if session else ""

    # -- requests -------------------------------------------------------------------

    def refuse_post(self, environ: Mapping[str, Any], form: Mapping[str, str]) -> Optional[str]:
        """Why this POST of a signed-in browser (an action, the sign-out)
        may not go on, or None when it may."""
        session = self.session(environ)
        if session is None:
            return "sign in with the dashboard's token first"
        if not same_origin(environ):
            return "the request came from another site"
        given = form.get("csrf", "")
        if not hmac.compare_digest(given.encode("utf-8", "replace"),
                                   _mac(self._key, session).encode()):
            return "the form's CSRF token is missing or wrong (reload the page)"
        return None

    def refuse_action(self, environ: Mapping[str, Any], form: Mapping[str, str]) -> Optional[str]:
        """Why this POST may not act, or None when it may (Throttled for a
        bearer token during a back-off)."""
        if not self.enabled:
            return "actions are off: this dashboard is read-only"
        if self.bearer(environ):
            return None
        return self.refuse_post(environ, form)

    def session_cookie(self, session: str, path: str, secure: bool) -> str:
        return _set_cookie(session, path, secure, int(SESSION_SECONDS))

    @staticmethod
    def clear_cookie(path: str, secure: bool) -> str:
        return _set_cookie("", path, secure, 0)


def _digest(session: str) -> str:
    # Kept hashed, so the table's lookups reveal nothing of a live id's bytes.
    return hashlib.sha256(session.encode("utf-8", "replace")).hexdigest()


def _mac(key: bytes, session: str) -> str:
    return hmac.new(key, b"csrf:" + session.encode(), hashlib.sha256).hexdigest()


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
