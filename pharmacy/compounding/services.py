"""The compounding order, one per fill: request → verify → compound → check → ready → dispense.

Every step checks the role (in the service, not the page), the allowed move (compounding/rules.py),
writes its audit event, and flushes; the request's unit of work commits or rolls back all of it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import joinedload, selectinload

from pharmacy.billing import pricing
from pharmacy.compounding import rules
from pharmacy.compounding.models import Formula, IngredientLot, Order, OrderIngredientLot
from pharmacy.compounding.rules import DeliveryMethod, OrderState
from pharmacy.core import audit
from pharmacy.core.actor import Actor
from pharmacy.core.context import now, settings, today
from pharmacy.core.errors import Conflict, Forbidden, NotFound, ValidationFailed
from pharmacy.core.roles import Permission
from pharmacy.extensions import db
from pharmacy.patients.models import Patient
from pharmacy.prescriptions import rules as rx_rules
from pharmacy.prescriptions import screening
from pharmacy.prescriptions.models import Prescription, ScreeningAlert
from pharmacy.prescriptions.rules import RxStatus
from pharmacy.refills import rules as refill_rules

OPEN_STATES = [s for s in OrderState if s not in (OrderState.DISPENSED, OrderState.CANCELLED)]


def _load(order_id: int, *, lock: bool = True) -> Order:
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
    last_fill = db.session.execute(
        sa.select(sa.func.max(Order.fill_number)).where(
            Order.prescription_id == rx.id, Order.state != OrderState.CANCELLED
        )
    ).scalar_one()
    fill_number = 0 if last_fill is None else last_fill + 1
    if fill_number > (rx.refills_authorized or 0):
        raise Conflict(f"No refills remain on {rx.rx_number}; ask the prescriber for a renewal.")
    patient: Patient = rx.patient
    formula: Formula = rx.formula
    delivery = delivery or patient.delivery_preference
    steps = screening.steps_of(rx)
    supplied = db.session.execute(
        sa.select(sa.func.coalesce(sa.func.sum(Order.days_supply), 0)).where(
            Order.prescription_id == rx.id, Order.state == OrderState.DISPENSED
        )
    ).scalar_one()
    ahead = rx_rules.remaining_steps(steps, int(supplied)) if steps else []
    days = rx.days_supply
    quantity = rx_rules.quantity_for_days(formula.form, formula.strength_mg, rx.dose_mg, days, ahead)
    plan = rules.cap_to_bud(formula.form, formula.strength_mg, rx.dose_mg, quantity=quantity, days_supply=days,
                            bud_days=rules.BUD_DAYS[formula.usp_category], steps=ahead)
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


def start_fill(actor: Actor, rx_id: int, *, delivery: DeliveryMethod | None = None) -> Order:
    """Staff start a fill (the first fill after intake, or a refill asked for at the counter)."""
    from pharmacy.prescriptions.services import get_prescription

    rx = get_prescription(actor, rx_id, lock=True)
    audit.require(actor, Permission.ENTER_PRESCRIPTION, patient_id=rx.patient_id, what="start fills")
    return new_order(actor, rx, delivery=delivery)


def _blocking(order: Order) -> list[rx_rules.Alert]:
    return screening.blocking(screening.alerts_for(order.prescription_id, order.id))


def verify_order(actor: Actor, order_id: int) -> Order:
    order = _load(order_id)
    _permission(actor, "verify_order", order, "verify orders")
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


def compound_order(actor: Actor, order_id: int, *, lots: list[dict[str, Any]], quantity_made: Decimal) -> Order:
    """Record the ingredient lots used and the quantity made; assign the lot number and the BUD."""
    order = _load(order_id)
    _permission(actor, "compound", order, "compound orders")
    rules.check_transition(order.state, OrderState.COMPOUNDING, held_from=order.held_from)
    rx = _rx(order)
    formula = rx.formula
    day = today()
    errors: dict[str, str] = {}
    if quantity_made is None or quantity_made <= 0:
        errors["quantity_made"] = "Enter the quantity made."
    ids = [int(x["ingredient_lot_id"]) for x in lots]
    if not ids:
        errors["lots"] = "Record the ingredient lots used."
    if len(set(ids)) != len(ids):
        errors["lots"] = "Each lot once, please."
    found = {lot.id: lot for lot in db.session.execute(sa.select(IngredientLot).where(IngredientLot.id.in_(ids))).scalars()}
    missing_ids = [i for i in ids if i not in found]
    if missing_ids:
        errors["lots"] = f"Unknown ingredient lot(s): {', '.join(map(str, missing_ids))}."
    expired = [lot for lot in found.values() if lot.expiry_date < day]
    if expired:
        errors["lots"] = "Expired lot(s) cannot be used: " + ", ".join(
            f"{lot.ingredient_name} lot {lot.lot_number} (expired {lot.expiry_date.isoformat()})" for lot in expired
        )
    covered = {lot.ingredient_name for lot in found.values()}
    needed = {ing.name for ing in formula.ingredients}
    if not errors.get("lots") and needed - covered:
        errors["lots"] = "No lot recorded for: " + ", ".join(sorted(needed - covered)) + "."
    for x in lots:
        if Decimal(str(x.get("quantity_used", "0"))) <= 0:
            errors["lots"] = "Each lot needs the quantity used."
    if errors:
        raise ValidationFailed("The compounding record was not saved.", fields=errors)
    bud = rules.beyond_use_date(formula.usp_category, day, [lot.expiry_date for lot in found.values()])
    usable_days = (bud - day).days
    if usable_days < order.days_supply:
        steps = rx_rules.remaining_steps(screening.steps_of(rx), 0) if order.fill_number == 0 else []
        plan = rules.cap_to_bud(formula.form, formula.strength_mg, rx.dose_mg, quantity=order.quantity,
                                days_supply=order.days_supply, bud_days=usable_days, steps=steps)
        order.quantity, order.days_supply, order.cap_note = plan.quantity, plan.days_supply, plan.note
        order.price_cents = pricing.quote(formula.id, plan.quantity, order.delivery_method).price_cents
    sequence = db.session.execute(
        sa.select(sa.func.count()).select_from(Order).where(Order.lot_number.like(rules.lot_number(day, 1)[:8] + "%"))
    ).scalar_one() + 1
    order.lot_number = rules.lot_number(day, sequence)
    order.bud = bud
    order.quantity_made = quantity_made
    order.compounded_by_id = actor.user_id
    order.compounded_at = now()
    order.qc_passed = None
    order.lots_used = [
        OrderIngredientLot(ingredient_lot_id=int(x["ingredient_lot_id"]),
                           quantity_used=Decimal(str(x["quantity_used"])), unit=str(x.get("unit") or "g"))
        for x in lots
    ]
    _move(actor, order, OrderState.COMPOUNDING, "compound", {"lot": order.lot_number})
    return order


def check_order(actor: Actor, order_id: int, *, qc_notes: str | None = None, deviations: str | None = None) -> Order:
    """The final check by a second pharmacist: yield within 95–105% passes; otherwise back to be re-made."""
    order = _load(order_id)
    _permission(actor, "check_order", order, "do the final check")
    rules.check_transition(order.state, OrderState.CHECKED, held_from=order.held_from)
    try:
        rules.checker_must_differ(order.compounded_by_id, actor.user_id or -1)
    except Forbidden:
        audit.record(actor, "denied.check_own_work", patient_id=order.patient_id, entity=("order", order.id),
                     outcome="denied", survive_rollback=True)
        raise
    if order.quantity_made is None:
        raise Conflict("The compounding record has no quantity made.")
    yield_pct = rules.yield_percent(order.quantity, order.quantity_made)
    order.qc_yield_pct = yield_pct
    order.qc_notes = qc_notes
    order.deviations = deviations
    order.checked_by_id = actor.user_id
    order.checked_at = now()
    if not rules.qc_passes(yield_pct):
        order.qc_passed = False
        db.session.flush()
        audit.record(actor, "order.check_failed", patient_id=order.patient_id, entity=("order", order.id),
                     details={"yield_pct": str(yield_pct)})
        raise Conflict(f"Quality check failed: yield {yield_pct}% is outside 95–105%. The batch must be re-made.")
    order.qc_passed = True
    _move(actor, order, OrderState.CHECKED, "check", {"yield_pct": str(yield_pct)})
    return order


def release_order(actor: Actor, order_id: int) -> Order:
    """Release after review: the order is ready for pickup or for shipping; a pickup patient is told."""
    order = _load(order_id)
    _permission(actor, "check_order", order, "release orders")
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
    """Hand over or ship. Too soon (before ~80% of the last supply is used) needs a pharmacist's reason."""
    order = _load(order_id)
    _permission(actor, "dispense", order, "dispense orders")
    rules.check_transition(order.state, OrderState.DISPENSED, held_from=order.held_from)
    rx = _rx(order)
    day = today()
    blocking = _blocking(order)
    if blocking:
        raise Conflict("Resolve the safety alerts first: " + " ".join(a.message for a in blocking))
    if order.bud is not None and order.bud <= day:
        raise Conflict(f"This batch reached its beyond-use date ({order.bud.isoformat()}); it must be re-made.")
    method = method or order.delivery_method
    errors: dict[str, str] = {}
    if method == DeliveryMethod.SHIP:
        if not carrier:
            errors["carrier"] = "Enter the carrier."
        if not tracking_number:
            errors["tracking_number"] = "Enter the tracking number."
    if errors:
        raise ValidationFailed("The order was not dispensed.", fields=errors)
    if order.earliest_dispense_date and day < order.earliest_dispense_date:
        reason = (too_soon_reason or "").strip()
        if not actor.can(Permission.OVERRIDE_TOO_SOON):
            audit.record(actor, "denied.override_too_soon", patient_id=order.patient_id, entity=("order", order.id),
                         outcome="denied", survive_rollback=True)
            raise Conflict(f"Too soon to dispense: the earliest date is {order.earliest_dispense_date.isoformat()}. "
                           "A pharmacist may override with a reason.")
        if len(reason) < 3:
            raise ValidationFailed(
                f"Too soon to dispense: the earliest date is {order.earliest_dispense_date.isoformat()}.",
                fields={"too_soon_reason": "A pharmacist's reason is needed to dispense early."},
            )
        order.too_soon_override_by_id = actor.user_id
        order.too_soon_override_reason = reason
        audit.record(actor, "order.too_soon_override", patient_id=order.patient_id, entity=("order", order.id))
    patient = rx.patient
    order.delivery_method = method
    order.carrier = carrier if method == DeliveryMethod.SHIP else None
    order.tracking_number = tracking_number if method == DeliveryMethod.SHIP else None
    order.dispensed_by_id = actor.user_id
    order.dispensed_at = now()
    # DOMAIN.md "Refill timing": run-out = date dispensed (or delivered) + days supply.
    start = day + timedelta(days=patient.shipping_days if method == DeliveryMethod.SHIP else 0)
    order.dispensed_on = start
    order.run_out_date = refill_rules.run_out_date(start, order.days_supply)
    _move(actor, order, OrderState.DISPENSED, "dispense", {"method": method.value})
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
    reason = _reason(reason)
    held_from = order.state
    rules.check_transition(order.state, OrderState.ON_HOLD, held_from=order.held_from)
    order.held_from = held_from
    order.hold_reason = reason
    _move(actor, order, OrderState.ON_HOLD, "hold")
    return order


def resume_order(actor: Actor, order_id: int) -> Order:
    order = _load(order_id)
    _permission(actor, "hold_order", order, "resume orders")
    if order.state != OrderState.ON_HOLD or order.held_from is None:
        raise Conflict("Only an order on hold can be resumed.")
    target = order.held_from
    rules.check_transition(order.state, target, held_from=order.held_from)
    order.held_from = None
    order.hold_reason = None
    _move(actor, order, target, "resume")
    return order


def cancel_order(actor: Actor, order_id: int, reason: str, *, _system_cascade: bool = False) -> Order:
    order = _load(order_id)
    if not _system_cascade:
        _permission(actor, "cancel_order", order, "cancel orders")
    reason = _reason(reason)
    rules.check_transition(order.state, OrderState.CANCELLED, held_from=order.held_from)
    order.cancel_reason = reason
    _move(actor, order, OrderState.CANCELLED, "cancel")
    from pharmacy.reminders import outbox

    outbox.cancel_notices(order_id=order.id, reason="order cancelled")
    return order


def _reason(reason: str | None) -> str:
    reason = (reason or "").strip()
    if len(reason) < 3:
        raise ValidationFailed("A reason is required.", fields={"reason": "Say why (at least a few words)."})
    return reason


# ---- read models -------------------------------------------------------------------------------


@dataclass
class QueueGroup:
    state: OrderState
    count: int
    orders: list[Order]


QUEUE_ORDER = [OrderState.REQUESTED, OrderState.VERIFIED, OrderState.COMPOUNDING, OrderState.CHECKED,
               OrderState.READY, OrderState.ON_HOLD]


def queue(actor: Actor, *, per_state: int = 50) -> list[QueueGroup]:
    """Open orders grouped by state, with counts, oldest first: two queries whatever the size."""
    audit.require(actor, Permission.VIEW_CLINICAL, what="see the order queue")
    counts = dict(db.session.execute(
        sa.select(Order.state, sa.func.count()).where(Order.state.in_(QUEUE_ORDER)).group_by(Order.state)
    ).all())
    ranked = (
        sa.select(Order.id, sa.func.row_number().over(partition_by=Order.state, order_by=(Order.created_at, Order.id))
                  .label("n"))
        .where(Order.state.in_(QUEUE_ORDER)).subquery()
    )
    rows = db.session.execute(
        sa.select(Order).join(ranked, ranked.c.id == Order.id).where(ranked.c.n <= per_state)
        .options(joinedload(Order.prescription).joinedload(Prescription.patient),
                 joinedload(Order.prescription).joinedload(Prescription.formula))
        .order_by(Order.created_at, Order.id)
    ).unique().scalars().all()
    by_state: dict[OrderState, list[Order]] = {}
    for order in rows:
        by_state.setdefault(order.state, []).append(order)
    return [QueueGroup(state=s, count=int(counts.get(s, 0)), orders=by_state.get(s, [])) for s in QUEUE_ORDER]


@dataclass
class OrderView:
    order: Order
    rx: Prescription
    patient: Patient
    alerts: list[ScreeningAlert]
    blocking: list[rx_rules.Alert]
    next_steps: list[OrderState]
    lots: list[OrderIngredientLot] = field(default_factory=list)
    staff_names: dict[int, str] = field(default_factory=dict)
    too_soon: bool = False


def order_view(actor: Actor, order_id: int) -> OrderView:
    audit.require(actor, Permission.VIEW_CLINICAL, what="open orders")
    order = db.session.execute(
        sa.select(Order).where(Order.id == order_id).options(
            selectinload(Order.lots_used).joinedload(OrderIngredientLot.ingredient_lot)
        )
    ).scalar_one_or_none()
    if order is None:
        raise NotFound("No such order.")
    rx = _rx(order)
    alerts = screening.alerts_for(order.prescription_id, order.id)
    from pharmacy.core.models import User

    ids = {i for i in (order.verified_by_id, order.compounded_by_id, order.checked_by_id, order.released_by_id,
                       order.dispensed_by_id, order.too_soon_override_by_id) if i}
    ids |= {a.resolved_by_id for a in alerts if a.resolved_by_id}
    names = dict(db.session.execute(sa.select(User.id, User.full_name).where(User.id.in_(ids))).all()) if ids else {}
    audit.record(actor, "order.view", patient_id=order.patient_id, entity=("order", order.id))
    return OrderView(
        order=order, rx=rx, patient=rx.patient, alerts=alerts, blocking=screening.blocking(alerts),
        next_steps=rules.next_steps(order.state, order.held_from), lots=list(order.lots_used), staff_names=names,
        too_soon=bool(order.earliest_dispense_date and today() < order.earliest_dispense_date),
    )


def usable_lots(formula: Formula) -> dict[str, list[IngredientLot]]:
    """Unexpired lots per ingredient of a formula, soonest expiry first (first-expiry, first-out)."""
    names = [i.name for i in formula.ingredients]
    lots = db.session.execute(
        sa.select(IngredientLot).where(IngredientLot.ingredient_name.in_(names), IngredientLot.expiry_date >= today())
        .order_by(IngredientLot.expiry_date)
    ).scalars()
    out: dict[str, list[IngredientLot]] = {n: [] for n in names}
    for lot in lots:
        out[lot.ingredient_name].append(lot)
    return out
