"""Store URLs as they may be shown: in messages, logs and ``repr()``."""
from __future__ import annotations

import re

__all__ = ["hide_password"]

# 'scheme://user:password@host' and a 'password=' query parameter.
_USERINFO = re.compile(r"(//[^/@:]*):[^/@]*@")
_QUERY = re.compile(r"([?&]password=)[^&]*", re.IGNORECASE)


def hide_password(url: str) -> str:
    """*url* with its password (if any) replaced by ``***``."""
    return _QUERY.sub(r"\1***", _USERINFO.sub(r"\1:***@", url))
