"""Persistence backends behind one interface (:class:`~.base.Storage`).

``memory`` keeps nothing across a restart (no backend object at all: the broker skips every
journal call); ``sqlite`` is :class:`~.sqlite.SqliteStorage`.
"""

from __future__ import annotations

from ..config import PersistenceConfig
from .base import OwnerRecords, Snapshot, Storage, StoredItem, StoredSession, StoredWill

__all__ = ["OwnerRecords", "Snapshot", "Storage", "StoredItem", "StoredSession", "StoredWill",
           "open_storage"]


def open_storage(config: PersistenceConfig) -> Storage | None:
    """The backend ``config`` names, or None for ``memory``."""
    if config.backend == "memory":
        return None
    from .sqlite import SqliteStorage

    return SqliteStorage(config)
