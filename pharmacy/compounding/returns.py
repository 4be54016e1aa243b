"""Returning a dispensed fill: a parcel lost or damaged in the post, one delivered to the wrong address, a fill
brought back unused or dispensed in error.

Why a return and not a new fill on top: the supply model counts every dispensed fill as medicine the patient holds.
A lost parcel re-made as a new fill counted twice — the patient "held" a month they never had, so the next
reminder came a month late and the refill count went down by two. A returned fill is cancelled: it stops counting
as supply, as a refill used and as a charge (the running totals follow the order's state), and the pharmacy makes
the replacement as an ordinary fill. What the patient paid for the lost one stays on their account as a credit.
A compounded preparation that comes back is never dispensed again (docs/domain.md "Returned fills").
"""
from __future__ import annotations

import sqlalchemy as sa

from pharmacy.compounding import rules
from pharmacy.compounding.models import Order
from pharmacy.compounding.rules import OrderState, ReturnReason
from pharmacy.compounding.steps import load_order_and_lock_its_prescription, require
from pharmacy.core import audit
from pharmacy.core.actor import Actor
from pharmacy.core.context import now
from pharmacy.core.errors import Conflict, ValidationFailed
from pharmacy.extensions import db

NOTE_MAX = 240


def later_dispensed_fill(order: Order) -> int | None:
    """The id of a dispensed fill of the same prescription the patient received after this one, if any: the supply
    counts fills in the order they reached the patient (a bottle at the counter may overtake a parcel still on its
    way, and the parcel is then the latest)."""
    received = sa.func.coalesce(Order.supply_starts_on, Order.dispensed_on)
    mine = order.supply_starts_on or order.dispensed_on
    later = sa.true() if mine is None else sa.or_(
        received > mine, sa.and_(received == mine, Order.fill_number > order.fill_number))
    return db.session.execute(
        sa.select(Order.id).where(Order.prescription_id == order.prescription_id, Order.state == OrderState.DISPENSED,
                                  Order.id != order.id, later)
        .order_by(Order.fill_number.desc()).limit(1)
    ).scalar_one_or_none()


def returnable(order: Order) -> bool:
    """Whether the order page offers "Return this fill" (the same test the service makes)."""
    return order.state == OrderState.DISPENSED and later_dispensed_fill(order) is None


def return_fill(actor: Actor, order_id: int, reason: str, note: str | None = None) -> Order:
    """A pharmacist takes a dispensed fill back; the caller (workflows/orders.return_fill) then recomputes the
    supply and the reminders. Audited with the reason's code (the note may name the patient's address: it stays on
    the order)."""
    order = load_order_and_lock_its_prescription(order_id)  # a dispensing of the same prescription waits
    require(actor, "cancel_order", order, "return dispensed fills")  # a pharmacist, as a cancel is
    try:
        why = ReturnReason(reason)
    except ValueError:
        raise ValidationFailed("Say why the fill is returned.", fields={
            "reason": "Choose one of: " + "; ".join(rules.RETURN_REASON_LABELS.values()) + "."}) from None
    note = (note or "").strip() or None
    if note is not None and len(note) > NOTE_MAX:
        raise ValidationFailed("The note is too long.", fields={"note": f"At most {NOTE_MAX} characters."})
    refusal = rules.return_refusal(order.state, later_fill=later_dispensed_fill(order),
                                   rx_number=order.prescription.rx_number)
    if refusal:
        raise Conflict(refusal)
    t = now()
    order.state = OrderState.CANCELLED
    order.cancel_reason = rules.return_text(why, note)
    order.returned_at, order.returned_by_id, order.return_reason = t, actor.user_id, why.value
    order.state_changed_at = order.updated_at = t
    db.session.flush()
    audit.record(actor, "order.return", patient_id=order.patient_id, entity=("order", order.id),
                 details={"from": OrderState.DISPENSED.value, "to": OrderState.CANCELLED.value, "reason": why.value})
    return order
