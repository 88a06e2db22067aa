"""Storage backends (SQLite, PostgreSQL) behind one small interface."""

from gateway.store.base import Database, StoreError, Tx, open_database

__all__ = ["Database", "StoreError", "Tx", "open_database"]
