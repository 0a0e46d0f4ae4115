"""Transitional: the records moved to :mod:`pysched_lightning.protocols`.

``persistence.py`` still imports ``TaskRecord`` from here; delete this module
once nothing does (``from ..protocols import TaskRecord`` instead).
"""
from ..protocols import RUN_FIELDS, StoreLockedError, TaskRecord

__all__ = ["TaskRecord", "RUN_FIELDS", "StoreLockedError"]
