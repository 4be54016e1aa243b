"""The audit trail cannot be emptied: UPDATE, DELETE and (on PostgreSQL) TRUNCATE are refused by the database.

The schema the tests build with `create_all` carries the same triggers as the migrations (core/audit_guard.py),
so this runs against it on both databases; test_migrations.py checks the migrated schema.
"""
from __future__ import annotations

import json

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


def test_a_list_read_leaves_one_event_per_patient_shown_with_the_same_facts(app: Flask, staff: dict) -> None:
    """record_reads: one event per distinct patient, in one statement (an array on PostgreSQL), each with the
    reader, the time, the address and the details; a list that shows nobody still leaves one event."""
    from tests import factories

    with app.test_request_context("/", environ_base={"REMOTE_ADDR": "10.1.2.3"}):
        actor = factories.actor(staff["pharmacist"])
        audit.record_reads(actor, "test.list", [7, 3, 7, 11], details={"report": "money"})
        audit.record_reads(actor, "test.empty", [])
        db.session.commit()
        rows = db.session.execute(sa.text(
            "SELECT action, patient_id, actor_user_id, ip_address, outcome, details FROM audit_events "
            "WHERE action LIKE 'test.%' ORDER BY id")).all()
    listed = [r for r in rows if r.action == "test.list"]
    assert [r.patient_id for r in listed] == [7, 3, 11]
    assert {(r.actor_user_id, r.ip_address, r.outcome) for r in listed} == {(staff["pharmacist"].id, "10.1.2.3", "ok")}
    assert all((r.details if isinstance(r.details, dict) else json.loads(r.details)) == {"report": "money"}
               for r in listed)
    assert [(r.action, r.patient_id) for r in rows if r.action == "test.empty"] == [("test.empty", None)]
