"""Database-level append-only guard for audit_events (the app never updates or deletes a row).

The same statements run from the migrations (0002: UPDATE and DELETE; 0008: TRUNCATE) and from
`create_all` (tests), so both schemas match. TRUNCATE fires no row trigger, so PostgreSQL gets a
statement-level BEFORE TRUNCATE trigger too (SQLite has no TRUNCATE: its `DELETE FROM` fires the row trigger).
"""
from __future__ import annotations

import sqlalchemy as sa

SQLITE = [
    "CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events "
    "BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END",
    "CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events "
    "BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END",
]
#: Migration 0008 adds this one to databases migrated before it.
TRUNCATE_TRIGGER = ("CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events "
                    "FOR EACH STATEMENT EXECUTE FUNCTION audit_events_append_only()")
DROP_TRUNCATE_TRIGGER = "DROP TRIGGER IF EXISTS audit_events_no_truncate ON audit_events"
POSTGRESQL = [
    "CREATE OR REPLACE FUNCTION audit_events_append_only() RETURNS trigger AS $$ "
    "BEGIN RAISE EXCEPTION 'audit_events is append-only'; END; $$ LANGUAGE plpgsql",
    "CREATE TRIGGER audit_events_no_change BEFORE UPDATE OR DELETE ON audit_events "
    "FOR EACH ROW EXECUTE FUNCTION audit_events_append_only()",
    TRUNCATE_TRIGGER,
]
DROP = {
    "sqlite": ["DROP TRIGGER IF EXISTS audit_events_no_update", "DROP TRIGGER IF EXISTS audit_events_no_delete"],
    "postgresql": [
        DROP_TRUNCATE_TRIGGER,
        "DROP TRIGGER IF EXISTS audit_events_no_change ON audit_events",
        "DROP FUNCTION IF EXISTS audit_events_append_only()",
    ],
}


def statements(dialect: str) -> list[str]:
    return {"sqlite": SQLITE, "postgresql": POSTGRESQL}.get(dialect, [])


def attach(table: sa.Table) -> None:
    for dialect in ("sqlite", "postgresql"):
        for stmt in statements(dialect):
            sa.event.listen(table, "after_create", sa.DDL(stmt).execute_if(dialect=dialect))
