"""A store URL → a store: ``sqlite:///relative.db``, ``sqlite:////absolute.db``,
``sqlite:///:memory:`` (tests) or ``postgresql://user:pass@host:5432/db``."""

from __future__ import annotations

from aigw.store.base import Store
from aigw.store.sqlite import SqliteStore

SQLITE_PREFIX = "sqlite:///"
POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def make_store(url: str, timeout_s: float = 5.0, pool_max: int = 10) -> Store:
    """The store for ``url``; ``ValueError`` for a URL of no known kind. Nothing is
    opened until the first call (``migrate`` at start-up)."""
    if url.startswith(SQLITE_PREFIX):
        path = url[len(SQLITE_PREFIX) :]
        if not path:
            raise ValueError(f"no database path in store URL {url!r}")
        return SqliteStore(path, timeout_s)
    if url.startswith(POSTGRES_SCHEMES):
        from aigw.store.postgres import PostgresStore  # asyncpg loads only when used

        return PostgresStore(url, timeout_s, pool_max=pool_max)
    raise ValueError(f"unsupported store URL {url!r}: expected sqlite:///… or postgresql://…")
