"""`flask bench seed` at a small size: consistent rows, deterministic, and data the services accept."""
from __future__ import annotations

import hashlib
import shutil
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from pharmacy import create_app
from pharmacy.bench.generator import generate
from pharmacy.compounding.models import Order
from pharmacy.compounding.rules import OrderState
from pharmacy.core.clock import FixedClock
from pharmacy.extensions import db
from pharmacy.prescriptions.models import Prescription
from pharmacy.prescriptions.rules import RxStatus
from pharmacy.reminders.models import OutboxMessage
from pharmacy.reminders.rules import OutboxState
from pharmacy.workflows import refill_requests as refill_flow
from tests.conftest import T0, USE_PG

PATIENTS = 150
PASSWORD = "bench password 123"


@pytest.fixture
def generated(app: Flask) -> dict[str, Any]:
    with app.app_context():
        report, credentials = generate(patients=PATIENTS, seed=7, password=PASSWORD)
    return {"report": report, "credentials": credentials}


def test_rows_are_consistent_and_cover_every_state(app: Flask, generated: dict[str, Any]) -> None:
    report = generated["report"]
    assert report.patients == PATIENTS
    assert report.rows["orders"] > PATIENTS * 5  # years of monthly fills
    assert report.rows_per_second > 0 and report.peak_rss_mb > 0
    assert {c[1] for c in generated["credentials"]} == {
        "bench-admin@pharmacy.example", "bench-pharmacist@pharmacy.example", "bench-checker@pharmacy.example",
        "bench-technician@pharmacy.example"}
    with app.app_context():
        if not USE_PG:
            assert db.session.execute(sa.text("PRAGMA foreign_key_check")).all() == []
            assert db.session.execute(sa.text("PRAGMA foreign_keys")).scalar_one() == 1  # switched back on
        outbox_states = Counter(db.session.execute(sa.select(OutboxMessage.state)).scalars())
        assert set(outbox_states) == set(OutboxState), outbox_states
        order_states = Counter(db.session.execute(sa.select(Order.state)).scalars())
        assert {OrderState.DISPENSED, OrderState.CANCELLED} <= set(order_states)
        assert len(set(order_states) - {OrderState.DISPENSED, OrderState.CANCELLED}) >= 3, order_states
        forms = set(db.session.execute(sa.text(
            "SELECT DISTINCT f.form FROM prescriptions p JOIN formulas f ON f.id = p.formula_id")).scalars())
        assert forms == {"capsule", "sublingual_liquid", "transdermal_cream"}
        assert db.session.execute(sa.select(sa.func.count()).where(Prescription.titration.is_not(None))).scalar_one()
        statuses = set(db.session.execute(sa.select(Prescription.status)).scalars())
        assert {RxStatus.ACTIVE, RxStatus.REPLACED, RxStatus.DISCONTINUED} <= statuses

        fills: dict[int, list[int]] = {}
        for o in db.session.execute(sa.select(Order).order_by(Order.id)).scalars():
            if o.state == OrderState.DISPENSED:
                # The supply model: it reaches the patient on or after the day it left, and covers its days from
                # then — or from after the supply already on hand (an early fill extends the run-out).
                assert o.supply_starts_on >= o.dispensed_on
                assert o.run_out_date >= o.supply_starts_on + timedelta(days=o.days_supply - 1)
                assert o.dispensed_at is not None and o.lot_number and o.bud and o.bud > o.compounded_at.date()
                assert o.quantity > 0 and o.price_cents > 0 and o.price_entry_id
            if o.state != OrderState.CANCELLED:
                fills.setdefault(o.prescription_id, []).append(o.fill_number)
        for numbers in fills.values():  # 0, 1, 2 … per prescription, no gaps, never past the refills
            assert sorted(numbers) == list(range(len(numbers)))
        # Each prescription's cached supply is the supply model walked over its dispensings.
        from pharmacy.supply import reads

        for rx in db.session.execute(sa.select(Prescription).where(Prescription.days_dispensed > 0)
                                     .limit(200)).scalars():
            assert reads.supply_of(rx).run_out == reads.recomputed_supply(rx).run_out, rx.id
            assert rx.days_dispensed == reads.recomputed_supply(rx).days_dispensed
        over = db.session.execute(sa.text(
            "SELECT count(*) FROM orders o JOIN prescriptions p ON p.id = o.prescription_id "
            "WHERE o.fill_number > p.refills_authorized")).scalar_one()
        assert over == 0
        # One open request or fill in progress per prescription, as the services insist.
        both = db.session.execute(sa.text(
            "SELECT count(*) FROM refill_requests r JOIN orders o ON o.prescription_id = r.prescription_id "
            "WHERE r.state IN ('open', 'awaiting_renewal') AND o.state NOT IN ('dispensed', 'cancelled')")).scalar_one()
        assert both == 0
        # Each prescription's latest dispensed fill, as Prescription.note_dispensed keeps it.
        latest = {rx_id: (n, run_out) for rx_id, n, run_out in db.session.execute(sa.text(
            "SELECT o.prescription_id, o.fill_number, o.run_out_date FROM orders o WHERE o.state = 'dispensed' "
            "AND o.fill_number = (SELECT max(x.fill_number) FROM orders x WHERE x.prescription_id = o.prescription_id "
            "AND x.state = 'dispensed')")).all()}
        kept = db.session.execute(sa.select(Prescription.id, Prescription.latest_fill_number,
                                            Prescription.latest_run_out_date)).all()
        assert latest and {i: (n, str(d)[:10]) for i, n, d in kept if n is not None} == {
            i: (n, str(d)[:10]) for i, (n, d) in latest.items()}
        assert all(n is None and d is None for i, n, d in kept if i not in latest)
        # Each open request carries its prescription's run-out (the refill queue's order), as supply.services keeps it.
        open_, drift = db.session.execute(sa.text(
            "SELECT count(*), sum(CASE WHEN (r.run_out_date IS NULL) != (p.latest_run_out_date IS NULL) "
            "OR r.run_out_date != p.latest_run_out_date THEN 1 ELSE 0 END) FROM refill_requests r "
            "JOIN prescriptions p ON p.id = r.prescription_id WHERE r.state IN ('open', 'awaiting_renewal')")).one()
        assert open_ > 0 and drift == 0


def test_the_services_accept_the_data(app: Flask, generated: dict[str, Any], clock: FixedClock) -> None:
    from pharmacy.compounding import queries
    from pharmacy.core.actor import staff
    from pharmacy.core.models import User
    from pharmacy.core.roles import Role
    from pharmacy.dashboard.patient_page import patient_record
    from pharmacy.dashboard.services import today_view
    from pharmacy.refills import services as refills
    from pharmacy.refills.rules import RequestSource
    from pharmacy.reminders import bulk_planning, claims, planning

    with app.test_request_context("/"):
        uid = db.session.execute(
            sa.select(User.id).where(User.email == "bench-pharmacist@pharmacy.example")).scalar_one()
        pharmacist = staff(uid, Role.PHARMACIST)
        view = today_view(pharmacist)
        assert any(t.count for t in view.tiles)
        busiest = db.session.execute(
            sa.select(Order.patient_id).group_by(Order.patient_id).order_by(sa.func.count().desc()).limit(1)
        ).scalar_one()
        assert patient_record(pharmacist, busiest).prescriptions
        open_order = db.session.execute(
            sa.select(Order.id).where(Order.state == OrderState.REQUESTED).limit(1)).scalar_one_or_none()
        if open_order is not None and hasattr(queries, "order_view"):
            assert queries.order_view(pharmacist, open_order).order.id == open_order

        # The generated pending reminders are exactly what planning would write: a re-plan changes nothing.
        result = bulk_planning.replan_all(commit=False)
        assert result.fills > 0
        assert (result.added, result.moved, result.revived, result.cancelled, result.renewal_tasks) == (0, 0, 0, 0, 0)
        latest = db.session.execute(
            sa.select(OutboxMessage.order_id).where(OutboxMessage.state == OutboxState.PENDING,
                                                    OutboxMessage.dedupe_key.like("fill:%")).limit(1)).scalar_one()
        assert planning.plan_for_order(latest) == 0

        # A refill can be asked for on an eligible prescription, and the pharmacy can approve it.
        for rx in db.session.execute(sa.select(Prescription).where(Prescription.status == RxStatus.ACTIVE)).scalars():
            if refills.eligibility_for(rx).ok:
                outcome = refill_flow.request(pharmacist, rx.id, source=RequestSource.STAFF)
                assert outcome.created
                order = refill_flow.approve(pharmacist, outcome.request.id)
                assert order.fill_number >= 1
                break
        else:
            pytest.fail("no eligible prescription in the generated data")
        db.session.commit()

    # At noon the reminders planned for 10:00 today are due, and delivery claims them.
    clock.set(T0 + timedelta(hours=3))
    with app.app_context():
        ids = claims.claim_batch("test-worker", limit=1000)
        assert ids
        states = set(db.session.execute(
            sa.select(OutboxMessage.state).where(OutboxMessage.id.in_(ids))).scalars())
        assert states == {OutboxState.SENDING}


def _digest(url: str) -> str:
    engine = sa.create_engine(url)
    h = hashlib.sha256()
    with engine.connect() as conn:
        for table in ("patients", "prescriptions", "orders", "order_ingredient_lots", "payments", "refill_requests",
                      "renewal_requests", "outbox", "screening_alerts"):
            for row in conn.execute(sa.text(f"SELECT * FROM {table} ORDER BY id")):
                h.update(repr(tuple(row)).encode())
    engine.dispose()
    return h.hexdigest()


@pytest.mark.skipif(USE_PG, reason="compares two SQLite files; the generator's code path is the same on PostgreSQL")
def test_same_seed_same_day_same_rows(app_config: dict, _schema: str, tmp_path: Path, clock: FixedClock) -> None:
    digests = []
    for name in ("a.db", "b.db"):
        path = tmp_path / name
        shutil.copyfile(_schema, path)
        url = f"sqlite:///{path}"
        app = create_app({**app_config, "DATABASE_URL": url}, clock=clock)
        with app.app_context():
            generate(patients=40, seed=11, password=PASSWORD)
            db.session.remove()
            db.engine.dispose()
        digests.append(_digest(url))
    assert digests[0] == digests[1]


def test_adding_to_a_database_keeps_ids_and_lot_numbers_unique(app: Flask) -> None:
    with app.app_context():
        generate(patients=20, seed=1, password=PASSWORD)
        generate(patients=20, seed=2, password=PASSWORD)
        assert db.session.execute(sa.select(sa.func.count()).select_from(Order)).scalar_one() > 200
        dupes = db.session.execute(sa.text(
            "SELECT count(*) FROM (SELECT lot_number FROM orders WHERE lot_number IS NOT NULL "
            "GROUP BY lot_number HAVING count(*) > 1) d")).scalar_one()
        assert dupes == 0
