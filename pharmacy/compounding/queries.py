"""Read models of compounding: the order queue and the order page (the label and the compounding record too).

Split from compounding/services.py, which keeps the use cases that move an order through its states;
nothing here changes an order (opening one writes its audit event).
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.orm import joinedload, selectinload

from pharmacy.compounding import returns, rules
from pharmacy.compounding.lots import usable_lots
from pharmacy.compounding.models import Batch, Formula, IngredientLot, Order, OrderIngredientLot
from pharmacy.compounding.rules import DeliveryMethod, OrderState
from pharmacy.core import audit
from pharmacy.core.actor import Actor
from pharmacy.core.context import today
from pharmacy.core.db import Milli
from pharmacy.core.errors import NotFound
from pharmacy.core.ids import valid_id
from pharmacy.core.models import User
from pharmacy.core.paging import PageNumbers
from pharmacy.core.roles import Permission
from pharmacy.core.rows import rows
from pharmacy.extensions import db
from pharmacy.inventory.models import LotStock
from pharmacy.patients.models import Patient
from pharmacy.prescriptions import rules as rx_rules
from pharmacy.prescriptions.models import Prescription, ScreeningAlert
from pharmacy.prescriptions.rules import Form, Severity
from pharmacy.refills.models import RefillRequest
from pharmacy.supply import reads
from pharmacy.supply.rules import Supply, arrival_date, dose_starts, supply_from_cache

QUEUE_ORDER = [OrderState.REQUESTED, OrderState.VERIFIED, OrderState.COMPOUNDING, OrderState.CHECKED,
               OrderState.READY, OrderState.ON_HOLD]
QUEUE_PAGE = 50  # orders a page of one step's list
QUEUE_BOARD = 10  # orders per step on the board (every step at once): the oldest, with the step's list a click away


class QueueOrder(NamedTuple):
    """One line of the order queue: the columns it shows of the order, its prescription, patient and formula.

    Why not the ORM graph: the queue lists up to 300 orders at once, and building each order with its prescription,
    patient and formula (and converting every column of the four) was most of the page's time."""

    id: int
    patient_id: int
    prescription_id: int
    state: OrderState
    quantity: Decimal
    delivery_method: DeliveryMethod
    created_at: datetime
    hold_reason: str | None
    rx_number: str
    last_name: str
    first_name: str
    formula_name: str
    form: Form
    strength_mg: Decimal
    state_changed_at: datetime | None = None  # only for the API (the page does not show it)


class QueueAlert(NamedTuple):
    """A screening finding as the queue needs it: whose it is, what it says, whether it stops the order."""

    prescription_id: int
    order_id: int | None
    code: str
    severity: Severity
    message: str
    resolved: bool


@dataclass
class QueueGroup(PageNumbers):
    state: OrderState
    count: int
    orders: list[QueueOrder]
    alerts: dict[int, list[QueueAlert]] = field(default_factory=dict)  # order id -> the stops that block it
    page: int = 1
    per_page: int = QUEUE_PAGE


def _queue_columns(changed_at: bool) -> list[Any]:
    columns: list[Any] = [
        Order.id, Order.patient_id, Order.prescription_id, Order.state, Order.quantity, Order.delivery_method,
        Order.created_at, Order.hold_reason, Prescription.rx_number, Patient.last_name, Patient.first_name,
        Formula.name, Formula.form, Formula.strength_mg]
    return [*columns, Order.state_changed_at] if changed_at else columns


def _page_ids(state: OrderState) -> sa.Subquery:
    """One page of a state's order ids, oldest first: a range of ix_orders_state_created, read for ids only (as
    core.db.first_ids, with an offset); the page's offset and size are bound (`b_off_<state>`, `b_limit`)."""
    return (sa.select(Order.id).where(Order.state == state).order_by(Order.created_at, Order.id)
            .limit(sa.bindparam("b_limit", type_=sa.Integer))
            .offset(sa.bindparam(f"b_off_{state.value}", type_=sa.Integer)).subquery())


# The queue's statements, built once per process (the board is opened all day): the counts, and the rows of each
# set of steps that have orders (at most 2 × 2⁶ shapes, with or without the time of the last change).
_COUNTS = (sa.select(Order.state, sa.func.count()).where(Order.state.in_(QUEUE_ORDER)).group_by(Order.state))


@functools.lru_cache(maxsize=128)
def _rows_statement(states: tuple[OrderState, ...], changed_at: bool) -> sa.Select[Any]:
    ids = sa.union_all(*[sa.select(_page_ids(s).c.id) for s in states]).subquery()
    return (sa.select(*_queue_columns(changed_at)).join(ids, ids.c.id == Order.id)
            .join(Prescription, Prescription.id == Order.prescription_id)
            .join(Patient, Patient.id == Order.patient_id)
            .join(Formula, Formula.id == Prescription.formula_id)
            .order_by(Order.created_at, Order.id))


def queue(actor: Actor, *, state: OrderState | None = None, page: int = 1, per_state: int = QUEUE_PAGE,
          changed_at: bool = False) -> list[QueueGroup]:
    """Open orders grouped by state, with counts, oldest first, `per_state` a page: every state's first page, or
    page `page` of one `state`. Four statements whatever the size (counts, the rows, their stops, the audit).

    The counts are one grouped read of ix_orders_state_created (index-only); each state's page is a range of the
    same index (ids only, LIMIT/OFFSET), and only those few orders are joined to their prescription, patient and
    formula — so a page costs the same with 300 open orders or 30,000."""
    audit.require(actor, Permission.VIEW_CLINICAL, what="see the order queue")
    counts = {s: int(n) for s, n in rows(_COUNTS)}
    shown = QUEUE_ORDER if state is None else [state]
    pages: dict[OrderState, int] = {}
    for s in shown:
        last = max(1, -(-counts.get(s, 0) // per_state))
        pages[s] = min(max(1, page), last) if s == state else 1
    picked = tuple(s for s in shown if counts.get(s))
    listed: list[QueueOrder] = []
    if picked:
        params = {"b_limit": per_state, **{f"b_off_{s.value}": (pages[s] - 1) * per_state for s in picked}}
        listed = [QueueOrder(*row) for row in rows(_rows_statement(picked, changed_at), params)]
    by_state: dict[OrderState, list[QueueOrder]] = {}
    for order in listed:
        by_state.setdefault(order.state, []).append(order)
    audit.record_reads(actor, "order.queue", [order.patient_id for order in listed])
    alerts = blocking_alerts_of(listed)
    return [QueueGroup(state=s, count=counts.get(s, 0), orders=by_state.get(s, []), alerts=alerts, page=pages[s],
                       per_page=per_state)
            for s in shown]


REQUEST_SOURCE_WORDS = {
    "link": "the patient, from their refill link",
    "portal": "the patient, in the patient portal",
    "sms": "the patient, by text message",
    "auto": "auto-refill (the patient enrolled)",
    "api": "an outside system (API)",
}


def requested_by_words(request_row: sa.Row | None, creator: str | None) -> str:
    """Who asked for the fill: the patient (and how) when a refill request made it, else the staff member."""
    if request_row is None:
        return creator or "—"
    source, by_name = request_row
    value = source.value if hasattr(source, "value") else str(source)
    if value == "staff":
        return f"{by_name or creator or 'staff'} (at the counter or by phone)"
    words = REQUEST_SOURCE_WORDS.get(value, value)
    return f"{words}; approved by {creator}" if creator else words


_ALERTS_OF = (
    sa.select(ScreeningAlert.prescription_id, ScreeningAlert.order_id, ScreeningAlert.code, ScreeningAlert.severity,
              ScreeningAlert.message, ScreeningAlert.resolved_at.is_not(None))
    .where(ScreeningAlert.prescription_id.in_(sa.bindparam("b_rx_ids", expanding=True, type_=sa.Integer)),
           ScreeningAlert.current.is_(True),
           sa.or_(ScreeningAlert.order_id.is_(None),
                  ScreeningAlert.order_id.in_(sa.bindparam("b_order_ids", expanding=True, type_=sa.Integer))))
    .order_by(ScreeningAlert.id))


def blocking_alerts_of(orders: list[QueueOrder]) -> dict[int, list[QueueAlert]]:
    """The stops standing in each order's way (a hard stop always; other stops until resolved), one query: what the
    queue shows in red beside the order, so a blocked order looks blocked before anyone opens it."""
    if not orders:
        return {}
    rx_ids = {o.prescription_id for o in orders}
    order_ids = {o.id for o in orders}
    found = [QueueAlert(*row) for row in db.session.execute(
        _ALERTS_OF, {"b_rx_ids": sorted(rx_ids), "b_order_ids": sorted(order_ids)})]
    by_order: dict[int, list[QueueAlert]] = {}
    by_rx: dict[int, list[QueueAlert]] = {}
    for a in found:
        if a.order_id is None:
            by_rx.setdefault(a.prescription_id, []).append(a)
        else:
            by_order.setdefault(a.order_id, []).append(a)
    out: dict[int, list[QueueAlert]] = {}
    for order in orders:
        mine = by_order.get(order.id) or by_rx.get(order.prescription_id, [])
        stops = reads.blocking(mine)
        codes = {b.code for b in stops}
        if codes:
            out[order.id] = [a for a in mine if a.code in codes]
    return out


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
    can_plan_batch: bool = False
    suggested_lots: dict[str, int] = field(default_factory=dict)  # ingredient -> the lot to pre-select
    planned_lots: dict[str, int] = field(default_factory=dict)  # ingredient -> the lot chosen when planned
    refills_left: int = 0
    fill_progress: str | None = None  # "14 of 60 days; 46 days still owed on this fill" (partial fills only)
    chart: list[tuple[str, str, str]] = field(default_factory=list)
    # Who asked for this fill, in words: "the patient, from their refill link", "Paula Pharmacist (by phone …)".
    requested_by: str = ""
    returnable: bool = False  # a dispensed fill that may be taken back (the latest of its prescription)

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


def _starts_on(rx: Prescription, order: Order) -> date:
    """The day the patient has (or will have) this fill: recorded once dispensed; before that, if made today."""
    if order.supply_starts_on is not None:
        return order.supply_starts_on
    shipping = rx.patient.shipping_days if order.delivery_method == DeliveryMethod.SHIP else 0
    return arrival_date(today(), shipping)


def _first_dose_day(rx: Prescription, order: Order) -> date:
    """The first day this fill's own doses are taken: once dispensed, where the walk of the prescription's
    dispensings places it (a bottle handed over while a parcel travels starts the day it is received); before, after
    the supply the patient holds now (Supply.first_dose_day)."""
    if order.state == OrderState.DISPENSED:
        fills = reads.dispensed_fills(rx.id)
        mine = [i for i, f in enumerate(fills) if f.order_id == order.id]
        if mine:
            return dose_starts([f.dispensing for f in fills], reads.carried(rx))[mine[0]]
    if order.run_out_date is not None and order.days_supply:
        return order.run_out_date - timedelta(days=order.days_supply - 1)
    return reads.supply_of(rx).first_dose_day(_starts_on(rx, order))


def fill_chart(rx: Prescription, order: Order, days_before: int) -> list[tuple[str, str, str]]:
    """The dated titration chart for this fill (empty for a fixed dose or a finished titration), from the first
    day of its own doses — after the bottle the patient still has, so two labels agree on the day to step up."""
    ahead = rx_rules.remaining_steps(rx_rules.parse_titration(rx.titration), days_before) if rx.titration else ()
    if not ahead:
        return []
    schedule = rx_rules.titration_schedule(rx.formula.form, rx.formula.strength_mg, list(ahead),
                                           _first_dose_day(rx, order), rx.dose_mg)
    return rx_rules.titration_chart_rows(schedule, rx.formula.form)


def days_dispensed_before(order: Order) -> int:
    """Days of the prescription dispensed before this order (its place in the supply and the titration plan)."""
    return int(db.session.execute(
        sa.select(sa.func.coalesce(sa.func.sum(Order.days_supply), 0)).where(
            Order.prescription_id == order.prescription_id, Order.state == OrderState.DISPENSED,
            Order.id != order.id, Order.fill_number < order.fill_number)
    ).scalar_one())


def supply_before(rx: Prescription, days_before: int) -> Supply:
    """The prescription's supply model as it stood just before this order (for the label's refills left)."""
    return supply_from_cache(reads.authorization(rx), days_dispensed=days_before, dispensings=0, run_out=None,
                             last_days=None)


def suggested_lots(choices: dict[str, list[IngredientLot]], needed_until: date,
                   empty: frozenset[int] = frozenset()) -> dict[str, int]:
    """Per ingredient, the lot to pre-select: the soonest-expiring lot that still lasts the whole fill (first
    expiry, first out — without shortening anyone's supply); if none does, the longest-dated one. A lot the ledger
    says is empty (`empty`: counted or used down to nothing) is passed over while another has stock — it is not on
    the shelf — and stays choosable by hand."""
    out = {}
    for name, lots in choices.items():
        stocked = [lot for lot in lots if lot.id not in empty] or lots
        if not stocked:
            continue
        lasting = [lot for lot in stocked if lot.expiry_date >= needed_until]
        out[name] = (lasting[0] if lasting else max(stocked, key=lambda lot: lot.expiry_date)).id
    return out


@dataclass(frozen=True)
class BatchRecord:
    """What the compounding record of an order made in a batch states: the batch's own measurements (the quantity
    made, each lot's weighed amount) — not the order's proportional share of them, which is kept for recall and
    stock — and the order's place in it."""

    orders: int
    place: int
    expected: Decimal
    made: Decimal | None
    used: dict[int, Decimal]  # per ingredient lot: the amount weighed for the whole batch


def batch_record(order: Order) -> BatchRecord | None:
    """The batch an order was made in, as its record shows it (None: made on its own). Two statements."""
    if order.batch_id is None:
        return None
    batch = db.session.get(Batch, order.batch_id)
    if batch is None:
        return None
    ids = list(db.session.execute(sa.select(Order.id).where(Order.batch_id == batch.id).order_by(Order.id)).scalars())
    used = dict(db.session.execute(
        sa.select(OrderIngredientLot.ingredient_lot_id,
                  sa.type_coerce(sa.func.sum(OrderIngredientLot.quantity_used), Milli()))
        .join(Order, Order.id == OrderIngredientLot.order_id).where(Order.batch_id == batch.id)
        .group_by(OrderIngredientLot.ingredient_lot_id)).all())
    return BatchRecord(orders=len(ids), place=ids.index(order.id) + 1 if order.id in ids else 0,
                       expected=batch.expected_quantity, made=batch.quantity_made,
                       used={lot: amount for lot, amount in used.items() if amount is not None})


def empty_lots(choices: dict[str, list[IngredientLot]]) -> frozenset[int]:
    """The lots among `choices` whose kept stock is nothing left (a lot never counted has no row: not known empty)."""
    ids = [lot.id for lots in choices.values() for lot in lots]
    if not ids:
        return frozenset()
    return frozenset(db.session.execute(
        sa.select(LotStock.ingredient_lot_id).where(LotStock.ingredient_lot_id.in_(ids), LotStock.on_hand <= 0)
    ).scalars())


def order_view(actor: Actor, order_id: int, *, audit_action: str = "order.view") -> OrderView:
    """Everything the order page (and the label and the compounding record) shows, in a bounded number of queries."""
    audit.require(actor, Permission.VIEW_CLINICAL, what="open orders")
    if not valid_id(order_id):
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
    alerts = reads.alerts_for(order.prescription_id, order.id)

    ids = {i for i in (order.verified_by_id, order.compounded_by_id, order.checked_by_id, order.released_by_id,
                       order.dispensed_by_id, order.too_soon_override_by_id, order.created_by_id,
                       order.returned_by_id) if i}
    ids |= {a.resolved_by_id for a in alerts if a.resolved_by_id}
    names = dict(db.session.execute(sa.select(User.id, User.full_name).where(User.id.in_(ids))).all()) if ids else {}
    steps = rules.next_steps(order.state, order.held_from)
    moves = [("resume" if order.state == OrderState.ON_HOLD and s != OrderState.CANCELLED else s.value,
              rules.permission_for(order.state, s)) for s in steps]
    can_record = order.state in (OrderState.VERIFIED, OrderState.COMPOUNDING)
    if can_record:
        moves.insert(0, ("plan_batch", "compound"))
    choices = usable_lots(formula) if can_record else {}
    before = days_dispensed_before(order)
    supply_then = supply_before(rx, before)
    progress = supply_then.progress_text(order.days_supply)
    audit.record(actor, audit_action, patient_id=order.patient_id, entity=("order", order.id))
    request_row = db.session.execute(
        sa.select(RefillRequest.source, User.full_name)
        .outerjoin(User, User.id == RefillRequest.requested_by_id)
        .where(RefillRequest.order_id == order.id).limit(1)
    ).first()
    return OrderView(
        requested_by=requested_by_words(request_row, names.get(order.created_by_id or 0)),
        order=order, rx=rx, patient=rx.patient, alerts=alerts, blocking=reads.blocking(alerts),
        next_steps=steps, lots=list(order.lots_used), staff_names=names,
        too_soon=bool(order.earliest_dispense_date and today() < order.earliest_dispense_date
                      and order.state not in rules.FINAL),
        formula=formula, product=rx_rules.product_name(formula.form, formula.strength_mg), moves=moves,
        returnable=returns.returnable(order),
        lot_choices=choices, expected=expected_amounts(formula, order.quantity), can_record_batch=can_record,
        can_plan_batch=can_record,
        suggested_lots=suggested_lots(choices, _first_dose_day(rx, order) + timedelta(days=order.days_supply),
                                      empty_lots(choices)),
        planned_lots={u.ingredient_lot.ingredient_name: u.ingredient_lot_id for u in order.lots_used},
        refills_left=supply_before(rx, before + order.days_supply).refills_left,
        fill_progress=progress if (supply_then.partial or order.days_supply < supply_then.days_owed) else None,
        chart=fill_chart(rx, order, before),
    )
