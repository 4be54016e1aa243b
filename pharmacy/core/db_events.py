"""Per-connection settings: SQLite gets WAL, a busy timeout and enforced foreign keys."""
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
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=15000")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()
