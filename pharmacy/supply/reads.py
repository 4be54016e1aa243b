"""The facts several features read about a prescription, in one place with public names.

A prescription with its patient, formula and prescriber; its latest dispensed order; the order or refill
request in progress; what it authorizes and what the patient holds (the supply model of supply/rules.py,
read from the columns the prescription caches, or recomputed from its dispensings); the lots the bench
would use for it today. Feature services, workflows and pages ask here instead of writing the query again.
Read-only: the only writer of the supply cache is supply/services.py.
"""
from __future__ import annotations

import functools
from collections.abc import Iterable
from datetime import date
from typing import Any, NamedTuple, Protocol

import sqlalchemy as sa
from sqlalchemy.orm import joinedload

from pharmacy.compounding.models import Formula, FormulaIngredient, IngredientLot, Order
from pharmacy.compounding.rules import IN_PROGRESS, OrderState
from pharmacy.core.context import settings
from pharmacy.core.errors import NotFound
from pharmacy.core.ids import valid_id
from pharmacy.extensions import db
from pharmacy.prescriptions import rules as rx_rules
from pharmacy.prescriptions.models import Prescription, ScreeningAlert
from pharmacy.prescriptions.rules import RxStatus
from pharmacy.refills.models import OPEN_REQUEST_STATES, RefillRequest
from pharmacy.supply import rules
from pharmacy.supply.rules import Authorization, Dispensing, Supply

OPEN_ORDER_STATES: tuple[OrderState, ...] = tuple(s for s in OrderState if s in IN_PROGRESS)


@functools.cache
def _statement(name: str) -> Any:
    """The statements read here on every page that shows a prescription, built once per process with bind
    parameters (`b_rx`): building one — columns, joins, eager loads, its cache key — costs more Python than the
    database takes to answer it, several times a request on the refill page."""
    rx = sa.bindparam("b_rx", type_=sa.Integer)
    if name in ("prescription", "prescription_locked"):
        stmt = sa.select(Prescription).where(Prescription.id == rx).options(
            joinedload(Prescription.patient), joinedload(Prescription.formula), joinedload(Prescription.prescriber))
        if name == "prescription_locked":  # the row as it is once locked, even if this session read it before
            return stmt.with_for_update(of=Prescription).execution_options(populate_existing=True)
        return stmt
    if name == "latest_dispensed":
        return (sa.select(Order).where(Order.prescription_id == rx, Order.state == OrderState.DISPENSED)
                .order_by(Order.fill_number.desc()).limit(1))
    if name == "open_order":
        return (sa.select(Order).where(Order.prescription_id == rx, Order.state.in_(OPEN_ORDER_STATES))
                .order_by(Order.fill_number.desc()).limit(1))
    if name == "open_request":
        return sa.select(RefillRequest).where(RefillRequest.prescription_id == rx,
                                              RefillRequest.state.in_(OPEN_REQUEST_STATES))
    if name == "open_orders_of":
        return (sa.select(Order.prescription_id).distinct()
                .where(Order.prescription_id.in_(sa.bindparam("b_rxs", expanding=True, type_=sa.Integer)),
                       Order.state.in_(OPEN_ORDER_STATES)))
    if name == "lot_expiries":
        return (sa.select(FormulaIngredient.name, sa.func.max(IngredientLot.expiry_date))
                .join(IngredientLot, sa.and_(IngredientLot.ingredient_name == FormulaIngredient.name,
                                             IngredientLot.expiry_date >= sa.bindparam("b_day", type_=sa.Date),
                                             IngredientLot.quarantined_at.is_(None)), isouter=True)
                .where(FormulaIngredient.formula_id == sa.bindparam("b_formula", type_=sa.Integer))
                .group_by(FormulaIngredient.name))
    raise KeyError(name)


def prescription(rx_id: int, *, lock: bool = False) -> Prescription:
    """The prescription with its patient, formula and prescriber (one query); NotFound when there is none."""
    if not valid_id(rx_id):
        raise NotFound("No such prescription.")
    stmt = _statement("prescription_locked" if lock else "prescription")
    rx = db.session.execute(stmt, {"b_rx": rx_id}).unique().scalar_one_or_none()
    if rx is None:
        raise NotFound("No such prescription.")
    return rx


def latest_dispensed(rx_id: int) -> Order | None:
    """The prescription's most recent dispensed order."""
    return db.session.execute(_statement("latest_dispensed"), {"b_rx": rx_id}).scalar_one_or_none()


def latest_dispensed_of(rx_ids: Iterable[int]) -> dict[int, Order]:
    """The latest dispensed order of each prescription, in one query (the number is cached on the prescription)."""
    ids = sorted(set(rx_ids))
    if not ids:
        return {}
    rows = db.session.execute(
        sa.select(Order).join(Prescription, sa.and_(Prescription.id == Order.prescription_id,
                                                    Prescription.latest_fill_number == Order.fill_number))
        .where(Prescription.id.in_(ids))
    ).scalars()
    return {o.prescription_id: o for o in rows}


def supply_fill(rx: Prescription) -> Order | None:
    """The dispensed order whose supply the patient holds under `rx`: its own latest, or — for a replacement not yet
    dispensed — the latest of the prescription it carries supply from (`supply_source_id`, set by
    supply/services.carry_over), the very order reminders/planning.facts_query joins. Auto-refill keys a supply's
    turn on it, so a renewed prescription is asked for on its carried supply's order-by date, once."""
    if rx.latest_fill_number is None and rx.supply_source_id is not None:
        return latest_dispensed(rx.supply_source_id)
    return latest_dispensed(rx.id)


#: A chain of replacements is short; the bound only guards against a corrupt cycle (as refresh_with_successors).
MAX_REPLACEMENTS = 50


def current_successor(rx_id: int, patient_id: int, status: RxStatus) -> int:
    """The prescription a replaced one lives on as: follow the replacements forward (`replaces_id`), the same
    patient's only, while the one reached is itself replaced. `rx_id` itself when it is not replaced (active, on
    hold, discontinued) or nothing replaced it; an on-hold or discontinued successor is where the chain ends. One
    query per replacement followed, none for a prescription that was not replaced."""
    current = rx_id
    for _ in range(MAX_REPLACEMENTS):
        if status != RxStatus.REPLACED:
            break
        row = db.session.execute(
            sa.select(Prescription.id, Prescription.status)
            .where(Prescription.replaces_id == current, Prescription.patient_id == patient_id)
            .order_by(sa.case((Prescription.status == RxStatus.ACTIVE, 0), else_=1), Prescription.id.desc()).limit(1)
        ).first()
        if row is None:
            break
        current, status = row
    return current


def next_fill_delivery_sql(waiting: Any, preference: Any) -> Any:
    """SQL: how each prescription's next fill will travel — refills.rules.next_fill_delivery, the one rule, for the
    reads that work over many prescriptions in one statement (the reminder planners, the production plan): the
    method of the refill request waiting on it (`waiting`: that column, NULL when none waits), else the patient's
    delivery preference (`preference`)."""
    return sa.func.coalesce(waiting, preference)


def waiting_delivery(rx_id: Any) -> Any:
    """SQL: the delivery method of the refill request waiting on the prescription `rx_id` (a column of the enclosing
    statement), NULL when none waits; at most one does (a unique index), found along its prescription index."""
    return (sa.select(RefillRequest.delivery_method)
            .where(RefillRequest.prescription_id == rx_id, RefillRequest.state.in_(OPEN_REQUEST_STATES))
            .limit(1).scalar_subquery())


def open_order(rx_id: int) -> Order | None:
    """The order of this prescription being made (at most one at a time)."""
    return db.session.execute(_statement("open_order"), {"b_rx": rx_id}).scalar_one_or_none()


def open_request(rx_id: int) -> RefillRequest | None:
    """The refill request waiting on this prescription (at most one, enforced by a unique index)."""
    return db.session.execute(_statement("open_request"), {"b_rx": rx_id}).scalar_one_or_none()


def refill_request(request_id: int, *, lock: bool = False) -> RefillRequest:
    """A refill request by id (locked for a decision); NotFound when there is none."""
    stmt = sa.select(RefillRequest).where(RefillRequest.id == request_id)
    if lock:
        stmt = stmt.with_for_update()
    req = db.session.execute(stmt).scalar_one_or_none() if valid_id(request_id) else None
    if req is None:
        raise NotFound("No such refill request.")
    return req


def open_orders_of(rx_ids: Iterable[int]) -> set[int]:
    """Which of these prescriptions have an order in progress (one grouped query)."""
    ids = sorted(set(rx_ids))
    if not ids:
        return set()
    return set(db.session.execute(_statement("open_orders_of"), {"b_rxs": ids}).scalars())


def open_requests_of(rx_ids: Iterable[int]) -> set[int]:
    """Which of these prescriptions have a refill request waiting (one query)."""
    ids = sorted(set(rx_ids))
    if not ids:
        return set()
    return set(db.session.execute(
        sa.select(RefillRequest.prescription_id).where(RefillRequest.prescription_id.in_(ids),
                                                       RefillRequest.state.in_(OPEN_REQUEST_STATES))
    ).scalars())


def alerts_for(rx_id: int, order_id: int | None = None) -> list[ScreeningAlert]:
    """The current screening alerts of a prescription (or of one of its orders), most serious first."""
    stmt = sa.select(ScreeningAlert).where(ScreeningAlert.prescription_id == rx_id, ScreeningAlert.current.is_(True))
    stmt = stmt.where(ScreeningAlert.order_id.is_(None) if order_id is None else ScreeningAlert.order_id == order_id)
    rank = sa.case({s.value: r for s, r in rx_rules.SEVERITY_RANK.items()}, value=ScreeningAlert.severity)
    return list(db.session.execute(stmt.order_by(rank, ScreeningAlert.id)).scalars())


def blocking(alerts: Iterable[ScreeningAlert]) -> list[rx_rules.Alert]:
    """The alerts that stop verification or dispensing (hard stops always; others until resolved)."""
    return rx_rules.blocking_alerts(
        [(rx_rules.Alert(code=a.code, severity=a.severity, message=a.message), a.resolved) for a in alerts])


def blocking_alerts(rx_id: int, order_id: int | None = None) -> list[rx_rules.Alert]:
    return blocking(alerts_for(rx_id, order_id))


# ---- supply ---------------------------------------------------------------------------------------------


class CachedSupply(Protocol):
    """A prescription's columns the supply is worked out from: the ORM object, or those columns read as a row (a
    list of fifty does not need fifty whole prescriptions)."""

    @property
    def days_supply(self) -> int: ...
    @property
    def refills_authorized(self) -> int: ...
    @property
    def expiry_date(self) -> date: ...
    @property
    def days_dispensed(self) -> int: ...
    @property
    def latest_run_out_date(self) -> date | None: ...
    @property
    def latest_days_supply(self) -> int | None: ...
    @property
    def latest_covered_from(self) -> date | None: ...
    @property
    def prior_run_out_date(self) -> date | None: ...


class SupplyColumns(NamedTuple):
    """The CachedSupply columns read as a row, in SUPPLY_COLUMNS' order."""

    days_supply: int
    refills_authorized: int
    expiry_date: date
    days_dispensed: int
    latest_run_out_date: date | None
    latest_days_supply: int | None
    latest_covered_from: date | None
    prior_run_out_date: date | None


SUPPLY_COLUMNS = (Prescription.days_supply, Prescription.refills_authorized, Prescription.expiry_date,
                  Prescription.days_dispensed, Prescription.latest_run_out_date, Prescription.latest_days_supply,
                  Prescription.latest_covered_from, Prescription.prior_run_out_date)


def authorization(rx: CachedSupply) -> Authorization:
    return Authorization(days_per_fill=rx.days_supply, refills=rx.refills_authorized, expiry_date=rx.expiry_date)


def supply_of(rx: CachedSupply) -> Supply:
    """What the patient holds and what is left on `rx`, from the columns the prescription caches (no query)."""
    return rules.supply_from_cache(
        authorization(rx), days_dispensed=rx.days_dispensed or 0, dispensings=0, run_out=rx.latest_run_out_date,
        last_days=rx.latest_days_supply, too_soon_percent=settings().too_soon_percent,
        covered_from=rx.latest_covered_from, prior_run_out=rx.prior_run_out_date)


def dispensings(rx_id: int) -> list[Dispensing]:
    """Every dispensing of the prescription, as the supply model takes them."""
    return [f.dispensing for f in dispensed_fills(rx_id)]


class DispensedFill(NamedTuple):
    order_id: int
    dispensing: Dispensing
    run_out_date: date | None  # as stored on the order: the last day covered once it joined the supply


def dispensed_fills(rx_id: int) -> list[DispensedFill]:
    """The prescription's dispensed orders in the order they were dispensed (fill number), as the model takes them."""
    rows = db.session.execute(
        sa.select(Order.id, Order.supply_starts_on, Order.dispensed_on, Order.days_supply, Order.run_out_date)
        .where(Order.prescription_id == rx_id, Order.state == OrderState.DISPENSED)
        .order_by(Order.fill_number)
    ).all()
    return [DispensedFill(order_id, Dispensing(starts_on=starts or left, days=days), run_out)
            for order_id, starts, left, days, run_out in rows if (starts or left)]


def carried(rx: Prescription) -> rules.Held:
    """Supply the patient still holds from the prescription this one replaced (a renewal or dose change)."""
    if rx.replaces_id is None:
        return rules.Held()
    row = db.session.execute(
        sa.select(Prescription.latest_run_out_date, Prescription.latest_covered_from, Prescription.prior_run_out_date)
        .where(Prescription.id == rx.replaces_id)
    ).one_or_none()
    return rules.Held(*row) if row is not None else rules.Held()


def recomputed_supply(rx: Prescription, fills: list[DispensedFill] | None = None) -> Supply:
    """The supply walked from every dispensing — the source of truth the cache is written from."""
    found = dispensed_fills(rx.id) if fills is None else fills
    return rules.supply(authorization(rx), [f.dispensing for f in found], too_soon_percent=settings().too_soon_percent,
                        carried=carried(rx))


# ---- lots the bench would use ----------------------------------------------------------------------------


def usable_lots(formula: Formula, day: date) -> dict[str, list[IngredientLot]]:
    """Per ingredient of the formula, the lots that may be used on `day` (unexpired), longest-dated first."""
    names = [i.name for i in formula.ingredients]
    lots: dict[str, list[IngredientLot]] = {name: [] for name in names}
    if not names:
        return lots
    for lot in db.session.execute(
        sa.select(IngredientLot).where(IngredientLot.ingredient_name.in_(names), IngredientLot.expiry_date >= day,
                                       IngredientLot.quarantined_at.is_(None))
        .order_by(IngredientLot.expiry_date.desc(), IngredientLot.id)
    ).scalars():
        lots[lot.ingredient_name].append(lot)
    return lots


def projected_lot_expiries(formula_id: int, day: date) -> list[date]:
    """The expiry of the longest-dated usable lot of each ingredient: the best BUD the bench can make today.

    The refill quote and the order approving creates both plan with these, so they agree; choosing other
    lots at the bench re-plans the batch (and says so) before anyone compounds.
    """
    rows = db.session.execute(_statement("lot_expiries"), {"b_formula": formula_id, "b_day": day}).all()
    return [expiry for _name, expiry in rows if expiry is not None]
