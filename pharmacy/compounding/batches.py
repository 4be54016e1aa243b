"""Batch compounding: several patients' orders of one formula made together (USP <795> allows it) — one lot number,
one compounding record, one BUD — each order still labelled, checked and dispensed as its own fill, its label
carrying the batch's lot number and its place in the batch ("L261123-007/2").

Built on the order's own steps (compounding/services.py): planning a batch plans each order with the same lots
(each keeps its own quantity and BUD cap); recording it records each order's share of the measured amounts under
the batch's lot number; the final check checks every order, so a failed check (or a recall of the batch's lot
number) reaches every order in it. What a batch means for stock is workflows/batches.py's (inventory).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from decimal import ROUND_DOWN, Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import joinedload, selectinload

from pharmacy.compounding import rules, services
from pharmacy.compounding.models import Batch, Formula, IngredientLot, Order, OrderIngredientLot
from pharmacy.compounding.queries import expected_amounts
from pharmacy.compounding.rules import OrderState
from pharmacy.core import audit
from pharmacy.core.actor import Actor
from pharmacy.core.context import now, today
from pharmacy.core.errors import Conflict, InvalidTransition, NotFound, ValidationFailed
from pharmacy.core.ids import valid_id
from pharmacy.core.models import User
from pharmacy.core.numbers import digits_only
from pharmacy.core.roles import Permission
from pharmacy.extensions import db
from pharmacy.prescriptions.models import Prescription

MAX_ORDERS = 50
PLACES = Decimal("0.001")


def _orders(order_ids: list[int]) -> list[Order]:
    ids = sorted({i for i in order_ids if valid_id(i)})
    if len(ids) < 2:
        raise ValidationFailed("A batch needs at least two orders.", fields={"order_ids": "Choose two or more orders."})
    if len(ids) > MAX_ORDERS:
        raise ValidationFailed("Too many orders for one batch.", fields={"order_ids": f"At most {MAX_ORDERS}."})
    orders = list(db.session.execute(
        sa.select(Order).where(Order.id.in_(ids)).options(joinedload(Order.prescription))
        .order_by(Order.id).with_for_update(of=Order)
    ).unique().scalars())
    if len(orders) != len(ids):
        raise NotFound("No such order.")
    return orders


def may_compound(actor: Actor) -> None:
    """Forbidden (and audited) unless the actor may compound: asked before a batch form is read."""
    audit.require(actor, Permission.COMPOUND, what="compound batches")


def may_check(actor: Actor) -> None:
    audit.require(actor, Permission.CHECK_ORDER, what="check batches")


def plan(actor: Actor, order_ids: list[int], *, lots: list[Any]) -> Batch:
    """Put verified orders of one formula into a batch and choose its lots (each order's quantity and BUD cap are
    planned from these lots, as for an order made alone)."""
    audit.require(actor, Permission.COMPOUND, what="plan batches")
    orders = _orders(order_ids)
    formula_ids = {o.prescription.formula_id for o in orders}
    if len(formula_ids) != 1:
        raise ValidationFailed("The batch was not planned.", fields={
            "order_ids": "A batch is one formula: choose orders of the same formula and strength."})
    problems = [f"Order {o.id} is {rules.STATE_LABELS[o.state].lower()}" for o in orders
                if o.state != OrderState.VERIFIED]
    problems += [f"Order {o.id} is already in a batch" for o in orders if o.batch_id is not None]
    if problems:
        raise ValidationFailed("The batch was not planned.", fields={
            "order_ids": "; ".join(problems) + ". Only verified orders not yet in a batch can be batched."})
    formula = db.session.get(Formula, formula_ids.pop())
    assert formula is not None
    for order in orders:
        services.plan_batch(actor, order.id, lots=lots)
    batch = Batch(formula_id=formula.id, formula_version=formula.version,
                  expected_quantity=sum((o.quantity for o in orders), Decimal(0)),
                  planned_by_id=actor.user_id, planned_at=now())
    db.session.add(batch)
    db.session.flush()
    for order in orders:
        order.batch_id = batch.id
    db.session.flush()
    audit.record(actor, "batch.plan", entity=("batch", batch.id),
                 details={"orders": [o.id for o in orders], "formula": formula.id})
    return batch


def load(batch_id: int, *, lock: bool = True) -> Batch:
    if not valid_id(batch_id):
        raise NotFound("No such batch.")
    stmt = sa.select(Batch).where(Batch.id == batch_id)
    if lock:
        stmt = stmt.with_for_update()
    batch = db.session.execute(stmt).scalar_one_or_none()
    if batch is None:
        raise NotFound("No such batch.")
    return batch


def _amount(value: Any) -> Decimal | None:
    try:
        d = value if isinstance(value, Decimal) else Decimal(str(value).strip())
    except (ArithmeticError, ValueError):
        return None
    return d if d.is_finite() and 0 < d <= services.MAX_AMOUNT else None


def shares(total: Decimal, weights: list[Decimal]) -> list[Decimal]:
    """`total` split in proportion to `weights`, to 0.001, adding up exactly (the last share takes the rounding)."""
    whole = sum(weights, Decimal(0))
    parts = [(total * w / whole).quantize(PLACES, rounding=ROUND_DOWN) for w in weights[:-1]]
    return [*parts, total - sum(parts, Decimal(0))]


@dataclass
class Recorded:
    batch: Batch
    lots: dict[int, tuple[Decimal, str]] = field(default_factory=dict)  # lot -> (measured amount, formula unit)


def record(actor: Actor, batch_id: int, *, lots: list[dict[str, Any]], quantity_made: Any) -> Recorded:
    """The batch's compounding record: the measured amount of each lot and the quantity made, for the whole batch;
    one lot number and BUD. Each order records its share (in proportion to its quantity), so its label, its record
    and a recall by ingredient lot find it. A batch sent back at the check is recorded again (a new lot number)."""
    audit.require(actor, Permission.COMPOUND, what="compound batches")
    batch = load(batch_id)
    orders = [o for o in batch.orders if o.state != OrderState.CANCELLED]
    if not orders:
        raise Conflict("Every order of this batch was cancelled.")
    states = {o.state for o in orders}
    if not (states <= {OrderState.VERIFIED} or states <= {OrderState.COMPOUNDING}):
        raise InvalidTransition("A batch is recorded when all its orders are verified (or, to re-make it, all are "
                                "back at compounding): " + ", ".join(
                                    f"order {o.id} is {rules.STATE_LABELS[o.state].lower()}" for o in orders))
    errors: dict[str, str] = {}
    made = _amount(quantity_made)
    if made is None:
        errors["quantity_made"] = "Enter the quantity made for the whole batch, as counted or measured."
    measured: list[tuple[int, Decimal]] = []
    for i, item in enumerate(lots or [], start=1):
        lot_id = item.get("ingredient_lot_id") if isinstance(item, dict) else None
        lot_id = int(lot_id) if isinstance(lot_id, str) and digits_only(lot_id.strip()) else lot_id
        qty = _amount(item.get("quantity_used")) if isinstance(item, dict) else None
        if not valid_id(lot_id) or qty is None:
            errors["lots"] = f"Line {i}: choose the lot and enter the quantity used for the whole batch."
        else:
            measured.append((lot_id, qty))
    if not measured:
        errors.setdefault("lots", "Enter the quantity used of each lot.")
    if errors or made is None:
        raise ValidationFailed("The batch record was not saved.", fields=errors)
    weights = [o.quantity for o in orders]
    per_order_lots: list[list[dict[str, Any]]] = [[] for _ in orders]
    for lot_id, qty in measured:
        for i, part in enumerate(shares(qty, weights)):
            per_order_lots[i].append({"ingredient_lot_id": lot_id, "quantity_used": part if part > 0 else PLACES})
    made_shares = shares(made, weights)
    batch.lot_number = services.next_lot_number(today())
    try:
        db.session.flush()
    except IntegrityError:
        raise Conflict("Another batch was recorded at the same moment; nothing was saved. Try again.") from None
    for place, (order, order_lots, order_made) in enumerate(zip(orders, per_order_lots, made_shares, strict=True), 1):
        services.compound_order(actor, order.id, lots=order_lots, quantity_made=order_made,
                                batch_lot=(batch.id, rules.batch_order_lot(batch.lot_number, place)))
    batch.bud = min((o.bud for o in orders if o.bud), default=None)
    batch.quantity_made = made
    batch.expected_quantity = sum(weights, Decimal(0))
    batch.compounded_by_id, batch.compounded_at = actor.user_id, now()
    batch.qc_passed, batch.qc_yield_pct, batch.checked_by_id, batch.checked_at = None, None, None, None
    db.session.flush()
    units = {lot_id: unit for lot_id, unit in db.session.execute(
        sa.select(OrderIngredientLot.ingredient_lot_id, OrderIngredientLot.unit)
        .where(OrderIngredientLot.order_id == orders[0].id)).all()}
    audit.record(actor, "batch.compound", entity=("batch", batch.id),
                 details={"lot": batch.lot_number, "orders": len(orders)})
    return Recorded(batch, {lot_id: (qty, units[lot_id]) for lot_id, qty in measured})


def check(actor: Actor, batch_id: int, *, qc_notes: str | None = None, deviations: str | None = None) -> Batch:
    """The final check of the batch by a second pharmacist, on every order: a yield within 95–105% passes them all;
    a failed check stays on every order (each to be re-made with the batch)."""
    audit.require(actor, Permission.CHECK_ORDER, what="check batches")
    batch = load(batch_id)
    if batch.quantity_made is None:
        raise Conflict("This batch has no compounding record yet.")
    orders = [o for o in batch.orders if o.state == OrderState.COMPOUNDING]
    if not orders:
        raise InvalidTransition("No order of this batch is waiting for its final check.")
    yield_pct = rules.yield_percent(batch.expected_quantity, batch.quantity_made)
    passed = rules.qc_passes(yield_pct)
    for order in orders:
        checked = services.check_order(actor, order.id, qc_notes=qc_notes, deviations=deviations)
        if checked.qc_passed is not passed:
            raise Conflict("The orders of this batch disagree on the yield; record the batch again.")
    batch.qc_yield_pct, batch.qc_passed = yield_pct, passed
    batch.checked_by_id, batch.checked_at = actor.user_id, now()
    db.session.flush()
    audit.record(actor, "batch.check" if passed else "batch.check_failed", entity=("batch", batch.id),
                 details={"yield_pct": str(yield_pct), "orders": len(orders)})
    return batch


def checked_order_ids(batch: Batch) -> list[int]:
    """The orders of a batch that passed the final check and wait for release."""
    return [o.id for o in batch.orders if o.state == OrderState.CHECKED]


@dataclass
class BatchView:
    batch: Batch
    formula: Formula
    orders: list[Order]
    lots: dict[int, tuple[IngredientLot, Decimal, str]]  # lot id -> (lot, total used, unit)
    staff_names: dict[int, str]
    expected: dict[str, Decimal] = field(default_factory=dict)  # ingredient -> amount for the whole batch

    def name(self, user_id: int | None) -> str:
        return self.staff_names.get(user_id or 0, "—") if user_id else "—"


def batch_view(actor: Actor, batch_id: int) -> BatchView:
    """The batch record: its formula and version, every order and patient in it, the lots used (added up)."""
    audit.require(actor, Permission.VIEW_CLINICAL, what="see batches")
    batch = load(batch_id, lock=False)
    formula = db.session.execute(sa.select(Formula).where(Formula.id == batch.formula_id)
                                 .options(selectinload(Formula.ingredients))).scalar_one()
    orders = list(db.session.execute(
        sa.select(Order).where(Order.batch_id == batch.id)
        .options(joinedload(Order.prescription).joinedload(Prescription.patient),
                 selectinload(Order.lots_used).joinedload(OrderIngredientLot.ingredient_lot))
        .order_by(Order.id)).unique().scalars())
    lots: dict[int, tuple[IngredientLot, Decimal, str]] = {}
    for order in orders:
        for used in order.lots_used:
            lot, total, unit = lots.get(used.ingredient_lot_id, (used.ingredient_lot, Decimal(0), used.unit))
            lots[used.ingredient_lot_id] = (lot, total + (used.quantity_used or 0), unit)
    ids = {i for i in (batch.planned_by_id, batch.compounded_by_id, batch.checked_by_id) if i}
    names = dict(db.session.execute(sa.select(User.id, User.full_name).where(User.id.in_(ids))).all()) if ids else {}
    audit.record_reads(actor, "batch.view", [o.patient_id for o in orders])
    return BatchView(batch=batch, formula=formula, orders=orders, lots=lots, staff_names=names,
                     expected=expected_amounts(formula, batch.expected_quantity))


@dataclass
class Candidates:
    formula: Formula | None
    orders: list[Order]
    formulas: list[tuple[Formula, int]]  # formulas with verified orders waiting, and how many
    lot_choices: dict[str, list[IngredientLot]]


def candidates(actor: Actor, formula_id: int | None, *, limit: int = 100) -> Candidates:
    """Verified orders not yet in a batch, of one formula (oldest first), and the lots the batch may use."""
    audit.require(actor, Permission.VIEW_CLINICAL, what="plan batches")
    waiting = (sa.select(Prescription.formula_id, sa.func.count())
               .join(Order, Order.prescription_id == Prescription.id)
               .where(Order.state == OrderState.VERIFIED, Order.batch_id.is_(None))
               .group_by(Prescription.formula_id))
    counts = dict(db.session.execute(waiting).all())
    formulas = {f.id: f for f in db.session.execute(
        sa.select(Formula).where(Formula.id.in_(list(counts) + ([formula_id] if valid_id(formula_id) else [])))
        .options(selectinload(Formula.ingredients))).scalars()} if counts or valid_id(formula_id) else {}
    formula = formulas.get(formula_id) if formula_id else None
    orders: list[Order] = []
    choices: dict[str, list[IngredientLot]] = {}
    if formula is not None:
        orders = list(db.session.execute(
            sa.select(Order).join(Prescription, Prescription.id == Order.prescription_id)
            .where(Prescription.formula_id == formula.id, Order.state == OrderState.VERIFIED,
                   Order.batch_id.is_(None))
            .options(joinedload(Order.prescription).joinedload(Prescription.patient))
            .order_by(Order.created_at, Order.id).limit(limit)).unique().scalars())
        names = [i.name for i in formula.ingredients]
        choices = {n: [] for n in names}
        for lot in db.session.execute(
                sa.select(IngredientLot).where(IngredientLot.ingredient_name.in_(names),
                                               IngredientLot.expiry_date >= today(),
                                               IngredientLot.quarantined_at.is_(None))
                .order_by(IngredientLot.expiry_date, IngredientLot.id)).scalars():
            choices[lot.ingredient_name].append(lot)
        audit.record_reads(actor, "batch.candidates", [o.patient_id for o in orders])
    listed = sorted(((formulas[i], int(n)) for i, n in counts.items() if i in formulas),
                    key=lambda fn: (fn[0].form, fn[0].strength_mg))
    return Candidates(formula=formula, orders=orders, formulas=listed, lot_choices=choices)
