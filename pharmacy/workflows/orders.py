"""An order's life across features: starting a fill, releasing, dispensing and cancelling, and the one entry
(`transition`) that the order page's buttons and the API's /transitions call for every step.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pharmacy.autorefill import turns
from pharmacy.billing.rules import format_cents
from pharmacy.compounding import dispensing, returns
from pharmacy.compounding import rules as compounding_rules
from pharmacy.compounding import services as orders
from pharmacy.compounding.models import Order
from pharmacy.compounding.rules import DeliveryMethod, OrderState
from pharmacy.core import audit
from pharmacy.core.actor import Actor
from pharmacy.core.context import today
from pharmacy.core.errors import ValidationFailed
from pharmacy.core.roles import Permission
from pharmacy.inventory import services as inventory
from pharmacy.prescriptions import screening
from pharmacy.prescriptions import services as prescriptions
from pharmacy.prescriptions.models import Prescription
from pharmacy.prescriptions.rules import format_date
from pharmacy.reminders import outbox, planning
from pharmacy.reminders.rules import MessageKind
from pharmacy.supply import next_fill, reads
from pharmacy.supply import services as supply
from pharmacy.supply.rules import Supply


def new_fill(actor: Actor, rx: Prescription, *, delivery: DeliveryMethod | None = None) -> Order:
    """The next fill's order: checked, planned and priced as the patient was quoted, screened again, and the
    refill reminders it answers stopped."""
    delivery = delivery or rx.patient.delivery_preference
    orders.ensure_fillable(rx, reads.supply_of(rx))
    fill = next_fill.next_fill(rx, delivery=delivery, day=today())
    order = orders.create_order(actor, rx, fill)
    screening.screen_order(actor, rx, rx.patient, order.id)
    planning.cancel_for_prescription(rx.id, reason="refill ordered", kinds=planning.REMINDER_KINDS)
    return order


def may_start_fills(actor: Actor) -> None:
    """Forbidden (and audited) unless the actor may start fills: asked before the form's input is even read."""
    audit.require(actor, Permission.ENTER_PRESCRIPTION, what="start fills")


def start_fill(actor: Actor, rx_id: int, *, delivery: DeliveryMethod | None = None) -> Order:
    """Staff start a fill (the first fill after intake, or a refill asked for at the counter)."""
    rx = prescriptions.get_prescription(actor, rx_id, lock=True)
    audit.require(actor, Permission.ENTER_PRESCRIPTION, patient_id=rx.patient_id, what="start fills")
    return new_fill(actor, rx, delivery=delivery)


def release(actor: Actor, order_id: int) -> Order:
    """Released after the final check; a pickup patient is told it is ready."""
    order = orders.release_order(actor, order_id)
    if order.delivery_method == DeliveryMethod.PICKUP:
        outbox.enqueue_notice(MessageKind.ORDER_READY, patient_id=order.patient_id,
                              prescription_id=order.prescription_id, order_id=order.id)
    return order


@dataclass(frozen=True)
class Outcome:
    """A step's result: the order, and a sentence the pharmacist should read (a fee added, fewer days credited)."""

    order: Order
    message: str | None = None


def dispense(actor: Actor, order_id: int, **details: Any) -> Outcome:
    """Dispense, then everything that follows from the patient holding more medicine: the prescription's supply
    (from the model, in this transaction), the reminders planned from it, and the ready/shipped notices."""
    done = dispensing.dispense_order(actor, order_id, **details)
    order = done.order
    held = supply.refresh(reads.prescription(order.prescription_id))
    order.run_out_date = held.run_out  # the supply's last day covered once this fill joined it
    outbox.cancel_notices(order_id=order.id, kinds=[MessageKind.ORDER_READY], reason="dispensed")
    if order.delivery_method == DeliveryMethod.SHIP:
        outbox.enqueue_notice(MessageKind.ORDER_SHIPPED, patient_id=order.patient_id,
                              prescription_id=order.prescription_id, order_id=order.id)
    planning.replan_prescription(order.prescription_id)
    notes = []
    if done.fee_change_cents > 0:
        notes.append(f"Shipping fee of {format_cents(done.fee_change_cents)} added to the patient's balance.")
    elif done.fee_change_cents < 0:
        notes.append(f"Shipping fee of {format_cents(-done.fee_change_cents)} taken off the patient's balance "
                     "(picked up instead).")
    if done.credit_capped and order.cap_note:
        notes.append(order.cap_note)
    return Outcome(order, " ".join(notes) or None)


def cancel(actor: Actor, order_id: int, reason: str) -> Order:
    """Cancel an order: its notices stop, and the refill the patient was waiting for is not coming, so their
    reminders come back."""
    order = orders.cancel_order(actor, order_id, reason)
    outbox.cancel_notices(order_id=order.id, reason="order cancelled")
    planning.replan_prescription(order.prescription_id)
    return order


def return_fill(actor: Actor, order_id: int, reason: str, note: str | None = None) -> Outcome:
    """A dispensed fill taken back (compounding/returns.py): the supply is recomputed without it, the refill it
    used is available again, its messages stop and the reminders follow the supply the patient really holds."""
    order = returns.return_fill(actor, order_id, reason, note)
    rx = reads.prescription(order.prescription_id)
    held = supply.refresh_with_successors(rx)  # a replacement carrying this supply loses the returned days too
    outbox.cancel_notices(order_id=order.id, reason="fill returned")
    turns.reopen_turn(rx)  # auto-refill may ask again for the supply the patient really holds
    planning.replan_patient(rx.patient_id)
    # What the patient holds now is the supply of the prescription this one lives on as (a renewal carrying it, with
    # fills of its own perhaps), not this one's own.
    current_id = reads.current_successor(rx.id, rx.patient_id, rx.status)
    if current_id != rx.id:
        held = reads.supply_of(reads.prescription(current_id))
    return Outcome(order, f"{_holds(held)} The refill it used is available again: start a new fill to replace it.")


def _holds(held: Supply) -> str:
    """What the patient holds once a fill is taken back, in the pharmacist's words."""
    day = today()
    arriving = held.arriving_on(day)
    on_its_way = f"; the refill on its way arrives {format_date(arriving)}" if arriving else ""
    out = held.out_since(day)
    if out is not None:
        return f"The patient has had no medicine since {format_date(out)}{on_its_way}."
    if held.run_out is None:
        return "The patient holds no medicine from this prescription."
    until = held.held_until(day)
    if until is None:
        return f"The patient's medicine arrives {format_date(arriving)}, and lasts until {format_date(held.run_out)}."  # type: ignore[arg-type]
    return f"The patient now has medicine until {format_date(held.run_out)}{on_its_way}."


def cancel_open_orders(actor: Actor, rx_id: int, reason: str) -> int:
    """Part of stopping a prescription: its orders not yet dispensed are cancelled (and their notices); how many."""
    ids = list(orders.open_order_ids(rx_id))
    for order_id in ids:
        orders.cancel_order(actor, order_id, reason[:400], by_system=True)
        outbox.cancel_notices(order_id=order_id, reason="order cancelled")
    return len(ids)


def transition(actor: Actor, order_id: int, to: str, payload: dict[str, Any] | None = None) -> Outcome:
    """One entry for every step of an order (the API's /transitions and the order page's buttons).

    `to` is a target state, "plan_batch" (choose the lots), or "resume" (naming the step the order was held
    at resumes it too). The role is checked before the move, so the wrong role always hears 403, not 409.
    """
    data = payload or {}
    if to not in compounding_rules.TRANSITION_TARGETS:
        raise ValidationFailed("Unknown step.", fields={
            "to": f"Must be one of: {', '.join(compounding_rules.TRANSITION_TARGETS)}."})
    order = orders.load_order(order_id, lock=False)
    if to == "plan_batch":
        return Outcome(orders.plan_batch(actor, order_id, lots=data.get("lots") or []))
    if to == "resume" or (order.state == OrderState.ON_HOLD and to not in ("on_hold", "cancelled")
                          and order.held_from is not None and to == order.held_from.value):
        return Outcome(orders.resume_order(actor, order_id))
    target = OrderState(to)
    if order.state not in compounding_rules.FINAL and order.state != target:
        audit.require(actor, Permission(compounding_rules.permission_for(order.state, target)),
                      patient_id=order.patient_id, what=f"move orders to {target.value}")
    if order.state == OrderState.ON_HOLD and target not in (OrderState.ON_HOLD, OrderState.CANCELLED):
        compounding_rules.check_transition(order.state, target, held_from=order.held_from)  # says where it resumes
    return _step(actor, order, target, data)


def _step(actor: Actor, order: Order, target: OrderState, data: dict[str, Any]) -> Outcome:
    if target is OrderState.VERIFIED:
        return Outcome(orders.verify_order(actor, order.id))
    if target is OrderState.COMPOUNDING:
        if order.state == OrderState.CHECKED:
            return Outcome(orders.send_back(actor, order.id, data.get("reason") or ""))
        made = orders.compound_order(actor, order.id, lots=data.get("lots") or [],
                                     quantity_made=data.get("quantity_made"))
        inventory.draw_down_order(actor, made)  # the lots leave the shelf with the record, in one transaction
        return Outcome(made)
    if target is OrderState.CHECKED:
        return Outcome(orders.check_order(actor, order.id, qc_notes=data.get("qc_notes"),
                                          deviations=data.get("deviations")))
    if target is OrderState.READY:
        return Outcome(release(actor, order.id))
    if target is OrderState.DISPENSED:
        if data.get("bag_code") is not None:
            expected = compounding_rules.bag_code(order.prescription.rx_number, order.fill_number)
            if not compounding_rules.bag_matches(data["bag_code"], expected):
                raise ValidationFailed("That is not this order's bag: nothing was dispensed.", fields={
                    "bag_code": f"The scanned label reads {data['bag_code'][:40]}, but this order is {expected}. "
                                "Find the bag labelled " + expected + "."})
        return dispense(actor, order.id, method=data.get("method"), carrier=data.get("carrier"),
                        tracking_number=data.get("tracking_number"), too_soon_reason=data.get("too_soon_reason"))
    if target is OrderState.ON_HOLD:
        return Outcome(orders.hold_order(actor, order.id, data.get("reason") or ""))
    return Outcome(cancel(actor, order.id, data.get("reason") or ""))
