"""The audit trail cannot be emptied: UPDATE, DELETE and (on PostgreSQL) TRUNCATE are refused by the database.

The schema the tests build with `create_all` carries the same triggers as the migrations (core/audit_guard.py),
so this runs against it on both databases; test_migrations.py checks the migrated schema.
"""
from __future__ import annotations

import pytest
import sqlalchemy as sa
from flask import Flask

from pharmacy.core import audit
from pharmacy.core.actor import SYSTEM
from pharmacy.extensions import db


@pytest.fixture
def one_event(app: Flask) -> Flask:
    with app.test_request_context("/"):
        audit.record(SYSTEM, "test.event")
        db.session.commit()
    return app


@pytest.mark.parametrize("statement", [
    "UPDATE audit_events SET action = 'rewritten'",
    "DELETE FROM audit_events",
    "TRUNCATE audit_events",
    "TRUNCATE audit_events RESTART IDENTITY CASCADE",
    "TRUNCATE users, audit_events CASCADE",
])
def test_the_database_refuses_to_change_or_empty_the_audit_trail(one_event: Flask, statement: str) -> None:
    with one_event.app_context():
        if statement.startswith("TRUNCATE") and db.engine.dialect.name != "postgresql":
            pytest.skip("SQLite has no TRUNCATE (its DELETE FROM fires the row trigger)")
        with pytest.raises(sa.exc.DatabaseError, match="append-only"), db.engine.begin() as conn:
            conn.execute(sa.text(statement))
        assert db.session.execute(sa.text("SELECT action FROM audit_events")).scalars().all() == ["test.event"]
