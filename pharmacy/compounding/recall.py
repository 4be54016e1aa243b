"""Lot recall: from an ingredient lot (or a compounded batch's lot) to every affected order and patient.

docs/domain.md "Compounding standards": the compounding record names each ingredient's supplier and lot,
so a supplier's recall of one lot — or a problem found in one batch — can be traced to the patients
who received it, and to the orders still in the pharmacy that must not go out.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from datetime import date

import sqlalchemy as sa
from sqlalchemy.orm import joinedload, selectinload

from pharmacy.compounding.models import IngredientLot, Order, OrderIngredientLot
from pharmacy.compounding.rules import OrderState
from pharmacy.core import audit
from pharmacy.core.actor import Actor
from pharmacy.core.clock import local_date
from pharmacy.core.context import settings
from pharmacy.core.errors import ValidationFailed
from pharmacy.core.roles import Permission
from pharmacy.core.schemas import text_problem
from pharmacy.extensions import db
from pharmacy.prescriptions import rules as rx_rules
from pharmacy.prescriptions.models import Prescription

MAX_ROWS = 5000  # a recall lists everything; this only guards against a runaway query


@dataclass
class RecallRow:
    order_id: int
    order_lot: str | None
    state: OrderState
    compounded_on: date | None
    dispensed_on: date | None
    bud: date | None
    delivery_method: str
    patient_id: int
    patient_name: str
    date_of_birth: date
    phone: str | None
    email: str | None
    rx_number: str
    product: str
    quantity: str
    ingredient_lots: list[str]
    return_reason: str | None = None  # a dispensed fill taken back since (compounding/returns.py)

    @property
    def reached_patient(self) -> bool:
        """Dispensed: the patient has it and must be contacted. A fill returned since left the pharmacy too — a
        fill dispensed in error, brought back or delivered to the wrong address was in someone's hands (and may
        have been taken), so it is called about like one that was not returned. Otherwise it never left."""
        return self.state == OrderState.DISPENSED or self.return_reason is not None


@dataclass
class RecallResult:
    ingredient_lot: str | None
    order_lot: str | None
    matched_lots: list[str] = field(default_factory=list)
    orders: list[RecallRow] = field(default_factory=list)

    @property
    def patient_count(self) -> int:
        return len({r.patient_id for r in self.orders})

    @property
    def open_orders(self) -> list[RecallRow]:
        return [r for r in self.orders if r.state not in (OrderState.DISPENSED, OrderState.CANCELLED)]


def recall_form(actor: Actor) -> None:
    """The empty recall search: for staff who may see clinical records."""
    audit.require(actor, Permission.VIEW_CLINICAL, what="run lot recalls")


def find(actor: Actor, *, ingredient_lot: str | None = None, order_lot: str | None = None) -> RecallResult:
    """Every order made with the ingredient lot (any supplier's lot of that number), or the batch with that lot (every
    order of a batch of several: their lot numbers are the batch's with their place, "L261123-007/2")."""
    audit.require(actor, Permission.VIEW_CLINICAL, what="run lot recalls")
    ingredient_lot = (ingredient_lot or "").strip() or None
    order_lot = (order_lot or "").strip() or None
    if bool(ingredient_lot) == bool(order_lot):
        msg = "Give an ingredient lot number or an order lot number (one of them)."
        raise ValidationFailed(msg, fields={"ingredient_lot": msg})
    for name, value in (("ingredient_lot", ingredient_lot), ("order_lot", order_lot)):
        # The page and its CSV pass the address's text as typed: a NUL would reach PostgreSQL, which refuses it.
        if value and (problem := text_problem(value)):
            raise ValidationFailed(problem, fields={name: problem})
    result = RecallResult(ingredient_lot=ingredient_lot, order_lot=order_lot)
    stmt = sa.select(Order).options(
        selectinload(Order.lots_used).joinedload(OrderIngredientLot.ingredient_lot),
        joinedload(Order.prescription).joinedload(Prescription.patient),
        joinedload(Order.prescription).joinedload(Prescription.formula),
    )
    if ingredient_lot:
        lots = list(db.session.execute(
            sa.select(IngredientLot).where(sa.func.upper(IngredientLot.lot_number) == ingredient_lot.upper())
            .order_by(IngredientLot.id)
        ).scalars())
        result.matched_lots = [f"{lot.ingredient_name} · {lot.supplier} lot {lot.lot_number}" for lot in lots]
        ids = [lot.id for lot in lots]
        if not ids:
            _audit(actor, result)
            return result
        used = sa.select(OrderIngredientLot.order_id).where(OrderIngredientLot.ingredient_lot_id.in_(ids))
        stmt = stmt.where(Order.id.in_(used))
    else:
        assert order_lot is not None
        wanted = order_lot.upper()  # a batch's number also finds every order made in it ("L261123-007/2")
        stmt = stmt.where(sa.or_(sa.func.upper(Order.lot_number) == wanted,
                                 sa.func.upper(Order.lot_number).startswith(wanted + "/", autoescape=True)))
    orders = db.session.execute(stmt.order_by(Order.compounded_at, Order.id).limit(MAX_ROWS)).unique().scalars()
    tz = settings().timezone
    for order in orders:
        rx = order.prescription
        patient = rx.patient
        formula = rx.formula
        result.orders.append(RecallRow(
            order_id=order.id, order_lot=order.lot_number, state=order.state,
            compounded_on=local_date(order.compounded_at, tz) if order.compounded_at else None,
            dispensed_on=order.dispensed_on, bud=order.bud, delivery_method=order.delivery_method.value,
            patient_id=patient.id, patient_name=f"{patient.last_name}, {patient.first_name}",
            date_of_birth=patient.date_of_birth, phone=patient.phone, email=patient.email, rx_number=rx.rx_number,
            product=rx_rules.product_name(formula.form, formula.strength_mg),
            quantity=rx_rules.quantity_text(formula.form, order.quantity),
            ingredient_lots=[f"{u.ingredient_lot.ingredient_name} · {u.ingredient_lot.supplier} lot "
                             f"{u.ingredient_lot.lot_number}" for u in order.lots_used],
            return_reason=order.return_reason,
        ))
    _audit(actor, result)
    return result


def _audit(actor: Actor, result: RecallResult) -> None:
    # Each patient listed (with name, birth date and contact details) is a read of that patient's record;
    # the search itself is one event with the lots and counts (lot numbers are not patient data).
    audit.record_reads(actor, "recall.list", [row.patient_id for row in result.orders])
    audit.record(actor, "recall.search", entity=("recall", None), details={
        "ingredient_lot": result.ingredient_lot, "order_lot": result.order_lot, "orders": len(result.orders),
        "patients": result.patient_count,
    })


CSV_COLUMNS = (
    "order_id", "order_lot", "state", "reached_patient", "returned", "compounded_on", "dispensed_on", "bud",
    "delivery",
    "patient", "date_of_birth", "phone", "email", "rx_number", "product", "quantity", "ingredient_lots",
)


def _cell(value: object) -> str:
    """Text as a spreadsheet shows it, never as a formula (names and notes are typed by people)."""
    text = "" if value is None else (value.isoformat() if isinstance(value, date) else str(value))
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def to_csv(result: RecallResult) -> str:
    """The recall list for the phone calls and the report to the board: one row per affected order."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for r in result.orders:
        writer.writerow([_cell(v) for v in (
            r.order_id, r.order_lot, r.state.value, "yes" if r.reached_patient else "no", r.return_reason or "",
            r.compounded_on,
            r.dispensed_on, r.bud, r.delivery_method, r.patient_name, r.date_of_birth, r.phone, r.email,
            r.rx_number, r.product, r.quantity, "; ".join(r.ingredient_lots),
        )])
    return out.getvalue()
