"""Upgrading keeps every row: a database filled at the previous head (0002) is migrated to the current head.

Rows are written with plain SQL against the schema as it was at 0002 (reflected, not the current
models), in many tables; after `upgrade()` every one of them reads back value for value, the
data step of 0003 has run (the operations log starts at the earliest moment the data shows),
the app's own models read the old rows, and going down to 0002 and up again loses nothing.
"""
from __future__ import annotations

from datetime import date, datetime
from typing import Any

import sqlalchemy as sa
from flask_migrate import downgrade, upgrade

from pharmacy import create_app

PREVIOUS_HEAD = "0002"
T = datetime(2025, 3, 1, 14, 30)  # naive UTC, as stored

# The rows written at 0002, table by table, in foreign-key order. Values only for columns that existed then.
SEED: dict[str, list[dict[str, Any]]] = {
    "users": [
        dict(id=1, email="admin@pharmacy.test", full_name="Ada Admin", role="admin", password_hash="argon2$x",
             active=True, created_at=datetime(2025, 1, 6, 9, 0), last_login_at=None, session_version=1),
        dict(id=2, email="pharm@pharmacy.test", full_name="Paula Pharmacist", role="pharmacist",
             password_hash="argon2$y", active=True, created_at=datetime(2025, 1, 7, 9, 0),
             last_login_at=datetime(2025, 3, 1, 8, 0), session_version=3),
    ],
    "patients": [
        dict(id=10, first_name="Margaret", last_name="Ellison", name_key="ellison, margaret",
             date_of_birth=date(1968, 4, 12), email="margaret@example.com", phone="(217) 555-0101",
             address_line1="14 Oak Lane", address_line2=None, city="Springfield", state="IL", postal_code="62704",
             conditions=["multiple sclerosis"], medications=["baclofen 10 mg"], allergies=[], reminders_opt_in=True,
             delivery_preference="ship", shipping_days=2, notes="prefers mornings",
             created_at=datetime(2025, 2, 1, 10, 0), updated_at=T),
        dict(id=11, first_name="José", last_name="Núñez", name_key="núñez, josé", date_of_birth=date(1990, 12, 31),
             email=None, phone=None, address_line1=None, address_line2=None, city=None, state=None, postal_code=None,
             conditions=[], medications=[], allergies=["sulfa"], reminders_opt_in=False,
             delivery_preference="pickup", shipping_days=0, notes=None,
             created_at=datetime(2025, 2, 2, 10, 0), updated_at=T),
    ],
    "prescribers": [
        dict(id=20, first_name="Elena", last_name="Marquez", credentials="MD", npi="1234567893", phone=None, fax=None,
             email="emarquez@neuro.example", address=None, created_at=datetime(2025, 1, 10)),
    ],
    "formulas": [
        dict(id=30, code="LDN-CAP-4.5", name="Naltrexone 4.5 mg capsules", form="capsule", strength_mcg=4500,
             usp_category="other_nonaqueous", storage="Room temperature", container="Amber vial",
             method="Mix and fill.", equipment=None, calculations=None, quality_checks=None,
             bud_reference="USP <795> (2023) default BUD", lead_time_business_days=2, active=True,
             created_at=datetime(2025, 1, 10)),
    ],
    "price_list": [
        dict(id=40, formula_id=30, quantity_milli=30000, days_supply=30, price_cents=5500,
             effective_at=datetime(2025, 1, 10), retired_at=None, created_by_id=1),
    ],
    "fees": [dict(id=41, code="shipping", amount_cents=895, effective_at=datetime(2025, 1, 10), retired_at=None)],
    "prescriptions": [
        dict(id=50, rx_number="RX-000050", patient_id=10, prescriber_id=20, formula_id=30, dose_mcg=4500,
             titration=[{"from_day": 1, "dose_mg": "1.5"}], dosing_time="bedtime", quantity_milli=30000,
             days_supply=30, refills_authorized=5, written_date=date(2025, 2, 3), expiry_date=date(2026, 2, 3),
             directions="Take 1 capsule at bedtime.", indication="Multiple sclerosis", indication_code="G35",
             status="active", status_reason=None, replaces_id=None, created_by_id=2,
             created_at=datetime(2025, 2, 3, 11, 0), updated_at=T),
        dict(id=51, rx_number="RX-000051", patient_id=11, prescriber_id=20, formula_id=30, dose_mcg=1500,
             titration=None, dosing_time="morning", quantity_milli=90000, days_supply=90, refills_authorized=0,
             written_date=date(2025, 2, 4), expiry_date=date(2026, 2, 4), directions="Take 1 capsule each morning.",
             indication="Fibromyalgia", indication_code="M79.7", status="on_hold", status_reason="awaiting labs",
             replaces_id=None, created_by_id=2, created_at=datetime(2025, 2, 4, 11, 0), updated_at=T),
    ],
    "orders": [
        dict(id=60, prescription_id=50, patient_id=10, fill_number=0, state="dispensed", held_from=None,
             state_changed_at=datetime(2025, 2, 6, 16, 0), quantity_milli=30000, days_supply=30, cap_note=None,
             earliest_dispense_date=date(2025, 2, 3), too_soon_override_by_id=None, too_soon_override_reason=None,
             delivery_method="ship", carrier="USPS", tracking_number="9400100000000000000000",
             lot_number="LDN-20250205-0001", bud=date(2025, 8, 4), quantity_made_milli=30000,
             qc_yield_milli=100000, qc_passed=True, qc_notes=None, deviations=None, verified_by_id=2,
             verified_at=datetime(2025, 2, 4, 9), compounded_by_id=2, compounded_at=datetime(2025, 2, 5, 9),
             checked_by_id=2, checked_at=datetime(2025, 2, 5, 15), released_by_id=2,
             released_at=datetime(2025, 2, 5, 16), dispensed_by_id=2, dispensed_at=datetime(2025, 2, 6, 16),
             dispensed_on=date(2025, 2, 6), run_out_date=date(2025, 3, 8), hold_reason=None, cancel_reason=None,
             price_cents=5500, shipping_cents=895, price_entry_id=40, created_by_id=2,
             created_at=datetime(2025, 2, 3, 12), updated_at=datetime(2025, 2, 6, 16)),
        dict(id=61, prescription_id=50, patient_id=10, fill_number=1, state="requested", held_from=None,
             state_changed_at=T, quantity_milli=30000, days_supply=30, cap_note=None,
             earliest_dispense_date=date(2025, 3, 2), too_soon_override_by_id=None, too_soon_override_reason=None,
             delivery_method="ship", carrier=None, tracking_number=None, lot_number=None, bud=None,
             quantity_made_milli=None, qc_yield_milli=None, qc_passed=None, qc_notes=None, deviations=None,
             verified_by_id=None, verified_at=None, compounded_by_id=None, compounded_at=None, checked_by_id=None,
             checked_at=None, released_by_id=None, released_at=None, dispensed_by_id=None, dispensed_at=None,
             dispensed_on=None, run_out_date=None, hold_reason=None, cancel_reason=None, price_cents=5500,
             shipping_cents=895, price_entry_id=40, created_by_id=2, created_at=T, updated_at=T),
    ],
    "refill_requests": [
        dict(id=70, prescription_id=50, patient_id=10, state="approved", source="link", delivery_method="ship",
             requested_at=datetime(2025, 3, 1, 13), requested_by_id=None, decided_at=T, decided_by_id=2,
             decline_reason=None, order_id=61, renewal_id=None, note=None),
    ],
    "outbox": [
        dict(id=80, dedupe_key="fill:60:reminder_early_7", kind="reminder_early", patient_id=10, prescription_id=50,
             order_id=60, refill_request_id=None, renewal_id=None, to_address="margaret@example.com",
             due_at=datetime(2025, 3, 1, 16), state="sent", next_attempt_at=datetime(2025, 3, 1, 16),
             lease_until=None, claimed_by=None, attempts=1, last_error=None, sent_at=datetime(2025, 3, 1, 16, 0, 5),
             cancelled_reason=None, message_id="<fill-60-early-7@pharmacy.example>", subject="Time to refill",
             body_text="Hello", body_html="<p>Hello</p>", created_at=datetime(2025, 2, 6, 16)),
        dict(id=81, dedupe_key="fill:60:reminder_order_by", kind="reminder_order_by", patient_id=10,
             prescription_id=50, order_id=60, refill_request_id=None, renewal_id=None,
             to_address="margaret@example.com", due_at=datetime(2025, 3, 4, 16), state="pending",
             next_attempt_at=datetime(2025, 3, 4, 16), lease_until=None, claimed_by=None, attempts=0,
             last_error=None, sent_at=None, cancelled_reason=None, message_id="<fill-60-order-by@pharmacy.example>",
             subject=None, body_text=None, body_html=None, created_at=datetime(2025, 2, 6, 16)),
    ],
    "delivery_attempts": [
        dict(id=90, message_id=80, at=datetime(2025, 3, 1, 16, 0, 5), result="sent", detail="250 2.0.0 accepted"),
    ],
    "audit_events": [
        dict(id=100, at=datetime(2025, 1, 5, 8, 0), actor_user_id=None, actor_kind="system", action="users.create",
             outcome="ok", entity_type="user", entity_id=1, patient_id=None, ip_address=None, details={"role": "admin"}),
        dict(id=101, at=T, actor_user_id=2, actor_kind="staff", action="patient.view", outcome="ok",
             entity_type="patient", entity_id=10, patient_id=10, ip_address="10.0.0.7", details=None),
    ],
    "heartbeats": [dict(name="scheduler", beat_at=T, detail="worker host-1")],
}
EARLIEST = datetime(2025, 1, 5, 8, 0)  # the first audit event: where the pharmacy's history starts
PK = {"heartbeats": "name"}


def _tables(conn: sa.Connection) -> dict[str, sa.Table]:
    metadata = sa.MetaData()
    metadata.reflect(conn)
    return dict(metadata.tables)


def seed(conn: sa.Connection) -> None:
    tables = _tables(conn)
    for name, rows in SEED.items():
        table = tables[name]
        required = {c.name for c in table.columns if not c.nullable and c.server_default is None}
        missing = required - set(rows[0])
        assert not missing, f"the {PREVIOUS_HEAD} schema of {name} needs {missing}: add them to SEED"
        conn.execute(table.insert(), rows)
    if conn.dialect.name == "postgresql":  # explicit ids: move the sequences past them, as a real database would be
        for name, rows in SEED.items():
            if "id" in rows[0]:
                conn.execute(sa.text(f"SELECT setval(pg_get_serial_sequence('{name}', 'id'), "
                                     f"(SELECT MAX(id) FROM {name}))"))


def snapshot(conn: sa.Connection) -> dict[str, list[tuple[Any, ...]]]:
    """Every seeded table, seeded columns only (a later migration may add columns), ordered by key."""
    tables = _tables(conn)
    out = {}
    for name, rows in SEED.items():
        table = tables[name]
        columns = [table.c[c] for c in rows[0]]
        out[name] = [tuple(r) for r in conn.execute(sa.select(*columns).order_by(table.c[PK.get(name, "id")]))]
    return out


def expected() -> dict[str, list[tuple[Any, ...]]]:
    return {name: sorted((tuple(row.values()) for row in rows), key=lambda r: r[0]) for name, rows in SEED.items()}


def test_rows_written_at_the_previous_head_survive_the_upgrade(empty_db: str, app_config: dict) -> None:
    app = create_app({**app_config, "DATABASE_URL": empty_db})
    from pharmacy.extensions import db

    with app.app_context():
        upgrade(revision=PREVIOUS_HEAD)
        with db.engine.begin() as conn:
            assert "ops_events" not in _tables(conn)
            seed(conn)
        with db.engine.connect() as conn:
            before = snapshot(conn)
        assert before == expected()  # what went in is what we compare against

        upgrade()  # to the current head

        with db.engine.connect() as conn:
            assert _without_rewritten(snapshot(conn)) == _without_rewritten(before)
            for name, rows in SEED.items():
                count = conn.execute(sa.text(f'SELECT COUNT(*) FROM "{name}"')).scalar_one()
                assert count == len(rows), name
        _check_data_step(db)
        _check_latest_fill_backfilled(db)
        _check_supply_recomputed(db)
        _check_models_read_old_rows(db)

        # Down to the previous head and up again: the data is untouched, the log is rebuilt.
        downgrade(revision=PREVIOUS_HEAD)
        with db.engine.connect() as conn:
            assert snapshot(conn) == before
            assert "ops_events" not in _tables(conn)
        upgrade()
        with db.engine.connect() as conn:
            assert _without_rewritten(snapshot(conn)) == _without_rewritten(before)
        _check_data_step(db)
        _check_supply_recomputed(db)
        db.session.remove()
        db.engine.dispose()


# 0007 gives two order columns a new meaning (see _check_supply_recomputed): the rest must be untouched.
REWRITTEN = {"orders": {"dispensed_on", "run_out_date"}}


def _without_rewritten(snap: dict[str, list[tuple[Any, ...]]]) -> dict[str, list[tuple[Any, ...]]]:
    out = {}
    for name, rows in snap.items():
        drop = [i for i, column in enumerate(SEED[name][0]) if column in REWRITTEN.get(name, set())]
        out[name] = [tuple(v for i, v in enumerate(row) if i not in drop) for row in rows]
    return out


def _check_latest_fill_backfilled(db: Any) -> None:
    """0006's data step (and 0007's recomputation): each prescription knows its latest dispensed fill and the
    last day its supply covers (the requested order does not count)."""
    rows = db.session.execute(sa.text(
        "SELECT id, latest_fill_number, latest_run_out_date FROM prescriptions ORDER BY id")).all()
    db.session.rollback()
    assert [(r[0], r[1], str(r[2])[:10] if r[2] else None) for r in rows] == [(50, 0, "2025-03-07"), (51, None, None)]


def _check_supply_recomputed(db: Any) -> None:
    """0007: the supply model's columns, recomputed from the orders dispensed under the old meaning.

    The order's old `dispensed_on` (the day the supply started) moves to `supply_starts_on`; `dispensed_on`
    becomes the day it left (the local date of `dispensed_at`); run-out becomes the last day covered; the
    prescription caches its days dispensed and the latest dispensing's days.
    """
    orders = db.session.execute(sa.text(
        "SELECT id, authorized_fill, dispensed_on, supply_starts_on, run_out_date FROM orders ORDER BY id")).all()
    rxs = db.session.execute(sa.text(
        "SELECT id, days_dispensed, latest_days_supply FROM prescriptions ORDER BY id")).all()
    db.session.rollback()
    as_text = [tuple(str(v)[:10] if v is not None else None for v in row) for row in orders]
    assert as_text == [("60", "0", "2025-02-06", "2025-02-06", "2025-03-07"), ("61", "1", None, None, None)]
    assert [tuple(r) for r in rxs] == [(50, 30, 30), (51, 0, None)]


def _check_data_step(db: Any) -> None:
    from pharmacy.ops.models import HISTORY_START, SCHEMA_UPGRADE, OpsEvent

    events = db.session.execute(sa.select(OpsEvent).order_by(OpsEvent.id)).scalars().all()
    kinds = [e.kind for e in events]
    assert kinds.count(HISTORY_START) == 1 and kinds.count(SCHEMA_UPGRADE) == 1, kinds
    start = next(e for e in events if e.kind == HISTORY_START)
    assert start.at.replace(tzinfo=None) == EARLIEST  # backfilled from the oldest row, UTC
    upgrade_event = next(e for e in events if e.kind == SCHEMA_UPGRADE)
    assert upgrade_event.details == {"revision": "0003", "from": "0002"}
    assert upgrade_event.at > start.at
    db.session.rollback()


def _check_models_read_old_rows(db: Any) -> None:
    from pharmacy.compounding.models import Order
    from pharmacy.core.models import AuditEvent, User
    from pharmacy.patients.models import Patient
    from pharmacy.reminders.models import OutboxMessage

    patient = db.session.get(Patient, 11)
    assert (patient.full_name, patient.allergies, patient.date_of_birth) == ("José Núñez", ["sulfa"], date(1990, 12, 31))
    order = db.session.get(Order, 60)
    assert order.state.value == "dispensed" and str(order.quantity) == "30" and order.total_cents == 6395
    assert order.dispensed_at.tzinfo is not None
    assert db.session.get(User, 2).session_version == 3
    assert db.session.get(OutboxMessage, 81).state.value == "pending"
    assert db.session.get(AuditEvent, 100).details == {"role": "admin"}
    db.session.rollback()
