"""Adherence (PDC): the live measure over any window, the nightly snapshot that the pages read, and the call list.

Split from billing/reports.py (the money reports): the snapshot is computed by `flask reports refresh-adherence`
and the scheduler's nightly job; the Adherence page, the API, the dashboard's call list and the adherence CSV
export read it.
"""
from __future__ import annotations

import functools
import heapq
import itertools
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import sqlalchemy as sa

from pharmacy.billing import rules
from pharmacy.billing.models import AdherenceSnapshot, AdherenceSummary
from pharmacy.compounding.models import Formula, Order
from pharmacy.compounding.rules import OrderState
from pharmacy.core import audit, uow
from pharmacy.core.actor import Actor
from pharmacy.core.context import now, settings, today
from pharmacy.core.errors import ValidationFailed
from pharmacy.core.roles import Permission
from pharmacy.core.rows import rows as read_rows
from pharmacy.extensions import db
from pharmacy.patients.models import Patient
from pharmacy.prescriptions import rules as rx_rules
from pharmacy.prescriptions.models import Prescription
from pharmacy.prescriptions.rules import RxStatus

log = logging.getLogger(__name__)

# Supply dispensed this long before the adherence window can still carry into it (180 days is the
# longest BUD, so no single fill covers more); earlier fills are not fetched.
PDC_LOOKBACK_DAYS = 180
PDC_PLACES = Decimal("0.0001")  # rules.pdc's four places
SNAPSHOT_BATCH = 2000  # patients per batch of the adherence refresh
# The day a fill reached the patient (the supply model's start; older rows without it: the day it left).
STARTS = sa.func.coalesce(Order.supply_starts_on, Order.dispensed_on)


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
        """"Nov 23, 2026 2:00 AM": when the snapshot was computed, at the pharmacy."""
        if self.computed_at is None:
            return ""
        return self.computed_at.astimezone(settings().timezone).strftime("%b %-d, %Y %-I:%M %p")

    @property
    def configured_window_days(self) -> int:
        return settings().pdc_window_days


def checked_window(window_days: int | None) -> int:
    days = settings().pdc_window_days if window_days is None else window_days
    if isinstance(days, bool) or not isinstance(days, int) or not 7 <= days <= 730:
        raise ValidationFailed("Choose an adherence window.", fields={"window_days": "Between 7 and 730 days."})
    return days


def _fills_query() -> sa.Select:
    """Dispensed fills with what the report shows of the last one (patient, day, supply, formula)."""
    return (sa.select(Order.patient_id, STARTS, Order.days_supply, Prescription.formula_id)
            .join(Prescription, Prescription.id == Order.prescription_id))


def _covered(fills: list[tuple[date, int]], start: date, end: date) -> tuple[date, int, int]:
    """(the patient's window start, days covered, days in the window), by the rules' own arithmetic (rules.pdc)."""
    window_start = max(start, fills[0][0])
    covered, total = rules.covered_days(fills, window_start, end)
    return window_start, covered, total


def _pdc(covered: int, total: int) -> Decimal:
    return (Decimal(covered) / Decimal(total)).quantize(PDC_PLACES, rounding=ROUND_HALF_UP)


def _measure(window_days: int) -> Iterator[AdherenceRow]:
    """PDC per patient with an active prescription, streaming one query ordered by patient (computed on request).

    A patient's window starts at the later of the report's start and their first fill (a new
    patient is not penalised for the days before they started); overlapping fills shift forward
    (rules.pdc). Fills still in transit (reaching the patient after today) do not count yet.
    """
    end = today()
    start = end - timedelta(days=window_days - 1)
    active = sa.select(Prescription.patient_id).where(Prescription.status == RxStatus.ACTIVE)
    stmt = (_fills_query()
            .where(Order.state == OrderState.DISPENSED, Order.dispensed_on >= start - timedelta(days=PDC_LOOKBACK_DAYS),
                   end >= STARTS, Order.patient_id.in_(active))
            .order_by(Order.patient_id, STARTS, Order.id).execution_options(yield_per=2000))
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
    window_days = checked_window(None)
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
    _write_summary()
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
    day = STARTS
    stmt = (sa.select(Order.patient_id, STARTS, Order.days_supply, Order.prescription_id)
            .where(Order.state == OrderState.DISPENSED, Order.patient_id > after, Order.patient_id <= ids[-1],
                   day >= start - timedelta(days=PDC_LOOKBACK_DAYS), day <= end)
            .order_by(Order.patient_id, STARTS, Order.id))
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
            "percent": rules.div_half_up(covered * 100, total),  # rules.pdc_percent, without walking the fills again
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


@functools.lru_cache(maxsize=8)
def _rows_below_query(threshold: int) -> sa.Select[Any]:
    """The call list's statement for a threshold, built once (Today reads it on every visit)."""
    s = AdherenceSnapshot
    lowest = (sa.select(s.patient_id.label("id")).where(s.pdc_milli <= 10 * threshold, _below(threshold))
              .order_by(s.pdc_milli, s.patient_id)  # along the index: ties within 0.1%
              .limit(sa.bindparam("b_limit", type_=sa.Integer)).subquery())
    return (sa.select(s.patient_id, s.covered_days, s.days_in_window, s.percent, s.window_start, s.last_fill_on,
                      s.last_days_supply, Formula.form, Formula.strength_mg.label("strength_mg"), Patient.last_name,
                      Patient.first_name, Patient.phone)
            .join(lowest, lowest.c.id == s.patient_id)
            .join(Patient, Patient.id == s.patient_id).join(Formula, Formula.id == s.last_formula_id)
            .order_by(s.pdc_milli, s.patient_id))


def _snapshot_rows_below(threshold: int, limit: int) -> list[AdherenceRow]:
    """The call list from the snapshot, lowest first: a range read of ix_adherence_snapshots_pdc up to the threshold.

    The lowest `limit` patients are picked by id along the index first, then joined to their names and formulas:
    joined in one select, a planner without statistics starts from the patients table and sorts (tens of ms)."""
    rows = read_rows(_rows_below_query(threshold), {"b_limit": limit})
    return [AdherenceRow(patient_id=r.patient_id, pdc=_pdc(r.covered_days, r.days_in_window), percent=r.percent,
                         window_start=r.window_start, last_fill_on=r.last_fill_on, last_days_supply=r.last_days_supply,
                         last_product=rx_rules.product_name(r.form, r.strength_mg), name=f"{r.last_name}, {r.first_name}",
                         phone=r.phone) for r in rows]


# The thousandths (pdc_milli) where a 10-point band or the threshold cannot be told from pdc_milli alone: percent
# ≥ 10·b exactly when 1000·PDC ≥ 100·b − 5, which pdc_milli (rounded half-up) settles except at 100·b − 5.
BAND_EDGES = tuple(100 * b - 5 for b in range(1, 10))


def _distribution_query(threshold: int) -> sa.Select:
    """Patients per band and below the threshold, with the snapshot's time, end and window, in one statement that
    reads the index rather than the table (why: the page is opened all day, the snapshot holds every patient).

    Every row whose pdc_milli decides its band and its side of the threshold is counted from
    ix_adherence_snapshots_pdc alone (index-only); the few at an edge (pdc_milli 95, 195 … 895, and 10 × the
    threshold) are read whole and banded by their own percent and exact PDC, as before. The time, end and window
    are those of the rows at either end of the patient ids: the refresh rewrites the snapshot in patient-id order,
    batch by batch, so the highest id holds the oldest computation and the lowest the newest end and window."""
    s = AdherenceSnapshot
    edges = [*BAND_EDGES, 10 * threshold]
    computed = sa.select(s.computed_at).order_by(s.patient_id.desc()).limit(1).scalar_subquery()
    newest = sa.select(s.window_end).order_by(s.patient_id).limit(1).scalar_subquery()
    period = sa.select(s.period_days).order_by(s.patient_id).limit(1).scalar_subquery()
    # Counted per pdc_milli in index order (no sort of every row; the edges are left out of the ≤ 1,001 groups, not
    # of every row: a NOT IN per row costs more than the count).
    per_milli = sa.select(s.pdc_milli.label("m"), sa.func.count().label("n")).group_by(s.pdc_milli).subquery()
    by_milli = sa.case((per_milli.c.m >= 896, 9), else_=(per_milli.c.m + 4) // 100)
    by_percent = sa.case((s.percent >= 90, 9), else_=s.percent // 10)
    inside = (sa.select(by_milli.label("band"), sa.func.sum(per_milli.c.n).label("n"),
                        sa.func.sum(sa.case((per_milli.c.m < 10 * threshold, per_milli.c.n), else_=0)).label("below"))
              .where(per_milli.c.m.not_in(edges)).group_by(by_milli))
    at_edges = (sa.select(by_percent.label("band"), sa.func.count().label("n"),
                          sa.func.sum(sa.case((_below(threshold), 1), else_=0)).label("below"))
                .where(s.pdc_milli.in_(edges)).group_by(by_percent))
    counts = sa.union_all(inside, at_edges).subquery()
    return sa.select(counts.c.band, counts.c.n, counts.c.below, computed, newest, period)


def _write_summary() -> None:
    """The distribution of the snapshot just written, counted once (AdherenceSummary), for the configured
    threshold; the report counts from the snapshot itself whenever this row does not match it."""
    threshold = settings().pdc_threshold_percent
    bands, below, computed, end, period = _count_distribution(threshold)
    summary = AdherenceSummary.__table__
    db.session.execute(sa.delete(summary))
    if computed is not None:
        db.session.execute(sa.insert(summary).values(
            computed_at=computed, window_end=end, period_days=period, threshold_percent=threshold, below=below,
            bands=bands))


def _count_distribution(threshold: int) -> tuple[list[int], int, datetime | None, date | None, int | None]:
    """Patients per band and under the threshold, counted from the snapshot (its index)."""
    distribution = [0] * 10
    below, computed, end, period = 0, None, None, None
    for b, n, n_below, oldest, window_end, period_days in db.session.execute(_distribution_query(threshold)).all():
        distribution[int(b)] += int(n)
        below += int(n_below or 0)
        computed = _aware(oldest)
        end = _day(window_end)
        period = int(period_days)
    return distribution, below, computed, end, period


@functools.cache
def _summary_query() -> sa.Select[Any]:
    """The stored distribution, only if it is the snapshot's: the same refresh time on the rows at both ends of
    the patient ids (a refresh under way has rewritten the low ids first), for the threshold asked."""
    s, m = AdherenceSnapshot, AdherenceSummary
    highest = sa.select(s.computed_at).order_by(s.patient_id.desc()).limit(1).scalar_subquery()
    lowest = sa.select(s.computed_at).order_by(s.patient_id).limit(1).scalar_subquery()
    return (sa.select(m.bands, m.below, m.computed_at, m.window_end, m.period_days)
            .where(m.threshold_percent == sa.bindparam("b_threshold", type_=sa.Integer),
                   m.computed_at == highest, m.computed_at == lowest)
            .order_by(m.id.desc()).limit(1))


def _adherence_snapshot(limit: int, *, with_names: bool) -> AdherenceReport:
    """The report from the snapshot: its stored distribution (or one read of its index), and the call list."""
    threshold = settings().pdc_threshold_percent
    stored = read_rows(_summary_query(), {"b_threshold": threshold})
    if stored:
        bands, below, computed, end, period = stored[0]
        distribution = [int(n) for n in bands]
    else:
        distribution, below, computed, end, period = _count_distribution(threshold)
    window_days = period or checked_window(None)
    end = end or today()
    rows_below = _snapshot_rows_below(threshold, limit) if with_names and below else []
    return AdherenceReport(window_days=window_days, window_start=end - timedelta(days=window_days - 1), window_end=end,
                           threshold_percent=threshold, measured=sum(distribution), below_count=below,
                           distribution=distribution, rows=rows_below, show_names=with_names, computed_at=computed,
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


def adherence_report(window_days: int | None, limit: int, *, with_names: bool) -> AdherenceReport:
    """The snapshot for the configured window (or the snapshot's own); any other window computed on request."""
    if window_days is None or window_days == snapshot_period():
        return _adherence_snapshot(limit, with_names=with_names)
    return _adherence_live(checked_window(window_days), limit, with_names=with_names)


def adherence(actor: Actor, *, window_days: int | None = None, limit: int = 100) -> AdherenceReport:
    """The adherence report: the distribution for anyone who sees reports; names and phones (the call
    list) only for clinical staff — admins run the business, not patient care.

    The configured window (PDC_WINDOW_DAYS) comes from the snapshot, with the time it was computed; another
    window is computed on request, over every fill in it (seconds at 100,000 patients).
    """
    audit.require(actor, Permission.VIEW_REPORTS, what="see reports")
    if window_days is not None:
        checked_window(window_days)
    report = adherence_report(window_days, max(1, min(limit, 500)), with_names=actor.can(Permission.VIEW_CLINICAL))
    audit.record(actor, "report.view", details={"report": "adherence"})
    return report


def adherence_below_threshold(actor: Actor, limit: int = 10) -> list[AdherenceRow]:
    """Patients under the PDC threshold, lowest first: the pharmacist's call list, from the snapshot
    (one indexed read; empty until the snapshot is first computed)."""
    audit.require(actor, Permission.VIEW_CLINICAL, what="see the adherence call list")
    return _snapshot_rows_below(settings().pdc_threshold_percent, max(1, min(limit, 500)))
