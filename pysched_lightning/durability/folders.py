"""The folder a store or a run log is made in: it must exist already (a
typo in a path must not create folders), and a refusal to open the file
says "permission denied" when that is why."""
from __future__ import annotations

import os
from typing import Optional

__all__ = ["check_folder", "permission_problem"]


def check_folder(path: str, what: str) -> None:
    """FileNotFoundError (NotADirectoryError) naming the folder of the
    absolute *path* when it does not exist (is not a folder); *what* names
    the file in the message (``"the store"``, ``"the run log"``)."""
    folder = os.path.dirname(path)
    if os.path.isdir(folder):
        return
    if os.path.exists(folder):
        raise NotADirectoryError(f"cannot open {what} {path!r}: {folder!r} is not a folder")
    raise FileNotFoundError(f"cannot open {what} {path!r}: its folder {folder!r} does not "
                            "exist (create it first: a missing folder is not created)")


def permission_problem(path: str, write: bool = True) -> Optional[str]:
    """Why this process may not open the file *path* (absolute), or None
    when permissions are not the cause. With *write*, the file is written
    and files are made beside it (SQLite's ``-wal`` and ``-shm``)."""
    folder = os.path.dirname(path)
    if os.path.exists(path) and not os.access(path, os.R_OK | (os.W_OK if write else 0)):
        return f"permission denied: {path!r} is not {'writable' if write else 'readable'}"
    if write and not os.access(folder, os.W_OK | os.X_OK):
        return f"permission denied: no file can be made in the folder {folder!r}"
    return None
