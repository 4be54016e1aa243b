"""Money reports and the CSV exports: a bounded number of queries each, whatever the number of patients.

Adherence (PDC) lives in billing/adherence.py; its CSV export is here with the others.

Month boundaries (README "Billing decisions"): a payment belongs to the month *at the pharmacy* —
23:30 on 31 October in Chicago is October, although it is already November in UTC. SQLite has no
time zones, so instead of a dialect-specific date function the query groups by a CASE over the
months' local start instants converted to UTC: the same SQL on SQLite and PostgreSQL, exact across
daylight-saving changes, and it still uses the index on payments.received_at for the range.
"""
from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date

import sqlalchemy as sa

from pharmacy.billing import rules
from pharmacy.billing.adherence import AdherenceReport, adherence_report, checked_window
from pharmacy.billing.models import Payment
from pharmacy.billing.pricing import MAX_ID, PriceRow, price_rows
from pharmacy.billing.rules import PaymentKind
from pharmacy.billing.services import charged_clause, local_day_start
from pharmacy.compounding.models import Formula, Order
from pharmacy.compounding.rules import OrderState
from pharmacy.core import audit
from pharmacy.core.actor import Actor
from pharmacy.core.context import today
from pharmacy.core.errors import NotFound, ValidationFailed
from pharmacy.core.roles import Permission
from pharmacy.extensions import db
from pharmacy.patients.models import Patient
from pharmacy.prescriptions.models import Prescription
from pharmacy.prescriptions.rules import Form

MAX_MONTHS = 36
ROWS_SHOWN = 25
FORM_LABELS = {Form.CAPSULE: "Capsules", Form.SUBLINGUAL_LIQUID: "Sublingual liquid",
               Form.TRANSDERMAL_CREAM: "Transdermal cream"}


def _months(months: int) -> int:
    if isinstance(months, bool) or not isinstance(months, int) or not 1 <= months <= MAX_MONTHS:
        raise ValidationFailed("Choose a number of months.", fields={"months": f"Between 1 and {MAX_MONTHS}."})
    return months


def month_starts(last_day: date, months: int) -> list[date]:
    """First days of the `months` months ending with last_day's month, plus the month after (the end)."""
    index = last_day.year * 12 + last_day.month - 1 - (months - 1)
    return [date(i // 12, i % 12 + 1, 1) for i in range(index, index + months + 1)]


def _period_start(months: int) -> date:
    return month_starts(today(), months)[0]


# ---------------------------------------------------------------------------------------------
# Revenue by month
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MonthRevenue:
    month: str  # "2026-11"
    label: str  # "Nov 2026"
    paid_cents: int
    refunded_cents: int

    @property
    def net_cents(self) -> int:
        return self.paid_cents - self.refunded_cents


def _revenue(months: int) -> list[MonthRevenue]:
    """One statement: per local month, a range of ix_payments_received (received_at, kind, amount_cents) summed by
    kind — index-only reads of exactly the period's payments, one UNION ALL arm per month."""
    starts = month_starts(today(), months)
    bounds = [local_day_start(d) for d in starts]
    keys = [d.strftime("%Y-%m") for d in starts[:-1]]
    arms = [
        sa.select(sa.literal(keys[i]).label("month"), Payment.kind, sa.func.sum(Payment.amount_cents).label("total"))
        .where(Payment.received_at >= bounds[i], Payment.received_at < bounds[i + 1]).group_by(Payment.kind)
        for i in range(months)
    ]
    totals: dict[tuple[str, PaymentKind], int] = {}
    for key, kind, total in db.session.execute(sa.union_all(*arms)).all():
        totals[(key, PaymentKind(kind))] = int(total)
    return [MonthRevenue(key, d.strftime("%b %Y"), totals.get((key, PaymentKind.PAYMENT), 0),
                         totals.get((key, PaymentKind.REFUND), 0)) for key, d in zip(keys, starts, strict=False)]


def revenue_by_month(actor: Actor, months: int = 12) -> list[MonthRevenue]:
    """Payments minus refunds per local month, oldest first, every month present (zero when quiet)."""
    audit.require(actor, Permission.VIEW_REPORTS, what="see reports")
    return _revenue(_months(months))


# ---------------------------------------------------------------------------------------------
# Fills by form, average monthly cost per patient
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FormFills:
    form: str
    label: str
    fills: int
    patients: int
    price_cents: int
    days_supply: int

    @property
    def monthly_equivalent_cents(self) -> int:
        return rules.monthly_equivalent_cents(self.price_cents, self.days_supply) if self.days_supply else 0


def _dispensed_since(start: date) -> sa.ColumnElement[bool]:
    """Dispensed on or after `start`: a range of ix_orders_report_day (state, dispensed_on, …)."""
    return sa.and_(Order.state == OrderState.DISPENSED, Order.dispensed_on >= start)


def _fills_by_form(months: int) -> list[FormFills]:
    """Per form: the period's dispensed fills, grouped first by prescription (index-only over the period's range of
    ix_orders_report_day), then joined to prescriptions and formulas once per prescription, not per fill."""
    # Grouped by an expression, not the bare column: otherwise SQLite walks the whole (prescription_id, fill_number)
    # unique index to get its groups in order, looking up every order ever made, instead of the period's range.
    rx_id = (Order.prescription_id + 0).label("rx_id")
    per_rx = (
        sa.select(rx_id, sa.func.count().label("fills"),
                  sa.func.sum(Order.price_cents).label("price"), sa.func.sum(Order.days_supply).label("days"))
        .where(_dispensed_since(_period_start(months))).group_by(rx_id).subquery("per_rx")
    )
    rows = db.session.execute(
        sa.select(Formula.form, sa.func.sum(per_rx.c.fills), sa.func.count(sa.distinct(Prescription.patient_id)),
                  sa.func.sum(per_rx.c.price), sa.func.sum(per_rx.c.days))
        .select_from(per_rx).join(Prescription, Prescription.id == per_rx.c.rx_id)
        .join(Formula, Formula.id == Prescription.formula_id).group_by(Formula.form)
    ).all()
    found = {Form(form): (int(n), int(p), int(price or 0), int(days or 0)) for form, n, p, price, days in rows}
    return [FormFills(form.value, FORM_LABELS[form], *found.get(form, (0, 0, 0, 0))) for form in Form]


@dataclass(frozen=True)
class PatientMonthly:
    patient_id: int
    name: str
    fills: int
    price_cents: int
    days_supply: int

    @property
    def monthly_equivalent_cents(self) -> int:
        return rules.monthly_equivalent_cents(self.price_cents, self.days_supply)


@dataclass
class AverageCost:
    average_cents: int
    patients: int
    highest: list[PatientMonthly]


def _patient_monthly_stmt(start: date) -> sa.Select:
    """Per patient: fills dispensed since `start`, their prices and supply (medicine only, no shipping)."""
    price, days = sa.func.sum(Order.price_cents), sa.func.sum(Order.days_supply)
    return (sa.select(Patient.id, Patient.last_name, Patient.first_name, sa.func.count(Order.id), price, days)
            .join(Order, Order.patient_id == Patient.id).where(_dispensed_since(start))
            .group_by(Patient.id, Patient.last_name, Patient.first_name))


def patient_label(patient_id: int, last: str, first: str, *, with_names: bool) -> str:
    """A patient as a money report names them: "Last, First" for clinical staff; "Patient #12" for the others
    (admins see reports without names and phones: minimum necessary)."""
    return f"{last}, {first}" if with_names else f"Patient #{patient_id}"


def _patient_monthly(row: sa.Row, *, with_names: bool) -> PatientMonthly:
    pid, last, first, n, price, days = row
    return PatientMonthly(pid, patient_label(pid, last, first, with_names=with_names), int(n), int(price or 0),
                          int(days or 0))


def _monthly_cents(price: sa.ColumnElement[int], days: sa.ColumnElement[int]) -> sa.ColumnElement[int]:
    """rules.monthly_equivalent_cents in integer SQL: price × 30 / days, half-up (non-negative integers)."""
    return (60 * price + days) // (2 * days)


def _average_cost(months: int, *, with_names: bool) -> AverageCost:
    """Each patient's monthly equivalent (their prices × 30 / their days), then the mean across patients
    (half-up to the cent) — in one statement over the period's dispensed fills (ix_orders_report_day):
    the per-patient figures are grouped and averaged in SQL, and only the highest rows shown come back."""
    per_patient = (
        sa.select(Order.patient_id.label("pid"), sa.func.count(Order.id).label("fills"),
                  sa.func.sum(Order.price_cents).label("price"), sa.func.sum(Order.days_supply).label("days"))
        .where(_dispensed_since(_period_start(months))).group_by(Order.patient_id).subquery("per_patient")
    )
    monthly = _monthly_cents(per_patient.c.price, per_patient.c.days)
    ranked = (
        sa.select(per_patient, monthly.label("monthly"), sa.func.count().over().label("n"),
                  sa.func.sum(monthly).over().label("total"))
        .order_by(monthly.desc(), per_patient.c.pid).limit(ROWS_SHOWN).subquery("ranked")
    )
    rows = db.session.execute(
        sa.select(ranked, Patient.last_name, Patient.first_name).join(Patient, Patient.id == ranked.c.pid)
        .order_by(ranked.c.monthly.desc(), ranked.c.pid)
    ).all()
    count = int(rows[0].n) if rows else 0
    total = int(rows[0].total) if rows else 0
    average = (2 * total + count) // (2 * count) if count else 0
    highest = [PatientMonthly(r.pid, patient_label(r.pid, r.last_name, r.first_name, with_names=with_names),
                              int(r.fills), int(r.price or 0), int(r.days or 0)) for r in rows]
    return AverageCost(average, count, highest)


# ---------------------------------------------------------------------------------------------
# Outstanding balances
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outstanding:
    patient_id: int
    name: str
    phone: str | None
    charged_cents: int
    net_paid_cents: int

    @property
    def owed_cents(self) -> int:
        return self.charged_cents - self.net_paid_cents


@dataclass
class OutstandingReport:
    rows: list[Outstanding]
    patients: int
    total_owed_cents: int


def _outstanding_stmt() -> sa.Select:
    """Patients who owe (full history, exact): charged fills minus net payments per patient, set-based.

    Dispensed fills are summed per patient from ix_orders_report_patient and payments from
    ix_payments_patient_received — both covering, read index-only and already in patient order; the few
    other charged orders (ready, or held once ready) come from ix_orders_state_created. Names are joined
    only for the patients who owe. Each row carries the count and total of all who owe (window functions),
    so one statement gives the page its rows and its totals.
    """
    dispensed = (sa.select(Order.patient_id.label("pid"), sa.func.sum(Order.price_cents + Order.shipping_cents).label("c"))
                 .where(Order.state == OrderState.DISPENSED).group_by(Order.patient_id))
    # Grouped by an expression so no planner walks a patient index (and every order row) to get groups in order.
    other_pid = (Order.patient_id + 0).label("pid")
    other = (sa.select(other_pid, sa.func.sum(Order.price_cents + Order.shipping_cents).label("c"))
             .where(Order.state.in_([OrderState.READY, OrderState.ON_HOLD]), charged_clause()).group_by(other_pid))
    both = sa.union_all(dispensed, other).subquery("charged_parts")
    charges = sa.select(both.c.pid, sa.func.sum(both.c.c).label("charged")).group_by(both.c.pid).subquery("charges")
    signed = sa.case((Payment.kind == PaymentKind.REFUND, -Payment.amount_cents), else_=Payment.amount_cents)
    net = sa.select(Payment.patient_id.label("pid"), sa.func.sum(signed).label("net")).group_by(Payment.patient_id) \
        .subquery("net")
    net_paid = sa.func.coalesce(net.c.net, 0)
    # MATERIALIZED: the few who owe are found first, and only they are joined to their names (left to itself,
    # PostgreSQL misjudges the grouped union's size and looks up every patient before filtering).
    owing = (sa.select(charges.c.pid, charges.c.charged, net_paid.label("net_paid"),
                       (charges.c.charged - net_paid).label("owed"))
             .outerjoin(net, net.c.pid == charges.c.pid).where(charges.c.charged - net_paid > 0)
             .cte("owing").prefix_with("MATERIALIZED"))
    return (sa.select(Patient.id, Patient.last_name, Patient.first_name, Patient.phone, owing.c.charged, owing.c.net_paid,
                      owing.c.owed, sa.func.count().over().label("n"), sa.func.sum(owing.c.owed).over().label("total"))
            .join(Patient, Patient.id == owing.c.pid)
            .order_by(owing.c.owed.desc(), Patient.last_name, Patient.id))


def _outstanding_row(row: sa.Row, *, with_names: bool) -> Outstanding:
    return Outstanding(row[0], patient_label(row[0], row[1], row[2], with_names=with_names),
                       row[3] if with_names else None, int(row[4]), int(row[5]))


def _outstanding(limit: int, *, with_names: bool) -> OutstandingReport:
    rows = db.session.execute(_outstanding_stmt().limit(limit)).all()
    count = int(rows[0].n) if rows else 0
    total = int(rows[0].total) if rows else 0
    return OutstandingReport([_outstanding_row(r, with_names=with_names) for r in rows], count, total)


def outstanding_balances(actor: Actor, limit: int = 50) -> OutstandingReport:
    """Patients who owe, largest balance first (names and phones for clinical staff only)."""
    audit.require(actor, Permission.VIEW_REPORTS, what="see reports")
    report = _outstanding(max(1, min(limit, 500)), with_names=actor.can(Permission.VIEW_CLINICAL))
    audit.record_reads(actor, "report.list", [o.patient_id for o in report.rows], details={"report": "outstanding"})
    return report


# ---------------------------------------------------------------------------------------------
# The Money page and the CSV exports
# ---------------------------------------------------------------------------------------------


@dataclass
class MoneyPage:
    months: int
    revenue: list[MonthRevenue]
    by_form: list[FormFills]
    average: AverageCost
    outstanding: OutstandingReport
    out_of_band: list[PriceRow]
    period_start: date
    totals: dict[str, int] = field(default_factory=dict)


def money_page(actor: Actor, *, months: int = 12) -> MoneyPage:
    """Every money report on one page, about ten queries in all."""
    audit.require(actor, Permission.VIEW_REPORTS, what="see reports")
    months = _months(months)
    revenue = _revenue(months)
    names = actor.can(Permission.VIEW_CLINICAL)
    page = MoneyPage(months=months, revenue=revenue, by_form=_fills_by_form(months),
                     average=_average_cost(months, with_names=names), outstanding=_outstanding(ROWS_SHOWN, with_names=names),
                     out_of_band=price_rows(out_of_band_only=True), period_start=_period_start(months))
    audit.record_reads(actor, "report.list", audit.patient_ids_in(page.average.highest, page.outstanding.rows),
                       details={"report": "money"})
    page.totals = {"paid": sum(m.paid_cents for m in revenue), "refunded": sum(m.refunded_cents for m in revenue),
                   "net": sum(m.net_cents for m in revenue)}
    audit.record(actor, "report.view", details={"report": "money"})
    return page


def _dollars(cents: int) -> str:
    """CSV amounts: "45.00", "-5.25" — exact, no currency sign, so a spreadsheet reads a number."""
    sign = "-" if cents < 0 else ""
    whole, rest = divmod(abs(cents), 100)
    return f"{sign}{whole}.{rest:02d}"


def _cell(value: object) -> object:
    """Text that a spreadsheet would run as a formula (=, +, -, @) is quoted with a leading apostrophe."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def _csv(header: list[str], rows: Iterable[list[object]]) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    for row in rows:
        writer.writerow([_cell(v) for v in row])
        if buffer.tell() > 64_000:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def _revenue_csv(months: int, window_days: int | None, with_names: bool) -> Iterator[str]:
    return _csv(["month", "paid", "refunded", "net"],
                ([m.month, _dollars(m.paid_cents), _dollars(m.refunded_cents), _dollars(m.net_cents)] for m in _revenue(months)))


def _forms_csv(months: int, window_days: int | None, with_names: bool) -> Iterator[str]:
    return _csv(["form", "fills", "patients", "price_total", "days_supply", "monthly_equivalent"],
                ([f.form, f.fills, f.patients, _dollars(f.price_cents), f.days_supply, _dollars(f.monthly_equivalent_cents)]
                 for f in _fills_by_form(months)))


def _average_csv(months: int, window_days: int | None, with_names: bool) -> Iterator[str]:
    stmt = _patient_monthly_stmt(_period_start(months)).order_by(Patient.id).execution_options(yield_per=2000)

    def rows() -> Iterator[list[object]]:
        # Runs while the response streams (after the request's commit), so the server-side cursor
        # PostgreSQL uses for yield_per lives in its own transaction.
        for row in db.session.execute(stmt):
            p = _patient_monthly(row, with_names=with_names)
            yield [p.patient_id, p.name, p.fills, _dollars(p.price_cents), p.days_supply, _dollars(p.monthly_equivalent_cents)]

    return _csv(["patient_id", "patient", "fills", "price_total", "days_supply", "monthly_equivalent"], rows())


def _outstanding_csv(months: int, window_days: int | None, with_names: bool) -> Iterator[str]:
    stmt = _outstanding_stmt().execution_options(yield_per=2000)

    def rows() -> Iterator[list[object]]:
        for row in db.session.execute(stmt):  # lazily, like _average_csv
            o = _outstanding_row(row, with_names=with_names)
            yield [o.patient_id, o.name, o.phone or "", _dollars(o.charged_cents), _dollars(o.net_paid_cents),
                   _dollars(o.owed_cents)]

    return _csv(["patient_id", "patient", "phone", "charged", "net_paid", "owed"], rows())


def _out_of_band_csv(months: int, window_days: int | None, with_names: bool) -> Iterator[str]:
    return _csv(["entry_id", "formula", "quantity", "days_supply", "price", "monthly_equivalent", "band"],
                ([r.id, r.formula_code, r.quantity_text, r.days_supply, _dollars(r.price_cents),
                  _dollars(r.monthly_equivalent_cents), r.band] for r in price_rows(out_of_band_only=True)))


def _adherence_csv(months: int, window_days: int | None, with_names: bool) -> Iterator[str]:
    return _adherence_rows_csv(adherence_report(window_days, MAX_ID, with_names=True))


def _adherence_rows_csv(report: AdherenceReport) -> Iterator[str]:
    return _csv(["patient_id", "patient", "phone", "pdc_percent", "window_start", "last_fill", "last_days_supply", "product"],
                ([r.patient_id, r.name, r.phone or "", r.percent, r.window_start.isoformat(), r.last_fill_on.isoformat(),
                  r.last_days_supply, r.last_product] for r in report.rows))


EXPORTS: dict[str, Callable[[int, int | None, bool], Iterator[str]]] = {
    "revenue": _revenue_csv, "fills-by-form": _forms_csv, "average-monthly-cost": _average_csv,
    "outstanding": _outstanding_csv, "out-of-band": _out_of_band_csv, "adherence": _adherence_csv,
}


def export_csv(actor: Actor, name: str, *, months: int = 12, window_days: int | None = None) -> tuple[str, Iterator[str]]:
    """(filename, CSV chunks) of one report; the export itself is audited. The adherence call list
    carries names and phones, so it needs clinical access as well."""
    audit.require(actor, Permission.VIEW_REPORTS, what="export reports")
    if name not in EXPORTS:
        raise NotFound("No such report.")
    if name == "adherence":
        audit.require(actor, Permission.VIEW_CLINICAL, what="export the adherence call list")
    months = _months(months)
    window = window_days if name == "adherence" else None
    if window is not None:
        checked_window(window)
    audit.record(actor, "report.export", details={"report": name})
    filename = f"{name}-{today().isoformat()}.csv"
    # Each patient in the file is a read of that patient's record.
    if name == "adherence":
        report = adherence_report(window, MAX_ID, with_names=True)
        audit.record_reads(actor, "report.list", [r.patient_id for r in report.rows], details={"report": name})
        return filename, _adherence_rows_csv(report)
    listed = {"outstanding": _outstanding_stmt, "average-monthly-cost": lambda: _patient_monthly_stmt(
        _period_start(months))}.get(name)
    if listed is not None:  # more patients than a page holds: one INSERT … SELECT over the export's own query
        audit.record_reads_from(actor, "report.list", listed(), details={"report": name})
    return filename, EXPORTS[name](months, window, actor.can(Permission.VIEW_CLINICAL))


# ---------------------------------------------------------------------------------------------
# One report at a time (the API)
# ---------------------------------------------------------------------------------------------


def fills_by_form(actor: Actor, months: int = 12) -> list[FormFills]:
    """Dispensed fills per form over the last `months` local months."""
    audit.require(actor, Permission.VIEW_REPORTS, what="see reports")
    return _fills_by_form(_months(months))


def average_monthly_cost(actor: Actor, months: int = 12) -> AverageCost:
    """The mean of each patient's monthly equivalent over the last `months` local months (names for clinical staff)."""
    audit.require(actor, Permission.VIEW_REPORTS, what="see reports")
    result = _average_cost(_months(months), with_names=actor.can(Permission.VIEW_CLINICAL))
    audit.record_reads(actor, "report.list", [p.patient_id for p in result.highest],
                       details={"report": "average-monthly-cost"})
    return result


def out_of_band(actor: Actor) -> list[PriceRow]:
    """Current price-list entries whose monthly equivalent is outside the band."""
    audit.require(actor, Permission.VIEW_REPORTS, what="see reports")
    return price_rows(out_of_band_only=True)
