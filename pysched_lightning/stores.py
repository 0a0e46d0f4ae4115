"""Where tasks and runs are kept (``pysched_lightning.stores``): the store
protocol, its stores and :func:`open_store`, from ``durability.stores``
(``PostgresStore`` is in ``durability.stores.postgres``: it needs psycopg)."""
from .durability.stores import (RUN_FIELDS, STATUS_NAMES, ClaimLostError, MemoryStore,
                                SQLiteStore, Store, StoreLockedError, TaskRecord, open_store)

__all__ = ["Store", "TaskRecord", "RUN_FIELDS", "STATUS_NAMES", "StoreLockedError",
           "ClaimLostError", "SQLiteStore", "MemoryStore", "open_store"]
