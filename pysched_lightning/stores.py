"""Where tasks and runs are kept (``pysched_lightning.stores``): the store
protocol, its two stores and :func:`open_store`, from ``durability.stores``."""
from .durability.stores import (RUN_FIELDS, STATUS_NAMES, MemoryStore, SQLiteStore, Store,
                                StoreLockedError, TaskRecord, open_store)

__all__ = ["Store", "TaskRecord", "RUN_FIELDS", "STATUS_NAMES", "StoreLockedError",
           "SQLiteStore", "MemoryStore", "open_store"]
