"""Per-connection settings for SQLite: WAL, a busy timeout, enforced foreign keys, and savepoints that
really are nested.

pysqlite opens a transaction only just before its first INSERT/UPDATE/DELETE (reads before that run
outside one). That suits WAL: a transaction's first statement is a write, so it waits for the single
write lock (busy_timeout) instead of failing the way a read-then-write transaction does. But a
SAVEPOINT issued first opens a transaction of its own, and its RELEASE commits — a "nested" write
would survive the rollback of the request around it. So before a savepoint we open the transaction.
"""
from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy import event


def install(engine: sa.Engine, *, busy_timeout_ms: int = 15000, wal_autocheckpoint: int = 10000) -> None:
    """`wal_autocheckpoint`: the log's length (pages) past which a commit copies it back into the database itself.
    SQLite's 1,000 made every ~16th page view at chain scale (a list page's read events touch ~60 pages of the
    audit trail's patient index) pay a checkpoint of 5–30 ms and two fsyncs inside its request; the scheduler
    copies the log back every few seconds instead (ops/wal.py), and this is the backstop when it does not run."""
    if engine.dialect.name != "sqlite" or getattr(engine, "_pharmacy_pragmas", False):
        return
    engine._pharmacy_pragmas = True  # type: ignore[attr-defined]

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        # 8 MB of pages per connection instead of SQLite's 2 MB: at chain scale the pages Today and the queues read
        # on every visit (open alerts, their patients and prescriptions) no longer fall out between two requests.
        cursor.execute("PRAGMA cache_size=-8000")
        cursor.execute(f"PRAGMA wal_autocheckpoint={int(wal_autocheckpoint)}")
        cursor.close()

    @event.listens_for(engine, "savepoint")
    def _savepoint(conn: sa.Connection, _name: str) -> None:
        dbapi = conn.connection.driver_connection
        if dbapi is not None and not dbapi.in_transaction:
            dbapi.execute("BEGIN IMMEDIATE")  # a savepoint always precedes a write here
