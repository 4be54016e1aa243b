"""Handing an order over or shipping it: the day it leaves, the day the patient has it, the days it credits to the
supply (never past the batch's BUD), too soon, and the shipping fee. What dispensing means for other features (the
supply the prescription caches, reminders, notices) is workflows/orders.dispense around it."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pharmacy.billing import pricing
from pharmacy.compounding import rules
from pharmacy.compounding.models import Order
from pharmacy.compounding.rules import DeliveryMethod, OrderState
from pharmacy.compounding.steps import (
    load_order_and_lock_its_prescription,
    move,
    not_on_hold,
    refuse_recalled_lots,
    refuse_unless_active,
    refuse_while_blocked,
    require,
    text_field,
)
from pharmacy.core import audit
from pharmacy.core.actor import Actor
from pharmacy.core.context import now, today
from pharmacy.core.errors import Conflict, ValidationFailed
from pharmacy.core.roles import Permission
from pharmacy.supply import next_fill, reads
from pharmacy.supply import rules as supply_rules


@dataclass(frozen=True)
class Dispensed:
    """What dispensing did, for the pharmacist's confirmation: the order, and the shipping fee it added or took off."""

    order: Order
    fee_change_cents: int = 0
    credit_capped: bool = False


def _delivery(order: Order, method: DeliveryMethod | None, carrier: str | None,
              tracking_number: str | None) -> tuple[DeliveryMethod, str | None, str | None]:
    method = DeliveryMethod(method) if method else order.delivery_method
    carrier = text_field(carrier, "carrier", "The carrier", 40)
    tracking_number = text_field(tracking_number, "tracking_number", "The tracking number", 60)
    errors: dict[str, str] = {}
    if method == DeliveryMethod.SHIP:
        if not carrier:
            errors["carrier"] = "Enter the carrier."
        if not tracking_number:
            errors["tracking_number"] = "Enter the tracking number."
    if errors:
        raise ValidationFailed("The order was not dispensed.", fields=errors)
    return method, carrier, tracking_number


def _too_soon(actor: Actor, order: Order, current: supply_rules.Supply, starts_on: Any, reason: str | None) -> None:
    """docs/domain.md "Refill timing": not before ~80 % of the supply on hand is used, unless a pharmacist says why."""
    if not current.is_too_soon(starts_on):
        return
    earliest = current.earliest_next_start
    assert earliest is not None
    when = f"the earliest day the patient may have it is {earliest.isoformat()}"
    if not actor.can(Permission.OVERRIDE_TOO_SOON):
        audit.record(actor, "denied.override_too_soon", patient_id=order.patient_id, entity=("order", order.id),
                     outcome="denied", survive_rollback=True)
        raise Conflict(f"Too soon to dispense: {when}. A pharmacist may override with a reason.")
    text = (reason or "").strip()
    if not 3 <= len(text) <= 400:
        raise ValidationFailed(f"Too soon to dispense: {when}.", fields={
            "too_soon_reason": "A pharmacist's reason (3–400 characters) is needed to dispense early."})
    order.too_soon_override_by_id = actor.user_id
    order.too_soon_override_reason = text
    audit.record(actor, "order.too_soon_override", patient_id=order.patient_id, entity=("order", order.id))


def _credit_days(order: Order, current: supply_rules.Supply, starts_on: Any) -> bool:
    """The days this dispensing adds to the supply: what was planned, never past what is owed, and never past the
    batch's BUD counted from the first day of its own doses (the day the patient has it, or after the supply on
    hand): fewer days credited — the rest stays owed — rather than a supply that outlasts its BUD. True when the BUD
    cut it."""
    days = min(order.days_supply, current.days_owed) if current.days_owed else order.days_supply
    capped = False
    if order.bud is not None:
        usable = rules.days_until_bud(order.bud, current.first_dose_day(starts_on))
        if usable < 1:
            raise Conflict(f"This batch's beyond-use date ({order.bud.isoformat()}) comes before the patient would "
                           "receive it; it must be re-made.")
        if usable < days:
            days, capped = usable, True
    if days != order.days_supply:
        order.cap_note = supply_rules.fill_note(current, days, capped_by_bud=order.bud if capped else None)
        order.days_supply = days
    return capped


def dispense_order(actor: Actor, order_id: int, *, method: DeliveryMethod | None = None, carrier: str | None = None,
                   tracking_number: str | None = None, too_soon_reason: str | None = None) -> Dispensed:
    """Hand over or ship. The method chosen now sets the shipping fee and the day the patient has it.

    `dispensed_on` is today (the day it leaves); the supply starts on `supply_starts_on` — today for a pickup,
    the expected arrival for a parcel — and never runs past the batch's BUD: if it would, fewer days are
    credited and the rest stays owed on the same fill. Too soon (judged on the day the patient has it) needs
    a pharmacist's reason. The caller (workflows/orders.dispense) then refreshes the prescription's supply.
    """
    order = load_order_and_lock_its_prescription(order_id)
    require(actor, "dispense", order, "dispense orders")
    not_on_hold(order)
    rules.check_transition(order.state, OrderState.DISPENSED, held_from=order.held_from)
    rx = reads.prescription(order.prescription_id)  # locked above: the supply below is the committed one
    day = today()
    if today() > rx.expiry_date:
        raise Conflict(f"Prescription {rx.rx_number} expired on {rx.expiry_date.isoformat()}; it cannot be dispensed.")
    refuse_unless_active(rx, "dispensed")
    refuse_while_blocked(order)
    refuse_recalled_lots(order)
    if order.bud is not None and order.bud <= day:
        raise Conflict(f"This batch reached its beyond-use date ({order.bud.isoformat()}); it must be re-made.")
    method, carrier, tracking_number = _delivery(order, method, carrier, tracking_number)
    starts_on = supply_rules.arrival_date(day, next_fill.shipping_days_for(rx, method))
    current = reads.supply_of(rx)
    capped = _credit_days(order, current, starts_on)
    _too_soon(actor, order, current, starts_on, too_soon_reason)
    fee_before = order.shipping_cents
    order.shipping_cents = pricing.shipping_fee_cents() if method == DeliveryMethod.SHIP else 0
    if method == order.delivery_method == DeliveryMethod.SHIP:
        order.shipping_cents = fee_before  # the fee quoted when it was ordered stands
    order.delivery_method = method
    order.carrier = carrier if method == DeliveryMethod.SHIP else None
    order.tracking_number = tracking_number if method == DeliveryMethod.SHIP else None
    order.authorized_fill = current.current_fill if current.current_fill is not None else order.authorized_fill
    order.dispensed_by_id = actor.user_id
    order.dispensed_at = now()
    order.dispensed_on = day
    order.supply_starts_on = starts_on
    order.run_out_date = supply_rules.run_out_after(current.run_out, starts_on, order.days_supply)
    move(actor, order, OrderState.DISPENSED, "dispense", {"method": method.value})
    return Dispensed(order=order, fee_change_cents=order.shipping_cents - fee_before, credit_capped=capped)
