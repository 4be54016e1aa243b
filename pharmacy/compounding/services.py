"""The compounding order, one per fill: request → verify → compound → check → ready → dispense.

Every step checks the role (in the service, not the page), the allowed move (compounding/rules.py),
writes its audit event, and flushes; the request's unit of work commits or rolls back all of it.
The queue and the order page read from compounding/queries.py; formulas and ingredient lots are in
compounding/lots.py.
"""
from __future__ import annotations

from datetime import timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import joinedload

from pharmacy.billing import pricing
from pharmacy.compounding import rules
from pharmacy.compounding.models import Formula, IngredientLot, Order, OrderIngredientLot
from pharmacy.compounding.rules import DeliveryMethod, OrderState
from pharmacy.core import audit
from pharmacy.core.actor import Actor
from pharmacy.core.context import now, settings, today
from pharmacy.core.errors import Conflict, Forbidden, InvalidTransition, NotFound, ValidationFailed
from pharmacy.core.roles import Permission
from pharmacy.extensions import db
from pharmacy.patients.models import Patient
from pharmacy.prescriptions import rules as rx_rules
from pharmacy.prescriptions import screening
from pharmacy.prescriptions.models import Prescription
from pharmacy.prescriptions.rules import RxStatus
from pharmacy.refills import rules as refill_rules

OPEN_STATES = [s for s in OrderState if s not in (OrderState.DISPENSED, OrderState.CANCELLED)]


MAX_ID = 2**31 - 1


def _valid_id(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, int) and 1 <= value <= MAX_ID


def _load(order_id: int, *, lock: bool = True) -> Order:
    if not _valid_id(order_id):
        raise NotFound("No such order.")
    stmt = sa.select(Order).where(Order.id == order_id)
    if lock:
        stmt = stmt.with_for_update()
    order = db.session.execute(stmt).scalar_one_or_none()
    if order is None:
        raise NotFound("No such order.")
    return order


def _rx(order: Order) -> Prescription:
    rx = db.session.execute(
        sa.select(Prescription).where(Prescription.id == order.prescription_id)
        .options(joinedload(Prescription.formula), joinedload(Prescription.patient))
    ).unique().scalar_one()
    return rx


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


def _previous_dispensed(rx_id: int) -> Order | None:
    return db.session.execute(
        sa.select(Order).where(Order.prescription_id == rx_id, Order.state == OrderState.DISPENSED)
        .order_by(Order.fill_number.desc()).limit(1)
    ).scalar_one_or_none()


def new_order(actor: Actor, rx: Prescription, *, delivery: DeliveryMethod | None = None,
              request_note: str | None = None) -> Order:
    """Create the next fill's order (checks eligibility, caps to the BUD, snapshots the price, screens)."""
    if rx.status != RxStatus.ACTIVE:
        raise Conflict(f"Prescription {rx.rx_number} is {rx.status.value.replace('_', ' ')}; no fill can be made.")
    if today() > rx.expiry_date:
        raise Conflict(f"Prescription {rx.rx_number} expired on {rx.expiry_date.isoformat()}; a renewal is needed.")
    open_order = db.session.execute(
        sa.select(Order.id).where(Order.prescription_id == rx.id, Order.state.in_(OPEN_STATES))
    ).first()
    if open_order:
        raise Conflict("A fill of this prescription is already in progress.")
    # Fill numbers are unique per prescription and never reused (a cancelled fill keeps its number);
    # refills are counted from the fills that were not cancelled.
    highest, active = db.session.execute(
        sa.select(sa.func.max(Order.fill_number),
                  sa.func.coalesce(sa.func.sum(sa.case((Order.state != OrderState.CANCELLED, 1), else_=0)), 0))
        .where(Order.prescription_id == rx.id)
    ).one()
    if int(active) > (rx.refills_authorized or 0):
        raise Conflict(f"No refills remain on {rx.rx_number}; ask the prescriber for a renewal.")
    fill_number = 0 if highest is None else int(highest) + 1
    patient: Patient = rx.patient
    formula: Formula = rx.formula
    delivery = delivery or patient.delivery_preference
    ahead = steps_ahead(rx)
    days = rx.days_supply
    quantity = rx_rules.quantity_for_days(formula.form, formula.strength_mg, rx.dose_mg, days, ahead)
    # Assume it is compounded today; a shipped fill starts its supply when it arrives. Compounding
    # re-checks against the real BUD (the ingredient lots' expiries may cut it shorter).
    bud_days = rules.BUD_DAYS[formula.usp_category] - (patient.shipping_days if delivery == DeliveryMethod.SHIP else 0)
    plan = rules.cap_to_bud(formula.form, formula.strength_mg, rx.dose_mg, quantity=quantity, days_supply=days,
                            bud_days=bud_days, steps=ahead)
    q = pricing.quote(formula.id, plan.quantity, delivery)
    previous = _previous_dispensed(rx.id)
    earliest = None
    if previous is not None and previous.dispensed_on is not None:
        earliest = refill_rules.earliest_dispense_date(previous.dispensed_on, previous.days_supply,
                                                       settings().too_soon_percent)
    t = now()
    order = Order(
        prescription_id=rx.id, patient_id=rx.patient_id, fill_number=fill_number, state=OrderState.REQUESTED,
        state_changed_at=t, quantity=plan.quantity, days_supply=plan.days_supply, cap_note=plan.note,
        earliest_dispense_date=earliest, delivery_method=delivery, price_cents=q.price_cents,
        shipping_cents=q.shipping_cents, price_entry_id=q.price_entry_id, created_by_id=actor.user_id,
        created_at=t, updated_at=t,
    )
    db.session.add(order)
    db.session.flush()
    audit.record(actor, "order.create", patient_id=rx.patient_id, entity=("order", order.id),
                 details={"prescription": rx.id, "fill": fill_number})
    screening.screen_order(actor, rx, patient, order.id)
    from pharmacy.reminders import planning

    planning.cancel_for_prescription(rx.id, reason="refill ordered", kinds=planning.REMINDER_KINDS)
    return order


def steps_ahead(rx: Prescription) -> list[rx_rules.TitrationStep]:
    """The part of the titration plan still ahead of the next fill (after the days already dispensed)."""
    steps = screening.steps_of(rx)
    if not steps:
        return []
    supplied = db.session.execute(
        sa.select(sa.func.coalesce(sa.func.sum(Order.days_supply), 0)).where(
            Order.prescription_id == rx.id, Order.state == OrderState.DISPENSED
        )
    ).scalar_one()
    return list(rx_rules.remaining_steps(steps, int(supplied)))


def start_fill(actor: Actor, rx_id: int, *, delivery: DeliveryMethod | None = None) -> Order:
    """Staff start a fill (the first fill after intake, or a refill asked for at the counter)."""
    from pharmacy.prescriptions.services import get_prescription

    rx = get_prescription(actor, rx_id, lock=True)
    audit.require(actor, Permission.ENTER_PRESCRIPTION, patient_id=rx.patient_id, what="start fills")
    return new_order(actor, rx, delivery=delivery)


def _blocking(order: Order) -> list[rx_rules.Alert]:
    return screening.blocking(screening.alerts_for(order.prescription_id, order.id))


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


def verify_order(actor: Actor, order_id: int) -> Order:
    """A pharmacist verifies the order against the prescription; any unresolved stop blocks it."""
    order = _load(order_id)
    _permission(actor, "verify_order", order, "verify orders")
    _not_on_hold(order)
    rules.check_transition(order.state, OrderState.VERIFIED, held_from=order.held_from)
    rx = _rx(order)
    if rx.status != RxStatus.ACTIVE or today() > rx.expiry_date:
        raise Conflict(f"Prescription {rx.rx_number} is not active and unexpired; it cannot be verified.")
    blocking = _blocking(order)
    if blocking:
        raise Conflict("Resolve the safety alerts first: " + " ".join(a.message for a in blocking))
    order.verified_by_id = actor.user_id
    order.verified_at = now()
    _move(actor, order, OrderState.VERIFIED, "verify")
    return order


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


def _parse_lots(lots: Any, errors: dict[str, str]) -> list[tuple[int, Decimal]]:
    parsed: list[tuple[int, Decimal]] = []
    for i, item in enumerate(lots or [], start=1):
        lot_id = item.get("ingredient_lot_id") if isinstance(item, dict) else None
        qty = _amount(item.get("quantity_used")) if isinstance(item, dict) else None
        if isinstance(lot_id, str) and lot_id.strip().isdigit():
            lot_id = int(lot_id.strip())
        if isinstance(lot_id, bool) or not isinstance(lot_id, int) or not 1 <= lot_id <= 2**31 - 1:
            errors["lots"] = f"Line {i}: choose the ingredient lot used."
        elif qty is None:
            errors["lots"] = f"Line {i}: enter the quantity used (more than 0)."
        else:
            parsed.append((lot_id, qty))
    return parsed


def compound_order(actor: Actor, order_id: int, *, lots: list[dict[str, Any]], quantity_made: Decimal | None) -> Order:
    """Record the ingredient lots used and the quantity made; assign the lot number and the BUD.

    While the order is still compounding (before the final check) the record may be made again:
    a corrected record or a re-made batch after a failed check gets a new lot number and BUD.
    """
    order = _load(order_id)
    _permission(actor, "compound", order, "compound orders")
    _not_on_hold(order)
    remake = order.state == OrderState.COMPOUNDING
    if order.state == OrderState.CHECKED:
        raise InvalidTransition("This order has passed its final check; a pharmacist sends it back to be re-made "
                                "first.")
    if not remake:
        rules.check_transition(order.state, OrderState.COMPOUNDING, held_from=order.held_from)
    rx = _rx(order)
    formula = rx.formula
    day = today()
    errors: dict[str, str] = {}
    made = _amount(quantity_made)
    if made is None:
        errors["quantity_made"] = "Enter the quantity made (more than 0)."
    parsed = _parse_lots(lots, errors)
    ids = [lot_id for lot_id, _ in parsed]
    if not lots:
        errors["lots"] = "Record the ingredient lots used."
    elif len(set(ids)) != len(ids):
        errors["lots"] = "List each lot once."
    found = {lot.id: lot for lot in db.session.execute(
        sa.select(IngredientLot).where(IngredientLot.id.in_(ids))).scalars()} if ids else {}
    ingredients = {ing.name: ing for ing in formula.ingredients}
    if "lots" not in errors:
        problems = [f"Unknown ingredient lot {i}." for i in ids if i not in found]
        problems += [f"{lot.ingredient_name} lot {lot.lot_number} is not an ingredient of {formula.name}."
                     for lot in found.values() if lot.ingredient_name not in ingredients]
        expired = [lot for lot in found.values() if lot.expiry_date < day]
        if expired:
            problems.append("Expired lot(s) cannot be used: " + ", ".join(
                f"{lot.ingredient_name} lot {lot.lot_number} (expired {lot.expiry_date.isoformat()})" for lot in expired))
        missing = sorted(set(ingredients) - {lot.ingredient_name for lot in found.values()})
        if not problems and missing:
            problems.append("No lot recorded for: " + ", ".join(missing) + ".")
        if problems:
            errors["lots"] = " ".join(problems)
    if errors:
        raise ValidationFailed("The compounding record was not saved.", fields=errors)
    assert made is not None
    bud = rules.beyond_use_date(formula.usp_category, day, [lot.expiry_date for lot in found.values()])
    start = day + timedelta(days=rx.patient.shipping_days if order.delivery_method == DeliveryMethod.SHIP else 0)
    usable_days = rules.days_until_bud(bud, start)
    if usable_days < 1:
        msg = (f"With these lots the beyond-use date is {bud.isoformat()}, which leaves no days of supply when the "
               "patient receives it: use lots with a later expiry.")
        raise ValidationFailed(msg, fields={"lots": msg})
    if usable_days < order.days_supply:
        plan = rules.cap_to_bud(formula.form, formula.strength_mg, rx.dose_mg, quantity=order.quantity,
                                days_supply=order.days_supply, bud_days=usable_days, steps=steps_ahead(rx))
        order.quantity, order.days_supply, order.cap_note = plan.quantity, plan.days_supply, plan.note
        order.price_cents = pricing.quote(formula.id, plan.quantity, order.delivery_method).price_cents
    low, high = rules.lot_prefix_range(day)
    taken = db.session.execute(
        sa.select(Order.lot_number).where(Order.lot_number >= low, Order.lot_number < high)
    ).scalars().all()
    sequence = max((int(n[8:]) for n in taken if n and n[8:].isdigit()), default=0) + 1
    if remake:
        order.lots_used.clear()
        db.session.flush()  # the old rows go before the new ones (one row per lot and order)
    order.lot_number = rules.lot_number(day, sequence)
    try:
        db.session.flush()
    except IntegrityError:  # another batch took this number at the same moment
        raise Conflict("Another batch was recorded at the same moment; nothing was saved. Try again.") from None
    order.bud = bud
    order.quantity_made = made
    order.compounded_by_id = actor.user_id
    order.compounded_at = now()
    order.qc_passed = None
    order.qc_yield_pct = None
    order.lots_used = [
        OrderIngredientLot(ingredient_lot_id=lot_id, quantity_used=qty,
                           unit=ingredients[found[lot_id].ingredient_name].unit)
        for lot_id, qty in parsed
    ]
    if remake:
        order.updated_at = now()
        db.session.flush()
        audit.record(actor, "order.recompound", patient_id=order.patient_id, entity=("order", order.id),
                     details={"lot": order.lot_number})
    else:
        _move(actor, order, OrderState.COMPOUNDING, "compound", {"lot": order.lot_number})
    return order


def check_order(actor: Actor, order_id: int, *, qc_notes: str | None = None, deviations: str | None = None) -> Order:
    """The final check by a second pharmacist: a yield within 95–105% passes and the order is checked.

    A failed check is recorded (who, when, the yield) and the order stays compounding, to be re-made:
    the caller sees `qc_passed is False`. (Raising would roll the record of the failure back.)
    """
    order = _load(order_id)
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
    order = _load(order_id)
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
    """Release after review: the order is ready for pickup or for shipping; a pickup patient is told."""
    order = _load(order_id)
    _permission(actor, "check_order", order, "release orders")
    _not_on_hold(order)
    rules.check_transition(order.state, OrderState.READY, held_from=order.held_from)
    order.released_by_id = actor.user_id
    order.released_at = now()
    _move(actor, order, OrderState.READY, "release")
    if order.delivery_method == DeliveryMethod.PICKUP:
        from pharmacy.reminders import outbox
        from pharmacy.reminders.rules import MessageKind

        outbox.enqueue_notice(MessageKind.ORDER_READY, patient_id=order.patient_id, prescription_id=order.prescription_id,
                              order_id=order.id)
    return order


def dispense_order(actor: Actor, order_id: int, *, method: DeliveryMethod | None = None, carrier: str | None = None,
                   tracking_number: str | None = None, too_soon_reason: str | None = None) -> Order:
    """Hand over or ship. Too soon (before ~80% of the last supply is used) needs a pharmacist's reason.

    The supply starts when the patient has it (shipping days later for a parcel) and never runs
    past the BUD: if it would, the days supply is capped and the order says how the rest is filled.
    """
    order = _load(order_id)
    _permission(actor, "dispense", order, "dispense orders")
    _not_on_hold(order)
    rules.check_transition(order.state, OrderState.DISPENSED, held_from=order.held_from)
    rx = _rx(order)
    day = today()
    blocking = _blocking(order)
    if blocking:
        raise Conflict("Resolve the safety alerts first: " + " ".join(a.message for a in blocking))
    if order.bud is not None and order.bud <= day:
        raise Conflict(f"This batch reached its beyond-use date ({order.bud.isoformat()}); it must be re-made.")
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
    patient = rx.patient
    start = day + timedelta(days=patient.shipping_days if method == DeliveryMethod.SHIP else 0)
    if order.bud is not None:
        usable = rules.days_until_bud(order.bud, start)
        if usable < 1:
            raise Conflict(f"This batch's beyond-use date ({order.bud.isoformat()}) comes before the patient would "
                           "receive it; it must be re-made.")
        if usable < order.days_supply:
            formula = rx.formula
            plan = rules.cap_to_bud(formula.form, formula.strength_mg, rx.dose_mg, quantity=order.quantity,
                                    days_supply=order.days_supply, bud_days=usable, steps=steps_ahead(rx))
            order.quantity, order.days_supply, order.cap_note = plan.quantity, plan.days_supply, plan.note
            order.price_cents = pricing.quote(formula.id, plan.quantity, method).price_cents
    if order.earliest_dispense_date and day < order.earliest_dispense_date:
        reason = (too_soon_reason or "").strip()
        if not actor.can(Permission.OVERRIDE_TOO_SOON):
            audit.record(actor, "denied.override_too_soon", patient_id=order.patient_id, entity=("order", order.id),
                         outcome="denied", survive_rollback=True)
            raise Conflict(f"Too soon to dispense: the earliest date is {order.earliest_dispense_date.isoformat()}. "
                           "A pharmacist may override with a reason.")
        if len(reason) < 3 or len(reason) > 400:
            raise ValidationFailed(
                f"Too soon to dispense: the earliest date is {order.earliest_dispense_date.isoformat()}.",
                fields={"too_soon_reason": "A pharmacist's reason (3–400 characters) is needed to dispense early."},
            )
        order.too_soon_override_by_id = actor.user_id
        order.too_soon_override_reason = reason
        audit.record(actor, "order.too_soon_override", patient_id=order.patient_id, entity=("order", order.id))
    order.delivery_method = method
    order.carrier = carrier if method == DeliveryMethod.SHIP else None
    order.tracking_number = tracking_number if method == DeliveryMethod.SHIP else None
    if method == DeliveryMethod.PICKUP:
        order.shipping_cents = 0
    order.dispensed_by_id = actor.user_id
    order.dispensed_at = now()
    # DOMAIN.md "Refill timing": run-out = date dispensed (or delivered) + days supply.
    order.dispensed_on = start
    order.run_out_date = refill_rules.run_out_date(start, order.days_supply)
    _move(actor, order, OrderState.DISPENSED, "dispense", {"method": method.value})
    _rx(order).note_dispensed(order.fill_number, order.run_out_date)
    from pharmacy.reminders import outbox, planning
    from pharmacy.reminders.rules import MessageKind

    outbox.cancel_notices(order_id=order.id, kinds=[MessageKind.ORDER_READY], reason="dispensed")
    if method == DeliveryMethod.SHIP:
        outbox.enqueue_notice(MessageKind.ORDER_SHIPPED, patient_id=order.patient_id,
                              prescription_id=order.prescription_id, order_id=order.id)
    planning.plan_for_order(order.id)
    return order


def hold_order(actor: Actor, order_id: int, reason: str) -> Order:
    order = _load(order_id)
    _permission(actor, "hold_order", order, "put orders on hold")
    rules.check_transition(order.state, OrderState.ON_HOLD, held_from=order.held_from)
    reason = _reason(reason)
    order.held_from = order.state
    order.hold_reason = reason
    _move(actor, order, OrderState.ON_HOLD, "hold")
    return order


def resume_order(actor: Actor, order_id: int) -> Order:
    order = _load(order_id)
    _permission(actor, "hold_order", order, "resume orders")
    if order.state != OrderState.ON_HOLD or order.held_from is None:
        raise InvalidTransition("Only an order on hold can be resumed.")
    target = order.held_from
    _move(actor, order, target, "resume")
    order.held_from = None
    order.hold_reason = None
    db.session.flush()
    return order


def cancel_order(actor: Actor, order_id: int, reason: str, *, _system_cascade: bool = False) -> Order:
    order = _load(order_id)
    if not _system_cascade:
        _permission(actor, "cancel_order", order, "cancel orders")
    rules.check_transition(order.state, OrderState.CANCELLED, held_from=order.held_from)
    reason = _reason(reason)
    order.cancel_reason = reason
    _move(actor, order, OrderState.CANCELLED, "cancel")
    from pharmacy.reminders import outbox

    outbox.cancel_notices(order_id=order.id, reason="order cancelled")
    if not _system_cascade:
        # The refill the patient was waiting for is not coming: their reminders come back.
        from pharmacy.reminders import planning

        planning.replan_prescription(order.prescription_id)
    return order


def _reason(reason: str | None) -> str:
    reason = (reason or "").strip()
    if len(reason) < 3:
        raise ValidationFailed("A reason is required.", fields={"reason": "Say why (at least a few words)."})
    if len(reason) > 400:
        raise ValidationFailed("The reason is too long.", fields={"reason": "At most 400 characters."})
    return reason


TRANSITION_TARGETS = ("verified", "compounding", "checked", "ready", "dispensed", "on_hold", "cancelled", "resume")


def transition(actor: Actor, order_id: int, to: str, payload: dict[str, Any] | None = None) -> Order:
    """One entry for every move of an order (the API's /transitions and the order page's buttons).

    `to` is a target state, or "resume" (naming the step the order was held at resumes it too).
    The role is checked before the move, so the wrong role always hears 403, not 409.
    """
    data = payload or {}
    if to not in TRANSITION_TARGETS:
        raise ValidationFailed("Unknown step.", fields={"to": f"Must be one of: {', '.join(TRANSITION_TARGETS)}."})
    order = _load(order_id, lock=False)
    if to == "resume" or (order.state == OrderState.ON_HOLD and to not in ("on_hold", "cancelled")
                          and order.held_from is not None and to == order.held_from.value):
        return resume_order(actor, order_id)
    target = OrderState(to)
    if order.state not in rules.FINAL and order.state != target:
        _permission(actor, rules.permission_for(order.state, target), order, f"move orders to {target.value}")
    if order.state == OrderState.ON_HOLD and target not in (OrderState.ON_HOLD, OrderState.CANCELLED):
        rules.check_transition(order.state, target, held_from=order.held_from)  # says where it resumes
    if target is OrderState.VERIFIED:
        return verify_order(actor, order_id)
    if target is OrderState.COMPOUNDING:
        if order.state == OrderState.CHECKED:
            return send_back(actor, order_id, data.get("reason") or "")
        return compound_order(actor, order_id, lots=data.get("lots") or [], quantity_made=data.get("quantity_made"))
    if target is OrderState.CHECKED:
        return check_order(actor, order_id, qc_notes=data.get("qc_notes"), deviations=data.get("deviations"))
    if target is OrderState.READY:
        return release_order(actor, order_id)
    if target is OrderState.DISPENSED:
        return dispense_order(actor, order_id, method=data.get("method"), carrier=data.get("carrier"),
                              tracking_number=data.get("tracking_number"), too_soon_reason=data.get("too_soon_reason"))
    if target is OrderState.ON_HOLD:
        return hold_order(actor, order_id, data.get("reason") or "")
    return cancel_order(actor, order_id, data.get("reason") or "")
