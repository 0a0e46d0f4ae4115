"""Who holds a store, in words: the one wording the CLI and the dashboard use."""
from __future__ import annotations

from typing import Optional

__all__ = ["holder_text"]


def holder_text(owner: Optional[str]) -> str:
    """Who holds a store, for people: ``pid 4242 on web1`` from the owner
    string ``web1:4242:7f3a...`` a scheduler writes."""
    if owner is None:
        return "nobody"
    host, _, rest = owner.rpartition(":")
    host, _, pid = host.rpartition(":")
    if host and pid.isdigit() and rest:
        return f"pid {pid} on {host}"
    return owner
