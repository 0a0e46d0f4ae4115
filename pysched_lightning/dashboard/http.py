"""The dashboard's requests and answers, as its WSGI application reads and
writes them (PEP 3333)."""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Optional, Tuple
from urllib.parse import parse_qs, quote, urlencode

__all__ = ["HTTPError", "Response", "Request", "REASONS"]

_MAX_FORM = 64 * 1024
REASONS = {200: "OK", 202: "Accepted", 303: "See Other", 400: "Bad Request",
           403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed", 409: "Conflict",
           413: "Payload Too Large", 429: "Too Many Requests", 500: "Internal Server Error"}


class HTTPError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclasses.dataclass
class Response:
    status: int
    body: bytes
    content_type: str = "text/html; charset=utf-8"
    headers: List[Tuple[str, str]] = dataclasses.field(default_factory=list)


class Request:
    """The parts of a WSGI environ the routes read."""

    def __init__(self, environ: Dict[str, Any]) -> None:
        self.environ = environ
        self.method = str(environ.get("REQUEST_METHOD", "GET")).upper()
        raw = environ.get("PATH_INFO", "") or "/"
        self.path = raw.encode("latin-1", "replace").decode("utf-8", "replace")  # PEP 3333
        self.prefix = str(environ.get("SCRIPT_NAME", "")).rstrip("/")
        self.query = {key: values[-1] for key, values in parse_qs(
            environ.get("QUERY_STRING", ""), keep_blank_values=True).items()}
        self._form: Optional[Dict[str, str]] = None

    def url(self, path: str, **params: Any) -> str:
        """A link inside the app (mounted under SCRIPT_NAME, ids quoted)."""
        query = urlencode({k: v for k, v in params.items() if v is not None and v != ""})
        return self.prefix + quote(path, safe="/") + (f"?{query}" if query else "")

    @property
    def form(self) -> Dict[str, str]:
        if self._form is None:
            try:
                size = int(self.environ.get("CONTENT_LENGTH") or 0)
            except ValueError:
                raise HTTPError(400, "Content-Length is not a number") from None
            if size > _MAX_FORM:
                raise HTTPError(413, f"a form of {size} bytes is too large")
            body = self.environ["wsgi.input"].read(size) if size > 0 else b""
            self._form = {key: values[-1] for key, values in parse_qs(
                body.decode("utf-8", "replace"), keep_blank_values=True).items()}
        return self._form
