"""Read models of compounding: the order queue and the order page (the label and the compounding record too).

Split from compounding/services.py, which keeps the use cases that move an order through its states;
nothing here changes an order (opening one writes its audit event).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.orm import joinedload, selectinload

from pharmacy.compounding import rules
from pharmacy.compounding.lots import usable_lots
from pharmacy.compounding.models import Formula, IngredientLot, Order, OrderIngredientLot
from pharmacy.compounding.rules import DeliveryMethod, OrderState
from pharmacy.compounding.services import _valid_id
from pharmacy.core import audit
from pharmacy.core.actor import Actor
from pharmacy.core.context import today
from pharmacy.core.errors import NotFound
from pharmacy.core.roles import Permission
from pharmacy.extensions import db
from pharmacy.patients.models import Patient
from pharmacy.prescriptions import rules as rx_rules
from pharmacy.prescriptions import screening
from pharmacy.prescriptions.models import Prescription, ScreeningAlert


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
    audit.record_reads(actor, "order.queue", [order.patient_id for order in rows])
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
    formula: Formula | None = None
    product: str = ""
    # (target, permission) for each button: a target state value, or "resume".
    moves: list[tuple[str, str]] = field(default_factory=list)
    # For the compounding record form: unexpired lots per ingredient and the expected amount of each.
    lot_choices: dict[str, list[IngredientLot]] = field(default_factory=dict)
    expected: dict[str, Decimal] = field(default_factory=dict)
    can_record_batch: bool = False
    refills_left: int = 0
    chart: list[tuple[str, str, str]] = field(default_factory=list)

    def name(self, user_id: int | None) -> str:
        return self.staff_names.get(user_id or 0, "—") if user_id else "—"


def _per_count(per: str) -> Decimal:
    """"100 capsules" -> 100: the batch size a master formula's amounts are written for."""
    match = re.match(r"\s*(\d+(?:\.\d+)?)", per or "")
    return Decimal(match.group(1)) if match and Decimal(match.group(1)) > 0 else Decimal(100)


def expected_amounts(formula: Formula, quantity: Decimal) -> dict[str, Decimal]:
    """Each ingredient's amount for this batch, scaled from the master formula (to 3 places)."""
    return {ing.name: (ing.amount * quantity / _per_count(ing.per)).quantize(Decimal("0.001"))
            for ing in formula.ingredients}


def fill_chart(rx: Prescription, order: Order) -> list[tuple[str, str, str]]:
    """The dated titration chart for this fill (empty for a fixed dose or a finished titration).

    It starts on the day the patient has the fill: the dispensing (arrival) date once known;
    before that, today (or today + shipping days for a parcel).
    """
    ahead = rx_rules.remaining_steps(screening.steps_of(rx), _days_dispensed_before(order)) \
        if rx.titration else ()
    if not ahead:
        return []
    start = order.dispensed_on or (today() + timedelta(
        days=rx.patient.shipping_days if order.delivery_method == DeliveryMethod.SHIP else 0))
    schedule = rx_rules.titration_schedule(rx.formula.form, rx.formula.strength_mg, list(ahead), start, rx.dose_mg)
    return rx_rules.titration_chart_rows(schedule, rx.formula.form)


def _days_dispensed_before(order: Order) -> int:
    return int(db.session.execute(
        sa.select(sa.func.coalesce(sa.func.sum(Order.days_supply), 0)).where(
            Order.prescription_id == order.prescription_id, Order.state == OrderState.DISPENSED,
            Order.id != order.id, Order.fill_number < order.fill_number)
    ).scalar_one())


def refills_left_after(rx: Prescription, order: Order) -> int:
    """Refills left once this fill is made: authorized, less the fills before it (and itself) beyond the original."""
    fills_up_to = db.session.execute(
        sa.select(sa.func.count()).select_from(Order).where(
            Order.prescription_id == rx.id, Order.state != OrderState.CANCELLED, Order.fill_number <= order.fill_number)
    ).scalar_one()
    return max((rx.refills_authorized or 0) - max(int(fills_up_to) - 1, 0), 0)


def order_view(actor: Actor, order_id: int, *, audit_action: str = "order.view") -> OrderView:
    """Everything the order page (and the label and the compounding record) shows, in a bounded number of queries."""
    audit.require(actor, Permission.VIEW_CLINICAL, what="open orders")
    if not _valid_id(order_id):
        raise NotFound("No such order.")
    order = db.session.execute(
        sa.select(Order).where(Order.id == order_id).options(
            selectinload(Order.lots_used).joinedload(OrderIngredientLot.ingredient_lot)
        )
    ).scalar_one_or_none()
    if order is None:
        raise NotFound("No such order.")
    rx = db.session.execute(
        sa.select(Prescription).where(Prescription.id == order.prescription_id)
        .options(joinedload(Prescription.formula).selectinload(Formula.ingredients),
                 joinedload(Prescription.patient), joinedload(Prescription.prescriber))
    ).unique().scalar_one()
    formula = rx.formula
    alerts = screening.alerts_for(order.prescription_id, order.id)
    from pharmacy.core.models import User

    ids = {i for i in (order.verified_by_id, order.compounded_by_id, order.checked_by_id, order.released_by_id,
                       order.dispensed_by_id, order.too_soon_override_by_id, order.created_by_id) if i}
    ids |= {a.resolved_by_id for a in alerts if a.resolved_by_id}
    names = dict(db.session.execute(sa.select(User.id, User.full_name).where(User.id.in_(ids))).all()) if ids else {}
    steps = rules.next_steps(order.state, order.held_from)
    moves = [("resume" if order.state == OrderState.ON_HOLD and s != OrderState.CANCELLED else s.value,
              rules.permission_for(order.state, s)) for s in steps]
    can_record = order.state in (OrderState.VERIFIED, OrderState.COMPOUNDING)
    audit.record(actor, audit_action, patient_id=order.patient_id, entity=("order", order.id))
    return OrderView(
        order=order, rx=rx, patient=rx.patient, alerts=alerts, blocking=screening.blocking(alerts),
        next_steps=steps, lots=list(order.lots_used), staff_names=names,
        too_soon=bool(order.earliest_dispense_date and today() < order.earliest_dispense_date
                      and order.state not in rules.FINAL),
        formula=formula, product=rx_rules.product_name(formula.form, formula.strength_mg), moves=moves,
        lot_choices=usable_lots(formula) if can_record else {},
        expected=expected_amounts(formula, order.quantity), can_record_batch=can_record,
        refills_left=refills_left_after(rx, order), chart=fill_chart(rx, order),
    )
