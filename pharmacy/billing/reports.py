"""Money reports and the CSV exports: a bounded number of queries each, whatever the number of patients.

Adherence (PDC) lives in billing/adherence.py; its CSV export is here with the others.

The reports read the running totals (billing/totals.py: kept in the same transaction as every order and payment
they sum, checked by `flask reports verify`), each bounded by its period: revenue and fills by form from a row per
month, the average monthly cost from each patient's row for the period's start (an index range, its highest rows
read from the top), and outstanding balances from a partial index of the patients who owe, read from the top.

Month boundaries (README "Billing decisions"): a payment belongs to the month *at the pharmacy* —
23:30 on 31 October in Chicago is October, although it is already November in UTC; a fill to the month of its
dispensing day. The totals are kept per local month, so the reports only name months.
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
from pharmacy.billing.models import CostWindow, CostWindowTotal, FillMonth, PatientBalance, RevenueMonth
from pharmacy.billing.pricing import MAX_ID, PriceRow, price_rows
from pharmacy.core import audit
from pharmacy.core.actor import Actor
from pharmacy.core.context import today
from pharmacy.core.errors import NotFound, ValidationFailed
from pharmacy.core.roles import Permission
from pharmacy.extensions import db
from pharmacy.patients.models import Patient
from pharmacy.prescriptions.rules import Form

MAX_MONTHS = rules.MAX_REPORT_MONTHS
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
    """One statement: the period's rows of the monthly totals (at most MAX_MONTHS rows)."""
    starts = month_starts(today(), months)
    kept = {m: (int(p), int(r)) for m, p, r in db.session.execute(
        sa.select(RevenueMonth.month, RevenueMonth.paid_cents, RevenueMonth.refunded_cents)
        .where(RevenueMonth.month >= starts[0], RevenueMonth.month < starts[-1])).all()}
    return [MonthRevenue(d.strftime("%Y-%m"), d.strftime("%b %Y"), *kept.get(d, (0, 0))) for d in starts[:-1]]


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


def _fills_by_form(months: int) -> list[FormFills]:
    """One statement over the period's rows of the monthly totals per form. The patients: those whose latest fill of
    the form is in the period (FillMonth.patients_last), which is exactly those with a fill in it — the period runs
    to today."""
    start = _period_start(months)
    rows = db.session.execute(
        sa.select(FillMonth.form, sa.func.sum(FillMonth.fills), sa.func.sum(FillMonth.patients_last),
                  sa.func.sum(FillMonth.price_cents), sa.func.sum(FillMonth.days_supply))
        .where(FillMonth.month >= start).group_by(FillMonth.form)
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
    """Per patient: fills dispensed since `start`, their prices and supply (medicine only, no shipping) — the
    patients' rows of the cost windows for that start."""
    return (sa.select(Patient.id, Patient.last_name, Patient.first_name, CostWindow.fills, CostWindow.price_cents,
                      CostWindow.days_supply)
            .join(CostWindow, CostWindow.patient_id == Patient.id).where(CostWindow.start_month == start))


def patient_label(patient_id: int, last: str, first: str, *, with_names: bool) -> str:
    """A patient as a money report names them: "Last, First" for clinical staff; "Patient #12" for the others
    (admins see reports without names and phones: minimum necessary)."""
    return f"{last}, {first}" if with_names else f"Patient #{patient_id}"


def _patient_monthly(row: sa.Row, *, with_names: bool) -> PatientMonthly:
    pid, last, first, n, price, days = row
    return PatientMonthly(pid, patient_label(pid, last, first, with_names=with_names), int(n), int(price or 0),
                          int(days or 0))


def _average_cost(months: int, *, with_names: bool) -> AverageCost:
    """Each patient's monthly equivalent (their prices × 30 / their days, kept with their cost window), then the mean
    across patients (half-up to the cent) — in one statement: the count and the sum kept for the period's start
    (CostWindowTotal, one row), and the highest windows read from the top of ix_cost_windows_monthly."""
    start = _period_start(months)
    in_period = CostWindow.start_month == start
    kept = CostWindowTotal.start_month == start
    n = sa.select(CostWindowTotal.patients).where(kept).scalar_subquery()
    total = sa.select(CostWindowTotal.monthly_cents).where(kept).scalar_subquery()
    rows = db.session.execute(
        sa.select(CostWindow.patient_id.label("pid"), CostWindow.fills, CostWindow.price_cents, CostWindow.days_supply,
                  Patient.last_name, Patient.first_name, n.label("n"), total.label("total"))
        .join(Patient, Patient.id == CostWindow.patient_id).where(in_period)
        # Both keys descending: the index read backwards from the top (a mixed order sorted the whole period).
        .order_by(CostWindow.monthly_cents.desc(), CostWindow.patient_id.desc()).limit(ROWS_SHOWN)
    ).all()
    count = int(rows[0].n or 0) if rows else 0
    total_cents = int(rows[0].total or 0) if rows else 0
    average = (2 * total_cents + count) // (2 * count) if count else 0
    highest = [PatientMonthly(r.pid, patient_label(r.pid, r.last_name, r.first_name, with_names=with_names),
                              int(r.fills), int(r.price_cents), int(r.days_supply)) for r in rows]
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
    """Patients who owe (full history, exact), largest balance first: the kept balances (charged fills minus net
    payments), read from the top of the partial index of those who owe, names joined for those rows only. Each row
    carries the count and total of all who owe (the same index's range), so one statement gives the page its rows
    and its totals."""
    owing = PatientBalance.owed_cents > sa.literal_column("0")  # a literal: the partial index's own condition
    n = sa.select(sa.func.count()).select_from(PatientBalance).where(owing).scalar_subquery()
    total = sa.select(sa.func.sum(PatientBalance.owed_cents)).where(owing).scalar_subquery()
    return (sa.select(Patient.id, Patient.last_name, Patient.first_name, Patient.phone, PatientBalance.charged_cents,
                      (PatientBalance.paid_cents - PatientBalance.refunded_cents).label("net_paid"),
                      PatientBalance.owed_cents.label("owed"), n.label("n"), total.label("total"))
            .join(Patient, Patient.id == PatientBalance.patient_id).where(owing)
            .order_by(PatientBalance.owed_cents.desc(), Patient.last_name, Patient.id))


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
