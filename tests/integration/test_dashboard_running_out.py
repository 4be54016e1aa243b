"""The dashboard's "running out" call list: active prescriptions whose latest supply ends soon (or ended lately)
with nothing ordered or requested, read from the latest fill kept on the prescription."""
from __future__ import annotations

from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from flask import Flask

from pharmacy.core.context import today
from pharmacy.dashboard.services import running_out
from pharmacy.extensions import db
from pharmacy.prescriptions.models import Prescription
from pharmacy.prescriptions.rules import RxStatus
from pharmacy.refills.rules import RequestSource
from pharmacy.workflows import orders as order_flow
from pharmacy.workflows import refill_requests as refill_flow
from tests.factories import actor, run_order_to, world


def _dispense(w: dict[str, Any]) -> Any:
    order = order_flow.start_fill(w["pharmacist"], w["rx"].id)
    run_order_to(w, order.id, "dispensed")
    db.session.commit()
    return order


def _listed(days: int = 7) -> list[tuple[int, int]]:
    """(prescription id, fill number) of each row, in the list's order."""
    return [(r.rx.id, r.rx.latest_fill_number) for r in running_out(today(), days=days)]


def test_a_fill_running_out_within_the_week_is_listed_with_its_latest_fill(app_ctx: Flask, clock: Any,
                                                                           staff: dict) -> None:
    w = world(staff)
    first = _dispense(w)
    rx = db.session.get(Prescription, w["rx"].id)
    assert (rx.latest_fill_number, rx.latest_run_out_date) == (0, first.run_out_date)
    assert _listed() == []  # a month's supply: not yet

    clock.set(clock.now() + timedelta(days=first.days_supply - 5))
    assert _listed() == [(rx.id, 0)]

    # The next fill is dispensed: the prescription's latest run-out moves a month on, and it leaves the list,
    # though the first fill's run-out is still inside the window.
    second = _dispense(w)
    db.session.expire_all()
    rx = db.session.get(Prescription, w["rx"].id)
    assert (rx.latest_fill_number, rx.latest_run_out_date) == (1, second.run_out_date)
    assert _listed() == []


def test_overdue_ones_come_first_and_an_order_a_request_or_a_stopped_prescription_takes_them_off(
        app_ctx: Flask, clock: Any, staff: dict) -> None:
    early = world(staff, patient={"first_name": "Early", "email": "early@example.com"})
    first_fill = _dispense(early)
    clock.set(clock.now() + timedelta(days=3))
    later = world(staff, patient={"first_name": "Later", "email": "later@example.com"})
    _dispense(later)
    # Two days past the first patient's run-out: they are overdue, the second runs out within the week.
    clock.set(clock.now() - timedelta(days=3) + timedelta(days=first_fill.days_supply + 2))
    assert _listed() == [(early["rx"].id, 0), (later["rx"].id, 0)]

    refill_flow.request(actor(staff["technician"]), early["rx"].id, source=RequestSource.STAFF)
    db.session.commit()
    assert _listed() == [(later["rx"].id, 0)]

    order_flow.start_fill(later["pharmacist"], later["rx"].id)
    db.session.commit()
    assert _listed() == []

    # Long overdue (beyond 30 days) drops off too; and a prescription on hold is never listed.
    third = world(staff, patient={"first_name": "Third", "email": "third@example.com"})
    _dispense(third)
    clock.set(clock.now() + timedelta(days=first_fill.days_supply - 3))
    assert _listed() == [(third["rx"].id, 0)]
    db.session.execute(sa.update(Prescription).where(Prescription.id == third["rx"].id)
                       .values(status=RxStatus.ON_HOLD))
    db.session.commit()
    assert _listed() == []


def test_the_today_page_lists_the_oldest_waiting_requests_and_orders_first(app_ctx: Flask, clock: Any,
                                                                          staff: dict) -> None:
    from pharmacy.dashboard.services import today_view

    requested, ordered = [], []
    for i in range(12):
        w = world(staff, patient={"first_name": f"Pat{i}", "email": f"pat{i}@example.com"})
        _dispense(w)
        if i % 2 == 0:
            outcome = refill_flow.request(actor(staff["technician"]), w["rx"].id, source=RequestSource.STAFF)
            requested.append(outcome.request.id)
        else:
            ordered.append(order_flow.start_fill(w["pharmacist"], w["rx"].id).id)
        db.session.commit()
        clock.advance(timedelta(hours=1))

    view = today_view(actor(staff["pharmacist"]))

    assert len(requested) == 6
    assert [row.id for row in view.requests] == requested[:5]  # oldest first, five at most
    assert [o.id for o in view.oldest_orders] == ordered[:8]
    assert all(o.first_name.startswith("Pat") for o in view.oldest_orders)
