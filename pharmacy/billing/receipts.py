"""Receipts and yearly statements (PDF, ReportLab) carrying what an HSA/FSA or out-of-network claim needs.

docs/domain.md "Money": insurance rarely pays for LDN, so patients pay cash and claim later; the claim
needs the pharmacy (name, address, NPI), the patient, the prescriber and NPI, the diagnosis (ICD-10,
G35 for MS), the drug with strength, form, quantity and days supply, the fill and payment dates, the
amount paid, and that it is a compounded medication. Dates are the pharmacy's local dates.
"""
from __future__ import annotations

import io
from dataclasses import dataclass, replace
from datetime import date, datetime
from xml.sax.saxutils import escape

import sqlalchemy as sa
from reportlab.lib import colors
from reportlab.lib.pagesizes import landscape, letter
from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet
from reportlab.lib.units import inch
from reportlab.platypus import Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

from pharmacy.billing.models import Payment
from pharmacy.billing.pricing import MAX_ID
from pharmacy.billing.rules import PaymentKind, fill_total_for_receipt, format_cents, refunds_by_payment
from pharmacy.billing.services import charged_clause, local_date_of, local_day_start, receipt_number_for
from pharmacy.compounding.models import Formula, Order
from pharmacy.compounding.rules import OrderState
from pharmacy.core import audit
from pharmacy.core.actor import Actor
from pharmacy.core.context import settings
from pharmacy.core.errors import NotFound, ValidationFailed
from pharmacy.core.roles import Permission
from pharmacy.extensions import db
from pharmacy.patients.models import Patient
from pharmacy.prescriptions import rules as rx_rules
from pharmacy.prescriptions.models import Prescriber, Prescription

COMPOUNDED = "Compounded medication"
METHOD_LABELS = {"cash": "Cash", "card": "Card", "check": "Check", "hsa_fsa": "HSA/FSA card"}
FORM_LABELS = {"capsule": "Capsule", "sublingual_liquid": "Sublingual liquid", "transdermal_cream": "Transdermal cream"}


@dataclass(frozen=True)
class PharmacyInfo:
    name: str
    address: str
    phone: str
    npi: str


@dataclass(frozen=True)
class PatientInfo:
    name: str
    date_of_birth: date
    address_lines: list[str]


@dataclass(frozen=True)
class FillInfo:
    rx_number: str
    prescriber: str
    prescriber_npi: str
    diagnosis_code: str
    indication: str
    drug: str
    strength: str
    form: str
    quantity: str
    days_supply: int
    fill_date: date | None


@dataclass(frozen=True)
class ReceiptLine:
    number: str
    kind: str  # "payment" or "refund"
    method: str
    amount_cents: int
    paid_on: date
    reference: str | None
    fill: FillInfo | None
    # What the patient sees the payment against (a receipt alone does not say what is still owed):
    fill_total_cents: int | None = None  # the fill's price and shipping
    fill_remaining_cents: int | None = None  # still owed on that fill after this payment (negative: credit)
    account_balance_cents: int | None = None  # the whole account after this payment (negative: credit)
    fill_not_charged: str | None = None  # "cancelled" or "returned": the fill is not charged (its total shows $0.00)
    # A payment's receipt printed after refunds on the same fill (or account) that gave this payment back (each refund
    # taken off the latest payments first: billing/rules.refunds_by_payment): (receipt number, date, cents) each, so
    # nobody claims money that came back, and no refund is taken off two receipts.
    refunded_since: tuple[tuple[str, date, int], ...] = ()

    @property
    def refunded_since_cents(self) -> int:
        return sum(cents for _number, _day, cents in self.refunded_since)

    @property
    def signed_cents(self) -> int:
        return -self.amount_cents if self.kind == PaymentKind.REFUND.value else self.amount_cents


@dataclass(frozen=True)
class Statement:
    pharmacy: PharmacyInfo
    patient: PatientInfo
    year: int
    lines: list[ReceiptLine]

    @property
    def paid_cents(self) -> int:
        return sum(line.amount_cents for line in self.lines if line.kind == PaymentKind.PAYMENT.value)

    @property
    def refunded_cents(self) -> int:
        return sum(line.amount_cents for line in self.lines if line.kind == PaymentKind.REFUND.value)

    @property
    def net_cents(self) -> int:
        return self.paid_cents - self.refunded_cents


# ---------------------------------------------------------------------------------------------
# Gathering the facts
# ---------------------------------------------------------------------------------------------


def _pharmacy() -> PharmacyInfo:
    cfg = settings()
    return PharmacyInfo(cfg.pharmacy_name, cfg.pharmacy_address, cfg.pharmacy_phone, cfg.pharmacy_npi)


def _patient(p: Patient) -> PatientInfo:
    city = " ".join(x for x in [(p.city or "") + ("," if p.city else ""), p.state or "", p.postal_code or ""] if x)
    lines = [x for x in (p.address_line1, p.address_line2, city) if x and x.strip(", ")]
    return PatientInfo(f"{p.first_name} {p.last_name}", p.date_of_birth, lines)


def _fill(order: Order | None, rx: Prescription | None, formula: Formula | None, doc: Prescriber | None) -> FillInfo | None:
    if order is None or rx is None or formula is None or doc is None:
        return None
    fill_date = local_date_of(order.dispensed_at) if order.dispensed_at else order.dispensed_on
    return FillInfo(
        rx_number=rx.rx_number, prescriber=doc.display_name, prescriber_npi=doc.npi, diagnosis_code=rx.indication_code,
        indication=rx.indication, drug=rx_rules.product_name(formula.form, formula.strength_mg),
        strength=rx_rules.strength_text(formula.form, formula.strength_mg), form=FORM_LABELS[formula.form.value],
        quantity=rx_rules.quantity_text(formula.form, order.quantity), days_supply=order.days_supply, fill_date=fill_date,
    )


def _statement_query() -> sa.Select:
    return (sa.select(Payment, Order, Prescription, Formula, Prescriber)
            .outerjoin(Order, Order.id == Payment.order_id)
            .outerjoin(Prescription, Prescription.id == Order.prescription_id)
            .outerjoin(Formula, Formula.id == Prescription.formula_id)
            .outerjoin(Prescriber, Prescriber.id == Prescription.prescriber_id))


def _line(payment: Payment, *rest: object) -> ReceiptLine:
    return ReceiptLine(number=receipt_number_for(payment), kind=payment.kind.value, method=payment.method.value,
                       amount_cents=payment.amount_cents, paid_on=local_date_of(payment.received_at),
                       reference=payment.reference, fill=_fill(*rest))  # type: ignore[arg-type]


def with_balances(line: ReceiptLine, payment: Payment, order: Order | None) -> ReceiptLine:
    """The receipt's money as it stood when the payment was recorded — the fill's total, what remained on it, the
    account's balance (kept on the payment since migration 0019; a receipt never changes once issued) — and, on a
    payment's receipt, the refunds made on the same fill (or account) since."""
    if payment.balance_cents is not None:
        line = replace(line, fill_total_cents=payment.fill_total_cents, fill_remaining_cents=payment.fill_owed_cents,
                       account_balance_cents=payment.balance_cents)
    else:
        line = _worked_out(line, payment, order)
    if order is not None and order.state == OrderState.CANCELLED and line.fill_total_cents == 0:
        line = replace(line, fill_not_charged="returned" if order.returned_at is not None else "cancelled")
    if payment.kind == PaymentKind.PAYMENT:
        # The money on the same fill (or on the account): which of its refunds gave back this payment.
        same = db.session.execute(
            sa.select(Payment).where(Payment.patient_id == payment.patient_id,
                                     Payment.order_id == payment.order_id if payment.order_id is not None
                                     else Payment.order_id.is_(None))
            .order_by(Payment.id)).scalars().all()
        refunds = {r.id: r for r in same if r.kind == PaymentKind.REFUND}
        mine = refunds_by_payment([(p.id, p.amount_cents) for p in same if p.kind == PaymentKind.PAYMENT],
                                  [(r.id, r.amount_cents) for r in refunds.values()]).get(payment.id, [])
        line = replace(line, refunded_since=tuple(
            (receipt_number_for(refunds[rid]), local_date_of(refunds[rid].received_at), cents) for rid, cents in mine))
    return line


def _worked_out(line: ReceiptLine, payment: Payment, order: Order | None) -> ReceiptLine:
    """A payment recorded before its figures were kept: payments and refunds counted up to this one (by id), charges
    of fills made ready by the time it was received (as they stand now: the best the rows can say)."""
    upto = sa.and_(Payment.patient_id == payment.patient_id, Payment.id <= payment.id)
    signed = sa.case((Payment.kind == PaymentKind.REFUND, -Payment.amount_cents), else_=Payment.amount_cents)
    net_account, net_fill = db.session.execute(
        sa.select(sa.func.coalesce(sa.func.sum(signed), 0),
                  sa.func.coalesce(sa.func.sum(sa.case((Payment.order_id == (order.id if order else -1), signed),
                                                       else_=0)), 0)).where(upto)
    ).one()
    charged = db.session.execute(
        sa.select(sa.func.coalesce(sa.func.sum(Order.price_cents + Order.shipping_cents), 0))
        .where(Order.patient_id == payment.patient_id, charged_clause(), Order.created_at <= payment.received_at)
    ).scalar_one()
    fill_total = (fill_total_for_receipt(order.total_cents, cancelled=order.state == OrderState.CANCELLED)
                  if order is not None else None)
    return replace(line, fill_total_cents=fill_total,
                   fill_remaining_cents=(fill_total - int(net_fill)) if fill_total is not None else None,
                   account_balance_cents=int(charged) - int(net_account))


def _may_read(actor: Actor, what: str) -> None:
    audit.require(actor, Permission.VIEW_BILLING, what=what)
    audit.require(actor, Permission.VIEW_CLINICAL, what=what)


def receipt_facts(actor: Actor, payment_id: int) -> tuple[PharmacyInfo, PatientInfo, ReceiptLine]:
    _may_read(actor, "print receipts")
    row = db.session.execute(_statement_query().where(Payment.id == payment_id)).first() if 1 <= payment_id <= MAX_ID else None
    if row is None:
        raise NotFound("No such payment.")
    payment = row[0]
    patient = db.session.get(Patient, payment.patient_id)
    if patient is None:  # pragma: no cover - the foreign key guarantees it
        raise NotFound("No such patient.")
    audit.record(actor, "receipt.view", patient_id=patient.id, entity=("payment", payment.id))
    return _pharmacy(), _patient(patient), with_balances(_line(*row), payment, row[1])


def statement_facts(actor: Actor, patient_id: int, year: int) -> Statement:
    _may_read(actor, "print statements")
    if not 2000 <= year <= 2100:
        raise ValidationFailed("Choose a year.", fields={"year": "Between 2000 and 2100."})
    patient = db.session.get(Patient, patient_id) if 1 <= patient_id <= MAX_ID else None
    if patient is None:
        raise NotFound("No such patient.")
    start, end = local_day_start(date(year, 1, 1)), local_day_start(date(year + 1, 1, 1))
    rows = db.session.execute(_statement_query().where(
        Payment.patient_id == patient.id, Payment.received_at >= start, Payment.received_at < end,
    ).order_by(Payment.received_at, Payment.id)).all()
    audit.record(actor, "statement.view", patient_id=patient.id, entity=("patient", patient.id), details={"year": year})
    return Statement(_pharmacy(), _patient(patient), year, [_line(*r) for r in rows])


def receipt_pdf(actor: Actor, payment_id: int) -> tuple[str, bytes]:
    """(filename, PDF) of one payment's (or refund's) receipt."""
    pharmacy, patient, line = receipt_facts(actor, payment_id)
    return f"receipt-{line.number}.pdf", render_receipt(pharmacy, patient, line)


def statement_pdf(actor: Actor, patient_id: int, year: int) -> tuple[str, bytes]:
    """(filename, PDF) of a patient's payments and refunds in one (local) calendar year."""
    statement = statement_facts(actor, patient_id, year)
    return f"statement-{year}-patient-{patient_id}.pdf", render_statement(statement)


def own_receipt_pdf(actor: Actor, payment_id: int) -> tuple[str, bytes]:
    """A patient's own receipt, from the portal: the same PDF staff print, for a payment of actor.patient_id only
    (anyone else's is "not found", so ids cannot be probed)."""
    if actor.kind != "patient" or actor.patient_id is None:
        raise NotFound("No such payment.")
    row = db.session.execute(_statement_query().where(Payment.id == payment_id)).first() if 1 <= payment_id <= MAX_ID else None
    if row is None or row[0].patient_id != actor.patient_id:
        raise NotFound("No such payment.")
    patient = db.session.get(Patient, actor.patient_id)
    if patient is None:  # pragma: no cover - the foreign key guarantees it
        raise NotFound("No such payment.")
    audit.record(actor, "receipt.view", patient_id=patient.id, entity=("payment", payment_id))
    line = with_balances(_line(*row), row[0], row[1])
    return f"receipt-{line.number}.pdf", render_receipt(_pharmacy(), _patient(patient), line)


def own_statement_pdf(actor: Actor, year: int) -> tuple[str, bytes]:
    """A patient's own yearly statement, from the portal (the PDF staff print for them)."""
    if actor.kind != "patient" or actor.patient_id is None:
        raise NotFound("No such patient.")
    if not 2000 <= year <= 2100:
        raise ValidationFailed("Choose a year.", fields={"year": "Between 2000 and 2100."})
    patient = db.session.get(Patient, actor.patient_id)
    if patient is None:
        raise NotFound("No such patient.")
    start, end = local_day_start(date(year, 1, 1)), local_day_start(date(year + 1, 1, 1))
    rows = db.session.execute(_statement_query().where(
        Payment.patient_id == patient.id, Payment.received_at >= start, Payment.received_at < end,
    ).order_by(Payment.received_at, Payment.id)).all()
    audit.record(actor, "statement.view", patient_id=patient.id, entity=("patient", patient.id), details={"year": year})
    statement = Statement(_pharmacy(), _patient(patient), year, [_line(*r) for r in rows])
    return f"statement-{year}.pdf", render_statement(statement)


# ---------------------------------------------------------------------------------------------
# Rendering (pure: facts in, PDF bytes out)
# ---------------------------------------------------------------------------------------------

_STYLES = getSampleStyleSheet()
BODY = ParagraphStyle("body", parent=_STYLES["BodyText"], fontSize=9.5, leading=12)
SMALL = ParagraphStyle("small", parent=BODY, fontSize=8, leading=10)
H1 = ParagraphStyle("h1", parent=_STYLES["Heading1"], fontSize=16, spaceAfter=4)
H2 = ParagraphStyle("h2", parent=_STYLES["Heading2"], fontSize=11.5, spaceBefore=8, spaceAfter=3)
GRID = TableStyle([
    ("GRID", (0, 0), (-1, -1), 0.5, colors.HexColor("#b8c2cc")),
    ("VALIGN", (0, 0), (-1, -1), "TOP"),
    ("BACKGROUND", (0, 0), (0, -1), colors.HexColor("#eef2f6")),
])


def _p(text: str, style: ParagraphStyle = BODY) -> Paragraph:
    return Paragraph(escape(text), style)


def _date(d: date | datetime | None) -> str:
    return f"{d:%b} {d.day}, {d.year}" if d else "not yet dispensed (prepayment)"


def _header(pharmacy: PharmacyInfo, patient: PatientInfo, title: str) -> list:
    left = [_p(pharmacy.name, H2), _p(pharmacy.address), _p(f"Phone {pharmacy.phone}"), _p(f"Pharmacy NPI {pharmacy.npi}")]
    right = [_p("Patient", H2), _p(patient.name), _p(f"Date of birth {_date(patient.date_of_birth)}"),
             *[_p(line) for line in patient.address_lines]]
    table = Table([[left, right]], colWidths=["50%", "50%"])
    table.setStyle(TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP")]))
    return [_p(title, H1), table, Spacer(1, 6)]


def _fill_rows(fill: FillInfo | None) -> list[list]:
    if fill is None:
        return [[_p("Item"), _p("Payment on account (not tied to a fill)")]]
    return [
        [_p("Drug"), _p(f"{fill.drug} — {COMPOUNDED}")],
        [_p("Strength"), _p(fill.strength)],
        [_p("Form"), _p(fill.form)],
        [_p("Quantity"), _p(fill.quantity)],
        [_p("Days supply"), _p(str(fill.days_supply))],
        [_p("Fill date"), _p(_date(fill.fill_date))],
        [_p("Rx number"), _p(fill.rx_number)],
        [_p("Prescriber"), _p(f"{fill.prescriber}, NPI {fill.prescriber_npi}")],
        [_p("Diagnosis"), _p(f"ICD-10 {fill.diagnosis_code} — {fill.indication}")],
    ]


def _grid(rows: list[list]) -> Table:
    table = Table(rows, colWidths=[1.5 * inch, 5.6 * inch])
    table.setStyle(GRID)
    return table


def _pdf(story: list, *, page: tuple[float, float], title: str) -> bytes:
    buffer = io.BytesIO()
    doc = SimpleDocTemplate(buffer, pagesize=page, leftMargin=0.6 * inch, rightMargin=0.6 * inch,
                            topMargin=0.6 * inch, bottomMargin=0.6 * inch, title=title, author="", subject="",
                            creator="LDN pharmacy", invariant=True)
    doc.build(story)
    return buffer.getvalue()


def _owed(cents: int) -> str:
    """"$12.40 owed", "nothing owed", "$5.00 credit": a balance as the patient reads it."""
    if cents > 0:
        return f"{format_cents(cents)} owed"
    return f"{format_cents(-cents)} credit" if cents < 0 else "nothing owed ($0.00)"


def render_receipt(pharmacy: PharmacyInfo, patient: PatientInfo, line: ReceiptLine) -> bytes:
    refund = line.kind == PaymentKind.REFUND.value
    title = f"{'Refund' if refund else 'Receipt'} {line.number}"
    money = [
        [_p("Receipt number"), _p(line.number)],
        [_p("Refund date" if refund else "Payment date"), _p(_date(line.paid_on))],
        [_p("Method"), _p(METHOD_LABELS.get(line.method, line.method))],
        *([[_p("Reference"), _p(line.reference)]] if line.reference else []),
        [_p("Amount refunded" if refund else "Amount paid"), _p(format_cents(line.amount_cents), H2)],
        *([[_p("Fill total"), _p(format_cents(line.fill_total_cents) + (
            f" ({line.fill_not_charged} — not charged)" if line.fill_not_charged else ""))],
           [_p("Still owed on this fill"), _p(_owed(line.fill_remaining_cents or 0))]]
          if line.fill_total_cents is not None else []),
        *([[_p("Account balance"), _p(_owed(line.account_balance_cents))]]
          if line.account_balance_cents is not None else []),
        *([[_p("Refunded since"), _p("; ".join(f"{format_cents(cents)} on {_date(day)} (refund {number})"
                                               for number, day, cents in line.refunded_since))],
           [_p("Net paid"), _p(format_cents(max(line.amount_cents - line.refunded_since_cents, 0)), H2)]]
          if line.refunded_since else []),
    ]
    story = [*_header(pharmacy, patient, title), _p("Medication", H2), _grid(_fill_rows(line.fill)), Spacer(1, 8),
             _p("Payment", H2), _grid(money), Spacer(1, 10),
             _p(f"{COMPOUNDED}: prepared by the pharmacy for this patient on a prescription. "
                "Keep this receipt for an HSA/FSA or out-of-network insurance claim."
                + (" Money was refunded since this payment: claim only the net amount paid." if line.refunded_since
                   else "") + " The figures are as they stood on the " + ("refund" if refund else "payment")
                + " date.", SMALL)]
    return _pdf(story, page=letter, title=title)


def render_statement(statement: Statement) -> bytes:
    title = f"Statement {statement.year}"
    head = ["Paid on", "Receipt", "Fill date", "Rx", "Drug (compounded)", "Qty", "Days", "Prescriber (NPI)",
            "Diagnosis", "Amount"]
    rows: list[list] = [[_p(h, SMALL) for h in head]]
    for line in statement.lines:
        f = line.fill
        amount = format_cents(line.signed_cents) + (" (refund)" if line.kind == PaymentKind.REFUND.value else "")
        rows.append([_p(x, SMALL) for x in (
            _date(line.paid_on), line.number, _date(f.fill_date) if f else "—", f.rx_number if f else "—",
            f"{f.drug}, {f.form.lower()}" if f else "Payment on account", f.quantity if f else "—",
            str(f.days_supply) if f else "—", f"{f.prescriber} ({f.prescriber_npi})" if f else "—",
            f"{f.diagnosis_code} {f.indication}" if f else "—", amount)])
    if len(rows) == 1:
        rows.append([_p(f"No payments in {statement.year}.", SMALL)] + [_p("", SMALL)] * (len(head) - 1))
    widths = [0.8, 1.0, 0.9, 0.8, 1.9, 0.8, 0.45, 1.7, 1.05, 0.8]
    table = Table(rows, colWidths=[w * inch for w in widths], repeatRows=1)
    table.setStyle(TableStyle([("GRID", (0, 0), (-1, -1), 0.5, colors.HexColor("#b8c2cc")),
                               ("VALIGN", (0, 0), (-1, -1), "TOP"),
                               ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#eef2f6"))]))
    totals = Table([
        [_p(f"Total paid in {statement.year}"), _p(format_cents(statement.paid_cents))],
        [_p(f"Total refunded in {statement.year}"), _p(format_cents(statement.refunded_cents))],
        [_p(f"Net amount paid in {statement.year}"), _p(format_cents(statement.net_cents), H2)],
    ], colWidths=[2.6 * inch, 1.4 * inch])
    totals.setStyle(GRID)
    story = [*_header(statement.pharmacy, statement.patient, title),
             _p(f"{COMPOUNDED}: low-dose naltrexone prepared by the pharmacy for this patient. Payments and refunds "
                f"from 1 January to 31 December {statement.year}.", BODY),
             Spacer(1, 6), table, Spacer(1, 10), totals, Spacer(1, 10),
             _p("Keep this statement for an HSA/FSA or out-of-network insurance claim. Dates are the pharmacy's "
                "local dates.", SMALL)]
    return _pdf(story, page=landscape(letter), title=title)
