"""The compounding order, one per dispensing: request → verify → plan the batch → compound → check → ready → dispense.

Every step checks the role (in the service, not the page), the allowed move (compounding/rules.py), writes its
audit event, and flushes; the request's unit of work commits or rolls back all of it. These use cases touch the
order's own rows; what a step means for other features (the supply the prescription caches, reminders, notices,
screening) is done by pharmacy/workflows/orders.py around them. The queue and the order page read from
compounding/queries.py; formulas and ingredient lots are in compounding/lots.py.
"""
from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from pharmacy.billing import pricing
from pharmacy.compounding import rules
from pharmacy.compounding.models import Batch, IngredientLot, Order, OrderIngredientLot
from pharmacy.compounding.rules import DeliveryMethod, OrderState
from pharmacy.core import audit
from pharmacy.core.actor import Actor
from pharmacy.core.context import now, today
from pharmacy.core.errors import Conflict, Forbidden, InvalidTransition, NotFound, ValidationFailed
from pharmacy.core.ids import valid_id
from pharmacy.core.roles import Permission
from pharmacy.extensions import db
from pharmacy.prescriptions import rules as rx_rules
from pharmacy.prescriptions.models import Prescription
from pharmacy.prescriptions.rules import RxStatus
from pharmacy.supply import next_fill, reads
from pharmacy.supply import rules as supply_rules
from pharmacy.supply.next_fill import NextFill


def load_order(order_id: int, *, lock: bool = True) -> Order:
    """The order (locked for the step about to change it); NotFound for anything that is not one."""
    if not valid_id(order_id):
        raise NotFound("No such order.")
    stmt = sa.select(Order).where(Order.id == order_id)
    if lock:
        stmt = stmt.with_for_update()
    order = db.session.execute(stmt).scalar_one_or_none()
    if order is None:
        raise NotFound("No such order.")
    return order


def _permission(actor: Actor, permission: str, order: Order, what: str) -> None:
    audit.require(actor, Permission(permission), patient_id=order.patient_id, what=what)


def _move(actor: Actor, order: Order, target: OrderState, action: str, details: dict[str, Any] | None = None) -> None:
    rules.check_transition(order.state, target, held_from=order.held_from)
    previous = order.state
    order.state = target
    t = now()
    order.state_changed_at = t
    order.updated_at = t
    db.session.flush()
    audit.record(actor, f"order.{action}", patient_id=order.patient_id, entity=("order", order.id),
                 details={"from": previous.value, "to": target.value, **(details or {})})


def ensure_fillable(rx: Prescription, current: supply_rules.Supply) -> None:
    """Conflict (in the pharmacist's words) unless the next fill of `rx` may be started today. A retired formula (or
    one not yet approved) cannot be ordered (pharmacy/formulas)."""
    if not rx.formula.active:
        state = "was retired" if rx.formula.retired_at else "is waiting for a pharmacist's approval"
        raise Conflict(f"{rx.formula.name} {state}: it cannot be ordered. Replace the prescription with an active "
                       "formula.")
    refusal = supply_rules.fill_refusal(current, status=rx.status.value, day=today(),
                                        order_in_progress=reads.open_order(rx.id) is not None,
                                        rx_number=rx.rx_number)
    if refusal:
        raise Conflict(refusal)


def create_order(actor: Actor, rx: Prescription, fill: NextFill, *, request_note: str | None = None) -> Order:
    """Create the next fill's order from its plan and price (supply/next_fill.py: the same numbers the patient
    was quoted). Refuses a prescription that is not active, has expired, is used up or is already being filled."""
    ensure_fillable(rx, fill.supply)
    if fill.quote is None:
        raise ValidationFailed("This formula has no price on the price list yet.", fields={"formula_id": "No price."})
    # Order numbers are unique per prescription and never reused (a cancelled order keeps its number).
    highest = db.session.execute(
        sa.select(sa.func.max(Order.fill_number)).where(Order.prescription_id == rx.id)).scalar_one()
    fill_number = 0 if highest is None else int(highest) + 1
    plan = fill.plan
    t = now()
    order = Order(
        prescription_id=rx.id, patient_id=rx.patient_id, fill_number=fill_number,
        authorized_fill=plan.authorized_fill, state=OrderState.REQUESTED, state_changed_at=t,
        quantity=plan.quantity, days_supply=plan.days_supply, cap_note=plan.note,
        earliest_dispense_date=fill.supply.earliest_next_start, delivery_method=fill.delivery,
        price_cents=fill.quote.price_cents, shipping_cents=fill.quote.shipping_cents,
        price_entry_id=fill.quote.price_entry_id, created_by_id=actor.user_id, created_at=t, updated_at=t,
    )
    db.session.add(order)
    db.session.flush()
    audit.record(actor, "order.create", patient_id=rx.patient_id, entity=("order", order.id),
                 details={"prescription": rx.id, "fill": fill_number, "authorized_fill": plan.authorized_fill})
    return order


def _blocking(order: Order) -> list[Any]:
    return reads.blocking_alerts(order.prescription_id, order.id)


def _not_on_hold(order: Order) -> None:
    """A held order moves only by being resumed (to where it was) or cancelled."""
    if order.state == OrderState.ON_HOLD:
        raise InvalidTransition("This order is on hold; resume it first"
                                + (f" (held because: {order.hold_reason})." if order.hold_reason else "."))


def _text(value: str | None, field_name: str, label: str, max_length: int) -> str | None:
    text = (value or "").strip() or None
    if text is not None and len(text) > max_length:
        raise ValidationFailed(f"{label} is too long.", fields={field_name: f"At most {max_length} characters."})
    return text


def _active_unexpired(rx: Prescription, what: str) -> None:
    if rx.status != RxStatus.ACTIVE or today() > rx.expiry_date:
        raise Conflict(f"Prescription {rx.rx_number} is not active and unexpired; it cannot be {what}.")


def verify_order(actor: Actor, order_id: int) -> Order:
    """A pharmacist verifies the order against the prescription; any unresolved stop blocks it."""
    order = load_order(order_id)
    _permission(actor, "verify_order", order, "verify orders")
    _not_on_hold(order)
    rules.check_transition(order.state, OrderState.VERIFIED, held_from=order.held_from)
    _active_unexpired(reads.prescription(order.prescription_id), "verified")
    blocking = _blocking(order)
    if blocking:
        raise Conflict("Resolve the safety alerts first: " + " ".join(a.message for a in blocking))
    order.verified_by_id = actor.user_id
    order.verified_at = now()
    _move(actor, order, OrderState.VERIFIED, "verify")
    return order


# ---- the batch: lots chosen (and the BUD cap fixed) before anyone compounds -------------------------------

MAX_AMOUNT = Decimal(1_000_000)


def _amount(value: Any) -> Decimal | None:
    """A positive, finite amount from a Decimal, int or numeric string; None for anything else."""
    if value is None or isinstance(value, bool | float):
        return None
    try:
        d = value if isinstance(value, Decimal) else Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        return None
    return d if d.is_finite() and 0 < d <= MAX_AMOUNT else None


def _lot_id(value: Any) -> int | None:
    if isinstance(value, str) and value.strip().isdigit() and len(value.strip()) < 11:
        value = int(value.strip())
    return value if valid_id(value) else None


def _parse_lots(lots: Any, errors: dict[str, str], *, measured: bool) -> list[tuple[int, Decimal | None]]:
    """[(lot id, quantity used)] from the form or the API; quantities are required when `measured`."""
    parsed: list[tuple[int, Decimal | None]] = []
    for i, item in enumerate(lots or [], start=1):
        raw_id = item.get("ingredient_lot_id") if isinstance(item, dict) else item
        lot_id = _lot_id(raw_id)
        qty = _amount(item.get("quantity_used")) if isinstance(item, dict) else None
        if lot_id is None:
            errors["lots"] = f"Line {i}: choose the ingredient lot used."
        elif measured and qty is None:
            errors["lots"] = f"Line {i}: enter the quantity used, as weighed or measured (more than 0)."
        else:
            parsed.append((lot_id, qty))
    if not lots:
        errors["lots"] = "Choose a lot for each ingredient."
    ids = [lot_id for lot_id, _ in parsed]
    if len(set(ids)) != len(ids):
        errors["lots"] = "List each lot once."
    return parsed


def _checked_lots(rx: Prescription, ids: list[int], errors: dict[str, str]) -> dict[int, IngredientLot]:
    """The lots, checked against the master formula: known, its ingredients, unexpired, one for every ingredient."""
    formula = rx.formula
    found = {lot.id: lot for lot in db.session.execute(
        sa.select(IngredientLot).where(IngredientLot.id.in_(ids))).scalars()} if ids else {}
    if "lots" in errors:
        return found
    ingredients = {ing.name for ing in formula.ingredients}
    day = today()
    problems = [f"Unknown ingredient lot {i}." for i in ids if i not in found]
    problems += [f"{lot.ingredient_name} lot {lot.lot_number} is not an ingredient of {formula.name}."
                 for lot in found.values() if lot.ingredient_name not in ingredients]
    problems += [f"{lot.ingredient_name} lot {lot.lot_number} is quarantined ({lot.quarantine_reason}): choose "
                 "another lot." for lot in found.values() if lot.quarantined_at is not None]
    expired = [lot for lot in found.values() if lot.expiry_date < day]
    if expired:
        problems.append("Expired lot(s) cannot be used: " + ", ".join(
            f"{lot.ingredient_name} lot {lot.lot_number} (expired {lot.expiry_date.isoformat()})" for lot in expired))
    missing = sorted(ingredients - {lot.ingredient_name for lot in found.values()})
    if not problems and missing:
        problems.append("No lot recorded for: " + ", ".join(missing) + ".")
    if problems:
        errors["lots"] = " ".join(problems)
    return found


@dataclass(frozen=True)
class BatchPlan:
    """The batch as planned from the lots chosen: what to make and why."""

    plan: rules.FillPlan
    price_cents: int


def _plan_with(order: Order, rx: Prescription, lots: dict[int, IngredientLot]) -> BatchPlan:
    """The supply model's next fill for this order, compounded today from these lots (BUD at the patient's door)."""
    current = reads.supply_of(rx)
    plan = next_fill.plan(rx, current, delivery=order.delivery_method, day=today(),
                          lot_expiries=[lot.expiry_date for lot in lots.values()])
    price = pricing.quote(rx.formula_id, plan.quantity, order.delivery_method).price_cents
    return BatchPlan(plan=plan, price_cents=price)


def _apply(order: Order, batch: BatchPlan) -> None:
    plan = batch.plan
    order.quantity, order.days_supply, order.cap_note = plan.quantity, plan.days_supply, plan.note
    order.authorized_fill = plan.authorized_fill
    order.bud = plan.bud
    order.price_cents = batch.price_cents


PLANNABLE = (OrderState.VERIFIED, OrderState.COMPOUNDING)


def plan_batch(actor: Actor, order_id: int, *, lots: list[Any]) -> Order:
    """Choose the lots before compounding: the BUD (and with it any cap on the days) is fixed now, so the bench
    makes the right quantity. A re-make (the order back at compounding) may choose again: the plan is redone.

    docs/domain.md "Compounding standards": decide the cap when the lots are chosen, before anyone compounds.
    """
    order = load_order(order_id)
    _permission(actor, "compound", order, "plan batches")
    _not_on_hold(order)
    if order.state not in PLANNABLE:
        raise InvalidTransition("Lots are chosen once the order is verified (or when a batch is re-made).")
    rx = reads.prescription(order.prescription_id)
    errors: dict[str, str] = {}
    parsed = _parse_lots(lots, errors, measured=False)
    found = _checked_lots(rx, [lot_id for lot_id, _ in parsed], errors)
    if errors:
        raise ValidationFailed("The batch was not planned.", fields=errors)
    batch = _plan_with(order, rx, found)
    _apply(order, batch)
    order.lots_used.clear()
    db.session.flush()
    order.lots_used = [OrderIngredientLot(ingredient_lot_id=lot_id, quantity_used=None,
                                          unit=_unit(rx, found[lot_id].ingredient_name)) for lot_id, _ in parsed]
    order.batch_planned_at = now()
    order.batch_planned_by_id = actor.user_id
    order.formula_version = rx.formula.version
    order.updated_at = now()
    db.session.flush()
    audit.record(actor, "order.plan_batch", patient_id=order.patient_id, entity=("order", order.id),
                 details={"days": order.days_supply, "capped": batch.plan.capped})
    return order


def _unit(rx: Prescription, ingredient_name: str) -> str:
    return next(i.unit for i in rx.formula.ingredients if i.name == ingredient_name)


def _planned_lot_ids(order: Order) -> set[int]:
    return {row.ingredient_lot_id for row in order.lots_used}


def compound_order(actor: Actor, order_id: int, *, lots: list[dict[str, Any]], quantity_made: Decimal | None,
                   batch_lot: tuple[int, str] | None = None) -> Order:
    """Record the measured amounts of the lots used and the quantity made; assign the lot number and the BUD.

    The quantity to make was fixed when the lots were chosen (`plan_batch`). Recording with other lots is
    accepted only when they do not change it; otherwise the batch must be planned again first, so nobody makes
    a quantity that the new lots' BUD would cut short. While the order is still compounding (before the final
    check) the record may be made again: a re-made batch gets a new lot number and BUD (and leaves any batch it was
    made in). `batch_lot`: (batch id, lot number) when the order is made in a batch with others (compounding/batches.py).
    """
    order = load_order(order_id)
    _permission(actor, "compound", order, "compound orders")
    _not_on_hold(order)
    remake = order.state == OrderState.COMPOUNDING
    if order.state == OrderState.CHECKED:
        raise InvalidTransition("This order has passed its final check; a pharmacist sends it back to be re-made "
                                "first.")
    if not remake:
        rules.check_transition(order.state, OrderState.COMPOUNDING, held_from=order.held_from)
    rx = reads.prescription(order.prescription_id)
    made, parsed, found = _measured_record(rx, lots, quantity_made)
    _same_quantity_as_planned(order, rx, found)
    _record_batch(actor, order, rx, made, parsed, found, batch_lot)
    if remake:
        order.updated_at = now()
        db.session.flush()
        audit.record(actor, "order.recompound", patient_id=order.patient_id, entity=("order", order.id),
                     details={"lot": order.lot_number})
    else:
        _move(actor, order, OrderState.COMPOUNDING, "compound", {"lot": order.lot_number})
    return order


def _measured_record(rx: Prescription, lots: list[dict[str, Any]], quantity_made: Decimal | None,
                     ) -> tuple[Decimal, list[tuple[int, Decimal | None]], dict[int, IngredientLot]]:
    """The quantity made and each lot's measured amount, checked against the master formula (all errors at once)."""
    errors: dict[str, str] = {}
    made = _amount(quantity_made)
    if made is None:
        errors["quantity_made"] = "Enter the quantity made, as counted or measured (more than 0)."
    parsed = _parse_lots(lots, errors, measured=True)
    found = _checked_lots(rx, [lot_id for lot_id, _ in parsed], errors)
    if errors or made is None:
        raise ValidationFailed("The compounding record was not saved.", fields=errors)
    return made, parsed, found


def _same_quantity_as_planned(order: Order, rx: Prescription, found: dict[int, IngredientLot]) -> None:
    """Lots other than the planned ones are fine if they make the same fill; otherwise plan again first."""
    if order.batch_planned_at is not None and set(found) == _planned_lot_ids(order):
        return
    batch = _plan_with(order, rx, found)
    if batch.plan.quantity != order.quantity:
        form = rx.formula.form
        msg = (f"With these lots this fill is {rx_rules.quantity_text(form, batch.plan.quantity)} for "
               f"{batch.plan.days_supply} days, not {rx_rules.quantity_text(form, order.quantity)}: "
               "choose the lots first (plan the batch), then make that quantity.")
        raise ValidationFailed("The compounding record was not saved.", fields={"lots": msg})
    _apply(order, batch)


def next_lot_number(day: Any) -> str:
    """The day's next lot number, after every single order's and every batch's of that day."""
    low, high = rules.lot_prefix_range(day)
    taken = list(db.session.execute(
        sa.select(Order.lot_number).where(Order.lot_number >= low, Order.lot_number < high)
    ).scalars()) + list(db.session.execute(
        sa.select(Batch.lot_number).where(Batch.lot_number >= low, Batch.lot_number < high)
    ).scalars())
    sequence = max((int(n[8:]) for n in taken if n and n[8:].isdigit()), default=0) + 1
    return rules.lot_number(day, sequence)


def _record_batch(actor: Actor, order: Order, rx: Prescription, made: Decimal,
                  parsed: list[tuple[int, Decimal | None]], found: dict[int, IngredientLot],
                  batch_lot: tuple[int, str] | None = None) -> None:
    """The batch's lot number (the day's next, or the shared batch's), BUD (from these lots, today), amounts and
    who made it."""
    day = today()
    order.lots_used.clear()
    db.session.flush()  # the old rows go before the new ones (one row per lot and order)
    order.batch_id, order.lot_number = batch_lot if batch_lot else (None, next_lot_number(day))
    order.formula_version = rx.formula.version
    try:
        db.session.flush()
    except IntegrityError:  # another batch took this number at the same moment
        raise Conflict("Another batch was recorded at the same moment; nothing was saved. Try again.") from None
    order.bud = rules.beyond_use_date(rx.formula.usp_category, day, [lot.expiry_date for lot in found.values()])
    order.quantity_made = made
    order.compounded_by_id = actor.user_id
    order.compounded_at = now()
    order.qc_passed = None
    order.qc_yield_pct = None
    order.lots_used = [
        OrderIngredientLot(ingredient_lot_id=lot_id, quantity_used=qty, unit=_unit(rx, found[lot_id].ingredient_name))
        for lot_id, qty in parsed
    ]


def check_order(actor: Actor, order_id: int, *, qc_notes: str | None = None, deviations: str | None = None) -> Order:
    """The final check by a second pharmacist: a yield within 95–105% passes and the order is checked.

    A failed check is recorded (who, when, the yield) and the order stays compounding, to be re-made:
    the caller sees `qc_passed is False`. (Raising would roll the record of the failure back.)
    """
    order = load_order(order_id)
    _permission(actor, "check_order", order, "do the final check")
    _not_on_hold(order)
    rules.check_transition(order.state, OrderState.CHECKED, held_from=order.held_from)
    try:
        rules.checker_must_differ(order.compounded_by_id, actor.user_id or -1)
    except Forbidden:
        audit.record(actor, "denied.check_own_work", patient_id=order.patient_id, entity=("order", order.id),
                     outcome="denied", survive_rollback=True)
        raise
    if order.quantity_made is None:
        raise Conflict("The compounding record has no quantity made.")
    qc_notes = _text(qc_notes, "qc_notes", "The QC notes", 400)
    deviations = _text(deviations, "deviations", "The deviations", 400)
    yield_pct = rules.yield_percent(order.quantity, order.quantity_made)
    order.qc_yield_pct = yield_pct
    order.qc_notes = qc_notes
    order.deviations = deviations
    order.checked_by_id = actor.user_id
    order.checked_at = now()
    order.updated_at = now()
    if not rules.qc_passes(yield_pct):
        order.qc_passed = False
        db.session.flush()
        audit.record(actor, "order.check_failed", patient_id=order.patient_id, entity=("order", order.id),
                     details={"yield_pct": str(yield_pct)})
        return order
    order.qc_passed = True
    _move(actor, order, OrderState.CHECKED, "check", {"yield_pct": str(yield_pct)})
    return order


def qc_failure_message(order: Order) -> str:
    return (f"Quality check failed: yield {order.qc_yield_pct}% is outside 95–105%. The batch must be re-made "
            "(record the new batch on this order).")


def send_back(actor: Actor, order_id: int, reason: str) -> Order:
    """A checked order that should not be released goes back to be re-made (the checker's call)."""
    order = load_order(order_id)
    _permission(actor, rules.permission_for(order.state, OrderState.COMPOUNDING), order, "send orders back")
    _not_on_hold(order)
    if order.state != OrderState.CHECKED:
        rules.check_transition(order.state, OrderState.COMPOUNDING, held_from=order.held_from)
        raise InvalidTransition("Only a checked order can be sent back to be re-made.")
    reason = _reason(reason)
    order.qc_passed = False
    order.qc_notes = f"Sent back: {reason}"[:400]
    order.checked_by_id = None
    order.checked_at = None
    _move(actor, order, OrderState.COMPOUNDING, "send_back")
    return order


def release_order(actor: Actor, order_id: int) -> Order:
    """Release after review: the order is ready for pickup or for shipping."""
    order = load_order(order_id)
    _permission(actor, "check_order", order, "release orders")
    _not_on_hold(order)
    rules.check_transition(order.state, OrderState.READY, held_from=order.held_from)
    order.released_by_id = actor.user_id
    order.released_at = now()
    _move(actor, order, OrderState.READY, "release")
    return order


# ---- dispensing ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Dispensed:
    """What dispensing did, for the pharmacist's confirmation: the order, and the shipping fee it added or took off."""

    order: Order
    fee_change_cents: int = 0
    credit_capped: bool = False


def _delivery(order: Order, method: DeliveryMethod | None, carrier: str | None,
              tracking_number: str | None) -> tuple[DeliveryMethod, str | None, str | None]:
    method = DeliveryMethod(method) if method else order.delivery_method
    carrier = _text(carrier, "carrier", "The carrier", 40)
    tracking_number = _text(tracking_number, "tracking_number", "The tracking number", 60)
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
    batch's BUD from the day the patient has it (fewer days credited — the rest stays owed — rather than a
    supply that outlasts its BUD). True when the BUD cut it."""
    days = min(order.days_supply, current.days_owed) if current.days_owed else order.days_supply
    capped = False
    if order.bud is not None:
        usable = rules.days_until_bud(order.bud, starts_on)
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
    order = load_order(order_id)
    _permission(actor, "dispense", order, "dispense orders")
    _not_on_hold(order)
    rules.check_transition(order.state, OrderState.DISPENSED, held_from=order.held_from)
    rx = reads.prescription(order.prescription_id)
    day = today()
    if today() > rx.expiry_date:
        raise Conflict(f"Prescription {rx.rx_number} expired on {rx.expiry_date.isoformat()}; it cannot be dispensed.")
    blocking = _blocking(order)
    if blocking:
        raise Conflict("Resolve the safety alerts first: " + " ".join(a.message for a in blocking))
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
    _move(actor, order, OrderState.DISPENSED, "dispense", {"method": method.value})
    return Dispensed(order=order, fee_change_cents=order.shipping_cents - fee_before, credit_capped=capped)


def hold_order(actor: Actor, order_id: int, reason: str) -> Order:
    order = load_order(order_id)
    _permission(actor, "hold_order", order, "put orders on hold")
    rules.check_transition(order.state, OrderState.ON_HOLD, held_from=order.held_from)
    reason = _reason(reason)
    order.held_from = order.state
    order.hold_reason = reason
    _move(actor, order, OrderState.ON_HOLD, "hold")
    return order


def resume_order(actor: Actor, order_id: int) -> Order:
    order = load_order(order_id)
    _permission(actor, "hold_order", order, "resume orders")
    if order.state != OrderState.ON_HOLD or order.held_from is None:
        raise InvalidTransition("Only an order on hold can be resumed.")
    target = order.held_from
    _move(actor, order, target, "resume")
    order.held_from = None
    order.hold_reason = None
    db.session.flush()
    return order


def cancel_order(actor: Actor, order_id: int, reason: str, *, by_system: bool = False) -> Order:
    """Cancel an order not yet dispensed. `by_system`: part of stopping its prescription (the actor who stopped it
    was already checked for that), so the cancel-orders permission is not asked again."""
    order = load_order(order_id)
    if not by_system:
        _permission(actor, "cancel_order", order, "cancel orders")
    rules.check_transition(order.state, OrderState.CANCELLED, held_from=order.held_from)
    reason = _reason(reason)
    order.cancel_reason = reason
    _move(actor, order, OrderState.CANCELLED, "cancel")
    return order


def open_order_ids(rx_id: int) -> list[int]:
    """The orders of a prescription still being worked on, oldest first."""
    return list(db.session.execute(
        sa.select(Order.id).where(Order.prescription_id == rx_id, Order.state.in_(reads.OPEN_ORDER_STATES))
        .order_by(Order.id)
    ).scalars())


def _reason(reason: str | None) -> str:
    reason = (reason or "").strip()
    if len(reason) < 3:
        raise ValidationFailed("A reason is required.", fields={"reason": "Say why (at least a few words)."})
    if len(reason) > 400:
        raise ValidationFailed("The reason is too long.", fields={"reason": "At most 400 characters."})
    return reason
