"""The operations log, and the stamp that says a schema built by `create_all` is at the migration head.

`ops_events` answers the questions an operator asks of a running pharmacy: when was the last
backup, did it verify, when was the schema last upgraded. It holds file names, sizes, checksums
and revisions — never patient data.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from alembic.migration import MigrationContext
from sqlalchemy.orm import Mapped, mapped_column

from pharmacy.core.db import UTCDateTime
from pharmacy.extensions import db
from pharmacy.ops.schema_scripts import script_directory

# Kinds written so far (a plain string column, so a new kind needs no migration).
HISTORY_START = "history.start"  # the earliest moment the data shows (backfilled by migration 0003)
SCHEMA_UPGRADE = "schema.upgrade"
BACKUP = "backup.create"


class OpsEvent(db.Model):
    __tablename__ = "ops_events"
    __table_args__ = (sa.Index("ix_ops_events_kind_at", "kind", "at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    kind: Mapped[str] = mapped_column(sa.String(32))
    outcome: Mapped[str] = mapped_column(sa.String(16), default="ok")  # ok, failed
    details: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON)


@sa.event.listens_for(db.metadata, "after_create")
def _stamp_head_after_create_all(target: sa.MetaData, connection: sa.Connection, **_: Any) -> None:
    """A database built with `metadata.create_all()` (tests, tools) *is* at the migration head: record it.

    This is Alembic's "create_all, then stamp head" recipe, done where it cannot be forgotten, so
    /readyz and `flask doctor` see such a database as migrated and a later `flask db upgrade` does
    not try to create its tables again. A database that already carries a revision is left alone.
    """
    context = MigrationContext.configure(connection)
    if context.get_current_heads():
        return
    context.stamp(script_directory(), "heads")
