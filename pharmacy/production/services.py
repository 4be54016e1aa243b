"""The production plan: for each of the next business days, what must be compounded to be ready on time, grouped by
formula and strength, with the ingredients it needs against the stock that can still be used, and the bench's load
against its capacity (overloads with a lighter earlier day to move work to).

A cross-feature read (like the Today page): open orders, refill requests waiting, auto-refills, the refills the
supply model expects and renewals pending, read as grouped rows — a fixed number of statements whatever the number
of patients (tests/web/test_production_queries.py, benchmarks/bench_production.py). The arithmetic is
production/rules.py's.
"""
from __future__ import annotations

import csv
import io
import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import ROUND_CEILING, ROUND_HALF_UP, Decimal
from functools import lru_cache
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import aliased, selectinload

from pharmacy.autorefill.models import Enrolment
from pharmacy.compounding.models import Formula, Order
from pharmacy.compounding.rules import DeliveryMethod, OrderState, UspCategory
from pharmacy.core import audit
from pharmacy.core.actor import Actor
from pharmacy.core.calendar import BusinessCalendar
from pharmacy.core.context import business_calendar, settings, today
from pharmacy.core.errors import ValidationFailed
from pharmacy.core.roles import Permission
from pharmacy.extensions import db
from pharmacy.inventory import reads as stock
from pharmacy.inventory import rules as stock_rules
from pharmacy.inventory.rules import LotLevel, Projection
from pharmacy.inventory.settings import stock_settings
from pharmacy.patients.models import Patient
from pharmacy.prescriptions import rules as rx_rules
from pharmacy.prescriptions.models import Prescription
from pharmacy.prescriptions.rules import Form, RxStatus
from pharmacy.production import rules
from pharmacy.production.rules import IngredientLine, Levelling, Source
from pharmacy.refills import rules as refill_rules
from pharmacy.refills.models import RefillRequest, RenewalRequest
from pharmacy.refills.rules import RefillRequestState, RenewalState
from pharmacy.supply import reads as supply_reads

PLANNED_ORDER_STATES = (OrderState.REQUESTED, OrderState.VERIFIED)  # not yet on the bench
MAX_SHIPPING = 30  # patients.shipping_days' check constraint
RECENTLY_OUT_DAYS = 7  # an expected refill whose supply ran out longer ago is not planned (the patient lapsed)


@dataclass
class Line:
    """One formula on one day."""

    formula: Formula
    units: Decimal = Decimal(0)
    preparations: int = 0
    late: int = 0
    by_source: dict[Source, int] = field(default_factory=dict)

    @property
    def product(self) -> str:
        return rx_rules.product_name(self.formula.form, self.formula.strength_mg)

    @property
    def units_text(self) -> str:
        """Capsules in whole numbers (rounded up: half a capsule is still one to fill); a liquid's mL or a cream's g
        to the tenth, as measured (10.5 mL is not 10)."""
        if Form(self.formula.form) == Form.CAPSULE:
            return rx_rules.quantity_text(self.formula.form, self.units.quantize(Decimal("1"), rounding=ROUND_CEILING))
        tenth = self.units.quantize(Decimal("0.1"), rounding=ROUND_HALF_UP)
        whole = tenth == tenth.to_integral_value()
        return rx_rules.quantity_text(self.formula.form, tenth.quantize(Decimal(1)) if whole else tenth)


@dataclass
class PlanDay:
    day: date
    lines: list[Line]
    load: int
    capacity: int
    moved_in: int = 0
    moved_out: int = 0
    over: int = 0

    @property
    def overloaded(self) -> bool:
        return self.load > self.capacity


@dataclass
class IngredientNeed:
    name: str
    unit: str
    needed: Decimal
    on_hand: Decimal  # usable today
    projection: Projection
    first_lot: LotLevel | None
    reorder_point: Decimal | None
    uncounted: list[LotLevel] = field(default_factory=list)  # usable lots not counted yet: their stock is unknown

    @property
    def short(self) -> bool:
        """Short by the counted stock, with no lot of unknown quantity that might cover it."""
        return self.projection.short_on is not None and not self.uncounted

    @property
    def to_count(self) -> bool:
        """The counted stock does not cover the plan, and lots not counted yet may: count them to know."""
        return self.projection.short_on is not None and bool(self.uncounted)


@dataclass
class Plan:
    today: date
    days: list[PlanDay]
    ingredients: list[IngredientNeed]
    levelling: Levelling
    capacity: int
    unplanned: int = 0  # prescriptions whose next fill could not be worked out (an odd dose): see them one by one

    @property
    def warnings(self) -> list[str]:
        """What to act on now, soonest first: days over capacity (and where to move the work), ingredients that run
        short within the plan."""
        out = []
        for move in self.levelling.moves:
            out.append(f"{rx_rules.format_date(move.from_day)} is over capacity: make {move.count} of its "
                       f"preparations on {rx_rules.format_date(move.to_day)} instead (room left that day).")
        for day, n in sorted(self.levelling.over.items()):
            out.append(f"{rx_rules.format_date(day)} is {n} over capacity with no lighter day before it: add bench "
                       "time or start early.")
        for need in self.ingredients:
            if need.to_count:
                names = ", ".join(lot.label for lot in need.uncounted)
                out.append(f"{need.name}: {names} not counted yet — count {'it' if len(need.uncounted) == 1 else 'them'}"
                           " to know whether the plan is covered.")
            if need.short:
                out.append(f"{need.name} runs short on {rx_rules.format_date(need.projection.short_on)}: "  # type: ignore[arg-type]
                           f"{stock_rules_amount(need.projection.shortfall, need.unit)} missing over the plan.")
        return out

    @property
    def total(self) -> int:
        return sum(d.load for d in self.days)


def stock_rules_amount(value: Decimal, unit: str) -> str:
    return f"{rx_rules.format_amount(value.quantize(Decimal('0.001')))} {unit}"


# ---- reading the work -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Work:
    formula_id: int
    run_out: date | None
    shipping_days: int
    count: int
    source: Source
    quantity: Decimal | None = None  # known (an order's)
    dose: Decimal | None = None
    days_supply: int = 30
    titration: str | None = None
    days_dispensed: int = 0


def _shipping(method: Any, days: int | None) -> int:
    return refill_rules.shipping_days_for(method, int(days or 0))


def _titration_key() -> tuple[Any, Any]:
    """The titration (None when plain) and the days dispensed the next fill's size depends on: all of them along a
    titration (the steps still ahead), else only the days of the current fill already dispensed (a partial's rest is
    what is owed) — 0 for most prescriptions, so they group together."""
    # Literals, not bound parameters: PostgreSQL matches GROUP BY expressions to the selected ones as written.
    text = sa.cast(Prescription.titration, sa.Text)
    plain = sa.or_(Prescription.titration.is_(None), text.in_([sa.literal_column("'null'"), sa.literal_column("'[]'")]))
    return (sa.case((plain, sa.null()), else_=text),
            sa.case((plain, Prescription.days_dispensed % Prescription.days_supply), else_=Prescription.days_dispensed))


def _open_orders() -> sa.Select[Any]:
    """Prescriptions with an order not yet dispensed or cancelled (read once along the state index)."""
    return sa.select(Order.prescription_id).where(
        Order.state.in_([s for s in OrderState if s not in (OrderState.DISPENSED, OrderState.CANCELLED)]))


def _orders() -> Iterable[_Work]:
    rows = db.session.connection().execute(
        sa.select(Prescription.formula_id, Prescription.latest_run_out_date, Order.delivery_method,
                  Patient.shipping_days, sa.func.sum(Order.quantity), sa.func.count())
        .select_from(Order).join(Prescription, Prescription.id == Order.prescription_id)
        .join(Patient, Patient.id == Order.patient_id)
        .where(Order.state.in_(PLANNED_ORDER_STATES), Prescription.status == RxStatus.ACTIVE)
        .group_by(Prescription.formula_id, Prescription.latest_run_out_date, Order.delivery_method,
                  Patient.shipping_days)
    ).all()
    for formula_id, run_out, method, ship, qty, n in rows:
        yield _Work(formula_id, run_out, _shipping(method, ship), int(n), Source.ORDER, quantity=Decimal(qty))


def _grouped(stmt: Any, delivery: Any, source_of: Any, extra: tuple[Any, ...] = ()) -> Iterable[_Work]:
    """Prescriptions grouped by what their next fill's bench day and size depend on."""
    titration, dispensed = _titration_key()
    cols = (Prescription.formula_id, Prescription.latest_run_out_date, delivery, Patient.shipping_days,
            Prescription.dose_mg, Prescription.days_supply, titration, dispensed, *extra)
    rows = db.session.connection().execute(stmt.add_columns(*cols, sa.func.count()).group_by(*cols)).all()
    for row in rows:
        formula_id, run_out, method, ship, dose, days, steps, done = row[:8]
        yield _Work(formula_id, run_out, _shipping(method, ship), int(row[-1]), source_of(row), dose=Decimal(dose),
                    days_supply=int(days), titration=steps, days_dispensed=int(done or 0))


def _requests() -> Iterable[_Work]:
    """Requests waiting on active prescriptions with no order yet (a fill started at the counter while the request
    waits is the order's work; a held prescription's request cannot be approved)."""
    stmt = (sa.select().select_from(RefillRequest).join(Prescription, Prescription.id == RefillRequest.prescription_id)
            .join(Patient, Patient.id == Prescription.patient_id)
            .where(RefillRequest.state == RefillRequestState.OPEN, Prescription.status == RxStatus.ACTIVE,
                   Prescription.id.not_in(_open_orders())))
    return _grouped(stmt, RefillRequest.delivery_method, lambda _row: Source.REQUEST)


def _expected(low: date, high: date, day: date) -> Iterable[_Work]:
    """Active prescriptions with refills left whose supply runs out in [low, high], with nothing ordered or asked
    for yet — what the reminders are asking the patients for; auto-refill enrolments separately (they will ask)."""
    # Uncorrelated NOT IN: the few open orders, requests and renewals are read once along their state indexes,
    # instead of a probe of each for the tens of thousands of prescriptions in the window. A prescription with a
    # renewal awaited is the renewals' line (one fill, counted once).
    open_orders = _open_orders()
    open_requests = sa.select(RefillRequest.prescription_id).where(
        RefillRequest.state.in_([RefillRequestState.OPEN, RefillRequestState.AWAITING_RENEWAL]))
    open_renewals = sa.select(RenewalRequest.prescription_id).where(
        RenewalRequest.state.in_([RenewalState.NEEDED, RenewalState.SENT]))
    authorized_days = Prescription.days_supply * (1 + sa.func.coalesce(Prescription.refills_authorized, 0))
    enrolled = Enrolment.id.is_not(None)
    stmt = (sa.select().select_from(Prescription).join(Patient, Patient.id == Prescription.patient_id)
            .join(Enrolment, sa.and_(Enrolment.prescription_id == Prescription.id, Enrolment.ended_at.is_(None)),
                  isouter=True)
            .where(Prescription.status == RxStatus.ACTIVE, Prescription.latest_run_out_date >= low,
                   Prescription.latest_run_out_date <= high, Prescription.expiry_date >= day,
                   sa.func.coalesce(Prescription.days_dispensed, 0) < authorized_days,
                   Prescription.id.not_in(open_orders), Prescription.id.not_in(open_requests),
                   Prescription.id.not_in(open_renewals)))
    # Nothing is asked for on these prescriptions (NOT IN open_requests): the next fill travels as the patient
    # prefers (refills.rules.next_fill_delivery with no waiting request).
    return _grouped(stmt, Patient.delivery_preference, lambda row: Source.AUTO if row[8] else Source.EXPECTED,
                    extra=(enrolled,))


def _renewals() -> Iterable[_Work]:
    """Renewals awaited: the fill that follows travels as the request waiting for the renewal asked (if one does),
    else as the patient prefers (refills.rules.next_fill_delivery, in SQL: supply/reads.next_fill_delivery_sql)."""
    waiting = aliased(RefillRequest, name="waiting")
    stmt = (sa.select().select_from(RenewalRequest)
            .join(Prescription, Prescription.id == RenewalRequest.prescription_id)
            .join(Patient, Patient.id == Prescription.patient_id)
            .join(waiting, sa.and_(waiting.prescription_id == Prescription.id,
                                   waiting.state.in_([RefillRequestState.OPEN, RefillRequestState.AWAITING_RENEWAL])),
                  isouter=True)
            .where(RenewalRequest.state.in_([RenewalState.NEEDED, RenewalState.SENT]),
                   Prescription.status == RxStatus.ACTIVE, Prescription.id.not_in(_open_orders())))
    return _grouped(stmt, supply_reads.next_fill_delivery_sql(waiting.delivery_method, Patient.delivery_preference),
                    lambda _row: Source.RENEWAL)


# ---- the plan -------------------------------------------------------------------------------------------------

def _formulas() -> dict[int, Formula]:
    return {f.id: f for f in db.session.execute(
        sa.select(Formula).options(selectinload(Formula.ingredients))).scalars()}


def _longest_journey() -> int:
    """The most shipping days any patient who ships has (one statement): bounds the plan's run-out window."""
    days = db.session.execute(sa.select(sa.func.max(Patient.shipping_days))
                              .where(Patient.delivery_preference == DeliveryMethod.SHIP)).scalar_one_or_none()
    return min(int(days or 0), MAX_SHIPPING)


def _window(day: date, last: date, formulas: dict[int, Formula], calendar: BusinessCalendar) -> tuple[date, date]:
    """The run-out dates whose order-by date can fall on a plan day: from a week ago (recently out) to the last day
    plus the longest lead time, the longest journey and the safety buffer (and a weekend)."""
    lead = max((f.lead_time_business_days for f in formulas.values()), default=0)
    journey = _longest_journey()
    high = calendar.add_business_days(last, lead) + timedelta(days=settings().safety_buffer_days + journey + 3)
    return day - timedelta(days=RECENTLY_OUT_DAYS), high


@dataclass
class _Tally:
    """The plan's work placed on bench days, before levelling."""

    lines: dict[tuple[date, int], Line] = field(default_factory=dict)
    load: dict[date, int] = field(default_factory=lambda: defaultdict(int))
    movable: dict[date, int] = field(default_factory=lambda: defaultdict(int))
    unplanned: int = 0


def _place(work: list[_Work], formulas: dict[int, Formula], day: date, last: date) -> _Tally:
    """Each piece of work on its bench day (its order-by date), with the units its fill needs."""
    buffer = settings().safety_buffer_days
    calendar = business_calendar()

    @lru_cache(maxsize=4096)
    def when(run_out: date | None, shipping: int, lead: int) -> rules.BenchDay:
        return rules.bench_day(run_out, today=day, shipping_days=shipping, buffer_days=buffer, lead_time=lead,
                               calendar=calendar)

    @lru_cache(maxsize=4096)
    def units(formula_id: int, dose: Decimal, days_supply: int, shipping: int, steps: str | None,
              done: int) -> Decimal:
        f = formulas[formula_id]
        parsed = rx_rules.parse_titration(json.loads(steps)) if steps else ()
        owed = days_supply - done % days_supply  # the rest of a partial fill, else a whole one
        length = rules.fill_days(owed, category=UspCategory(f.usp_category), shipping_days=shipping)
        return rules.units_for_fill(Form(f.form), f.strength_mg, dose, length, parsed, done)

    tally = _Tally()
    for w in work:
        f = formulas.get(w.formula_id)
        if f is None:
            continue
        bench = when(w.run_out, w.shipping_days, f.lead_time_business_days)
        if bench.day > last:
            continue
        if w.quantity is not None:
            qty = w.quantity
        else:
            try:
                qty = units(w.formula_id, w.dose, w.days_supply, w.shipping_days, w.titration,
                            w.days_dispensed) * w.count
            except (ValidationFailed, ValueError, ArithmeticError):
                tally.unplanned += w.count
                continue
        line = tally.lines.setdefault((bench.day, f.id), Line(formula=f))
        line.units += qty
        line.preparations += w.count
        line.late += w.count if bench.late else 0
        line.by_source[w.source] = line.by_source.get(w.source, 0) + w.count
        tally.load[bench.day] += w.count
        if rules.movable_category(UspCategory(f.usp_category)):
            tally.movable[bench.day] += w.count
    return tally


def build(*, days: int | None = None, day: date | None = None) -> Plan:
    """The plan for the next `days` business days (the setting by default) from `day` (today)."""
    cfg = stock_settings()
    day = day or today()
    calendar = business_calendar()
    plan_days = rules.business_days(day, days or cfg.plan_days, calendar)
    last = plan_days[-1]
    formulas = _formulas()
    low, high = _window(day, last, formulas, calendar)
    tally = _place([*_orders(), *_requests(), *_expected(low, high, day), *_renewals()], formulas, day, last)
    levelling = rules.level(plan_days, tally.load, tally.movable, cfg.bench_capacity)
    out_days = []
    for d in plan_days:
        day_lines = sorted((ln for (ld, _), ln in tally.lines.items() if ld == d),
                           key=lambda ln: (Form(ln.formula.form).value, ln.formula.strength_mg))
        out_days.append(PlanDay(
            day=d, lines=day_lines, load=tally.load.get(d, 0), capacity=cfg.bench_capacity,
            moved_in=sum(m.count for m in levelling.moves if m.to_day == d),
            moved_out=sum(m.count for m in levelling.moves if m.from_day == d),
            over=levelling.over.get(d, 0)))
    return Plan(today=day, days=out_days, ingredients=_ingredients(tally.lines, formulas, day), levelling=levelling,
                capacity=cfg.bench_capacity, unplanned=tally.unplanned)


def _ingredients(lines: dict[tuple[date, int], Line], formulas: dict[int, Formula], day: date) -> list[IngredientNeed]:
    """Per ingredient: what the plan needs day by day (from each formula's amounts), against its usable lots."""
    items = stock.items()
    needs: dict[str, dict[date, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
    units: dict[str, str] = {}
    for (d, formula_id), line in lines.items():
        f = formulas[formula_id]
        parts = [IngredientLine(i.name, i.amount, i.unit, i.per) for i in f.ingredients]
        for name, (amount, unit) in rules.ingredients_for(parts, line.units).items():
            target = units.setdefault(name, items[name].unit if name in items else unit)
            try:
                needs[name][d] += stock_rules.convert(amount, unit, target)
            except stock_rules.UnitMismatch:
                continue
    levels = stock.usable_levels(needs.keys(), units, day)
    out = []
    for name in sorted(needs):
        lots = [lot for lot in levels.get(name, []) if lot.counted]
        uncounted = [lot for lot in levels.get(name, []) if not lot.counted]
        by_day = sorted(needs[name].items())
        projection = stock_rules.project(by_day, lots)
        ordered = stock_rules.first_expiry_first(lots) or stock_rules.first_expiry_first(uncounted)
        item = items.get(name)
        out.append(IngredientNeed(
            name=name, unit=units[name], needed=sum((q for _, q in by_day), Decimal(0)),
            on_hand=sum((lot.on_hand for lot in lots), Decimal(0)), projection=projection,
            first_lot=ordered[0] if ordered else None, reorder_point=item.reorder_point if item else None,
            uncounted=uncounted))
    return out


def plan(actor: Actor, *, days: int | None = None) -> Plan:
    """The production plan page (and its CSV): staff who see clinical records. No patient is named in it."""
    audit.require(actor, Permission.VIEW_CLINICAL, what="see the production plan")
    result = build(days=days)
    audit.record(actor, "production.plan", entity=("production_plan", None), details={"days": len(result.days)})
    return result


def shows_plan(actor: Actor) -> bool:
    """The plan names no patient, but what a pharmacy makes is clinical work: clinical roles see it."""
    return actor.can(Permission.VIEW_CLINICAL)


def today_block(actor: Actor) -> Plan:
    """Today's part of the plan, the Today page's production block."""
    audit.require(actor, Permission.VIEW_CLINICAL, what="see the production plan")
    return build(days=1)


CSV_COLUMNS = ("day", "formula", "product", "units", "unit", "preparations", "late", "orders", "requests_waiting",
               "auto_refills", "expected_refills", "renewals_pending", "day_load", "capacity", "moved_in",
               "moved_out", "over_capacity")


def to_csv(result: Plan) -> str:
    """One row per day and formula (a day with nothing planned keeps one empty row, so every day is there)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for d in result.days:
        common = [d.load, d.capacity, d.moved_in, d.moved_out, d.over]
        if not d.lines:
            writer.writerow([d.day.isoformat(), "", "", 0, "", 0, 0, 0, 0, 0, 0, 0, *common])
        for ln in d.lines:
            writer.writerow([d.day.isoformat(), ln.formula.code, ln.product, str(ln.units.quantize(Decimal("0.001"))),
                             rx_rules.dose_unit(Form(ln.formula.form)), ln.preparations, ln.late,
                             *(ln.by_source.get(s, 0) for s in Source), *common])
    return out.getvalue()
