"""The compounding order through the service layer: the workflow, roles, lots and BUDs, too-soon, hold and
cancel, quality checks, the queue, ingredient lots and lot recall (docs/domain.md "Compounding standards")."""
from __future__ import annotations

import csv
import io
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from pharmacy.compounding import lots as lot_services
from pharmacy.compounding import queries, recall
from pharmacy.compounding import services as orders
from pharmacy.compounding.models import IngredientLot, Order
from pharmacy.compounding.rules import DeliveryMethod, OrderState, UspCategory
from pharmacy.core.context import today
from pharmacy.core.errors import Conflict, Forbidden, InvalidTransition, NotFound, ValidationFailed
from pharmacy.core.models import AuditEvent
from pharmacy.extensions import db
from pharmacy.prescriptions.rules import Form
from pharmacy.reminders.models import OutboxMessage
from pharmacy.reminders.rules import MessageKind
from pharmacy.workflows import orders as order_flow
from tests import factories


def lots_for(w: dict[str, Any], formula: Any = None) -> list[dict[str, Any]]:
    f = formula or w["formula"]
    rows = db.session.execute(sa.select(IngredientLot).where(
        IngredientLot.ingredient_name.in_([i.name for i in f.ingredients]), IngredientLot.expiry_date >= today())
        .order_by(IngredientLot.id)).scalars()
    seen: dict[str, IngredientLot] = {}
    for lot in rows:
        seen.setdefault(lot.ingredient_name, lot)
    return [{"ingredient_lot_id": lot.id, "quantity_used": "1.5"} for lot in seen.values()]


def advance(w: dict[str, Any], order_id: int, target: str) -> None:
    """factories.run_order_to with this module's lots (one per ingredient, 1.5 each)."""
    factories.run_order_to(w, order_id, target, lots=lots_for(w))


def actions(entity_id: int) -> list[str]:
    return list(db.session.execute(sa.select(AuditEvent.action).where(
        AuditEvent.entity_type == "order", AuditEvent.entity_id == entity_id).order_by(AuditEvent.id)).scalars())


def last_event(action: str) -> AuditEvent:
    return db.session.execute(sa.select(AuditEvent).where(AuditEvent.action == action)
                              .order_by(AuditEvent.id.desc()).limit(1)).scalar_one()


def aqueous_world(staff: dict, *, ship: bool = False) -> dict[str, Any]:
    """A 1 mg/mL aqueous, unpreserved sublingual liquid (14-day BUD) and a 30-day prescription of 1.5 mg a day."""
    f = factories.formula("LDN-SL-AQ", form=Form.SUBLINGUAL_LIQUID, strength="1",
                          category=UspCategory.AQUEOUS_UNPRESERVED, prices=(("45", 30, 6000), ("21", 14, 3500)))
    patient = {"delivery_preference": DeliveryMethod.SHIP, "shipping_days": 2} if ship else {}
    w = factories.world(staff, patient=patient)
    rx = factories.second_prescription(w["pharmacist"], w["patient"].id, f.id, w["prescriber"].id, dose_mg=Decimal("1.5"),
                                days_supply=30)
    return {**w, "formula": f, "rx": rx}


# ---- the whole path ----------------------------------------------------------------------------------


def test_an_order_goes_from_requested_to_dispensed_with_a_record_of_every_step(app_ctx: Flask, staff: dict) -> None:
    w = factories.world(staff)
    order = order_flow.start_fill(w["technician"], w["rx"].id)
    assert (order.state, order.fill_number, order.quantity, order.days_supply) == (OrderState.REQUESTED, 0, 30, 30)
    assert order.cap_note is None and order.price_cents == 5500
    orders.verify_order(w["pharmacist"], order.id)
    orders.compound_order(w["technician"], order.id, lots=lots_for(w), quantity_made=Decimal("30"))
    assert order.lot_number == "L261123-001"
    assert order.bud == today() + timedelta(days=180)  # capsules: other non-aqueous, 180 days
    assert sorted(u.unit for u in order.lots_used) == ["g", "mg"]  # the ingredients' units, from the formula
    orders.check_order(w["pharmacist2"], order.id, qc_notes="Weights in range")
    assert (order.qc_yield_pct, order.qc_passed) == (Decimal("100.0"), True)
    order_flow.release(w["pharmacist2"], order.id)
    factories.dispense(w["technician"], order.id)
    db.session.refresh(order)
    assert order.state == OrderState.DISPENSED
    # Dispensed today; 30 days from today: the last day covered is today + 29 (supply/rules.py).
    assert (order.dispensed_on, order.supply_starts_on, order.run_out_date) == (today(), today(),
                                                                              today() + timedelta(days=29))
    assert (order.verified_by_id, order.compounded_by_id, order.checked_by_id, order.released_by_id,
            order.dispensed_by_id) == (staff["pharmacist"].id, staff["technician"].id, staff["pharmacist2"].id,
                                       staff["pharmacist2"].id, staff["technician"].id)
    assert actions(order.id) == ["order.create", "order.verify", "order.compound", "order.check", "order.release",
                                 "order.dispense"]
    second = order_flow.start_fill(w["technician"], w["rx"].id)
    orders.verify_order(w["pharmacist"], second.id)
    orders.compound_order(w["technician"], second.id, lots=lots_for(w), quantity_made=Decimal("30"))
    assert second.lot_number == "L261123-002"  # the day's second batch


@pytest.mark.parametrize(("walk_to", "target", "message"), [
    (None, "compounding", "must be verified first"),
    (None, "dispensed", "must be verified, compounded, checked and made ready first"),
    ("verified", "checked", "must be compounded first"),
    ("compounding", "ready", "must be checked first"),
    ("dispensed", "cancelled", "final"),
    ("dispensed", "verified", "final"),
])
def test_a_move_the_workflow_does_not_allow_is_refused_in_words(app_ctx: Flask, staff: dict, walk_to: str | None,
                                                                target: str, message: str) -> None:
    w = factories.world(staff)
    order = order_flow.start_fill(w["technician"], w["rx"].id)
    if walk_to:
        advance(w, order.id, walk_to)
    state = db.session.get(Order, order.id).state
    payload = {"lots": lots_for(w), "quantity_made": Decimal("30"), "reason": "Changed plans"}
    with pytest.raises(InvalidTransition, match=message) as caught:
        factories.transition(w["pharmacist2"], order.id, target, payload)
    assert caught.value.status == 409
    assert db.session.get(Order, order.id).state == state


@pytest.mark.parametrize(("step", "who"), [
    ("verified", "technician"), ("checked", "technician"), ("ready", "technician"), ("cancelled", "technician"),
    ("verified", "admin"), ("compounding", "admin"), ("dispensed", "admin"), ("on_hold", "admin"),
])
def test_the_wrong_role_is_refused_and_the_refusal_audited(app_ctx: Flask, staff: dict, step: str, who: str) -> None:
    w = factories.world(staff)
    order = order_flow.start_fill(w["technician"], w["rx"].id)
    before = {"verified": None, "compounding": "verified", "checked": "compounding", "ready": "checked",
              "dispensed": "ready", "on_hold": None, "cancelled": None}[step]
    if before:
        advance(w, order.id, before)
    with pytest.raises(Forbidden) as caught:
        factories.transition(w[who], order.id, step, {"lots": lots_for(w), "quantity_made": Decimal("30"),
                                                   "reason": "Because"})
    assert caught.value.status == 403
    denied = last_event(f"denied.{orders.rules.permission_for(OrderState(before or 'requested'), OrderState(step))}")
    assert denied.actor_user_id == staff[who].id and denied.outcome == "denied"
    assert denied.patient_id == w["patient"].id


def test_the_checker_must_not_be_the_compounder(app_ctx: Flask, staff: dict) -> None:
    w = factories.world(staff)
    order = order_flow.start_fill(w["technician"], w["rx"].id)
    orders.verify_order(w["pharmacist"], order.id)
    orders.compound_order(w["pharmacist"], order.id, lots=lots_for(w), quantity_made=Decimal("30"))
    with pytest.raises(Forbidden, match="other than the one who compounded"):
        orders.check_order(w["pharmacist"], order.id)
    assert last_event("denied.check_own_work").actor_user_id == staff["pharmacist"].id
    orders.check_order(w["pharmacist2"], order.id)
    assert db.session.get(Order, order.id).state == OrderState.CHECKED


# ---- lots and beyond-use dates ------------------------------------------------------------------------------


def test_an_expired_ingredient_lot_is_refused_and_nothing_is_recorded(app_ctx: Flask, staff: dict) -> None:
    w = factories.world(staff)
    order = order_flow.start_fill(w["technician"], w["rx"].id)
    advance(w, order.id, "verified")
    old = factories.lot("Naltrexone hydrochloride USP", "OLD-1", expiry=today() - timedelta(days=1))
    lots = [{"ingredient_lot_id": old.id, "quantity_used": "135"}, lots_for(w)[1]]
    with pytest.raises(ValidationFailed) as caught:
        orders.compound_order(w["technician"], order.id, lots=lots, quantity_made=Decimal("30"))
    assert "Expired lot(s) cannot be used: Naltrexone hydrochloride USP lot OLD-1" in caught.value.fields["lots"][0]
    order = db.session.get(Order, order.id)
    assert (order.state, order.lot_number, order.bud, order.lots_used) == (OrderState.VERIFIED, None, None, [])
    assert lot_services.usable_lots(w["formula"])["Naltrexone hydrochloride USP"] == [
        db.session.get(IngredientLot, lots_for(w)[0]["ingredient_lot_id"])]  # the expired lot is not offered


@pytest.mark.parametrize(("mangle", "expected"), [
    (lambda lots, other: lots[:1], "No lot recorded for: Microcrystalline cellulose NF."),
    (lambda lots, other: [*lots, {"ingredient_lot_id": other, "quantity_used": "1"}], "is not an ingredient of"),
    (lambda lots, other: [lots[0], lots[0], lots[1]], "each lot once"),
    (lambda lots, other: [{**lots[0], "quantity_used": "0"}, lots[1]], "quantity used"),
    (lambda lots, other: [{**lots[0], "ingredient_lot_id": 987654}, lots[1]], "Unknown ingredient lot 987654"),
    (lambda lots, other: [], "Choose a lot for each ingredient."),
])
def test_the_compounding_record_must_name_a_lot_of_each_ingredient(app_ctx: Flask, staff: dict, mangle: Any,
                                                                    expected: str) -> None:
    w = factories.world(staff)
    other = factories.lot("Propylene glycol USP", "PG-1", expiry=today() + timedelta(days=100))
    order = order_flow.start_fill(w["technician"], w["rx"].id)
    advance(w, order.id, "verified")
    with pytest.raises(ValidationFailed) as caught:
        orders.compound_order(w["technician"], order.id, lots=mangle(lots_for(w), other.id), quantity_made=Decimal("30"))
    assert expected.lower() in caught.value.fields["lots"][0].lower()


def test_the_bud_never_passes_the_earliest_ingredient_expiry_and_the_fill_is_capped(app_ctx: Flask, staff: dict) -> None:
    w = factories.world(staff)
    short = factories.lot("Microcrystalline cellulose NF", "MCC-SHORT", expiry=today() + timedelta(days=20))
    order = order_flow.start_fill(w["technician"], w["rx"].id)
    advance(w, order.id, "verified")
    lots = [lots_for(w)[0], {"ingredient_lot_id": short.id, "quantity_used": "4.2"}]
    # Recording a batch made from lots that would cut the fill short is refused: the quantity is decided first.
    with pytest.raises(ValidationFailed) as caught:
        orders.compound_order(w["technician"], order.id, lots=lots, quantity_made=Decimal("30"))
    assert "20 capsules for 20 days, not 30 capsules" in caught.value.fields["lots"][0]
    assert db.session.get(Order, order.id).state == OrderState.VERIFIED
    orders.plan_batch(w["technician"], order.id, lots=[{"ingredient_lot_id": x["ingredient_lot_id"]} for x in lots])
    assert order.bud == today() + timedelta(days=20)  # not the 180 days of the category
    assert (order.days_supply, order.quantity, order.price_cents) == (20, 20, 3667)  # pro-rated from 30 for $55
    assert order.cap_note == (f"Capped at 20 days by the beyond-use date ({today() + timedelta(days=20):%b %-d, %Y}):"
                              " 20 of 30 days; 10 days still owed on this fill.")
    orders.compound_order(w["technician"], order.id, lots=lots, quantity_made=Decimal("20"))
    orders.check_order(w["pharmacist2"], order.id)
    assert order.qc_passed is True  # the bench made the capped quantity: 100 % yield, no re-make


def test_a_14_day_aqueous_formula_caps_a_30_day_prescription(app_ctx: Flask, staff: dict) -> None:
    w = aqueous_world(staff)
    order = order_flow.start_fill(w["technician"], w["rx"].id)
    assert (order.days_supply, order.quantity) == (14, Decimal("21"))  # 14 days of 1.5 mL
    assert order.cap_note == (f"Capped at 14 days by the beyond-use date ({today() + timedelta(days=14):%b %-d, %Y}):"
                              " 14 of 30 days; 16 days still owed on this fill.")
    assert order.price_cents == 3500  # the 21 mL price, not the 30-day one
    advance(w, order.id, "compounding")
    assert db.session.get(Order, order.id).bud == today() + timedelta(days=14)
    advance(w, order.id, "dispensed")
    assert db.session.get(Order, order.id).run_out_date == today() + timedelta(days=13)  # the day before the BUD


def test_a_shipped_aqueous_fill_counts_the_days_in_the_post(app_ctx: Flask, staff: dict) -> None:
    w = aqueous_world(staff, ship=True)
    order = order_flow.start_fill(w["technician"], w["rx"].id)
    assert order.days_supply == 12  # 14-day BUD, 2 days in the post
    advance(w, order.id, "ready")
    with pytest.raises(ValidationFailed) as caught:
        factories.dispense(w["technician"], order.id)
    assert set(caught.value.fields) == {"carrier", "tracking_number"}
    factories.dispense(w["technician"], order.id, carrier="USPS", tracking_number="9400 1000 0000 0000 0000 01")
    order = db.session.get(Order, order.id)
    # It left today; the supply starts when it arrives, two days later, and ends before the BUD.
    assert (order.dispensed_on, order.supply_starts_on) == (today(), today() + timedelta(days=2))
    assert order.run_out_date == today() + timedelta(days=13) and order.run_out_date < order.bud
    shipped = db.session.execute(sa.select(OutboxMessage).where(OutboxMessage.kind == MessageKind.ORDER_SHIPPED,
                                                                OutboxMessage.order_id == order.id)).scalars().all()
    assert len(shipped) == 1


def test_a_batch_dispensed_days_after_compounding_is_capped_again(app_ctx: Flask, staff: dict, clock: Any) -> None:
    w = aqueous_world(staff)
    order = order_flow.start_fill(w["technician"], w["rx"].id)
    advance(w, order.id, "ready")
    clock.advance(timedelta(days=3))
    factories.dispense(w["technician"], order.id)
    order = db.session.get(Order, order.id)
    # The bottle made three days ago lasts 11 more days before its BUD: 11 days are credited, the rest stays owed.
    assert (order.days_supply, order.quantity) == (11, Decimal("21"))
    assert order.run_out_date == order.bud - timedelta(days=1)
    assert order.cap_note.endswith("11 of 30 days; 19 days still owed on this fill.")


def test_a_batch_past_its_bud_cannot_be_dispensed(app_ctx: Flask, staff: dict, clock: Any) -> None:
    w = aqueous_world(staff)
    order = order_flow.start_fill(w["technician"], w["rx"].id)
    advance(w, order.id, "ready")
    clock.advance(timedelta(days=14))
    with pytest.raises(Conflict, match="beyond-use date"):
        factories.dispense(w["technician"], order.id)


# ---- too soon ------------------------------------------------------------------------------------------------


def test_dispensing_too_soon_needs_a_pharmacists_reason(app_ctx: Flask, staff: dict, clock: Any) -> None:
    w = factories.world(staff)
    first = order_flow.start_fill(w["technician"], w["rx"].id)
    advance(w, first.id, "dispensed")
    refill = order_flow.start_fill(w["technician"], w["rx"].id)
    assert refill.earliest_dispense_date == today() + timedelta(days=24)  # 80% of 30 days
    advance(w, refill.id, "ready")
    assert queries.order_view(w["technician"], refill.id).too_soon
    with pytest.raises(Conflict, match="Too soon to dispense"):
        factories.dispense(w["technician"], refill.id, too_soon_reason="Patient travelling")
    assert last_event("denied.override_too_soon").actor_user_id == staff["technician"].id
    with pytest.raises(ValidationFailed) as caught:
        factories.dispense(w["pharmacist"], refill.id)
    assert "too_soon_reason" in caught.value.fields
    factories.dispense(w["pharmacist"], refill.id, too_soon_reason="Travelling abroad for 5 weeks")
    refill = db.session.get(Order, refill.id)
    assert refill.state == OrderState.DISPENSED
    assert (refill.too_soon_override_by_id, refill.too_soon_override_reason) == (
        staff["pharmacist"].id, "Travelling abroad for 5 weeks")
    assert "order.too_soon_override" in actions(refill.id)


def test_on_the_earliest_date_no_override_is_needed(app_ctx: Flask, staff: dict, clock: Any) -> None:
    w = factories.world(staff)
    first = order_flow.start_fill(w["technician"], w["rx"].id)
    advance(w, first.id, "dispensed")
    refill = order_flow.start_fill(w["technician"], w["rx"].id)
    advance(w, refill.id, "ready")
    clock.advance(timedelta(days=24))
    factories.dispense(w["technician"], refill.id)
    assert db.session.get(Order, refill.id).too_soon_override_by_id is None


# ---- hold, resume, cancel, quality -----------------------------------------------------------------------------


def test_hold_resume_and_cancel(app_ctx: Flask, staff: dict) -> None:
    w = factories.world(staff)
    order = order_flow.start_fill(w["technician"], w["rx"].id)
    advance(w, order.id, "compounding")
    with pytest.raises(ValidationFailed):
        orders.hold_order(w["technician"], order.id, "")
    orders.hold_order(w["technician"], order.id, "Patient asked to wait")
    order = db.session.get(Order, order.id)
    assert (order.state, order.held_from, order.hold_reason) == (OrderState.ON_HOLD, OrderState.COMPOUNDING,
                                                                 "Patient asked to wait")
    with pytest.raises(InvalidTransition, match="on hold; resume it first"):
        orders.check_order(w["pharmacist2"], order.id)
    with pytest.raises(InvalidTransition, match="resumes there"):
        factories.transition(w["pharmacist"], order.id, "verified")
    factories.transition(w["technician"], order.id, "resume")
    assert (order.state, order.held_from, order.hold_reason) == (OrderState.COMPOUNDING, None, None)
    with pytest.raises(InvalidTransition):
        orders.resume_order(w["technician"], order.id)
    orders.hold_order(w["technician"], order.id, "Again")
    factories.transition(w["technician"], order.id, "compounding")  # naming the step it was held at resumes it
    assert order.state == OrderState.COMPOUNDING
    with pytest.raises(Forbidden):
        order_flow.cancel(w["technician"], order.id, "Not needed")
    with pytest.raises(ValidationFailed):
        order_flow.cancel(w["pharmacist"], order.id, "no")
    order_flow.cancel(w["pharmacist"], order.id, "Prescriber changed the dose")
    assert (order.state, order.cancel_reason) == (OrderState.CANCELLED, "Prescriber changed the dose")
    with pytest.raises(InvalidTransition, match="final"):
        orders.hold_order(w["pharmacist"], order.id, "Too late")
    assert [a for a in actions(order.id) if a in ("order.hold", "order.resume", "order.cancel")] == [
        "order.hold", "order.resume", "order.hold", "order.resume", "order.cancel"]


def test_a_failed_quality_check_is_recorded_and_the_batch_re_made(app_ctx: Flask, staff: dict) -> None:
    w = factories.world(staff)
    order = order_flow.start_fill(w["technician"], w["rx"].id)
    orders.verify_order(w["pharmacist"], order.id)
    orders.compound_order(w["technician"], order.id, lots=lots_for(w), quantity_made=Decimal("25"))
    first_lot = order.lot_number
    orders.check_order(w["pharmacist2"], order.id, qc_notes="Short fill")
    assert (order.state, order.qc_passed, order.qc_yield_pct) == (OrderState.COMPOUNDING, False, Decimal("83.3"))
    assert last_event("order.check_failed").details == {"yield_pct": "83.3"}
    assert "83.3%" in orders.qc_failure_message(order)
    with pytest.raises(InvalidTransition):
        order_flow.release(w["pharmacist2"], order.id)
    orders.compound_order(w["technician"], order.id, lots=lots_for(w), quantity_made=Decimal("30"))
    assert order.lot_number != first_lot and order.qc_passed is None and len(order.lots_used) == 2
    assert "order.recompound" in actions(order.id)
    orders.check_order(w["pharmacist2"], order.id)
    assert (order.state, order.qc_passed) == (OrderState.CHECKED, True)


def test_a_checked_order_can_be_sent_back_by_a_pharmacist(app_ctx: Flask, staff: dict) -> None:
    w = factories.world(staff)
    order = order_flow.start_fill(w["technician"], w["rx"].id)
    advance(w, order.id, "checked")
    with pytest.raises(Forbidden):
        factories.transition(w["technician"], order.id, "compounding", {"reason": "Looks off"})
    with pytest.raises(InvalidTransition, match="sends it back"):
        orders.compound_order(w["technician"], order.id, lots=lots_for(w), quantity_made=Decimal("30"))
    factories.transition(w["pharmacist"], order.id, "compounding", {"reason": "Capsules discoloured"})
    assert (order.state, order.qc_passed, order.qc_notes) == (OrderState.COMPOUNDING, False,
                                                               "Sent back: Capsules discoloured")
    assert "order.send_back" in actions(order.id)


def test_an_unknown_order_or_step_is_refused(app_ctx: Flask, staff: dict) -> None:
    ph = factories.actor(staff["pharmacist"])
    with pytest.raises(NotFound):
        factories.transition(ph, 424242, "verified")
    with pytest.raises(NotFound):
        queries.order_view(ph, 2**40)
    w = factories.world(staff)
    order = order_flow.start_fill(w["technician"], w["rx"].id)
    with pytest.raises(ValidationFailed):
        factories.transition(ph, order.id, "teleported")


def test_only_one_fill_at_a_time_and_none_past_the_refills(app_ctx: Flask, staff: dict) -> None:
    w = factories.world(staff, refills_authorized=0)
    order = order_flow.start_fill(w["technician"], w["rx"].id)
    with pytest.raises(Conflict, match="already in progress"):
        order_flow.start_fill(w["technician"], w["rx"].id)
    advance(w, order.id, "dispensed")
    with pytest.raises(Conflict, match="No refills remain"):
        order_flow.start_fill(w["technician"], w["rx"].id)


# ---- the queue ---------------------------------------------------------------------------------------------


def test_the_queue_groups_open_orders_by_state_oldest_first(app_ctx: Flask, staff: dict, clock: Any) -> None:
    w = factories.world(staff)
    made = []
    for i in range(3):
        p = factories.patient(w["pharmacist"], first_name="Q", last_name=f"Queue{i}", email=f"q{i}@example.com")
        rx = factories.prescription(w["pharmacist"], p.id, w["formula"].id, w["prescriber"].id)
        made.append(order_flow.start_fill(w["technician"], rx.id))
        clock.advance(timedelta(minutes=5))
    own = order_flow.start_fill(w["technician"], w["rx"].id)
    advance(w, own.id, "verified")
    orders.hold_order(w["technician"], made[1].id, "Waiting for a call back")
    groups = {g.state: g for g in queries.queue(w["technician"])}
    assert [g.state for g in queries.queue(w["technician"])][:2] == [OrderState.REQUESTED, OrderState.VERIFIED]
    assert groups[OrderState.REQUESTED].count == 2
    assert [o.id for o in groups[OrderState.REQUESTED].orders] == [made[0].id, made[2].id]
    assert groups[OrderState.VERIFIED].count == 1 and groups[OrderState.ON_HOLD].count == 1
    assert groups[OrderState.READY].count == 0 and groups[OrderState.READY].orders == []
    with pytest.raises(Forbidden):
        queries.queue(w["admin"])


# ---- ingredient lots and recall -------------------------------------------------------------------------------


def test_receiving_a_lot(app_ctx: Flask, staff: dict) -> None:
    w = factories.world(staff)
    good = {"ingredient_name": "Naltrexone hydrochloride USP", "supplier": "PCCA", "lot_number": "P-77",
            "expiry_date": today() + timedelta(days=300)}
    lot = lot_services.receive_lot(w["technician"], good)
    assert (lot.received_on, lot.supplier) == (today(), "PCCA")
    assert last_event("ingredient_lot.receive").entity_id == lot.id
    for change, field in [({"lot_number": "P-77"}, "lot_number"), ({"lot_number": "X", "expiry_date": today() -
                          timedelta(days=1)}, "expiry_date"), ({"lot_number": "Y", "ingredient_name": "Sugar"},
                          "ingredient_name"), ({"lot_number": "Z", "received_on": today() + timedelta(days=1)},
                          "received_on")]:
        with pytest.raises(ValidationFailed) as caught:
            lot_services.receive_lot(w["technician"], {**good, **change})
        assert field in caught.value.fields
    with pytest.raises(Forbidden):
        lot_services.receive_lot(w["admin"], {**good, "lot_number": "A-1"})


def test_a_recall_finds_every_order_and_patient_made_with_a_lot(app_ctx: Flask, staff: dict) -> None:
    w = factories.world(staff)
    other = factories.patient(w["pharmacist"], first_name="=HYPERLINK(\"x\")", last_name="Other",
                              email="other@example.com", phone="(217) 555-0188")
    other_rx = factories.prescription(w["pharmacist"], other.id, w["formula"].id, w["prescriber"].id)
    first = order_flow.start_fill(w["technician"], w["rx"].id)
    advance(w, first.id, "dispensed")
    second = order_flow.start_fill(w["technician"], other_rx.id)
    advance(w, second.id, "checked")
    order_flow.start_fill(w["technician"], factories.prescription(
        w["pharmacist"], other.id, w["formula"].id, w["prescriber"].id).id)  # never compounded: not affected
    lot_number = db.session.get(IngredientLot, lots_for(w)[0]["ingredient_lot_id"]).lot_number
    result = recall.find(w["pharmacist"], ingredient_lot=lot_number.lower())  # case does not matter
    assert [r.order_id for r in result.orders] == [first.id, second.id]
    assert result.patient_count == 2
    assert [r.reached_patient for r in result.orders] == [True, False]
    assert [r.order_id for r in result.open_orders] == [second.id]
    assert result.matched_lots == [f"Naltrexone hydrochloride USP · Medisca lot {lot_number}"]
    rows = list(csv.DictReader(io.StringIO(recall.to_csv(result))))
    assert [r["order_id"] for r in rows] == [str(first.id), str(second.id)]
    assert rows[0]["patient"] == "Ellison, Margaret" and rows[0]["reached_patient"] == "yes"
    assert rows[1]["patient"].startswith("Other, =HYPERLINK")  # the name is not first in its cell
    assert rows[1]["phone"] == "(217) 555-0188" and rows[1]["state"] == "checked"
    by_batch = recall.find(w["pharmacist"], order_lot=db.session.get(Order, second.id).lot_number)
    assert [r.order_id for r in by_batch.orders] == [second.id]
    assert recall.find(w["pharmacist"], ingredient_lot="NO-SUCH-LOT").orders == []
    event = last_event("recall.search")
    assert event.details == {"ingredient_lot": "NO-SUCH-LOT", "order_lot": None, "orders": 0, "patients": 0}
    with pytest.raises(ValidationFailed):
        recall.find(w["pharmacist"])
    with pytest.raises(ValidationFailed):
        recall.find(w["pharmacist"], ingredient_lot="A", order_lot="B")
    with pytest.raises(Forbidden):
        recall.find(w["admin"], ingredient_lot=lot_number)


def test_csv_cells_never_start_a_formula() -> None:
    assert recall._cell("=1+1") == "'=1+1"
    assert recall._cell("-2") == "'-2"
    assert recall._cell("@SUM(A1)") == "'@SUM(A1)"
    assert recall._cell("Ellison, Margaret") == "Ellison, Margaret"
