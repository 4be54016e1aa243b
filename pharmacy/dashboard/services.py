"""Read models for the home page and search: a bounded number of queries whatever the data size."""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any, NamedTuple

import sqlalchemy as sa

from pharmacy.billing.adherence import adherence_below_threshold
from pharmacy.compounding.models import Order
from pharmacy.compounding.rules import DeliveryMethod, OrderState
from pharmacy.core import audit
from pharmacy.core.actor import Actor
from pharmacy.core.context import settings
from pharmacy.core.context import today as local_today
from pharmacy.core.db import UTCDateTime, first_ids_of_each
from pharmacy.core.roles import Permission
from pharmacy.core.rows import rows, scalar
from pharmacy.patients.models import Patient
from pharmacy.prescriptions.models import Prescription, ScreeningAlert
from pharmacy.prescriptions.rules import RxStatus, Severity
from pharmacy.refills.models import OPEN_REQUEST_STATES, RefillRequest, RenewalRequest
from pharmacy.refills.rules import RenewalState
from pharmacy.reminders.models import OutboxMessage
from pharmacy.reminders.rules import MessageKind, OutboxState
from pharmacy.reminders.services import listed_delivery_error
from pharmacy.supply import reads

PAGE_SIZE = 25


@dataclass
class Page:
    items: list[Any]
    page: int
    has_next: bool
    total_hint: str = ""


@dataclass
class Tile:
    key: str
    label: str
    count: int
    endpoint: str
    params: dict[str, Any] = field(default_factory=dict)
    attention: bool = False


# The lines of Today's lists: the columns each shows, not the rows' ORM graphs (a page read on every visit).


class AlertLine(NamedTuple):
    patient_id: int
    last_name: str
    first_name: str
    rx_id: int
    rx_number: str
    order_id: int | None
    code: str
    severity: Severity
    message: str


class RequestLine(NamedTuple):
    id: int
    patient_id: int
    last_name: str
    first_name: str
    rx_number: str
    requested_at: datetime


class OrderLine(NamedTuple):
    id: int
    patient_id: int
    last_name: str
    first_name: str
    rx_number: str
    state: OrderState
    created_at: datetime


class RenewalLine(NamedTuple):
    id: int
    patient_id: int
    last_name: str
    first_name: str
    reason: str
    state: RenewalState


class FailedEmail(NamedTuple):
    id: int
    kind: MessageKind
    last_error: str | None


@dataclass
class TodayView:
    tiles: list[Tile] = field(default_factory=list)
    alerts: list[AlertLine] = field(default_factory=list)  # the oldest ALERT_LINES of them
    alerts_count: int = 0  # every finding waiting for a pharmacist (one per prescription and code)
    requests: list[RequestLine] = field(default_factory=list)
    oldest_orders: list[OrderLine] = field(default_factory=list)
    running_out: list[RunningOut] = field(default_factory=list)
    reminders_today: int = 0
    failed_emails: list[FailedEmail] = field(default_factory=list)
    failed_email_errors: dict[int, str] = field(default_factory=dict)  # as this reader may see them
    renewals: list[RenewalLine] = field(default_factory=list)
    adherence: list[Any] = field(default_factory=list)
    clinical: bool = False


def today_view(actor: Actor) -> TodayView:
    """Every queue's count and its oldest items, in a fixed number of queries whatever the data size.

    What a role sees follows its permissions: the outbox figures for those who manage it, the clinical
    queues (with names) for those who may see clinical records.
    """
    view = TodayView()
    outbox = actor.can(Permission.MANAGE_OUTBOX)
    if outbox:
        _add_outbox(view)
    if not actor.can(Permission.VIEW_CLINICAL):
        return view
    view.clinical = True
    view.alerts = _alerts_for_a_pharmacist()
    view.tiles = _clinical_tiles(view)
    if outbox:
        view.tiles += [
            Tile("reminders", "Reminders going out today", view.reminders_today, "reminders.outbox"),
            Tile("failed", "Failed emails", len(view.failed_emails), "reminders.outbox", {"state": "failed"},
                 attention=bool(view.failed_emails)),
        ]
    _add_oldest(view)
    view.running_out = running_out(local_today(), days=7)
    view.adherence = list(adherence_below_threshold(actor, limit=8))
    audit.record_reads(actor, "dashboard.view", [
        *(a.patient_id for a in view.alerts), *(r.patient_id for r in view.requests),
        *(o.patient_id for o in view.oldest_orders), *(r.patient.id for r in view.running_out),
        *(r.patient_id for r in view.renewals), *(r.patient_id for r in view.adherence)])
    return view


def _add_outbox(view: TodayView) -> None:
    """Reminders due today (pharmacy time) and the newest failed emails, along their indexes."""
    tz = settings().timezone
    start = datetime.combine(local_today(), time(0), tzinfo=tz)
    q = _statements()
    view.reminders_today = int(scalar(q.reminders_due, {"b_start": start, "b_end": start + timedelta(days=1)}))
    view.failed_emails = [FailedEmail(*row) for row in rows(q.failed_emails)]
    view.failed_email_errors = {m.id: listed_delivery_error(m.last_error) or "" for m in view.failed_emails}


ALERT_LINES = 20


def _alerts_for_a_pharmacist(limit: int = ALERT_LINES) -> list[AlertLine]:
    """Unresolved stops and acknowledgements of active (or held) prescriptions and their open orders, one line per
    finding (an order's copy of an alert stands for its prescription's), oldest first."""
    seen: set[tuple[int, str]] = set()
    alerts = []
    for row in rows(_statements().alerts, {"b_limit": limit * 3}):
        line = AlertLine(*row)
        key = (line.rx_id, line.code)
        if key not in seen:
            seen.add(key)
            alerts.append(line)
    return alerts[:limit]


QUEUE_STATES = (OrderState.REQUESTED, OrderState.VERIFIED, OrderState.COMPOUNDING, OrderState.CHECKED,
                OrderState.READY)


def _clinical_tiles(view: TodayView) -> list[Tile]:
    """The work queues' counts: orders by step (index-only, ix_orders_state_delivery), requests and renewals."""
    q = _statements()
    counts = {(state, method): count for state, method, count in rows(q.order_counts)}

    def n(state: OrderState, method: DeliveryMethod | None = None) -> int:
        methods = [method] if method else list(DeliveryMethod)
        return sum(int(counts.get((state, m), 0)) for m in methods)

    open_requests, renewals, view.alerts_count = (int(n) for n in rows(q.open_requests_renewals_alerts)[0])
    queue = "compounding.queue"
    return [
        Tile("requests", "Refill requests waiting", open_requests, "refills.queue", attention=open_requests > 0),
        Tile("verify", "Orders to verify", n(OrderState.REQUESTED), queue, {"_anchor": "requested"}),
        Tile("compound", "To compound", n(OrderState.VERIFIED), queue, {"_anchor": "verified"}),
        Tile("check", "To check", n(OrderState.COMPOUNDING), queue, {"_anchor": "compounding"}),
        Tile("release", "Checked, to release", n(OrderState.CHECKED), queue, {"_anchor": "checked"}),
        Tile("pickup", "Ready for pickup", n(OrderState.READY, DeliveryMethod.PICKUP), queue, {"_anchor": "ready"}),
        Tile("ship", "Ready to ship", n(OrderState.READY, DeliveryMethod.SHIP), queue, {"_anchor": "ready"}),
        Tile("hold", "On hold", n(OrderState.ON_HOLD), queue, {"_anchor": "on_hold"}),
        Tile("alerts", "Safety alerts for a pharmacist", view.alerts_count, "dashboard.home", {"_anchor": "alerts"},
             attention=bool(view.alerts_count)),
        Tile("renewals", "Renewals waiting on prescribers", renewals, "refills.renewals_queue"),
    ]


OPEN_RENEWALS = (RenewalState.NEEDED, RenewalState.SENT)


def _add_oldest(view: TodayView) -> None:
    """The oldest few waiting requests, orders and renewals: picked by id from their indexes, then joined."""
    q = _statements()
    view.requests = [RequestLine(*row) for row in rows(q.oldest_requests)]
    view.oldest_orders = [OrderLine(*row) for row in rows(q.oldest_orders)]
    view.renewals = [RenewalLine(*row) for row in rows(q.oldest_renewals)]


class RxLine(NamedTuple):
    """What the call list shows of a prescription (its supply is read from reads.SUPPLY_COLUMNS beside it)."""

    id: int
    rx_number: str
    latest_fill_number: int | None


class PatientLine(NamedTuple):
    id: int
    last_name: str
    first_name: str
    phone: str | None


@dataclass(frozen=True)
class RunningOut:
    """A patient worth a call: their supply of one prescription ends soon, or already has."""

    rx: RxLine
    patient: PatientLine
    run_out: date  # the last day covered
    out_since: date | None  # the first day without medicine, when already out

    @property
    def days_out(self) -> int:
        return (local_today() - self.out_since).days + 1 if self.out_since else 0


def running_out(day: date, *, days: int, overdue_days: int = 30, limit: int = 10) -> list[RunningOut]:
    """Active prescriptions whose supply runs out within `days` (or ran out in the last `overdue_days`) with nothing
    ordered or requested — the patients worth a call today, those already out of medicine first (longest out first).

    The supply's last day covered is cached on the prescription (supply/services.refresh, from the supply model),
    so this reads a range of ix_prescriptions_status_run_out, however many years of fills are stored.
    """
    out = []
    for row in rows(_statements().running_out, {
            "b_from": day - timedelta(days=overdue_days), "b_to": day + timedelta(days=days), "b_limit": limit}):
        rx, supply, patient = RxLine(*row[:3]), reads.SupplyColumns(*row[3:11]), PatientLine(*row[11:])
        current = reads.supply_of(supply)
        assert current.run_out is not None
        out.append(RunningOut(rx=rx, patient=patient, run_out=current.run_out, out_since=current.out_since(day)))
    return out


def _open_alert_conditions(*, joined: bool = True) -> tuple[sa.ColumnElement[bool], ...]:
    """A finding waiting for a pharmacist: current, unresolved, more than a warning, on an active (or held)
    prescription, and about it or one of its orders in progress. `joined`: the query joins prescriptions; otherwise
    each alert's prescription is looked up by key — a scalar subquery, so PostgreSQL cannot choose to hash every
    active prescription (92,000 at chain scale, 9 ms) to count a hundred alerts.

    Spelled as ix_screening_alerts_open's condition (prescriptions/models.py) is: `= 1`, not SQLite's `IS 1` for
    is_(True), and the literal 'warning', not a bound value — or the index cannot be used. Each alert's order is
    looked up by key: the few open alerts, not a list of every open order built first."""
    open_order = sa.exists().where(Order.id == ScreeningAlert.order_id, Order.state.in_(reads.OPEN_ORDER_STATES))
    status = Prescription.status if joined else (
        sa.select(Prescription.status).where(Prescription.id == ScreeningAlert.prescription_id).scalar_subquery())
    return (ScreeningAlert.current == sa.true(), ScreeningAlert.resolved_at.is_(None),
            ScreeningAlert.severity != sa.bindparam("b_warning", Severity.WARNING, literal_execute=True),
            status.in_([RxStatus.ACTIVE, RxStatus.ON_HOLD]),
            sa.or_(ScreeningAlert.order_id.is_(None), open_order))


def _oldest_of(model: Any, states: Any, time: Any, limit: int, columns: tuple[Any, ...],
               *joins: tuple[Any, sa.ColumnElement[bool]]) -> sa.Select[Any]:
    """The `limit` oldest rows of `model` in any of `states` (by `time`, then id): their ids picked along the
    model's (state, time, id) index first (core.db.first_ids_of_each), then joined to what the list shows."""
    first = first_ids_of_each(model.id, model.state, states, (time, model.id), limit)
    stmt = sa.select(*columns).join(first, first.c.id == model.id)
    for target, on in joins:
        stmt = stmt.join(target, on)
    return stmt.order_by(time, model.id)


class _Statements:
    """Today's reads, built once per process with bind parameters: building a statement (its columns, joins,
    cache key) costs more Python than SQLite takes to run most of these, and Today is the page opened most."""

    def __init__(self) -> None:
        self._outbox_and_alerts()
        self._counts()
        self._oldest()
        self._running_out()

    def _outbox_and_alerts(self) -> None:
        self.reminders_due = sa.select(sa.func.count()).select_from(OutboxMessage).where(
            OutboxMessage.state == OutboxState.PENDING,
            OutboxMessage.next_attempt_at >= sa.bindparam("b_start", type_=UTCDateTime()),
            OutboxMessage.next_attempt_at < sa.bindparam("b_end", type_=UTCDateTime()))
        self.failed_emails = (
            sa.select(OutboxMessage.id, OutboxMessage.kind, OutboxMessage.last_error)
            .where(OutboxMessage.state == OutboxState.FAILED)
            .order_by(OutboxMessage.id.desc()).limit(5))  # newest first, along ix_outbox_state_id
        self.alerts = (
            sa.select(Patient.id, Patient.last_name, Patient.first_name, Prescription.id, Prescription.rx_number,
                      ScreeningAlert.order_id, ScreeningAlert.code, ScreeningAlert.severity, ScreeningAlert.message)
            .select_from(ScreeningAlert)
            .join(Prescription, Prescription.id == ScreeningAlert.prescription_id)
            .join(Patient, Patient.id == Prescription.patient_id)
            .where(*_open_alert_conditions())
            .order_by(ScreeningAlert.order_id.is_(None), ScreeningAlert.created_at)
            .limit(sa.bindparam("b_limit", type_=sa.Integer)))

    def _counts(self) -> None:
        self.order_counts = (
            sa.select(Order.state, Order.delivery_method, sa.func.count())
            .where(Order.state.in_([*QUEUE_STATES, OrderState.ON_HOLD]))
            .group_by(Order.state, Order.delivery_method))
        # Three counts in one round trip, each along its index: open requests and renewals by state, and the
        # findings waiting for a pharmacist (one per prescription and code, as the list shows them).
        findings = (sa.select(ScreeningAlert.prescription_id, ScreeningAlert.code).distinct()
                    .where(*_open_alert_conditions(joined=False)).subquery())
        self.open_requests_renewals_alerts = sa.select(
            sa.select(sa.func.count()).select_from(RefillRequest)
            .where(RefillRequest.state.in_(OPEN_REQUEST_STATES)).scalar_subquery(),
            sa.select(sa.func.count()).select_from(RenewalRequest)
            .where(RenewalRequest.state.in_(OPEN_RENEWALS)).scalar_subquery(),
            sa.select(sa.func.count()).select_from(findings).scalar_subquery())

    def _oldest(self) -> None:
        self.oldest_requests = _oldest_of(
            RefillRequest, OPEN_REQUEST_STATES, RefillRequest.requested_at, 5,
            (RefillRequest.id, Patient.id, Patient.last_name, Patient.first_name, Prescription.rx_number,
             RefillRequest.requested_at),
            (Prescription, Prescription.id == RefillRequest.prescription_id),
            (Patient, Patient.id == RefillRequest.patient_id))
        self.oldest_orders = _oldest_of(
            Order, QUEUE_STATES, Order.created_at, 8,
            (Order.id, Patient.id, Patient.last_name, Patient.first_name, Prescription.rx_number, Order.state,
             Order.created_at),
            (Prescription, Prescription.id == Order.prescription_id),
            (Patient, Patient.id == Prescription.patient_id))
        self.oldest_renewals = _oldest_of(
            RenewalRequest, OPEN_RENEWALS, RenewalRequest.created_at, 5,
            (RenewalRequest.id, Patient.id, Patient.last_name, Patient.first_name, RenewalRequest.reason,
             RenewalRequest.state),
            (Patient, Patient.id == RenewalRequest.patient_id))

    def _running_out(self) -> None:
        # No alias of orders here: the outer query reads no order (an aliased() proxies every column of the table).
        open_order = sa.exists().where(Order.prescription_id == Prescription.id,
                                       Order.state.in_(reads.OPEN_ORDER_STATES))
        open_request = sa.exists().where(
            RefillRequest.prescription_id == Prescription.id, RefillRequest.state.in_(OPEN_REQUEST_STATES))
        self.running_out = (
            sa.select(Prescription.id, Prescription.rx_number, Prescription.latest_fill_number, *reads.SUPPLY_COLUMNS,
                      Patient.id, Patient.last_name, Patient.first_name, Patient.phone)
            .join(Patient, Patient.id == Prescription.patient_id)
            .where(Prescription.status == RxStatus.ACTIVE,
                   Prescription.latest_run_out_date >= sa.bindparam("b_from", type_=sa.Date),
                   Prescription.latest_run_out_date <= sa.bindparam("b_to", type_=sa.Date),
                   ~open_order, ~open_request)
            .order_by(Prescription.latest_run_out_date, Prescription.id)
            .limit(sa.bindparam("b_limit", type_=sa.Integer)))


@functools.cache
def _statements() -> _Statements:
    return _Statements()
