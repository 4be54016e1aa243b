"""Money and adherence reports: a bounded number of queries each, whatever the number of patients.

Month boundaries (README "Billing decisions"): a payment belongs to the month *at the pharmacy* —
23:30 on 31 October in Chicago is October, although it is already November in UTC. SQLite has no
time zones, so instead of a dialect-specific date function the query groups by a CASE over the
months' local start instants converted to UTC: the same SQL on SQLite and PostgreSQL, exact across
daylight-saving changes, and it still uses the index on payments.received_at for the range.
"""
from __future__ import annotations

import csv
import heapq
import io
import itertools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from decimal import Decimal

import sqlalchemy as sa

from pharmacy.billing import rules
from pharmacy.billing.models import Payment
from pharmacy.billing.pricing import MAX_ID, PriceRow, price_rows
from pharmacy.billing.rules import PaymentKind
from pharmacy.billing.services import charged_clause, local_day_start
from pharmacy.compounding.models import Formula, Order
from pharmacy.compounding.rules import OrderState
from pharmacy.core import audit
from pharmacy.core.actor import Actor
from pharmacy.core.context import settings, today
from pharmacy.core.errors import NotFound, ValidationFailed
from pharmacy.core.roles import Permission
from pharmacy.extensions import db
from pharmacy.patients.models import Patient
from pharmacy.prescriptions import rules as rx_rules
from pharmacy.prescriptions.models import Prescription
from pharmacy.prescriptions.rules import Form, RxStatus

MAX_MONTHS = 36
ROWS_SHOWN = 25
# Supply dispensed this long before the adherence window can still carry into it (180 days is the
# longest BUD, so no single fill covers more); earlier fills are not fetched.
PDC_LOOKBACK_DAYS = 180
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
    starts = month_starts(today(), months)
    bounds = [local_day_start(d) for d in starts]
    keys = [d.strftime("%Y-%m") for d in starts[:-1]]
    month = sa.case(*[(sa.and_(Payment.received_at >= bounds[i], Payment.received_at < bounds[i + 1]), keys[i])
                      for i in range(months)]).label("month")
    inner = (sa.select(month, Payment.kind, Payment.amount_cents)
             .where(Payment.received_at >= bounds[0], Payment.received_at < bounds[-1]).subquery())
    totals: dict[tuple[str, PaymentKind], int] = {}
    for key, kind, total in db.session.execute(
        sa.select(inner.c.month, inner.c.kind, sa.func.sum(inner.c.amount_cents)).group_by(inner.c.month, inner.c.kind)
    ).all():
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
    return sa.and_(Order.state == OrderState.DISPENSED, Order.dispensed_on >= start)


def _fills_by_form(months: int) -> list[FormFills]:
    rows = db.session.execute(
        sa.select(Formula.form, sa.func.count(Order.id), sa.func.count(sa.distinct(Order.patient_id)),
                  sa.func.sum(Order.price_cents), sa.func.sum(Order.days_supply))
        .join(Prescription, Prescription.id == Order.prescription_id).join(Formula, Formula.id == Prescription.formula_id)
        .where(_dispensed_since(_period_start(months))).group_by(Formula.form)
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


def _patient_monthly(row: sa.Row) -> PatientMonthly:
    pid, last, first, n, price, days = row
    return PatientMonthly(pid, f"{last}, {first}", int(n), int(price or 0), int(days or 0))


def _average_cost(months: int) -> AverageCost:
    """Each patient's monthly equivalent (their prices × 30 / their days), then the mean across patients
    (half-up to the cent): one streamed query for the mean, one for the highest rows shown."""
    stmt = _patient_monthly_stmt(_period_start(months))
    total, count = 0, 0
    for row in db.session.execute(stmt.execution_options(yield_per=2000)):
        total += _patient_monthly(row).monthly_equivalent_cents
        count += 1
    average = (2 * total + count) // (2 * count) if count else 0
    per_month = sa.func.sum(Order.price_cents) * 30 / sa.func.sum(Order.days_supply)
    highest = [_patient_monthly(r) for r in db.session.execute(
        stmt.order_by(per_month.desc(), Patient.id).limit(ROWS_SHOWN)).all()]
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


def _outstanding_stmt() -> tuple[sa.Select, sa.ColumnElement[int]]:
    charges = (sa.select(Order.patient_id.label("pid"), sa.func.sum(Order.price_cents + Order.shipping_cents).label("charged"))
               .where(charged_clause()).group_by(Order.patient_id).subquery())
    signed = sa.case((Payment.kind == PaymentKind.REFUND, -Payment.amount_cents), else_=Payment.amount_cents)
    net = sa.select(Payment.patient_id.label("pid"), sa.func.sum(signed).label("net")).group_by(Payment.patient_id).subquery()
    net_paid = sa.func.coalesce(net.c.net, 0)
    owed = charges.c.charged - net_paid
    stmt = (sa.select(Patient.id, Patient.last_name, Patient.first_name, Patient.phone, charges.c.charged,
                      net_paid.label("net_paid"), owed.label("owed"))
            .join(charges, charges.c.pid == Patient.id).outerjoin(net, net.c.pid == Patient.id).where(owed > 0))
    return stmt, owed


def _outstanding_row(row: sa.Row) -> Outstanding:
    return Outstanding(row[0], f"{row[1]}, {row[2]}", row[3], int(row[4]), int(row[5]))


def _outstanding(limit: int) -> OutstandingReport:
    stmt, owed = _outstanding_stmt()
    rows = [_outstanding_row(r) for r in db.session.execute(
        stmt.order_by(owed.desc(), Patient.last_name, Patient.id).limit(limit)).all()]
    sub = stmt.subquery()
    count, total = db.session.execute(sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(sub.c.owed), 0))).one()
    return OutstandingReport(rows, int(count), int(total))


def outstanding_balances(actor: Actor, limit: int = 50) -> OutstandingReport:
    """Patients who owe, largest balance first."""
    audit.require(actor, Permission.VIEW_REPORTS, what="see reports")
    return _outstanding(max(1, min(limit, 500)))


# ---------------------------------------------------------------------------------------------
# Adherence (PDC)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AdherenceRow:
    patient_id: int
    pdc: Decimal
    percent: int
    window_start: date
    last_fill_on: date
    last_days_supply: int
    last_product: str
    name: str = ""
    phone: str | None = None


@dataclass
class AdherenceReport:
    window_days: int
    window_start: date
    window_end: date
    threshold_percent: int
    measured: int
    below_count: int
    distribution: list[int]  # patients per 10-point PDC band: 0–9 %, 10–19 %, … 90–100 %
    rows: list[AdherenceRow]  # below the threshold, lowest first (empty when names may not be shown)
    show_names: bool = True


def _window(window_days: int | None) -> int:
    days = settings().pdc_window_days if window_days is None else window_days
    if isinstance(days, bool) or not isinstance(days, int) or not 7 <= days <= 730:
        raise ValidationFailed("Choose an adherence window.", fields={"window_days": "Between 7 and 730 days."})
    return days


def _measure(window_days: int) -> Iterator[AdherenceRow]:
    """PDC per patient with an active prescription, streaming one query ordered by patient.

    A patient's window starts at the later of the report's start and their first fill (a new
    patient is not penalised for the days before they started); overlapping fills shift forward
    (rules.pdc). Fills still in transit (dispensed_on after today) do not count yet.
    """
    end = today()
    start = end - timedelta(days=window_days - 1)
    active = sa.select(Prescription.patient_id).where(Prescription.status == RxStatus.ACTIVE)
    stmt = (sa.select(Order.patient_id, Order.dispensed_on, Order.days_supply, Formula.form, Formula.strength_mg)
            .join(Prescription, Prescription.id == Order.prescription_id).join(Formula, Formula.id == Prescription.formula_id)
            .where(Order.state == OrderState.DISPENSED, Order.dispensed_on >= start - timedelta(days=PDC_LOOKBACK_DAYS),
                   Order.dispensed_on <= end, Order.patient_id.in_(active))
            .order_by(Order.patient_id, Order.dispensed_on, Order.id).execution_options(yield_per=2000))
    for patient_id, group in itertools.groupby(db.session.execute(stmt), key=lambda r: r[0]):
        rows = list(group)
        fills = [(r[1], int(r[2])) for r in rows]
        window_start = max(start, fills[0][0])
        last = rows[-1]
        yield AdherenceRow(patient_id=patient_id, pdc=rules.pdc(fills, window_start, end),
                           percent=rules.pdc_percent(fills, window_start, end), window_start=window_start,
                           last_fill_on=last[1], last_days_supply=int(last[2]),
                           last_product=rx_rules.product_name(last[3], last[4]))


def _adherence(window_days: int, limit: int, *, with_names: bool) -> AdherenceReport:
    threshold = settings().pdc_threshold_percent
    distribution = [0] * 10
    measured = below = 0

    def counted() -> Iterator[AdherenceRow]:
        nonlocal measured, below
        for row in _measure(window_days):
            measured += 1
            distribution[min(row.percent // 10, 9)] += 1
            if not rules.is_adherent(row.pdc, threshold):
                below += 1
                yield row

    lowest = heapq.nsmallest(limit, counted(), key=lambda r: (r.pdc, r.patient_id))
    rows: list[AdherenceRow] = []
    if with_names:
        people: dict[int, tuple[str, str | None]] = {}
        ids = [r.patient_id for r in lowest]
        for i in range(0, len(ids), 1000):  # chunks keep the IN list within every database's limits
            for pid, last, first, phone in db.session.execute(
                    sa.select(Patient.id, Patient.last_name, Patient.first_name, Patient.phone)
                    .where(Patient.id.in_(ids[i:i + 1000]))).all():
                people[pid] = (f"{last}, {first}", phone)
        rows = [replace(r, name=people[r.patient_id][0], phone=people[r.patient_id][1]) for r in lowest]
    end = today()
    return AdherenceReport(window_days=window_days, window_start=end - timedelta(days=window_days - 1), window_end=end,
                           threshold_percent=threshold, measured=measured, below_count=below,
                           distribution=distribution, rows=rows, show_names=with_names)


def adherence(actor: Actor, *, window_days: int | None = None, limit: int = 100) -> AdherenceReport:
    """The adherence report: the distribution for anyone who sees reports; names and phones (the call
    list) only for clinical staff — admins run the business, not patient care."""
    audit.require(actor, Permission.VIEW_REPORTS, what="see reports")
    report = _adherence(_window(window_days), max(1, min(limit, 500)),
                        with_names=actor.can(Permission.VIEW_CLINICAL))
    audit.record(actor, "report.view", details={"report": "adherence"})
    return report


def adherence_below_threshold(actor: Actor, limit: int = 10) -> list[AdherenceRow]:
    """Patients under the PDC threshold over the default window, lowest first: the pharmacist's call list."""
    audit.require(actor, Permission.VIEW_CLINICAL, what="see the adherence call list")
    return _adherence(_window(None), max(1, min(limit, 500)), with_names=True).rows


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
    page = MoneyPage(months=months, revenue=revenue, by_form=_fills_by_form(months), average=_average_cost(months),
                     outstanding=_outstanding(ROWS_SHOWN), out_of_band=price_rows(out_of_band_only=True),
                     period_start=_period_start(months))
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


def _revenue_csv(months: int, window_days: int | None) -> Iterator[str]:
    return _csv(["month", "paid", "refunded", "net"],
                ([m.month, _dollars(m.paid_cents), _dollars(m.refunded_cents), _dollars(m.net_cents)] for m in _revenue(months)))


def _forms_csv(months: int, window_days: int | None) -> Iterator[str]:
    return _csv(["form", "fills", "patients", "price_total", "days_supply", "monthly_equivalent"],
                ([f.form, f.fills, f.patients, _dollars(f.price_cents), f.days_supply, _dollars(f.monthly_equivalent_cents)]
                 for f in _fills_by_form(months)))


def _average_csv(months: int, window_days: int | None) -> Iterator[str]:
    stmt = _patient_monthly_stmt(_period_start(months)).order_by(Patient.id).execution_options(yield_per=2000)

    def rows() -> Iterator[list[object]]:
        # Runs while the response streams (after the request's commit), so the server-side cursor
        # PostgreSQL uses for yield_per lives in its own transaction.
        for row in db.session.execute(stmt):
            p = _patient_monthly(row)
            yield [p.patient_id, p.name, p.fills, _dollars(p.price_cents), p.days_supply, _dollars(p.monthly_equivalent_cents)]

    return _csv(["patient_id", "patient", "fills", "price_total", "days_supply", "monthly_equivalent"], rows())


def _outstanding_csv(months: int, window_days: int | None) -> Iterator[str]:
    stmt, owed = _outstanding_stmt()
    stmt = stmt.order_by(owed.desc(), Patient.id).execution_options(yield_per=2000)

    def rows() -> Iterator[list[object]]:
        for row in db.session.execute(stmt):  # lazily, like _average_csv
            o = _outstanding_row(row)
            yield [o.patient_id, o.name, o.phone or "", _dollars(o.charged_cents), _dollars(o.net_paid_cents),
                   _dollars(o.owed_cents)]

    return _csv(["patient_id", "patient", "phone", "charged", "net_paid", "owed"], rows())


def _out_of_band_csv(months: int, window_days: int | None) -> Iterator[str]:
    return _csv(["entry_id", "formula", "quantity", "days_supply", "price", "monthly_equivalent", "band"],
                ([r.id, r.formula_code, r.quantity_text, r.days_supply, _dollars(r.price_cents),
                  _dollars(r.monthly_equivalent_cents), r.band] for r in price_rows(out_of_band_only=True)))


def _adherence_csv(months: int, window_days: int | None) -> Iterator[str]:
    report = _adherence(_window(window_days), MAX_ID, with_names=True)
    return _csv(["patient_id", "patient", "phone", "pdc_percent", "window_start", "last_fill", "last_days_supply", "product"],
                ([r.patient_id, r.name, r.phone or "", r.percent, r.window_start.isoformat(), r.last_fill_on.isoformat(),
                  r.last_days_supply, r.last_product] for r in report.rows))


EXPORTS: dict[str, Callable[[int, int | None], Iterator[str]]] = {
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
    window = _window(window_days) if name == "adherence" else None
    audit.record(actor, "report.export", details={"report": name})
    return f"{name}-{today().isoformat()}.csv", EXPORTS[name](months, window)


# ---------------------------------------------------------------------------------------------
# One report at a time (the API)
# ---------------------------------------------------------------------------------------------


def fills_by_form(actor: Actor, months: int = 12) -> list[FormFills]:
    """Dispensed fills per form over the last `months` local months."""
    audit.require(actor, Permission.VIEW_REPORTS, what="see reports")
    return _fills_by_form(_months(months))


def average_monthly_cost(actor: Actor, months: int = 12) -> AverageCost:
    """The mean of each patient's monthly equivalent over the last `months` local months."""
    audit.require(actor, Permission.VIEW_REPORTS, what="see reports")
    return _average_cost(_months(months))


def out_of_band(actor: Actor) -> list[PriceRow]:
    """Current price-list entries whose monthly equivalent is outside the band."""
    audit.require(actor, Permission.VIEW_REPORTS, what="see reports")
    return price_rows(out_of_band_only=True)
