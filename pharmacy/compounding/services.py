"""The compounding order, one per dispensing: request → verify → plan the batch → compound → check → ready → dispense.

Every step checks the role (in the service, not the page), the allowed move (compounding/rules.py), writes its
audit event, and flushes; the request's unit of work commits or rolls back all of it. These use cases touch the
order's own rows; what a step means for other features (the supply the prescription caches, reminders, notices,
screening) is done by pharmacy/workflows/orders.py around them. Handing it over is compounding/dispensing.py; the
steps all of them share (load, role, move, audit) are compounding/steps.py. The queue and the order page read from
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
from pharmacy.compounding.rules import OrderState
from pharmacy.compounding.steps import (
    active_unexpired,
    load_order,
    move,
    not_on_hold,
    reason_text,
    refuse_recalled_lots,
    refuse_unless_active,
    refuse_while_blocked,
    require,
    text_field,
)
from pharmacy.core import audit
from pharmacy.core.actor import Actor
from pharmacy.core.context import now, today
from pharmacy.core.errors import Conflict, Forbidden, InvalidTransition, ValidationFailed
from pharmacy.core.ids import valid_id
from pharmacy.core.numbers import digits_only
from pharmacy.extensions import db
from pharmacy.prescriptions import rules as rx_rules
from pharmacy.prescriptions.models import Prescription
from pharmacy.supply import next_fill, reads
from pharmacy.supply import rules as supply_rules
from pharmacy.supply.next_fill import NextFill


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
    earliest = fill.supply.earliest_next_start  # the day the patient may have it; a parcel leaves earlier
    if earliest is not None:
        earliest = supply_rules.earliest_leaving_day(earliest, next_fill.shipping_days_for(rx, fill.delivery))
    order = Order(
        prescription_id=rx.id, patient_id=rx.patient_id, fill_number=fill_number,
        authorized_fill=plan.authorized_fill, state=OrderState.REQUESTED, state_changed_at=t,
        quantity=plan.quantity, days_supply=plan.days_supply, cap_note=plan.note,
        earliest_dispense_date=earliest, delivery_method=fill.delivery,
        price_cents=fill.quote.price_cents, shipping_cents=fill.quote.shipping_cents,
        price_entry_id=fill.quote.price_entry_id, created_by_id=actor.user_id, created_at=t, updated_at=t,
    )
    db.session.add(order)
    db.session.flush()
    audit.record(actor, "order.create", patient_id=rx.patient_id, entity=("order", order.id),
                 details={"prescription": rx.id, "fill": fill_number, "authorized_fill": plan.authorized_fill})
    return order


def verify_order(actor: Actor, order_id: int) -> Order:
    """A pharmacist verifies the order against the prescription; any unresolved stop blocks it."""
    order = load_order(order_id)
    require(actor, "verify_order", order, "verify orders")
    not_on_hold(order)
    rules.check_transition(order.state, OrderState.VERIFIED, held_from=order.held_from)
    active_unexpired(reads.prescription(order.prescription_id), "verified")
    refuse_while_blocked(order)
    order.verified_by_id = actor.user_id
    order.verified_at = now()
    move(actor, order, OrderState.VERIFIED, "verify")
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
    if isinstance(value, str) and digits_only(value.strip()) and len(value.strip()) < 11:
        value = int(value.strip())
    return value if valid_id(value) else None


def _parse_lots(lots: Any, errors: dict[str, str], *, measured: bool) -> list[tuple[int, Decimal | None]]:
    """[(lot id, quantity used)] from the form or the API; quantities are required when `measured`."""
    parsed: list[tuple[int, Decimal | None]] = []
    lines: list[str] = []  # every line's problem, not the last one's: a form sent empty names each line
    for i, item in enumerate(lots or [], start=1):
        raw_id = item.get("ingredient_lot_id") if isinstance(item, dict) else item
        lot_id = _lot_id(raw_id)
        qty = _amount(item.get("quantity_used")) if isinstance(item, dict) else None
        if lot_id is None:
            errors[f"lots.{i - 1}.ingredient_lot_id"] = "Choose the lot used."
            lines.append(f"Line {i}: choose the ingredient lot used.")
        if measured and qty is None:
            errors[f"lots.{i - 1}.quantity_used"] = "Enter the amount used."
            lines.append(f"Line {i}: enter the quantity used, as weighed or measured (more than 0).")
        if lot_id is not None and (qty is not None or not measured):
            parsed.append((lot_id, qty))
    if lines:
        errors["lots"] = " ".join(lines)
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
    price = pricing.price_for_quantity(order.price_entry_id, order.price_cents, order.quantity, plan.quantity)
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
    require(actor, "compound", order, "plan batches")
    not_on_hold(order)
    if order.state not in PLANNABLE:
        raise InvalidTransition("Lots are chosen once the order is verified (or when a batch is re-made).")
    rx = reads.prescription(order.prescription_id)
    errors: dict[str, str] = {}
    parsed = _parse_lots(lots, errors, measured=False)
    found = _checked_lots(rx, [lot_id for lot_id, _ in parsed], errors)
    if errors:
        raise ValidationFailed("The batch was not planned.", fields=errors)
    batch = _plan_with(order, rx, found)
    if order.quantity_made is not None:
        _void_record(actor, order)
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


def _void_record(actor: Actor, order: Order) -> None:
    """Lots chosen again after a batch was recorded: that batch was made from the other lots, so its record (lot
    number, quantity made, who made it) no longer describes what the new plan will make. It is voided — the final
    check then refuses until the batch is made again — rather than left beside lots that were never weighed and a
    BUD that is not the batch's. The stock it drew stays drawn (docs/domain.md: a re-make draws again)."""
    audit.record(actor, "order.record_voided", patient_id=order.patient_id, entity=("order", order.id),
                 details={"lot_number": order.lot_number})
    order.quantity_made = None
    order.lot_number = None
    order.compounded_by_id = None
    order.compounded_at = None
    order.qc_passed = None
    order.qc_yield_pct = None


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
    require(actor, "compound", order, "compound orders")
    not_on_hold(order)
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
        move(actor, order, OrderState.COMPOUNDING, "compound", {"lot": order.lot_number})
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
    sequence = max((int(n[8:]) for n in taken if n and digits_only(n[8:])), default=0) + 1
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
    require(actor, "check_order", order, "do the final check")
    not_on_hold(order)
    rules.check_transition(order.state, OrderState.CHECKED, held_from=order.held_from)
    try:
        rules.checker_must_differ(order.compounded_by_id, actor.user_id or -1)
    except Forbidden:
        audit.record(actor, "denied.check_own_work", patient_id=order.patient_id, entity=("order", order.id),
                     outcome="denied", survive_rollback=True)
        raise
    if order.quantity_made is None:
        raise Conflict("The compounding record has no quantity made.")
    if order.qc_passed is False:  # cleared when the re-made batch is recorded (_record_batch)
        raise Conflict(rules.check_refused_before_remake())
    refuse_recalled_lots(order)
    qc_notes = text_field(qc_notes, "qc_notes", "The QC notes", 400)
    deviations = text_field(deviations, "deviations", "The deviations", 400)
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
    move(actor, order, OrderState.CHECKED, "check", {"yield_pct": str(yield_pct)})
    return order


def qc_failure_message(order: Order) -> str:
    return (f"Quality check failed: yield {order.qc_yield_pct}% is outside 95–105%. The batch must be re-made "
            "(record the new batch on this order).")


def send_back(actor: Actor, order_id: int, reason: str) -> Order:
    """A checked order that should not be released goes back to be re-made (the checker's call)."""
    order = load_order(order_id)
    require(actor, rules.permission_for(order.state, OrderState.COMPOUNDING), order, "send orders back")
    not_on_hold(order)
    if order.state != OrderState.CHECKED:
        rules.check_transition(order.state, OrderState.COMPOUNDING, held_from=order.held_from)
        raise InvalidTransition("Only a checked order can be sent back to be re-made.")
    reason = reason_text(reason)
    order.qc_passed = False
    order.qc_notes = f"Sent back: {reason}"[:400]
    order.checked_by_id = None
    order.checked_at = None
    move(actor, order, OrderState.COMPOUNDING, "send_back")
    return order


def release_order(actor: Actor, order_id: int) -> Order:
    """Release after review: the order is ready for pickup or for shipping."""
    order = load_order(order_id)
    require(actor, "check_order", order, "release orders")
    not_on_hold(order)
    rules.check_transition(order.state, OrderState.READY, held_from=order.held_from)
    refuse_recalled_lots(order)
    refuse_unless_active(reads.prescription(order.prescription_id), "released")
    order.released_by_id = actor.user_id
    order.released_at = now()
    move(actor, order, OrderState.READY, "release")
    return order


def hold_order(actor: Actor, order_id: int, reason: str) -> Order:
    order = load_order(order_id)
    require(actor, "hold_order", order, "put orders on hold")
    rules.check_transition(order.state, OrderState.ON_HOLD, held_from=order.held_from)
    reason = reason_text(reason)
    order.held_from = order.state
    order.hold_reason = reason
    move(actor, order, OrderState.ON_HOLD, "hold")
    return order


def resume_order(actor: Actor, order_id: int) -> Order:
    order = load_order(order_id)
    require(actor, "hold_order", order, "resume orders")
    if order.state != OrderState.ON_HOLD or order.held_from is None:
        raise InvalidTransition("Only an order on hold can be resumed.")
    target = order.held_from
    move(actor, order, target, "resume")
    order.held_from = None
    order.hold_reason = None
    db.session.flush()
    return order


def cancel_order(actor: Actor, order_id: int, reason: str, *, by_system: bool = False) -> Order:
    """Cancel an order not yet dispensed. `by_system`: part of stopping its prescription (the actor who stopped it
    was already checked for that), so the cancel-orders permission is not asked again."""
    order = load_order(order_id)
    if not by_system:
        require(actor, "cancel_order", order, "cancel orders")
    rules.check_transition(order.state, OrderState.CANCELLED, held_from=order.held_from)
    reason = reason_text(reason)
    order.cancel_reason = reason
    move(actor, order, OrderState.CANCELLED, "cancel")
    return order


def open_order_ids(rx_id: int) -> list[int]:
    """The orders of a prescription still being worked on, oldest first."""
    return list(db.session.execute(
        sa.select(Order.id).where(Order.prescription_id == rx_id, Order.state.in_(reads.OPEN_ORDER_STATES))
        .order_by(Order.id)
    ).scalars())
