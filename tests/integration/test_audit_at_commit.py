"""A web request's audit events are written by its commit, not when they are recorded (core/audit.py).

Why it matters: on SQLite the first write of a transaction takes the one write lock until the commit, so a page
that wrote its read events before rendering held every other worker's request waiting through its rendering.
What must not change: the events are in the same transaction as the work they describe — a rolled-back request
or savepoint leaves none of its own (refusals and reads excepted, as before), and a reader of the trail in the
same request sees the request's own events.
"""
from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from flask import Flask, Response

from pharmacy.core import audit
from pharmacy.core.actor import SYSTEM
from pharmacy.extensions import db
from tests import factories
from tests.conftest import login


def _actions(app: Flask, prefix: str) -> list[str]:
    with app.app_context():
        found = db.session.execute(sa.text(
            "SELECT action FROM audit_events WHERE action LIKE :p ORDER BY id"), {"p": f"{prefix}%"}).scalars().all()
        db.session.rollback()
        return list(found)


def _writing(app: Flask) -> bool:
    """Has this request's transaction written anything yet (SQLite: holds the write lock; PostgreSQL: has an id)?"""
    conn = db.session.connection()
    if conn.dialect.name == "sqlite":
        return bool(conn.connection.driver_connection.in_transaction)
    return conn.execute(sa.text("SELECT pg_current_xact_id_if_assigned() IS NOT NULL")).scalar_one()


def test_a_page_writes_its_read_events_only_when_it_commits(app: Flask, client: Any, staff: dict) -> None:
    """Over HTTP: while the patient page is answered (after rendering, before the unit of work commits), its
    read event is recorded but nothing is written; after the answer, the event is in the trail."""
    seen: dict[str, Any] = {}

    @app.after_request  # registered after the unit of work's, so it runs before its commit
    def _look(response: Response) -> Response:
        if seen.get("armed"):
            seen["pending"] = len(db.session.info.get(audit._PENDING, ()))
            seen["writing"] = _writing(app)
        return response

    with app.test_request_context("/"):
        w = factories.world(staff)
        patient_id = w["patient"].id
        db.session.commit()
    login(client, staff["pharmacist"])
    seen["armed"] = True
    assert client.get(f"/patients/{patient_id}").status_code == 200
    assert seen["pending"] >= 1 and seen["writing"] is False
    with app.app_context():
        assert db.session.execute(sa.text(
            "SELECT count(*) FROM audit_events WHERE action = 'patient.view' AND patient_id = :p"),
            {"p": patient_id}).scalar_one() == 1


def test_a_savepoint_rolled_back_takes_its_own_events_and_keeps_the_others(app: Flask) -> None:
    with app.test_request_context("/"):
        audit.write_at_commit()
        audit.record(SYSTEM, "t.before")
        try:
            with db.session.begin_nested():
                audit.record(SYSTEM, "t.inside_refused")
                raise RuntimeError("refused")
        except RuntimeError:
            pass
        with db.session.begin_nested():
            audit.record(SYSTEM, "t.inside_kept")
        audit.record_reads(SYSTEM, "t.after.list", [])
        assert not _writing(app)  # nothing written yet: all of it waits for the commit
        db.session.commit()
    assert _actions(app, "t.") == ["t.before", "t.inside_kept", "t.after.list"]


def test_a_request_rolled_back_writes_none_of_its_events_but_its_reads(app: Flask) -> None:
    """The unit of work's rollback path: pending writes are dropped; reads and refusals are re-added after."""
    with app.test_request_context("/"):
        audit.write_at_commit()
        audit.record(SYSTEM, "t.change")
        audit.record(SYSTEM, "t.record.view")
        from pharmacy.core import uow

        uow.discard()
    assert _actions(app, "t.") == ["t.record.view"]


def test_the_trail_read_in_the_same_request_includes_that_requests_events(app: Flask) -> None:
    with app.test_request_context("/"):
        audit.write_at_commit()
        audit.record(SYSTEM, "t.mine")
        assert db.session.execute(sa.text("SELECT count(*) FROM audit_events WHERE action = 't.mine'")).scalar_one() == 0
        audit.pending()
        assert db.session.execute(sa.text("SELECT count(*) FROM audit_events WHERE action = 't.mine'")).scalar_one() == 1
        db.session.commit()
    assert _actions(app, "t.") == ["t.mine"]


def test_outside_a_web_request_events_are_written_when_recorded(app: Flask) -> None:
    """Jobs, CLI commands and services called directly: written at once, in the caller's transaction."""
    with app.app_context():
        audit.record(SYSTEM, "t.job")
        assert db.session.execute(sa.text("SELECT count(*) FROM audit_events WHERE action = 't.job'")).scalar_one() == 1
        db.session.rollback()
    assert _actions(app, "t.") == []


def test_a_page_whose_commit_finds_the_database_busy_says_so(_schema: str, app_config: dict, clock: Any,
                                                             tmp_path: Any) -> None:
    """SQLite: a read-only page's first write is now its audit event, at the commit. When another writer holds the
    lock past the busy timeout, the answer is 503 "busy, try again" (not a 409 "someone changed this", not a 500),
    and once the lock is free the next visit is answered and recorded."""
    import shutil
    import sqlite3

    import pytest

    from pharmacy import create_app
    from pharmacy.core.actor import Actor
    from pharmacy.core.roles import Role
    from pharmacy.core.services import create_user
    from tests.conftest import PASSWORD, Staff

    if not app_config["DATABASE_URL"].startswith("sqlite"):
        pytest.skip("SQLite only: PostgreSQL has no database-wide write lock")
    path = tmp_path / "busy.db"
    shutil.copyfile(_schema, path)
    app = create_app({**app_config, "DATABASE_URL": f"sqlite:///{path}", "SQLITE_BUSY_TIMEOUT_MS": "300"},
                     clock=clock)
    with app.test_request_context("/"):
        user = create_user(Actor(kind="staff", role=Role.ADMIN), email="pharm@pharmacy.test", full_name="Paula P",
                           role=Role.PHARMACIST, password=PASSWORD)
        pharmacist = Staff(user.id, "pharm@pharmacy.test", Role.PHARMACIST)
        patient_id = factories.patient(factories.actor(pharmacist)).id
        db.session.commit()
    client = app.test_client()
    login(client, pharmacist)
    other = sqlite3.connect(path, timeout=1, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # another writer holds the lock
        busy = client.get(f"/patients/{patient_id}")
        assert busy.status_code == 503 and busy.headers["Retry-After"] == "2"
        assert "busy for a moment" in busy.get_data(as_text=True)
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert client.get(f"/patients/{patient_id}").status_code == 200
    with app.app_context():
        assert db.session.execute(sa.text(
            "SELECT count(*) FROM audit_events WHERE action = 'patient.view' AND patient_id = :p"),
            {"p": patient_id}).scalar_one() == 1
        db.session.remove()
        db.engine.dispose()


def test_writing_the_pending_events_inside_a_savepoint_is_refused(app: Flask) -> None:
    """Written inside a savepoint, the events recorded before it would go if it rolled back: refused, loudly."""
    import pytest

    with app.test_request_context("/"):
        audit.write_at_commit()
        audit.record(SYSTEM, "t.before")
        with pytest.raises(RuntimeError, match="savepoint"), db.session.begin_nested():
            audit.pending()
        db.session.commit()
    assert _actions(app, "t.") == ["t.before"]
