"""Per-connection settings for SQLite: WAL, a busy timeout, enforced foreign keys, and real transactions.

pysqlite starts a transaction only before its first INSERT/UPDATE/DELETE, so a SAVEPOINT that comes
first opens (and its RELEASE commits) a transaction of its own — a "nested" write would survive the
rollback of the request around it. SQLAlchemy's documented recipe takes transaction control back:
pysqlite's own BEGIN is switched off and SQLAlchemy emits BEGIN when its transaction starts.
"""
from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy import event


def install(engine: sa.Engine) -> None:
    if engine.dialect.name != "sqlite" or getattr(engine, "_pharmacy_pragmas", False):
        return
    engine._pharmacy_pragmas = True  # type: ignore[attr-defined]

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # SQLAlchemy, not pysqlite, says when a transaction begins
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=15000")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: sa.Connection) -> None:
        conn.exec_driver_sql("BEGIN")
