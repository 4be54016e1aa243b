"""Migrations build the schema from empty, go down and up again, and agree with the models (no drift)."""
from __future__ import annotations

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from flask import Flask
from flask_migrate import downgrade, upgrade

from pharmacy import create_app


def _diff(app) -> list:
    from pharmacy.extensions import db

    with db.engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        return compare_metadata(ctx, db.metadata)


def test_upgrade_downgrade_upgrade_without_drift(empty_db: str, app_config: dict) -> None:
    app = create_app({**app_config, "DATABASE_URL": empty_db})
    from pharmacy.extensions import db

    with app.app_context():
        upgrade()
        assert _diff(app) == []
        downgrade(revision="base")
        tables = sa.inspect(db.engine).get_table_names()
        assert set(tables) <= {"alembic_version"}
        upgrade()
        assert _diff(app) == []
        # The append-only guard exists after migrating, as it does after create_all.
        with db.engine.begin() as conn:
            conn.execute(sa.text(
                "INSERT INTO audit_events (at, actor_kind, action, outcome) "
                "VALUES (CURRENT_TIMESTAMP, 'system', 't', 'ok')"
            ))
        with pytest.raises(sa.exc.DatabaseError, match="append-only"), db.engine.begin() as conn:
            conn.execute(sa.text("UPDATE audit_events SET action = 'x'"))
        with pytest.raises(sa.exc.DatabaseError, match="append-only"), db.engine.begin() as conn:
            conn.execute(sa.text("DELETE FROM audit_events"))
        if db.engine.dialect.name == "postgresql":  # 0008: TRUNCATE fires no row trigger, so it has its own
            with pytest.raises(sa.exc.DatabaseError, match="append-only"), db.engine.begin() as conn:
                conn.execute(sa.text("TRUNCATE audit_events"))
            with pytest.raises(sa.exc.DatabaseError, match="append-only"), db.engine.begin() as conn:
                conn.execute(sa.text("TRUNCATE users, audit_events CASCADE"))
        with db.engine.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM audit_events")).scalar_one() == 1
        db.engine.dispose()


def _app_at_head(empty_db: str, app_config: dict) -> Flask:
    """An app on the empty database, migrated to the head."""
    app = create_app({**app_config, "DATABASE_URL": empty_db})
    with app.app_context():
        upgrade()
    return app


def _world_with_a_fill() -> dict:
    """The factories' world, its first fill dispensed (inside a request context; the caller commits)."""
    from pharmacy.workflows import orders as order_flow
    from tests import factories

    w = factories.world(_staff_at_head())
    factories.run_order_to(w, order_flow.start_fill(w["pharmacist"], w["rx"].id).id, "dispensed")
    return w


def _staff_at_head() -> dict:
    """The four staff accounts the factories expect, made in a database just migrated (inside a request context)."""
    from pharmacy.core.actor import Actor
    from pharmacy.core.roles import Role
    from pharmacy.core.services import create_user
    from tests.conftest import PASSWORD, Staff

    console = Actor(kind="staff", role=Role.ADMIN)
    staff = {}
    for key, role in (("admin", Role.ADMIN), ("pharmacist", Role.PHARMACIST), ("pharmacist2", Role.PHARMACIST),
                      ("technician", Role.TECHNICIAN)):
        user = create_user(console, email=f"{key}@pharmacy.test", full_name=key.title(), role=role, password=PASSWORD)
        staff[key] = Staff(user.id, f"{key}@pharmacy.test", role)
    return staff


def test_going_down_from_0016_keeps_the_requests_and_their_messages(empty_db: str, app_config: dict) -> None:
    """0016's downgrade drops refill_requests.run_out_date without rebuilding the table: on SQLite a rebuilt table
    is dropped first, and with foreign keys on that deleted its rows and, by cascade, the outbox's messages about
    them. A request and its messages written at the head survive going down to 0015 and up again."""
    from pharmacy.refills.rules import RequestSource
    from pharmacy.workflows import refill_requests as refill_flow

    app = _app_at_head(empty_db, app_config)
    from pharmacy.extensions import db

    with app.test_request_context("/"):
        w = _world_with_a_fill()
        request_id = refill_flow.request(w["technician"], w["rx"].id, source=RequestSource.STAFF).request.id
        db.session.commit()
    with app.app_context():
        def state() -> tuple[int, int, str]:
            with db.engine.connect() as conn:
                return (conn.execute(sa.text("SELECT count(*) FROM refill_requests")).scalar_one(),
                        conn.execute(sa.text("SELECT count(*) FROM outbox WHERE refill_request_id = :r"),
                                     {"r": request_id}).scalar_one(),
                        str(conn.execute(sa.text("SELECT run_out_date FROM refill_requests")).scalar_one())[:10])

        before = state()
        assert before[0] == 1 and before[1] >= 1 and before[2] != "None"
        downgrade(revision="0015")
        upgrade()
        assert state() == before  # the copy filled again from the prescription on the way up
        db.session.remove()
        db.engine.dispose()


def test_0017_finds_the_supply_of_a_chain_of_replacements(empty_db: str, app_config: dict) -> None:
    """Going up to 0017 names, for each replacement not yet dispensed, the last prescription of its chain that was
    (C replaced B replaced A, B never filled: A), and going down drops the column in place, keeping every row."""
    from pharmacy.workflows import prescription_changes
    from tests import factories

    app = _app_at_head(empty_db, app_config)
    from pharmacy.extensions import db

    with app.test_request_context("/"):
        w = _world_with_a_fill()
        data = factories.replacement_data(w)
        a = w["rx"].id
        b = prescription_changes.replace(w["pharmacist"], a, data).id
        c = prescription_changes.replace(w["pharmacist"], b, data).id
        db.session.commit()
    with app.app_context():
        def sources() -> dict[int, int | None]:
            with db.engine.connect() as conn:
                return dict(conn.execute(sa.text("SELECT id, supply_source_id FROM prescriptions")).all())

        assert sources() == {a: None, b: a, c: a}  # as the app keeps it
        downgrade(revision="0016")
        with db.engine.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM prescriptions")).scalar_one() == 3
        upgrade()
        assert sources() == {a: None, b: a, c: a}  # as the migration fills it
        db.session.remove()
        db.engine.dispose()


def test_0020_places_the_latest_covered_span_as_the_app_does(empty_db: str, app_config: dict, clock) -> None:
    """Going up to 0020 walks each prescription's dispensings (and what a replacement carried) to the first day of
    its latest covered span and the last day covered before it — the same dates the supply's writer keeps: a refill
    after a gap starts a span, an early one carries on, a replacement follows what it carried."""
    from datetime import timedelta

    from pharmacy.core.context import today
    from pharmacy.prescriptions.models import Prescription
    from pharmacy.workflows import orders as order_flow
    from pharmacy.workflows import prescription_changes
    from tests import factories

    app = create_app({**app_config, "DATABASE_URL": empty_db}, clock=clock)
    from pharmacy.extensions import db

    with app.app_context():
        upgrade()
    with app.test_request_context("/"):
        w = _world_with_a_fill()
        a = w["rx"].id
        clock.advance(db.session.get(Prescription, a).latest_run_out_date - today() + timedelta(days=5))
        factories.run_order_to(w, order_flow.start_fill(w["pharmacist"], a).id, "dispensed")  # after a gap
        b = prescription_changes.replace(w["pharmacist"], a, factories.replacement_data(w)).id  # carries a's
        other = factories.prescription(w["pharmacist"], w["patient"].id, w["formula"].id, w["prescriber"].id).id
        db.session.commit()
    with app.app_context():
        def spans() -> dict[int, tuple]:
            with db.engine.connect() as conn:
                return {row[0]: tuple(str(v) for v in row[1:]) for row in conn.execute(sa.text(
                    "SELECT id, latest_covered_from, prior_run_out_date FROM prescriptions"))}

        kept = spans()
        assert kept[a][0] != "None" and kept[a][1] != "None"  # a gap: the span started with the refill
        assert kept[b] == kept[a] and kept[other] == ("None", "None")
        downgrade(revision="0019")
        upgrade()
        assert spans() == kept
        db.session.remove()
        db.engine.dispose()
