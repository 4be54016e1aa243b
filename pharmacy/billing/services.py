"""Billing use cases: payments and refunds, balances, a patient's costs (prices and quotes: pricing.py).

Every function takes an Actor, checks the role where the work is done (audit.require), writes its
audit event and flushes; the request's unit of work commits. Amounts are integer cents throughout.

Which orders are charges (README "Billing decisions"): an order is charged once it is *ready* —
LDN is compounded to order, so the medicine exists and is the patient's from that moment — and
stays charged when dispensed, or when a ready order is put on hold. Requested, verified,
compounding and checked orders are not charged yet (a payment on them is a prepayment, shown as
credit until the order is ready); cancelled orders are never charged (what was paid on them is
credit, to refund or to use). A payment on a cancelled order is refused; a refund on one is the
normal way to give the money back.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import joinedload

from pharmacy.billing import pricing, rules
from pharmacy.billing.models import Payment
from pharmacy.billing.pricing import MAX_ID, check_id
from pharmacy.billing.rules import Ledger, PaymentKind, PaymentMethod
from pharmacy.compounding import rules as comp_rules
from pharmacy.compounding.models import Formula, Order
from pharmacy.compounding.rules import DeliveryMethod, OrderState
from pharmacy.core import audit
from pharmacy.core.actor import Actor
from pharmacy.core.context import now, settings, today
from pharmacy.core.db import UTCDateTime
from pharmacy.core.errors import NotFound, ValidationFailed
from pharmacy.core.roles import Permission
from pharmacy.extensions import db
from pharmacy.patients.models import Patient
from pharmacy.prescriptions import rules as rx_rules
from pharmacy.prescriptions.models import Prescription
from pharmacy.prescriptions.rules import RxStatus

CHARGED_STATES = (OrderState.READY, OrderState.DISPENSED)


class PaymentRefused(ValidationFailed):
    """A payment or refund that cannot be recorded (cancelled order, someone else's order …)."""

    code = "payment_refused"


# ---------------------------------------------------------------------------------------------
# Helpers shared with reports and receipts
# ---------------------------------------------------------------------------------------------


def _audited(patient_id: int) -> int | None:
    """The patient id for an audit row, unless it cannot be a real one (the row must still be written)."""
    return patient_id if 1 <= patient_id <= MAX_ID else None


def charged_clause() -> sa.ColumnElement[bool]:
    """SQL for "this order is a charge" (see the module docstring for why ready is the moment)."""
    return sa.or_(Order.state.in_(CHARGED_STATES),
                  sa.and_(Order.state == OrderState.ON_HOLD, Order.held_from == OrderState.READY))


def is_charged(order: Order) -> bool:
    """The Python twin of charged_clause(), for an order already loaded."""
    return is_charged_state(order.state, order.held_from)


def is_charged_state(state: OrderState | None, held_from: OrderState | None) -> bool:
    """charged_clause() for an order's state and the state it was held from (as they were, or are about to be)."""
    return state in CHARGED_STATES or (state == OrderState.ON_HOLD and held_from == OrderState.READY)


def local_day_start(day: date) -> datetime:
    """The instant a local calendar day begins at the pharmacy (DST-safe: zoneinfo resolves it)."""
    return datetime.combine(day, time(0), tzinfo=settings().timezone)


def local_date_of(at: datetime) -> date:
    return at.astimezone(settings().timezone).date()


def receipt_number_for(payment: Payment) -> str:
    """The receipt number carries the *local* year the money changed hands."""
    return rules.receipt_number(payment.id, local_date_of(payment.received_at))


# ---------------------------------------------------------------------------------------------
# Payments and refunds
# ---------------------------------------------------------------------------------------------


@functools.cache
def _ledger_statement() -> sa.Select[Any]:
    """One patient's charges, payments and refunds of all time and those within a period (the year so far), in one
    statement of five indexed sums, built once per process: read on every patient page, where building the
    statements cost more than the database's answer, and each round trip counts on PostgreSQL."""
    patient = sa.bindparam("b_patient", type_=sa.Integer)
    start = sa.bindparam("b_start", type_=UTCDateTime())
    end = sa.bindparam("b_end", type_=UTCDateTime())

    def paid(kind: PaymentKind, *within: sa.ColumnElement[bool]) -> Any:
        return (sa.select(sa.func.coalesce(sa.func.sum(Payment.amount_cents), 0))
                .where(Payment.patient_id == patient, Payment.kind == kind, *within).scalar_subquery())

    charged = (sa.select(sa.func.coalesce(sa.func.sum(Order.price_cents + Order.shipping_cents), 0))
               .where(Order.patient_id == patient, charged_clause()).scalar_subquery())
    period = (Payment.received_at >= start, Payment.received_at < end)
    return sa.select(charged, paid(PaymentKind.PAYMENT), paid(PaymentKind.REFUND),
                     paid(PaymentKind.PAYMENT, *period), paid(PaymentKind.REFUND, *period))


def _ledger_and_year(patient_id: int, year: int) -> tuple[Ledger, int]:
    """The patient's ledger and what they spent (paid less refunded) in the local calendar year `year`."""
    start, end = local_day_start(date(year, 1, 1)), local_day_start(date(year + 1, 1, 1))
    charged, paid, refunded, paid_in, refunded_in = db.session.execute(
        _ledger_statement(), {"b_patient": patient_id, "b_start": start, "b_end": end}).one()
    return Ledger(int(charged), int(paid), int(refunded)), int(paid_in) - int(refunded_in)


def patient_ledger(patient_id: int) -> Ledger:
    """Charges (see the module docstring), payments and refunds of one patient: one statement of indexed sums."""
    return _ledger_and_year(patient_id, today().year)[0]


def order_ledger(order: Order) -> Ledger:
    paid, refunded = _paid_refunded(Payment.order_id == order.id)
    return Ledger(order.total_cents if is_charged(order) else 0, paid, refunded)


def _paid_refunded(condition: sa.ColumnElement[bool]) -> tuple[int, int]:
    totals = dict(db.session.execute(
        sa.select(Payment.kind, sa.func.sum(Payment.amount_cents)).where(condition).group_by(Payment.kind)
    ).all())
    return int(totals.get(PaymentKind.PAYMENT) or 0), int(totals.get(PaymentKind.REFUND) or 0)


def order_money(order_ids: list[int]) -> dict[int, tuple[int, int]]:
    """(paid, refunded) per order, in one grouped query."""
    out: dict[int, tuple[int, int]] = {oid: (0, 0) for oid in order_ids}
    if not order_ids:
        return out
    rows = db.session.execute(
        sa.select(Payment.order_id, Payment.kind, sa.func.sum(Payment.amount_cents))
        .where(Payment.order_id.in_(order_ids)).group_by(Payment.order_id, Payment.kind)
    ).all()
    for order_id, kind, total in rows:
        paid, refunded = out[order_id]
        out[order_id] = (paid + int(total), refunded) if kind == PaymentKind.PAYMENT else (paid, refunded + int(total))
    return out


@dataclass
class PaymentResult:
    payment: Payment
    receipt_number: str
    balance: Ledger
    order_balance: Ledger | None


def _lock_patient(patient_id: int) -> Patient:
    """Lock the patient row: two refunds at the same moment must not both pass the "not more than paid" check."""
    check_id(patient_id, "patient")
    patient = db.session.execute(sa.select(Patient).where(Patient.id == patient_id).with_for_update()).scalar_one_or_none()
    if patient is None:
        raise NotFound("No such patient.")
    return patient


def _order_of(patient: Patient, order_id: int | None) -> Order | None:
    if order_id is None:
        return None
    order = db.session.get(Order, order_id) if 1 <= order_id <= MAX_ID else None
    if order is None or order.patient_id != patient.id:
        raise PaymentRefused("Nothing was recorded.", fields={"order_id": "This order is not one of this patient's."})
    return order


def _clean_text(value: str | None, limit: int) -> str | None:
    value = (value or "").strip()
    return value[:limit] or None


def record_payment(actor: Actor, *, patient_id: int, amount_cents: int, method: PaymentMethod | str,
                   order_id: int | None = None, reference: str | None = None, note: str | None = None) -> PaymentResult:
    """A payment (cash, card, check, HSA/FSA), whole or partial, on an order or on the patient's account.

    Overpaying is not an error: the excess shows as credit (Ledger.credit_cents). A payment on a
    cancelled order is refused (422) — there is nothing to pay for; the money goes on account instead.
    """
    audit.require(actor, Permission.RECORD_PAYMENT, patient_id=_audited(patient_id),
                  what="record payments")
    rules.check_payment_amount(amount_cents)
    method = _method(method)
    patient = _lock_patient(patient_id)
    order = _order_of(patient, order_id)
    if order is not None and order.state == OrderState.CANCELLED:
        message = "This order was cancelled: a payment cannot be recorded on it (record it on the account instead)."
        raise PaymentRefused(message, fields={"order_id": message})
    return _save(actor, patient, order, PaymentKind.PAYMENT, method, amount_cents, reference, note)


def record_refund(actor: Actor, *, patient_id: int, amount_cents: int, method: PaymentMethod | str,
                  order_id: int | None = None, reference: str | None = None, note: str | None = None) -> PaymentResult:
    """Money given back: never more than was paid (net of earlier refunds) on the order *and* overall."""
    audit.require(actor, Permission.RECORD_PAYMENT, patient_id=_audited(patient_id),
                  what="record refunds")
    if isinstance(amount_cents, bool) or not isinstance(amount_cents, int) or amount_cents <= 0:
        raise rules.AmountInvalid("A refund must be more than $0.00.", fields={"amount": "Enter an amount above $0.00."})
    method = _method(method)
    patient = _lock_patient(patient_id)
    order = _order_of(patient, order_id)
    if order is not None:
        rules.check_refund(amount_cents, order_ledger(order))
    rules.check_refund(amount_cents, patient_ledger(patient.id))
    return _save(actor, patient, order, PaymentKind.REFUND, method, amount_cents, reference, note)


def _method(method: PaymentMethod | str) -> PaymentMethod:
    try:
        return PaymentMethod(method)
    except ValueError:
        choices = ", ".join(m.value for m in PaymentMethod)
        raise ValidationFailed("Nothing was recorded.", fields={"method": f"Choose one of: {choices}."}) from None


def _save(actor: Actor, patient: Patient, order: Order | None, kind: PaymentKind, method: PaymentMethod,
          amount_cents: int, reference: str | None, note: str | None) -> PaymentResult:
    payment = Payment(patient_id=patient.id, order_id=order.id if order else None, kind=kind, method=method,
                      amount_cents=amount_cents, received_at=now(), reference=_clean_text(reference, 60),
                      note=_clean_text(note, 200), recorded_by_id=actor.user_id)
    db.session.add(payment)
    db.session.flush()
    # Ids and the method only: amounts and notes stay out of the audit trail's details.
    audit.record(actor, f"{kind.value}.record", patient_id=patient.id, entity=("payment", payment.id),
                 details={"order": order.id if order else None, "method": method.value})
    balance, order_balance = patient_ledger(patient.id), order_ledger(order) if order else None
    payment.balance_cents = balance.balance_cents
    if order is not None and order_balance is not None:
        payment.fill_total_cents = rules.fill_total_for_receipt(order.total_cents, cancelled=order.state == OrderState.CANCELLED)
        payment.fill_owed_cents = payment.fill_total_cents - order_balance.net_paid_cents
    return PaymentResult(payment=payment, receipt_number=receipt_number_for(payment), balance=balance,
                         order_balance=order_balance)


# ---------------------------------------------------------------------------------------------
# A patient's costs
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CostSummary:
    """What the patient page shows: balance_cents is what is owed (0 when settled or in credit)."""

    monthly_equivalent_cents: int
    spent_this_year_cents: int
    balance_cents: int
    credit_cents: int


@dataclass(frozen=True)
class RegimenLine:
    prescription_id: int
    rx_number: str
    product: str
    quantity_text: str
    days_supply: int
    total_cents: int | None
    monthly_equivalent_cents: int | None
    note: str | None = None


@dataclass(frozen=True)
class FillLine:
    order_id: int
    rx_number: str
    fill_number: int
    product: str
    quantity_text: str
    days_supply: int
    state: str
    fill_date: date | None
    price_cents: int
    shipping_cents: int
    total_cents: int
    charged: bool
    paid_cents: int
    refunded_cents: int
    balance_cents: int
    payable: bool


@dataclass(frozen=True)
class PaymentLine:
    id: int
    kind: str
    method: str
    amount_cents: int
    received_at: datetime
    received_on: date
    order_id: int | None
    receipt_number: str
    reference: str | None


@dataclass
class PatientCosts:
    patient: Patient
    ledger: Ledger
    summary: CostSummary
    regimen: list[RegimenLine]
    fills: list[FillLine]
    payments: list[PaymentLine]
    statement_years: list[int]
    year: int
    page: int = 1
    has_next: bool = False
    methods: list[PaymentMethod] = field(default_factory=lambda: list(PaymentMethod))


FILLS_PER_PAGE = 25
PAYMENTS_SHOWN = 50


def _require_patient_billing(actor: Actor, patient_id: int, what: str) -> Patient:
    """A patient's costs show drugs and (on receipts) the diagnosis: clinical *and* billing access."""
    audit.require(actor, Permission.VIEW_BILLING, patient_id=_audited(patient_id), what=what)
    audit.require(actor, Permission.VIEW_CLINICAL, patient_id=_audited(patient_id), what=what)
    check_id(patient_id, "patient")
    patient = db.session.get(Patient, patient_id)
    if patient is None:
        raise NotFound("No such patient.")
    return patient


def regimen(patient: Patient, active_prescriptions: list[Prescription] | None = None) -> list[RegimenLine]:
    """The steady-state cost of each active prescription: a whole fill at the maintenance dose, capped to the
    formula's default BUD, the patient's usual delivery — and its monthly equivalent (total × 30 / days). (The
    next fill's exact quote, partials and lots included, is the refill page's: supply/next_fill.py.)"""
    rxs = active_prescriptions if active_prescriptions is not None else list(db.session.execute(
        sa.select(Prescription).where(Prescription.patient_id == patient.id, Prescription.status == RxStatus.ACTIVE)
        .options(joinedload(Prescription.formula)).order_by(Prescription.id)
    ).scalars())
    entries = pricing.current_entries_for(sorted({rx.formula_id for rx in rxs}))
    shipping = pricing.shipping_fee_cents() if patient.delivery_preference == DeliveryMethod.SHIP else 0
    lines = []
    for rx in rxs:
        f = rx.formula
        product = rx_rules.product_name(f.form, f.strength_mg)
        try:
            qty = rx_rules.quantity_for_days(f.form, f.strength_mg, rx.dose_mg, rx.days_supply)
            plan = comp_rules.cap_to_bud(f.form, f.strength_mg, rx.dose_mg, quantity=qty, days_supply=rx.days_supply,
                                         bud_days=comp_rules.BUD_DAYS[f.usp_category])
            q = pricing.quote(f.id, plan.quantity, patient.delivery_preference, entries=entries[f.id],
                              shipping_cents=shipping)
        except ValidationFailed:
            lines.append(RegimenLine(rx.id, rx.rx_number, product, "", rx.days_supply, None, None,
                                     "No price on the list for this formula."))
            continue
        lines.append(RegimenLine(rx.id, rx.rx_number, product, rx_rules.quantity_text(f.form, plan.quantity),
                                 plan.days_supply, q.total_cents,
                                 rules.monthly_equivalent_cents(q.total_cents, plan.days_supply),
                                 f"Each fill lasts at most {plan.days_supply} days (beyond-use date)."
                                 if plan.capped else None))
    return lines


def _summary(patient: Patient, lines: list[RegimenLine]) -> tuple[CostSummary, Ledger]:
    """The cost figures and the ledger they come from (one statement for the money)."""
    monthly = sum(line.monthly_equivalent_cents or 0 for line in lines)
    ledger, spent = _ledger_and_year(patient.id, today().year)
    return CostSummary(monthly_equivalent_cents=monthly, spent_this_year_cents=spent,
                       balance_cents=ledger.owed_cents, credit_cents=ledger.credit_cents), ledger


def patient_cost_summary(actor: Actor, patient_id: int, *,
                         active_prescriptions: list[Prescription] | None = None) -> CostSummary:
    """The four figures the patient page shows (about six queries, whatever the history's length).
    `active_prescriptions`: the patient's active prescriptions with their formulas, oldest first, when the caller
    has them loaded already (the patient page) — otherwise read here."""
    patient = _require_patient_billing(actor, patient_id, "see a patient's costs")
    return _summary(patient, regimen(patient, active_prescriptions))[0]


def _fill_lines(patient_id: int, page: int) -> tuple[list[FillLine], bool]:
    rows = list(db.session.execute(
        sa.select(Order, Prescription.rx_number, Formula.form, Formula.strength_mg)
        .join(Prescription, Prescription.id == Order.prescription_id).join(Formula, Formula.id == Prescription.formula_id)
        .where(Order.patient_id == patient_id).order_by(Order.created_at.desc(), Order.id.desc())
        .offset((page - 1) * FILLS_PER_PAGE).limit(FILLS_PER_PAGE + 1)
    ).all())
    has_next = len(rows) > FILLS_PER_PAGE
    rows = rows[:FILLS_PER_PAGE]
    money = order_money([r[0].id for r in rows])
    lines = []
    for order, rx_number, form, strength in rows:
        paid, refunded = money[order.id]
        charged = is_charged(order)
        ledger = Ledger(order.total_cents if charged else 0, paid, refunded)
        fill_date = local_date_of(order.dispensed_at) if order.dispensed_at else order.dispensed_on
        lines.append(FillLine(
            order_id=order.id, rx_number=rx_number, fill_number=order.fill_number,
            product=rx_rules.product_name(form, strength), quantity_text=rx_rules.quantity_text(form, order.quantity),
            days_supply=order.days_supply, state=order.state.value, fill_date=fill_date, price_cents=order.price_cents,
            shipping_cents=order.shipping_cents, total_cents=order.total_cents, charged=charged, paid_cents=paid,
            refunded_cents=refunded, balance_cents=ledger.balance_cents, payable=order.state != OrderState.CANCELLED,
        ))
    return lines, has_next


def _payment_lines(patient_id: int, page: int = 1) -> tuple[list[PaymentLine], bool]:
    """One page of the patient's payments and refunds, newest first (PAYMENTS_SHOWN a page, the same page number as
    the fills), and whether there are more: each payment is on exactly one page."""
    rows = list(db.session.execute(
        sa.select(Payment).where(Payment.patient_id == patient_id)
        .order_by(Payment.received_at.desc(), Payment.id.desc())
        .offset((page - 1) * PAYMENTS_SHOWN).limit(PAYMENTS_SHOWN + 1)
    ).scalars())
    more = len(rows) > PAYMENTS_SHOWN
    return [PaymentLine(id=p.id, kind=p.kind.value, method=p.method.value, amount_cents=p.amount_cents,
                        received_at=p.received_at, received_on=local_date_of(p.received_at), order_id=p.order_id,
                        receipt_number=receipt_number_for(p), reference=p.reference)
            for p in rows[:PAYMENTS_SHOWN]], more


def statement_years(patient_id: int) -> list[int]:
    """Years (local) with money movements, newest first: one query for the first and last payment."""
    first, last = db.session.execute(
        sa.select(sa.func.min(Payment.received_at), sa.func.max(Payment.received_at)).where(Payment.patient_id == patient_id)
    ).one()
    if first is None:
        return []
    # min()/max() bypass the column type on SQLite, so the values may come back naive (UTC) or as text.
    first_year, last_year = _local_year(first), _local_year(last)
    return list(range(last_year, first_year - 1, -1))


def _local_year(value: datetime | str) -> int:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return local_date_of(value).year


def patient_costs(actor: Actor, patient_id: int, *, page: int = 1, for_payment: bool = False) -> PatientCosts:
    """The patient cost page: regimen, this year's spend, per-fill history with balances, payments.
    `for_payment` (re-showing a refused payment) demands the right to record payments."""
    if for_payment:
        audit.require(actor, Permission.RECORD_PAYMENT, what="record payments")
    patient = _require_patient_billing(actor, patient_id, "see a patient's costs")
    page = max(1, min(page, 10_000))
    lines = regimen(patient)
    summary, ledger = _summary(patient, lines)
    fills, more_fills = _fill_lines(patient.id, page)
    payments, more_payments = _payment_lines(patient.id, page)
    audit.record(actor, "billing.view", patient_id=patient.id, entity=("patient", patient.id))
    return PatientCosts(patient=patient, ledger=ledger, summary=summary, regimen=lines,
                        fills=fills, payments=payments, statement_years=statement_years(patient.id),
                        year=today().year, page=page, has_next=more_fills or more_payments)


def balance(actor: Actor, patient_id: int) -> Ledger:
    """The patient's ledger (for the API)."""
    patient = _require_patient_billing(actor, patient_id, "see a patient's balance")
    return patient_ledger(patient.id)
