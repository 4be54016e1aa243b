"""The patient page: one patient's details and everything every feature knows of them — prescriptions with their
alerts and fills, the supply of each (days on hand, order-by, out of medicine), refill requests and messages,
costs and balance, side effects. A cross-feature read, so it lives with the other cross-feature views, in a
fixed number of queries whatever the history's length.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.orm import joinedload

from pharmacy.billing import services as billing
from pharmacy.compounding.models import Order
from pharmacy.compounding.rules import IN_PROGRESS, DeliveryMethod, OrderState
from pharmacy.core import audit
from pharmacy.core.actor import Actor
from pharmacy.core.context import business_calendar, settings, today
from pharmacy.core.roles import Permission
from pharmacy.core.rows import rows
from pharmacy.extensions import db
from pharmacy.patients import services as patients
from pharmacy.patients.models import Patient, SideEffectEntry
from pharmacy.prescriptions import rules as rx_rules
from pharmacy.prescriptions.models import Prescription, ScreeningAlert
from pharmacy.prescriptions.rules import RxStatus
from pharmacy.refills import rules as refill_rules
from pharmacy.refills.models import OPEN_REQUEST_STATES, RefillRequest
from pharmacy.refills.rules import RefillRequestState, RequestSource
from pharmacy.reminders.models import OutboxMessage
from pharmacy.reminders.rules import MessageKind, OutboxState
from pharmacy.supply import reads


class FillLine(NamedTuple):
    """One fill as the patient page shows it (its table, the supply line): the columns, not the whole order — a
    long-treated patient has dozens."""

    id: int
    prescription_id: int
    fill_number: int
    authorized_fill: int
    state: OrderState
    quantity: Decimal
    days_supply: int
    lot_number: str | None
    dispensed_on: date | None
    delivery_method: DeliveryMethod
    returned_at: datetime | None  # a dispensed fill taken back (cancelled since: compounding/returns.py)


FILL_COLUMNS = (Order.id, Order.prescription_id, Order.fill_number, Order.authorized_fill, Order.state,
                Order.quantity, Order.days_supply, Order.lot_number, Order.dispensed_on, Order.delivery_method,
                Order.returned_at)


class MessageLine(NamedTuple):
    id: int
    kind: MessageKind
    state: OutboxState
    due_at: datetime | None
    sent_at: datetime | None


class RequestLine(NamedTuple):
    requested_at: datetime
    source: RequestSource
    state: RefillRequestState
    decline_reason: str | None


@dataclass
class PatientRecord:
    """What the patient page shows, assembled in a fixed number of queries.

    `alerts` and `orders` are keyed by prescription id (current prescription-level alerts; orders
    newest first); `extra` is where other features add their blocks (timeline, payments …).
    """

    patient: Patient
    prescriptions: list[Prescription] = field(default_factory=list)
    alerts: dict[int, list[ScreeningAlert]] = field(default_factory=dict)
    orders: dict[int, list[FillLine]] = field(default_factory=dict)
    side_effects: list[Any] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def open_alert_count(self) -> int:
        """Alerts still waiting for a pharmacist (hard stops always count: they cannot be overridden)."""
        return sum(1 for alerts in self.alerts.values() for a in alerts
                   if a.severity.value != "warning" and (a.severity.value == "hard_stop" or not a.resolved))


def patient_record(actor: Actor, patient_id: int) -> PatientRecord:
    """The patient page: details, lists, prescriptions with their current alerts and fills (4 queries)."""
    patient = patients.get_patient(actor, patient_id)
    q = _statements()
    found = db.session.execute(q.prescriptions, {"b_patient": patient_id}).unique().all()
    rxs = [rx for rx, _waiting in found]
    record = PatientRecord(patient=patient, prescriptions=rxs)
    # How each prescription's waiting request (if any) is to travel: with the patient's preference, how its next fill
    # will (refills.rules.next_fill_delivery), read in the same statement as the prescriptions.
    waiting_delivery = {rx.id: waiting for rx, waiting in found if waiting is not None}
    ids = [rx.id for rx in rxs]
    if ids:
        for alert in db.session.execute(q.alerts, {"b_rx_ids": ids}).unique().scalars():
            record.alerts.setdefault(alert.prescription_id, []).append(alert)
        for row in rows(q.fills, {"b_rx_ids": ids}):
            fill = FillLine(*row)
            record.orders.setdefault(fill.prescription_id, []).append(fill)
    for alerts in record.alerts.values():
        alerts.sort(key=lambda a: (rx_rules.SEVERITY_RANK[a.severity], a.id))
    record.side_effects = list(db.session.execute(q.side_effects, {"b_patient": patient_id}).scalars())
    _add_timeline(record, waiting_delivery)
    _add_messages_and_requests(record)
    if actor.can(Permission.VIEW_BILLING):
        active = sorted((rx for rx in rxs if rx.status == RxStatus.ACTIVE), key=lambda rx: rx.id)
        record.extra["costs"] = billing.patient_cost_summary(actor, patient_id, active_prescriptions=active)
    audit.record(actor, "patient.view", patient_id=patient_id, entity=("patient", patient_id))
    return record


class _Statements:
    """The page's reads, built once per process with bind parameters: building a statement costs more Python than
    the database takes to answer it, and the patient page is the one staff open most."""

    def __init__(self) -> None:
        patient = sa.bindparam("b_patient", type_=sa.Integer)
        rx_ids = sa.bindparam("b_rx_ids", expanding=True, type_=sa.Integer)
        waiting = (sa.select(RefillRequest.delivery_method)
                   .where(RefillRequest.prescription_id == Prescription.id,
                          RefillRequest.state.in_(OPEN_REQUEST_STATES)).limit(1).scalar_subquery())
        self.prescriptions = (
            sa.select(Prescription, waiting).where(Prescription.patient_id == patient)
            .options(joinedload(Prescription.formula), joinedload(Prescription.prescriber))
            .order_by(Prescription.written_date.desc(), Prescription.id.desc()))
        self.alerts = (
            sa.select(ScreeningAlert).where(ScreeningAlert.prescription_id.in_(rx_ids),
                                            ScreeningAlert.order_id.is_(None), ScreeningAlert.current.is_(True))
            .order_by(ScreeningAlert.id))
        self.fills = (sa.select(*FILL_COLUMNS).where(Order.prescription_id.in_(rx_ids))
                      .order_by(Order.created_at.desc(), Order.id.desc()))
        self.side_effects = (
            sa.select(SideEffectEntry).where(SideEffectEntry.patient_id == patient)
            .order_by(SideEffectEntry.noted_on.desc(), SideEffectEntry.id.desc()).limit(20))
        self.messages = (
            sa.select(OutboxMessage.id, OutboxMessage.kind, OutboxMessage.state, OutboxMessage.due_at,
                      OutboxMessage.sent_at).where(OutboxMessage.patient_id == patient)
            .order_by(OutboxMessage.due_at.desc(), OutboxMessage.id.desc()).limit(15))
        self.requests = (
            sa.select(RefillRequest.requested_at, RefillRequest.source, RefillRequest.state,
                      RefillRequest.decline_reason)
            .where(RefillRequest.patient_id == patient).order_by(RefillRequest.requested_at.desc()).limit(10))


@functools.cache
def _statements() -> _Statements:
    return _Statements()


@dataclass(frozen=True)
class TimelineRow:
    """One active prescription's supply: last dispensed, runs out (last day covered), order by, what is owed."""

    rx: Prescription
    dispensed_on: Any
    run_out: Any
    order_by: Any
    in_progress: FillLine | None
    supply: Any = None
    out_since: Any = None  # the first day without medicine when the patient has already run out


def _add_timeline(record: PatientRecord, waiting_delivery: dict[int, DeliveryMethod]) -> None:
    """Each active prescription's supply line; `waiting_delivery`: how the request waiting on a prescription is to
    travel (the order-by date is for the next fill, refills.rules.next_fill_delivery)."""
    rows = []
    day = today()
    for rx in record.prescriptions:
        if rx.status != RxStatus.ACTIVE:
            continue
        orders = record.orders.get(rx.id, [])
        last = max((o for o in orders if o.state == OrderState.DISPENSED and o.dispensed_on),
                   key=lambda o: o.fill_number, default=None)
        open_order = next((o for o in orders if o.state in IN_PROGRESS), None)
        current = reads.supply_of(rx)
        if current.run_out is None:
            rows.append(TimelineRow(rx, None, None, None, open_order, current))
            continue
        # The order-by date for how the next fill will travel (the one rule the reminders and the portal use), not
        # for how the last one did.
        method = refill_rules.next_fill_delivery(waiting_delivery.get(rx.id),
                                                 record.patient.delivery_preference)
        line = refill_rules.timeline(current.run_out,
                                     shipping_days=refill_rules.shipping_days_for(method, record.patient.shipping_days),
                                     buffer_days=settings().safety_buffer_days,
                                     lead_time_business_days=rx.formula.lead_time_business_days,
                                     calendar=business_calendar())
        rows.append(TimelineRow(rx, last.dispensed_on if last is not None else None, line.run_out, line.order_by,
                                open_order, current, current.out_since(day)))
    record.extra["timeline"] = rows


def _add_messages_and_requests(record: PatientRecord) -> None:
    q, pid = _statements(), {"b_patient": record.patient.id}
    record.extra["messages"] = [MessageLine(*row) for row in rows(q.messages, pid)]
    record.extra["requests"] = [RequestLine(*row) for row in rows(q.requests, pid)]
