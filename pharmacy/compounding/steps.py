"""The steps every compounding use case shares: loading an order for a change, checking the role, moving it
through the state machine with its audit event, and the small checks of what staff typed (services.py for the
order's steps, dispensing.py for handing it over, batches.py for several orders made together)."""
from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from pharmacy.compounding import rules
from pharmacy.compounding.models import IngredientLot, Order, OrderIngredientLot
from pharmacy.compounding.rules import OrderState
from pharmacy.core import audit
from pharmacy.core.actor import Actor
from pharmacy.core.context import now, today
from pharmacy.core.errors import Conflict, InvalidTransition, NotFound, ValidationFailed
from pharmacy.core.ids import valid_id
from pharmacy.core.roles import Permission
from pharmacy.extensions import db
from pharmacy.prescriptions.models import Prescription
from pharmacy.prescriptions.rules import RxStatus
from pharmacy.supply import reads


def load_order(order_id: int, *, lock: bool = True) -> Order:
    """The order (locked for the step about to change it); NotFound for anything that is not one."""
    if not valid_id(order_id):
        raise NotFound("No such order.")
    stmt = sa.select(Order).where(Order.id == order_id)
    if lock:  # the row as it is once locked, even if this session read it before
        stmt = stmt.with_for_update().execution_options(populate_existing=True)
    order = db.session.execute(stmt).scalar_one_or_none()
    if order is None:
        raise NotFound("No such order.")
    return order


def load_order_and_lock_its_prescription(order_id: int) -> Order:
    """The order, locked after its prescription: for a step that reads or changes the prescription's supply
    (dispensing, a return). The prescription first, as starting a fill and stopping a prescription lock them, so
    two such steps on one prescription take turns (never one reading the supply the other is changing) and never
    deadlock."""
    if not valid_id(order_id):
        raise NotFound("No such order.")
    rx_id = db.session.execute(sa.select(Order.prescription_id).where(Order.id == order_id)).scalar_one_or_none()
    if rx_id is None:
        raise NotFound("No such order.")
    reads.prescription(rx_id, lock=True)
    return load_order(order_id)


def require(actor: Actor, permission: str, order: Order, what: str) -> None:
    audit.require(actor, Permission(permission), patient_id=order.patient_id, what=what)


def move(actor: Actor, order: Order, target: OrderState, action: str, details: dict[str, Any] | None = None) -> None:
    rules.check_transition(order.state, target, held_from=order.held_from)
    previous = order.state
    order.state = target
    t = now()
    order.state_changed_at = t
    order.updated_at = t
    db.session.flush()
    audit.record(actor, f"order.{action}", patient_id=order.patient_id, entity=("order", order.id),
                 details={"from": previous.value, "to": target.value, **(details or {})})


def refuse_while_blocked(order: Order) -> None:
    """An unresolved stop (at intake, or found again at this fill) holds the order where it is."""
    found = reads.blocking_alerts(order.prescription_id, order.id)
    if found:
        raise Conflict("Resolve the safety alerts first: " + " ".join(a.message for a in found))


def refuse_recalled_lots(order: Order) -> None:
    """A batch made from a lot recalled (quarantined) since must not pass its check, be released or go out: it is
    re-made from good lots, or a pharmacist releases the lot (docs/domain.md "Lot recall")."""
    recalled = db.session.execute(
        sa.select(IngredientLot.ingredient_name, IngredientLot.lot_number)
        .join(OrderIngredientLot, OrderIngredientLot.ingredient_lot_id == IngredientLot.id)
        .where(OrderIngredientLot.order_id == order.id, IngredientLot.quarantined_at.is_not(None))
        .order_by(IngredientLot.ingredient_name, IngredientLot.lot_number)).all()
    if recalled:
        raise Conflict(rules.recalled_lots_message([f"{name} lot {number}" for name, number in recalled]))


def not_on_hold(order: Order) -> None:
    """A held order moves only by being resumed (to where it was) or cancelled."""
    if order.state == OrderState.ON_HOLD:
        raise InvalidTransition("This order is on hold; resume it first"
                                + (f" (held because: {order.hold_reason})." if order.hold_reason else "."))


def text_field(value: str | None, field_name: str, label: str, max_length: int) -> str | None:
    text = (value or "").strip() or None
    if text is not None and len(text) > max_length:
        raise ValidationFailed(f"{label} is too long.", fields={field_name: f"At most {max_length} characters."})
    return text


def active_unexpired(rx: Prescription, what: str) -> None:
    if rx.status != RxStatus.ACTIVE or today() > rx.expiry_date:
        raise Conflict(f"Prescription {rx.rx_number} is not active and unexpired; it cannot be {what}.")


def refuse_unless_active(rx: Prescription, what: str) -> None:
    """An order of a prescription on hold (or stopped) does not go out: the prescriber's hold — surgery and opioids
    after it, say — stops fills already made too. Resume the prescription first."""
    if rx.status == RxStatus.ON_HOLD:
        raise Conflict(f"Prescription {rx.rx_number} is on hold; this order cannot be {what} until it is resumed.")
    if rx.status != RxStatus.ACTIVE:
        raise Conflict(f"Prescription {rx.rx_number} is {rx.status.value}; this order cannot be {what}.")


def reason_text(reason: str | None) -> str:
    reason = (reason or "").strip()
    if len(reason) < 3:
        raise ValidationFailed("A reason is required.", fields={"reason": "Say why (at least a few words)."})
    if len(reason) > 400:
        raise ValidationFailed("The reason is too long.", fields={"reason": "At most 400 characters."})
    return reason
