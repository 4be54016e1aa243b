"""Review of returned fills (and the changes around them): each test fails on the reviewed code and names what a
patient or pharmacist would see go wrong."""
from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from pharmacy.compounding.models import Order
from pharmacy.compounding.rules import OrderState
from pharmacy.extensions import db
from pharmacy.prescriptions.models import Prescription
from pharmacy.supply import reads
from pharmacy.workflows import orders as order_flow
from tests import factories
from tests.conftest import USE_PG


def _fill(w: dict[str, Any], rx_id: int, **dispense: Any) -> Order:
    order = order_flow.start_fill(w["technician"], rx_id)
    factories.run_order_to(w, order.id, "ready")
    order_flow.dispense(w["pharmacist"], order.id, **dispense)
    return db.session.get(Order, order.id)


@pytest.mark.postgres
@pytest.mark.skipif(not USE_PG, reason="needs PostgreSQL: SQLite serialises writers")
def test_a_dispensing_racing_a_return_waits_for_it_and_reads_the_supply_after(app: Flask, staff: dict,
                                                                           clock: Any) -> None:
    """Fill 1 is returned (lost) while the counter dispenses the already-made fill 2 of the same prescription. Found
    in review: each locked only its own order, so the dispensing read the cached supply before the return
    committed and fill 2 was recorded as "Refill 1" (label, FHIR type RF) on top of a fill that no longer counted.
    Both now lock the prescription first: the dispensing waits, and fill 2 is the original fill (0), as the same
    steps one after the other give."""
    with app.test_request_context("/"):
        w = factories.world(staff)
        first = _fill(w, w["rx"].id)
        clock.advance(timedelta(days=25))
        second = order_flow.start_fill(w["technician"], w["rx"].id)
        factories.run_order_to(w, second.id, "ready")
        ids = {"rx": w["rx"].id, "first": first.id, "second": second.id}
        actors = {"pharmacist": w["pharmacist"], "technician": w["technician"]}
        db.session.commit()

    returned = threading.Event()
    errors: list[BaseException] = []

    def do_return() -> None:
        with app.test_request_context("/"):
            try:
                order_flow.return_fill(actors["pharmacist"], ids["first"], "lost_in_transit")
                db.session.flush()
                returned.set()
                time.sleep(1.5)  # the counter dispenses meanwhile
                db.session.commit()
            except BaseException as exc:
                errors.append(exc)
                returned.set()
                db.session.rollback()
            finally:
                db.session.remove()

    def do_dispense() -> None:
        returned.wait(30)
        with app.test_request_context("/"):
            try:
                order_flow.dispense(actors["technician"], ids["second"])
                db.session.commit()
            except BaseException as exc:
                errors.append(exc)
                db.session.rollback()
            finally:
                db.session.remove()

    threads = [threading.Thread(target=do_return), threading.Thread(target=do_dispense)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)

    with app.app_context():
        assert errors == []
        first_o, second_o = db.session.get(Order, ids["first"]), db.session.get(Order, ids["second"])
        rx = db.session.get(Prescription, ids["rx"])
        again = reads.recomputed_supply(rx)
        assert (rx.latest_run_out_date, rx.days_dispensed) == (again.run_out, again.days_dispensed)
        assert (first_o.state, second_o.state) == (OrderState.CANCELLED, OrderState.DISPENSED)
        # The first fill was taken back before the second left: the second is the original fill again (what the
        # same steps one after the other give), not "Refill 1" drawn on top of a fill that no longer counts.
        assert second_o.authorized_fill == 0, (
            f"order {second_o.id} dispensed as authorized fill {second_o.authorized_fill} from a supply read before "
            "the return committed")


def test_an_auto_refill_patient_whose_refill_is_returned_is_asked_for_again(app_ctx: Flask, staff: dict,
                                                                                   clock: Any) -> None:
    """Auto-refill asks once per supply, keyed by the latest dispensed fill. The automatic refill's parcel is
    returned (lost): the latest fill is the earlier one again, whose turn was already taken — found in review, the
    patient (enrolled so as not to have to ask) was out of medicine and never asked for again. The return gives the
    turn back (autorefill/turns.reopen_turn)."""
    from pharmacy.autorefill import services as autorefill
    from pharmacy.core.actor import Actor
    from pharmacy.core.context import today
    from pharmacy.refills.models import RefillRequest
    from pharmacy.refills.rules import RefillRequestState, RequestSource
    from pharmacy.workflows import refill_requests as refill_flow
    from pharmacy.workflows.next_refill import next_refill

    w = factories.world(staff)
    first = _fill(w, w["rx"].id)
    autorefill.enrol(Actor(kind="patient", patient_id=w["patient"].id), w["rx"].id)
    order_by = next_refill(db.session.get(Prescription, w["rx"].id)).order_by
    clock.advance(order_by - today())
    assert autorefill.run_due().requested == 1
    req = db.session.execute(sa.select(RefillRequest).where(RefillRequest.source == RequestSource.AUTO)).scalar_one()
    order = refill_flow.approve(w["pharmacist"], req.id)
    factories.run_order_to(w, order.id, "ready")
    order_flow.dispense(w["pharmacist"], order.id, method="ship", carrier="USPS", tracking_number="9400100000000000000001")
    clock.advance(timedelta(days=6))
    order_flow.return_fill(w["pharmacist"], order.id, "lost_in_transit", "Never arrived")
    rx = db.session.get(Prescription, w["rx"].id)
    assert rx.latest_fill_number == first.fill_number and rx.latest_run_out_date < today()  # out of medicine
    clock.advance(timedelta(days=1))
    report = autorefill.run_due()
    opened = db.session.execute(sa.select(RefillRequest).where(
        RefillRequest.prescription_id == rx.id, RefillRequest.state == RefillRequestState.OPEN)).scalars().all()
    assert report.requested == 1 and len(opened) == 1, (
        f"auto-refill did nothing for an enrolled patient out of medicine since {rx.latest_run_out_date}: {report.line()}")


@pytest.mark.parametrize("reason", ["dispensing_error", "returned_unused", "wrong_address"])
def test_a_lot_recall_still_lists_a_returned_fill_as_having_left_the_pharmacy(app_ctx: Flask, staff: dict,
                                                                              clock: Any, reason: str) -> None:
    """A returned fill left the pharmacy: the patient (or a stranger, at the wrong address) had the preparation in
    hand — given the wrong strength, they may have taken some. When its lot is recalled, the recall must say it
    reached a patient, so that someone calls. Found in review: a return makes the order 'cancelled', and the recall
    read 'cancelled' as 'never left the pharmacy' (reached_patient False, 'no' in the CSV, no badge on the page)."""
    from pharmacy.compounding import recall

    w = factories.world(staff)
    fill = _fill(w, w["rx"].id)
    clock.advance(timedelta(days=4))
    order_flow.return_fill(w["pharmacist"], fill.id, reason, "Patient called")
    result = recall.find(w["pharmacist"], order_lot=fill.lot_number)
    row = next(r for r in result.orders if r.order_id == fill.id)
    assert row.reached_patient, f"a {reason} return of order {fill.id} reads as never having left the pharmacy"
    assert ",yes," in recall.to_csv(result).splitlines()[1]
