"""A dispensed fill taken back (a parcel lost in the post) stops counting, and its replacement is an ordinary fill.

Found in the supply review: nothing could undo a dispensing, so a lost parcel re-made as a new fill counted twice —
a month the patient never had, a reminder a month late and two refills used for one month of medicine."""
from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from pharmacy.billing import services as billing
from pharmacy.billing import totals
from pharmacy.compounding.models import Order
from pharmacy.compounding.rules import OrderState
from pharmacy.core.context import today
from pharmacy.core.errors import Conflict, Forbidden, ValidationFailed
from pharmacy.core.models import AuditEvent
from pharmacy.extensions import db
from pharmacy.prescriptions.models import Prescription
from pharmacy.reminders.models import OutboxMessage
from pharmacy.reminders.rules import MessageKind, OutboxState
from pharmacy.supply import reads
from pharmacy.workflows import orders as order_flow
from tests import factories


def _fill(w: dict[str, Any], *, ship: bool = False) -> Order:
    order = order_flow.start_fill(w["technician"], w["rx"].id)
    factories.run_order_to(w, order.id, "ready")
    details = {"method": "ship", "carrier": "USPS", "tracking_number": "9400100000000000000000"} if ship else {}
    order_flow.dispense(w["pharmacist"], order.id, **details)
    return db.session.get(Order, order.id)


def _rx(w: dict[str, Any]) -> Prescription:
    db.session.expire_all()
    return db.session.get(Prescription, w["rx"].id)


def _pending(kinds: tuple[MessageKind, ...] = (MessageKind.REMINDER_EARLY, MessageKind.REMINDER_ORDER_BY)) -> set:
    db.session.flush()
    db.session.expire_all()
    return {(m.order_id, m.kind, m.due_at) for m in db.session.execute(sa.select(OutboxMessage).where(
        OutboxMessage.state == OutboxState.PENDING, OutboxMessage.kind.in_(kinds))).scalars()}


def test_a_lost_parcel_is_returned_and_replaced_without_counting_twice(app_ctx: Flask, staff: dict,
                                                                       clock: Any) -> None:
    w = factories.world(staff, patient={"shipping_days": 2})
    first = _fill(w)
    after_first = (_rx(w).latest_run_out_date, reads.supply_of(_rx(w)).refills_left, _pending())
    clock.advance(timedelta(days=24))
    lost = _fill(w, ship=True)
    billing.record_payment(w["technician"], patient_id=w["patient"].id, amount_cents=lost.total_cents,
                           method="card", order_id=lost.id)
    assert _rx(w).latest_run_out_date == first.run_out_date + timedelta(days=30)
    assert reads.supply_of(_rx(w)).refills_left == after_first[1] - 1

    clock.advance(timedelta(days=7))  # the parcel never came
    outcome = order_flow.return_fill(w["pharmacist"], lost.id, "lost_in_transit", "USPS says delivered; it was not")
    assert outcome.order.state == OrderState.CANCELLED and outcome.order.returned_at is not None
    assert outcome.order.cancel_reason == "Returned after dispensing: Lost in the post — USPS says delivered; it was not."
    # The supply is the first fill's again: run-out, refills and the reminders planned from it.
    rx = _rx(w)
    assert (rx.latest_run_out_date, reads.supply_of(rx).refills_left) == after_first[:2]
    assert rx.latest_fill_number == first.fill_number
    assert "no medicine since" in outcome.message and "available again" in outcome.message
    assert {o for (o, _, _) in _pending()} <= {first.id}
    # No charge for what never arrived: what was paid for it is a credit.
    ledger = billing.patient_ledger(w["patient"].id)
    assert ledger.charged_cents == first.total_cents and ledger.paid_cents == lost.total_cents
    assert totals.verify() == []

    # The replacement is an ordinary fill (not too soon: the patient is out), the same refill, stacked on nothing.
    again = _fill(w, ship=True)
    assert again.authorized_fill == lost.authorized_fill
    assert again.supply_starts_on == today() + timedelta(days=2)  # the day it arrives
    assert reads.supply_of(_rx(w)).refills_left == after_first[1] - 1
    # The credit paid for the replacement: what is owed is the first fill, never paid for in this story.
    assert billing.patient_ledger(w["patient"].id).balance_cents == first.total_cents
    assert totals.verify() == []
    event = db.session.execute(sa.select(AuditEvent).where(AuditEvent.action == "order.return")).scalar_one()
    assert (event.entity_id, event.patient_id, event.details["reason"]) == (lost.id, w["patient"].id,
                                                                             "lost_in_transit")
    assert "USPS" not in str(event.details)  # the note stays on the order


def test_only_the_latest_dispensed_fill_by_a_pharmacist_with_a_reason(app_ctx: Flask, staff: dict,
                                                                      clock: Any) -> None:
    w = factories.world(staff)
    first = _fill(w)
    clock.advance(timedelta(days=25))
    second = _fill(w)
    with pytest.raises(Conflict, match="Only the latest fill"):
        order_flow.return_fill(w["pharmacist"], first.id, "damaged")
    with pytest.raises(Forbidden):
        order_flow.return_fill(w["technician"], second.id, "damaged")
    with pytest.raises(ValidationFailed) as bad:
        order_flow.return_fill(w["pharmacist"], second.id, "changed my mind")
    assert "reason" in bad.value.fields
    with pytest.raises(ValidationFailed) as long_note:
        order_flow.return_fill(w["pharmacist"], second.id, "damaged", "x" * 241)
    assert "note" in long_note.value.fields
    order_flow.return_fill(w["pharmacist"], second.id, "damaged")
    with pytest.raises(Conflict, match="Only a dispensed fill"):
        order_flow.return_fill(w["pharmacist"], second.id, "damaged")  # not twice
    # Then the first is the latest, and may be returned in its turn.
    order_flow.return_fill(w["pharmacist"], first.id, "dispensing_error", "Wrong strength in the bag")
    rx = _rx(w)
    assert (rx.latest_run_out_date, rx.latest_fill_number, rx.days_dispensed) == (None, None, 0)
    assert _pending() == set()
    assert totals.verify() == []


def test_an_order_not_yet_dispensed_is_cancelled_not_returned(app_ctx: Flask, staff: dict) -> None:
    w = factories.world(staff)
    order = order_flow.start_fill(w["technician"], w["rx"].id)
    with pytest.raises(Conflict, match="Only a dispensed fill can be returned; this order is only requested"):
        order_flow.return_fill(w["pharmacist"], order.id, "lost_in_transit")


def test_a_fill_returned_after_a_renewal_takes_its_days_off_the_renewal_too(app_ctx: Flask, staff: dict,
                                                                           clock: Any) -> None:
    """The parcel is found lost after the prescription was renewed: the renewal carried the lost fill's run-out, so
    its reminders would come a month late unless it follows the return."""
    from pharmacy.workflows import prescription_changes

    w = factories.world(staff)
    first = _fill(w)
    clock.advance(timedelta(days=24))
    lost = _fill(w, ship=True)
    clock.advance(timedelta(days=2))
    renewal = prescription_changes.replace(w["pharmacist"], w["rx"].id, factories.replacement_data(w))
    assert renewal.latest_run_out_date == lost.run_out_date
    clock.advance(timedelta(days=3))
    order_flow.return_fill(w["pharmacist"], lost.id, "lost_in_transit")
    db.session.expire_all()
    renewal = db.session.get(Prescription, renewal.id)
    assert renewal.latest_run_out_date == first.run_out_date
    assert renewal.latest_run_out_date == reads.recomputed_supply(renewal).run_out
    # Its reminders follow the first fill's supply (the order whose supply it now holds), not the lost one's.
    reminders = {(o, k) for (o, k, _) in _pending(
        (MessageKind.REMINDER_EARLY, MessageKind.REMINDER_ORDER_BY, MessageKind.REMINDER_OVERDUE))}
    assert reminders and {o for (o, _) in reminders} == {first.id}
