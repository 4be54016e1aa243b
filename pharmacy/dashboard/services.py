"""Read models for the home page and search: a bounded number of queries whatever the data size."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import joinedload

from pharmacy.compounding.models import Order
from pharmacy.core import audit
from pharmacy.core.actor import Actor
from pharmacy.core.db import first_ids
from pharmacy.core.roles import Permission
from pharmacy.extensions import db
from pharmacy.patients.models import Patient
from pharmacy.prescriptions.models import Prescription
from pharmacy.reminders.services import listed_delivery_error

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


@dataclass
class TodayView:
    tiles: list[Tile] = field(default_factory=list)
    alerts: list[Any] = field(default_factory=list)
    requests: list[Any] = field(default_factory=list)
    oldest_orders: list[Order] = field(default_factory=list)
    running_out: list[Any] = field(default_factory=list)
    reminders_today: int = 0
    failed_emails: list[Any] = field(default_factory=list)
    failed_email_errors: dict[int, str] = field(default_factory=dict)  # as this reader may see them
    renewals: list[Any] = field(default_factory=list)
    adherence: list[Any] = field(default_factory=list)
    clinical: bool = False


def today_view(actor: Actor) -> TodayView:
    """Every queue's count and its oldest items, in a fixed number of queries whatever the data size."""
    from pharmacy.compounding.rules import DeliveryMethod, OrderState
    from pharmacy.core.context import settings
    from pharmacy.core.context import today as local_today
    from pharmacy.prescriptions.models import ScreeningAlert
    from pharmacy.prescriptions.rules import RxStatus, Severity
    from pharmacy.refills.models import OPEN_REQUEST_STATES, RefillRequest, RenewalRequest
    from pharmacy.refills.rules import RenewalState
    from pharmacy.reminders.models import OutboxMessage
    from pharmacy.reminders.rules import OutboxState

    view = TodayView()
    if actor.can(Permission.MANAGE_OUTBOX):
        tz = settings().timezone
        day = local_today()
        start = datetime.combine(day, time(0), tzinfo=tz)
        end = start + timedelta(days=1)
        view.reminders_today = int(db.session.execute(
            sa.select(sa.func.count()).select_from(OutboxMessage).where(
                OutboxMessage.state == OutboxState.PENDING, OutboxMessage.next_attempt_at >= start,
                OutboxMessage.next_attempt_at < end)
        ).scalar_one())
        view.failed_emails = list(db.session.execute(
            sa.select(OutboxMessage).where(OutboxMessage.state == OutboxState.FAILED)
            .order_by(OutboxMessage.id.desc()).limit(5)  # newest first, along ix_outbox_state_id
        ).scalars())
        view.failed_email_errors = {m.id: listed_delivery_error(m.last_error) or "" for m in view.failed_emails}
    if not actor.can(Permission.VIEW_CLINICAL):
        return view
    view.clinical = True
    counts = {(state, method): count for state, method, count in db.session.execute(
        sa.select(Order.state, Order.delivery_method, sa.func.count())
        .where(Order.state.in_([OrderState.REQUESTED, OrderState.VERIFIED, OrderState.COMPOUNDING,
                                OrderState.CHECKED, OrderState.READY, OrderState.ON_HOLD]))
        .group_by(Order.state, Order.delivery_method)
    ).all()}

    def n(state: OrderState, method: DeliveryMethod | None = None) -> int:
        methods = [method] if method else list(DeliveryMethod)
        return sum(int(counts.get((state, m), 0)) for m in methods)

    open_requests = int(db.session.execute(
        sa.select(sa.func.count()).select_from(RefillRequest).where(RefillRequest.state.in_(OPEN_REQUEST_STATES))
    ).scalar_one())
    renewals = int(db.session.execute(
        sa.select(sa.func.count()).select_from(RenewalRequest).where(
            RenewalRequest.state.in_([RenewalState.NEEDED, RenewalState.SENT]))
    ).scalar_one())
    open_order_ids = sa.select(Order.id).where(Order.state.not_in([OrderState.DISPENSED, OrderState.CANCELLED]))
    alert_q = (
        sa.select(ScreeningAlert, Prescription, Patient)
        .join(Prescription, Prescription.id == ScreeningAlert.prescription_id)
        .join(Patient, Patient.id == Prescription.patient_id)
        .where(ScreeningAlert.current.is_(True), ScreeningAlert.resolved_at.is_(None),
               ScreeningAlert.severity != Severity.WARNING,
               Prescription.status.in_([RxStatus.ACTIVE, RxStatus.ON_HOLD]),
               sa.or_(ScreeningAlert.order_id.is_(None), ScreeningAlert.order_id.in_(open_order_ids)))
        .order_by(ScreeningAlert.order_id.is_(None), ScreeningAlert.created_at)
    )
    # One line per finding: an order's copy of an alert stands for its prescription's.
    seen: set[tuple[int, str]] = set()
    for row in db.session.execute(alert_q.limit(60)).all():
        key = (row[1].id, row[0].code)
        if key not in seen:
            seen.add(key)
            view.alerts.append(row)
    view.alerts = view.alerts[:20]
    view.tiles = [
        Tile("requests", "Refill requests waiting", open_requests, "refills.queue", attention=open_requests > 0),
        Tile("verify", "Orders to verify", n(OrderState.REQUESTED), "compounding.queue", {"_anchor": "requested"}),
        Tile("compound", "To compound", n(OrderState.VERIFIED), "compounding.queue", {"_anchor": "verified"}),
        Tile("check", "To check", n(OrderState.COMPOUNDING), "compounding.queue", {"_anchor": "compounding"}),
        Tile("release", "Checked, to release", n(OrderState.CHECKED), "compounding.queue", {"_anchor": "checked"}),
        Tile("pickup", "Ready for pickup", n(OrderState.READY, DeliveryMethod.PICKUP), "compounding.queue",
             {"_anchor": "ready"}),
        Tile("ship", "Ready to ship", n(OrderState.READY, DeliveryMethod.SHIP), "compounding.queue",
             {"_anchor": "ready"}),
        Tile("hold", "On hold", n(OrderState.ON_HOLD), "compounding.queue", {"_anchor": "on_hold"}),
        Tile("alerts", "Safety alerts for a pharmacist", len(view.alerts), "dashboard.home", {"_anchor": "alerts"},
             attention=bool(view.alerts)),
        Tile("renewals", "Renewals waiting on prescribers", renewals, "refills.queue", {"_anchor": "renewals"}),
    ]
    if actor.can(Permission.MANAGE_OUTBOX):
        view.tiles += [
            Tile("reminders", "Reminders going out today", view.reminders_today, "reminders.outbox"),
            Tile("failed", "Failed emails", len(view.failed_emails), "reminders.outbox", {"state": "failed"},
                 attention=bool(view.failed_emails)),
        ]
    first_requests = first_ids(RefillRequest.id, RefillRequest.state.in_(OPEN_REQUEST_STATES),
                               (RefillRequest.requested_at, RefillRequest.id), 5)
    view.requests = list(db.session.execute(
        sa.select(RefillRequest, Prescription, Patient)
        .join(first_requests, first_requests.c.id == RefillRequest.id)
        .join(Prescription, Prescription.id == RefillRequest.prescription_id)
        .join(Patient, Patient.id == RefillRequest.patient_id)
        .order_by(RefillRequest.requested_at, RefillRequest.id)
    ).all())
    first_orders = first_ids(Order.id, Order.state.in_([OrderState.REQUESTED, OrderState.VERIFIED, OrderState.COMPOUNDING,
                                                        OrderState.CHECKED, OrderState.READY]), (Order.created_at, Order.id), 8)
    view.oldest_orders = list(db.session.execute(
        sa.select(Order).join(first_orders, first_orders.c.id == Order.id)
        .options(joinedload(Order.prescription).joinedload(Prescription.patient))
        .order_by(Order.created_at, Order.id)
    ).unique().scalars())
    view.running_out = running_out(local_today(), days=7)
    first_renewals = first_ids(RenewalRequest.id, RenewalRequest.state.in_([RenewalState.NEEDED, RenewalState.SENT]),
                               (RenewalRequest.created_at, RenewalRequest.id), 5)
    view.renewals = list(db.session.execute(
        sa.select(RenewalRequest, Patient).join(first_renewals, first_renewals.c.id == RenewalRequest.id)
        .join(Patient, Patient.id == RenewalRequest.patient_id)
        .order_by(RenewalRequest.created_at, RenewalRequest.id)
    ).all())
    try:
        from pharmacy.billing.adherence import adherence_below_threshold

        view.adherence = list(adherence_below_threshold(actor, limit=8))
    except (ImportError, AttributeError):
        view.adherence = []
    audit.record_reads(actor, "dashboard.view", audit.patient_ids_in(
        view.alerts, view.requests, view.oldest_orders, view.running_out, view.renewals, view.adherence))
    return view


def running_out(day: date, *, days: int, overdue_days: int = 30, limit: int = 10) -> list[Any]:
    """Active prescriptions whose latest supply runs out within `days` (or ran out in the last
    `overdue_days`) with nothing ordered or requested — the patients worth a call today.

    Rows of (latest fill, prescription, patient), soonest run-out first. The latest fill's run-out is kept on the
    prescription (Prescription.note_dispensed), so this reads a range of ix_prescriptions_status_run_out — the
    prescriptions running out in that window, however many years of fills are stored.
    """
    from pharmacy.compounding.rules import OrderState
    from pharmacy.prescriptions.rules import RxStatus
    from pharmacy.refills.models import OPEN_REQUEST_STATES, RefillRequest

    fill = sa.orm.aliased(Order)
    other = sa.orm.aliased(Order)
    open_order = sa.exists().where(
        other.prescription_id == Prescription.id, other.state.not_in([OrderState.DISPENSED, OrderState.CANCELLED]),
    )
    open_request = sa.exists().where(
        RefillRequest.prescription_id == Prescription.id, RefillRequest.state.in_(OPEN_REQUEST_STATES)
    )
    stmt = (
        sa.select(fill, Prescription, Patient)
        .select_from(Prescription)
        .join(fill, sa.and_(fill.prescription_id == Prescription.id, fill.fill_number == Prescription.latest_fill_number))
        .join(Patient, Patient.id == Prescription.patient_id)
        .where(Prescription.status == RxStatus.ACTIVE,
               Prescription.latest_run_out_date >= day - timedelta(days=overdue_days),
               Prescription.latest_run_out_date <= day + timedelta(days=days),
               ~open_order, ~open_request)
        .order_by(Prescription.latest_run_out_date, Prescription.id).limit(limit)
    )
    return list(db.session.execute(stmt).all())


_DOB = re.compile(r"^(\d{4})-(\d{2})-(\d{2})$|^(\d{1,2})/(\d{1,2})/(\d{4})$")


def _parse_dob(q: str) -> date | None:
    m = _DOB.match(q)
    if not m:
        return None
    try:
        if m.group(1):
            return date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
        return date(int(m.group(6)), int(m.group(4)), int(m.group(5)))
    except ValueError:
        return None


def name_key(last: str, first: str) -> str:
    return f"{last.strip()}, {first.strip()}".lower()


def search(actor: Actor, q: str, *, page: int = 1) -> Page:
    """Patients by name prefix ("smith" or "smith, jo"), date of birth, Rx number or order lot."""
    audit.require(actor, Permission.VIEW_CLINICAL, what="search patient records")
    q = q.strip()
    page = max(page, 1)
    if not q:
        return Page([], page, False)
    stmt = sa.select(Patient)
    dob = _parse_dob(q)
    if dob:
        stmt = stmt.where(Patient.date_of_birth == dob)
    elif q.upper().startswith("RX"):
        stmt = stmt.where(Patient.id.in_(sa.select(Prescription.patient_id).where(Prescription.rx_number == q.upper())))
    elif q.upper().startswith("L") and any(ch.isdigit() for ch in q):
        stmt = stmt.where(Patient.id.in_(sa.select(Order.patient_id).where(Order.lot_number == q.upper())))
    else:
        prefix = q.lower()
        # A prefix range on the lower-cased key: served by its B-tree index on SQLite and PostgreSQL.
        stmt = stmt.where(Patient.name_key >= prefix, Patient.name_key < prefix + "\uffff")
    rows = list(
        db.session.execute(
            stmt.order_by(Patient.name_key, Patient.id).offset((page - 1) * PAGE_SIZE).limit(PAGE_SIZE + 1)
        ).scalars()
    )
    shown = rows[:PAGE_SIZE]
    audit.record_reads(actor, "patient.search", [p.id for p in shown], details={"results": len(shown)})
    return Page(rows[:PAGE_SIZE], page, len(rows) > PAGE_SIZE)
