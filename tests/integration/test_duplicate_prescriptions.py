"""A second current LDN prescription for one patient is a screening stop, not only a note on the form.

Found in the clinical review: the intake form warned, but an e-prescription, the API or a form sent anyway made a
second prescription that filled like any other — two supplies, two sets of reminders, a patient who may take both
(docs/domain.md "Safety screening": duplicate therapy)."""
from __future__ import annotations

from decimal import Decimal

import pytest
from flask import Flask

from pharmacy.compounding import services as orders
from pharmacy.compounding.models import Order
from pharmacy.compounding.rules import OrderState
from pharmacy.core.context import today
from pharmacy.core.errors import Conflict, Forbidden, ValidationFailed
from pharmacy.extensions import db
from pharmacy.prescriptions import services as prescriptions
from pharmacy.prescriptions.models import ScreeningAlert
from pharmacy.prescriptions.rules import Form, RxStatus, Severity
from pharmacy.workflows import orders as order_flow
from pharmacy.workflows import prescription_changes
from tests import factories


def codes(rx_id: int, order_id: int | None = None) -> dict[str, ScreeningAlert]:
    return {a.code: a for a in prescriptions.screening.alerts_for(rx_id, order_id)}


def second_rx(w: dict, **overrides) -> object:
    cream = factories.formula("LDN-CRM-1", form=Form.TRANSDERMAL_CREAM, strength="1")
    data = {"dose_mg": Decimal("1.5"), **overrides}
    return factories.prescription(w["pharmacist"], w["patient"].id, cream.id, w["prescriber"].id, **data)


def test_the_newer_prescription_stops_until_a_pharmacist_decides(app_ctx: Flask, staff: dict) -> None:
    w = factories.world(staff)
    old = w["rx"]
    new = second_rx(w)
    alert = codes(new.id)["duplicate_ldn"]
    assert alert.severity == Severity.OVERRIDABLE_STOP
    assert old.rx_number in alert.message and "6 mg a day" in alert.message  # 4.5 mg + 1.5 mg, named
    order = order_flow.start_fill(w["technician"], new.id)
    with pytest.raises(Conflict, match="Resolve the safety alerts first"):
        orders.verify_order(w["pharmacist"], order.id)
    # The older one's fills go on: only the newer carries the stop.
    old_order = order_flow.start_fill(w["technician"], old.id)
    assert "duplicate_ldn" not in codes(old.id, old_order.id)
    orders.verify_order(w["pharmacist"], old_order.id)
    # Both meant (capsules at night, a cream for the day): a pharmacist overrides with the reason.
    prescriptions.resolve_alert(w["pharmacist"], alert.id, "Dr Marquez wants both: cream added for daytime")
    orders.verify_order(w["pharmacist"], order.id)
    assert db.session.get(Order, order.id).state == OrderState.VERIFIED


def test_discontinuing_the_old_one_lifts_the_stop_at_once(app_ctx: Flask, staff: dict) -> None:
    w = factories.world(staff)
    new = second_rx(w)
    assert "duplicate_ldn" in codes(new.id)
    prescription_changes.discontinue(w["pharmacist"], w["rx"].id, "Changed to the cream")
    assert "duplicate_ldn" not in codes(new.id)
    order = order_flow.start_fill(w["technician"], new.id)
    orders.verify_order(w["pharmacist"], order.id)


def test_a_replacement_is_not_a_duplicate_of_what_it_replaces(app_ctx: Flask, staff: dict) -> None:
    w = factories.world(staff)
    data = factories.replacement_data(w)
    renewed = prescription_changes.replace(w["pharmacist"], w["rx"].id, data)
    assert "duplicate_ldn" not in codes(renewed.id)


def test_replacing_the_older_of_two_moves_the_stop_to_the_replacement(app_ctx: Flask, staff: dict) -> None:
    """A (capsules) and B (cream, newer, stopped). A's dose change A' is now the newer of the two current ones."""
    w = factories.world(staff)
    b = second_rx(w)
    data = factories.replacement_data(w)
    a2 = prescription_changes.replace(w["pharmacist"], w["rx"].id, data)
    assert "duplicate_ldn" not in codes(b.id)
    assert b.rx_number in codes(a2.id)["duplicate_ldn"].message


def test_a_closed_prescription_is_no_duplicate(app_ctx: Flask, staff: dict) -> None:
    w = factories.world(staff)
    prescription_changes.discontinue(w["pharmacist"], w["rx"].id, "Stopped by the neurologist")
    assert db.session.get(type(w["rx"]), w["rx"].id).status == RxStatus.DISCONTINUED
    restarted = second_rx(w)
    assert "duplicate_ldn" not in codes(restarted.id)


# ---- a renewal that arrived as a new prescription: marked as the replacement ------------------------------------


def _renewal_entered_apart(w: dict) -> object:
    return factories.prescription(w["pharmacist"], w["patient"].id, w["formula"].id, w["prescriber"].id,
                                  refills_authorized=11)


def test_a_renewal_entered_apart_becomes_the_replacement_and_carries_the_supply(app_ctx: Flask, staff: dict,
                                                                                clock) -> None:
    from datetime import timedelta

    from pharmacy.supply import reads


    w = factories.world(staff)
    old = w["rx"]
    order = order_flow.start_fill(w["technician"], old.id)
    factories.run_order_to(w, order.id, "dispensed")
    clock.advance(timedelta(days=20))
    new = _renewal_entered_apart(w)
    assert "duplicate_ldn" in codes(new.id)
    assert [p.id for p in prescriptions.view_of(new).may_replace] == [old.id]  # the page offers it
    prescription_changes.adopt(w["pharmacist"], new.id, old.id)
    db.session.expire_all()
    old_row, new_row = db.session.get(type(old), old.id), db.session.get(type(old), new.id)
    assert old_row.status == RxStatus.REPLACED and new_row.replaces_id == old.id
    assert "duplicate_ldn" not in codes(new.id)
    # The patient's 10 days left carry over: too soon now, and the first fill stacks after them.
    assert new_row.latest_run_out_date == old_row.latest_run_out_date
    assert reads.supply_of(new_row).run_out == old_row.latest_run_out_date
    assert prescriptions.view_of(new_row).may_replace == []  # done once
    first = order_flow.start_fill(w["technician"], new.id)
    assert first.earliest_dispense_date is not None and first.earliest_dispense_date > today()  # too soon yet


def test_only_a_pharmacist_before_the_first_fill_and_for_the_same_patient(app_ctx: Flask, staff: dict) -> None:


    w = factories.world(staff)
    new = _renewal_entered_apart(w)
    with pytest.raises(Forbidden):
        prescription_changes.adopt(w["technician"], new.id, w["rx"].id)
    stranger = factories.patient(w["pharmacist"], first_name="Sam", last_name="Else", email="sam@example.com")
    theirs = factories.prescription(w["pharmacist"], stranger.id, w["formula"].id, w["prescriber"].id)
    with pytest.raises(ValidationFailed) as wrong:
        prescription_changes.adopt(w["pharmacist"], new.id, theirs.id)
    assert "old_prescription_id" in wrong.value.fields
    with pytest.raises(ValidationFailed):  # the older one cannot "replace" the newer
        prescription_changes.adopt(w["pharmacist"], w["rx"].id, new.id)
    assert prescriptions.view_of(w["rx"]).may_replace == []
    prescriptions.resolve_alert(w["pharmacist"], codes(new.id)["duplicate_ldn"].id, "Both meant for now")
    fill = order_flow.start_fill(w["technician"], new.id)
    factories.run_order_to(w, fill.id, "dispensed")
    with pytest.raises(Conflict, match="dispensed already"):
        prescription_changes.adopt(w["pharmacist"], new.id, w["rx"].id)


def test_beside_an_expired_prescription_still_open_the_stop_says_it_is_most_likely_its_renewal(
        app_ctx: Flask, staff: dict, clock) -> None:
    """The old prescription expired a year after it was written but nobody closed it: the new one is nearly always its
    renewal, so the stop says the old one expired (with the date), leads with "mark this one as its replacement"
    (which carries the supply on hand), and does not add an expired dose to "taken together"."""
    from datetime import timedelta

    w = factories.world(staff)
    old = w["rx"]
    clock.advance(timedelta(days=400))
    assert old.expiry_date < today() and old.status == RxStatus.ACTIVE
    new = second_rx(w, written_date=today() - timedelta(days=1))
    alert = codes(new.id)["duplicate_ldn"]
    assert alert.severity == Severity.OVERRIDABLE_STOP
    expired = old.expiry_date
    assert f"{old.rx_number} (" in alert.message and f"expired {expired:%b} {expired.day}, {expired.year}" in alert.message
    assert "most likely its renewal" in alert.message and "Taken together" not in alert.message
