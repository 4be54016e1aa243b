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
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

import sqlalchemy as sa

from pharmacy.billing import rules
from pharmacy.billing.models import AdherenceSnapshot, Payment
from pharmacy.billing.pricing import MAX_ID, PriceRow, price_rows
from pharmacy.billing.rules import PaymentKind
from pharmacy.billing.services import charged_clause, local_day_start
from pharmacy.compounding.models import Formula, Order
from pharmacy.compounding.rules import OrderState
from pharmacy.core import audit, uow
from pharmacy.core.actor import Actor
from pharmacy.core.context import now, settings, today
from pharmacy.core.errors import NotFound, ValidationFailed
from pharmacy.core.roles import Permission
from pharmacy.extensions import db
from pharmacy.patients.models import Patient
from pharmacy.prescriptions import rules as rx_rules
from pharmacy.prescriptions.models import Prescription
from pharmacy.prescriptions.rules import Form, RxStatus

log = logging.getLogger(__name__)

MAX_MONTHS = 36
ROWS_SHOWN = 25
# Supply dispensed this long before the adherence window can still carry into it (180 days is the
# longest BUD, so no single fill covers more); earlier fills are not fetched.
PDC_LOOKBACK_DAYS = 180
PDC_PLACES = Decimal("0.0001")  # rules.pdc's four places
SNAPSHOT_BATCH = 2000  # patients per batch of the adherence refresh
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


def _patient_monthly(row: sa.Row) -> PatientMonthly:
    pid, last, first, n, price, days = row
    return PatientMonthly(pid, f"{last}, {first}", int(n), int(price or 0), int(days or 0))


def _monthly_cents(price: sa.ColumnElement[int], days: sa.ColumnElement[int]) -> sa.ColumnElement[int]:
    """rules.monthly_equivalent_cents in integer SQL: price × 30 / days, half-up (non-negative integers)."""
    return (60 * price + days) // (2 * days)


def _average_cost(months: int) -> AverageCost:
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
    highest = [PatientMonthly(r.pid, f"{r.last_name}, {r.first_name}", int(r.fills), int(r.price or 0), int(r.days or 0))
               for r in rows]
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


def _outstanding_row(row: sa.Row) -> Outstanding:
    return Outstanding(row[0], f"{row[1]}, {row[2]}", row[3], int(row[4]), int(row[5]))


def _outstanding(limit: int) -> OutstandingReport:
    rows = db.session.execute(_outstanding_stmt().limit(limit)).all()
    count = int(rows[0].n) if rows else 0
    total = int(rows[0].total) if rows else 0
    return OutstandingReport([_outstanding_row(r) for r in rows], count, total)


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
    # From the snapshot: when it was computed (the oldest row's time); None with `snapshot` set: never refreshed.
    # Without `snapshot` the report was computed on request (a window other than the snapshot's).
    computed_at: datetime | None = None
    snapshot: bool = False

    @property
    def computed_local(self) -> str:
        """"2026-11-23 02:00 CST": when the snapshot was computed, at the pharmacy."""
        if self.computed_at is None:
            return ""
        return self.computed_at.astimezone(settings().timezone).strftime("%Y-%m-%d %H:%M %Z")

    @property
    def configured_window_days(self) -> int:
        return settings().pdc_window_days


def _window(window_days: int | None) -> int:
    days = settings().pdc_window_days if window_days is None else window_days
    if isinstance(days, bool) or not isinstance(days, int) or not 7 <= days <= 730:
        raise ValidationFailed("Choose an adherence window.", fields={"window_days": "Between 7 and 730 days."})
    return days


def _fills_query() -> sa.Select:
    """Dispensed fills with what the report shows of the last one (patient, day, supply, formula)."""
    return (sa.select(Order.patient_id, Order.dispensed_on, Order.days_supply, Prescription.formula_id)
            .join(Prescription, Prescription.id == Order.prescription_id))


def _covered(fills: list[tuple[date, int]], start: date, end: date) -> tuple[date, int, int]:
    """(the patient's window start, days covered, days in the window), by the rules' own arithmetic (rules.pdc)."""
    window_start = max(start, fills[0][0])
    covered, total = rules._covered_days(fills, window_start, end)
    return window_start, covered, total


def _pdc(covered: int, total: int) -> Decimal:
    return (Decimal(covered) / Decimal(total)).quantize(PDC_PLACES, rounding=ROUND_HALF_UP)


def _measure(window_days: int) -> Iterator[AdherenceRow]:
    """PDC per patient with an active prescription, streaming one query ordered by patient (computed on request).

    A patient's window starts at the later of the report's start and their first fill (a new
    patient is not penalised for the days before they started); overlapping fills shift forward
    (rules.pdc). Fills still in transit (dispensed_on after today) do not count yet.
    """
    end = today()
    start = end - timedelta(days=window_days - 1)
    active = sa.select(Prescription.patient_id).where(Prescription.status == RxStatus.ACTIVE)
    stmt = (_fills_query()
            .where(Order.state == OrderState.DISPENSED, Order.dispensed_on >= start - timedelta(days=PDC_LOOKBACK_DAYS),
                   Order.dispensed_on <= end, Order.patient_id.in_(active))
            .order_by(Order.patient_id, Order.dispensed_on, Order.id).execution_options(yield_per=2000))
    products = _products()
    for patient_id, group in itertools.groupby(db.session.execute(stmt), key=lambda r: r[0]):
        rows = list(group)
        fills = [(r[1], int(r[2])) for r in rows]
        window_start, covered, total = _covered(fills, start, end)
        last = rows[-1]
        yield AdherenceRow(patient_id=patient_id, pdc=_pdc(covered, total),
                           percent=rules.pdc_percent(fills, window_start, end), window_start=window_start,
                           last_fill_on=last[1], last_days_supply=int(last[2]), last_product=products[last[3]])


def _products() -> dict[int, str]:
    """Every formula's product name (a short table: read once per report)."""
    return {fid: rx_rules.product_name(form, strength) for fid, form, strength in db.session.execute(
        sa.select(Formula.id, Formula.form, Formula.strength_mg)).all()}


def _with_names(rows: list[AdherenceRow]) -> list[AdherenceRow]:
    people: dict[int, tuple[str, str | None]] = {}
    ids = [r.patient_id for r in rows]
    for i in range(0, len(ids), 1000):  # chunks keep the IN list within every database's limits
        for pid, last, first, phone in db.session.execute(
                sa.select(Patient.id, Patient.last_name, Patient.first_name, Patient.phone)
                .where(Patient.id.in_(ids[i:i + 1000]))).all():
            people[pid] = (f"{last}, {first}", phone)
    return [replace(r, name=people[r.patient_id][0], phone=people[r.patient_id][1]) for r in rows]


def _adherence_live(window_days: int, limit: int, *, with_names: bool) -> AdherenceReport:
    """The report computed now, over every fill of the window (seconds at chain scale: a custom window only)."""
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
    end = today()
    return AdherenceReport(window_days=window_days, window_start=end - timedelta(days=window_days - 1), window_end=end,
                           threshold_percent=threshold, measured=measured, below_count=below,
                           distribution=distribution, rows=_with_names(lowest) if with_names else [],
                           show_names=with_names)


# ---- the snapshot: computed by `flask reports refresh-adherence` and the nightly job, read by the pages -----


@dataclass(frozen=True)
class AdherenceRefresh:
    measured: int
    window_days: int
    window_end: date
    computed_at: datetime


def refresh_adherence(*, batch_size: int = SNAPSHOT_BATCH, on_progress: Callable[[int], None] = lambda _n: None,
                      ) -> AdherenceRefresh:
    """Recompute every measured patient's PDC into adherence_snapshots; commits batch by batch.

    Streams the patients with an active prescription in id order, `batch_size` at a time: per batch one
    read of their fills in the window (plus the look-back), PDC in memory by the rules' own arithmetic,
    then one DELETE of the batch's id range and one INSERT of its rows (which also drops patients no
    longer measured), and a commit — so memory stays flat, the pages keep reading a complete snapshot
    while it runs (each patient's row is replaced in one step), and SQLite writers queue only briefly.
    `on_progress(n)` is called with the number of patients done in each batch.
    """
    window_days = _window(None)
    end = today()
    start = end - timedelta(days=window_days - 1)
    t = now()
    table = AdherenceSnapshot.__table__
    measured, after = 0, 0
    while True:
        ids = list(db.session.execute(
            sa.select(Prescription.patient_id).where(Prescription.status == RxStatus.ACTIVE,
                                                     Prescription.patient_id > after)
            .group_by(Prescription.patient_id).order_by(Prescription.patient_id).limit(batch_size)
        ).scalars())
        if not ids:
            break
        rows = _snapshot_rows(after, ids, start, end, window_days, t)
        db.session.execute(sa.delete(table).where(table.c.patient_id > after, table.c.patient_id <= ids[-1]))
        if rows:
            db.session.execute(sa.insert(table), rows)
        uow.commit_step()
        measured += len(rows)
        after = ids[-1]
        on_progress(len(ids))
    db.session.execute(sa.delete(table).where(table.c.patient_id > after))
    uow.commit_step()
    log.info("adherence snapshot refreshed: %d patient(s) measured over %d days", measured, window_days)
    return AdherenceRefresh(measured=measured, window_days=window_days, window_end=end, computed_at=t)


def _snapshot_rows(after: int, ids: list[int], start: date, end: date, window_days: int,
                   t: datetime) -> list[dict[str, object]]:
    """The snapshot rows of patients `ids` (sorted; all > after): two reads, PDC in memory.

    The fills: a range of ix_orders_report_patient (patient_id, state, dispensed_on, days_supply, prescription_id)
    read index-only. The day bounds are written so that no index can use them (coalesce), leaving the patient
    range as the only way in: no planner — with or without statistics — walks the whole period's fills for
    each batch instead. The formula of each patient's last fill comes from one read of the batch's prescriptions.
    """
    wanted = set(ids)
    day = sa.func.coalesce(Order.dispensed_on, Order.dispensed_on)
    stmt = (sa.select(Order.patient_id, Order.dispensed_on, Order.days_supply, Order.prescription_id)
            .where(Order.state == OrderState.DISPENSED, Order.patient_id > after, Order.patient_id <= ids[-1],
                   day >= start - timedelta(days=PDC_LOOKBACK_DAYS), day <= end)
            .order_by(Order.patient_id, Order.dispensed_on, Order.id))
    formulas = dict(db.session.execute(
        sa.select(Prescription.id, Prescription.formula_id)
        .where(Prescription.patient_id > after, Prescription.patient_id <= ids[-1])
    ).all())
    out: list[dict[str, object]] = []
    for patient_id, group in itertools.groupby(db.session.execute(stmt), key=lambda r: r[0]):
        if patient_id not in wanted:
            continue
        rows = list(group)
        fills = [(r[1], int(r[2])) for r in rows]
        window_start, covered, total = _covered(fills, start, end)
        last = rows[-1]
        out.append({
            "patient_id": patient_id, "pdc_milli": (2000 * covered + total) // (2 * total),
            "percent": rules._div_half_up(covered * 100, total),  # rules.pdc_percent, without walking the fills again
            "covered_days": covered, "days_in_window": total,
            "window_start": window_start, "window_end": end, "period_days": window_days, "last_fill_on": last[1],
            "last_days_supply": int(last[2]), "last_formula_id": formulas[last[3]], "computed_at": t,
        })
    return out


def _pdc_e4() -> sa.ColumnElement[int]:
    """The PDC in ten-thousandths, half-up from the exact fraction: rules.pdc × 10,000, in integer SQL (// is
    integer division on both databases; every operand is a non-negative integer)."""
    s = AdherenceSnapshot
    return (20000 * s.covered_days + s.days_in_window) // (2 * s.days_in_window)


def _below(threshold: int) -> sa.ColumnElement[bool]:
    """Not rules.is_adherent: the 4-place PDC under the threshold, exactly."""
    return _pdc_e4() < 100 * threshold


def _snapshot_rows_below(threshold: int, limit: int) -> list[AdherenceRow]:
    """The call list from the snapshot, lowest first: a range read of ix_adherence_snapshots_pdc up to the threshold."""
    s = AdherenceSnapshot
    rows = db.session.execute(
        sa.select(s.patient_id, s.covered_days, s.days_in_window, s.percent, s.window_start, s.last_fill_on,
                  s.last_days_supply, Formula.form, Formula.strength_mg, Patient.last_name, Patient.first_name,
                  Patient.phone)
        .join(Patient, Patient.id == s.patient_id).join(Formula, Formula.id == s.last_formula_id)
        .where(s.pdc_milli <= 10 * threshold, _below(threshold))
        .order_by(s.pdc_milli, _pdc_e4(), s.patient_id).limit(limit)
    ).all()
    return [AdherenceRow(patient_id=r.patient_id, pdc=_pdc(r.covered_days, r.days_in_window), percent=r.percent,
                         window_start=r.window_start, last_fill_on=r.last_fill_on, last_days_supply=r.last_days_supply,
                         last_product=rx_rules.product_name(r.form, r.strength_mg), name=f"{r.last_name}, {r.first_name}",
                         phone=r.phone) for r in rows]


def _adherence_snapshot(limit: int, *, with_names: bool) -> AdherenceReport:
    """The report from the snapshot: one grouped read of it (and one for the call list)."""
    s = AdherenceSnapshot
    threshold = settings().pdc_threshold_percent
    band = sa.case((s.percent >= 90, 9), else_=s.percent // 10)
    distribution = [0] * 10
    below, computed, end, period = 0, None, None, None
    for b, n, n_below, oldest, window_end, period_days in db.session.execute(
        sa.select(band, sa.func.count(), sa.func.sum(sa.case((_below(threshold), 1), else_=0)),
                  sa.func.min(s.computed_at), sa.func.max(s.window_end), sa.func.max(s.period_days))
        .group_by(band)
    ).all():
        distribution[int(b)] += int(n)
        below += int(n_below or 0)
        oldest = _aware(oldest)
        computed = oldest if computed is None else min(computed, oldest)
        end = _day(window_end) if end is None else max(end, _day(window_end))
        period = int(period_days) if period is None else max(period, int(period_days))
    window_days = period or _window(None)
    end = end or today()
    rows = _snapshot_rows_below(threshold, limit) if with_names and below else []
    return AdherenceReport(window_days=window_days, window_start=end - timedelta(days=window_days - 1), window_end=end,
                           threshold_percent=threshold, measured=sum(distribution), below_count=below,
                           distribution=distribution, rows=rows, show_names=with_names, computed_at=computed,
                           snapshot=True)


def _aware(value: datetime | str) -> datetime:
    """min()/max() may bypass the column type on SQLite: a naive UTC datetime or its text."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _day(value: date | str) -> date:
    return date.fromisoformat(value[:10]) if isinstance(value, str) else value


def snapshot_period() -> int | None:
    """The window the snapshot was computed over (None: never refreshed)."""
    return db.session.execute(
        sa.select(AdherenceSnapshot.period_days).order_by(AdherenceSnapshot.patient_id).limit(1)
    ).scalar_one_or_none()


def _adherence(window_days: int | None, limit: int, *, with_names: bool) -> AdherenceReport:
    """The snapshot for the configured window (or the snapshot's own); any other window computed on request."""
    if window_days is None or window_days == snapshot_period():
        return _adherence_snapshot(limit, with_names=with_names)
    return _adherence_live(_window(window_days), limit, with_names=with_names)


def adherence(actor: Actor, *, window_days: int | None = None, limit: int = 100) -> AdherenceReport:
    """The adherence report: the distribution for anyone who sees reports; names and phones (the call
    list) only for clinical staff — admins run the business, not patient care.

    The configured window (PDC_WINDOW_DAYS) comes from the snapshot, with the time it was computed; another
    window is computed on request, over every fill in it (seconds at 100,000 patients).
    """
    audit.require(actor, Permission.VIEW_REPORTS, what="see reports")
    if window_days is not None:
        _window(window_days)
    report = _adherence(window_days, max(1, min(limit, 500)), with_names=actor.can(Permission.VIEW_CLINICAL))
    audit.record(actor, "report.view", details={"report": "adherence"})
    return report


def adherence_below_threshold(actor: Actor, limit: int = 10) -> list[AdherenceRow]:
    """Patients under the PDC threshold, lowest first: the pharmacist's call list, from the snapshot
    (one indexed read; empty until the snapshot is first computed)."""
    audit.require(actor, Permission.VIEW_CLINICAL, what="see the adherence call list")
    return _snapshot_rows_below(settings().pdc_threshold_percent, max(1, min(limit, 500)))


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
    stmt = _outstanding_stmt().execution_options(yield_per=2000)

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
    report = _adherence(window_days, MAX_ID, with_names=True)
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
    window = window_days if name == "adherence" else None
    if window is not None:
        _window(window)
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
