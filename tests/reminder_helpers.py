"""Patients with planned reminders, and reading the outbox back: shared by the delivery and outbox tests."""
from __future__ import annotations

from datetime import UTC, date, datetime, time
from typing import Any

import sqlalchemy as sa

from pharmacy.autorefill import services as autorefill
from pharmacy.core.actor import Actor
from pharmacy.core.context import settings
from pharmacy.extensions import db
from pharmacy.prescriptions.models import Prescription
from pharmacy.refills.models import RefillRequest
from pharmacy.refills.rules import RequestSource
from pharmacy.reminders import planning
from pharmacy.reminders.models import DeliveryAttempt, OutboxMessage
from pharmacy.workflows import orders as order_flow
from pharmacy.workflows.next_refill import next_refill
from tests.factories import run_order_to, world


def dispensed(staff: dict, i: int = 0, **overrides: Any) -> tuple[dict[str, Any], Any]:
    """A patient whose first fill was dispensed today (so its reminders are planned); committed."""
    patient = {"first_name": f"Margaret{'' if i == 0 else i}", "email": f"patient{i}@example.com",
               **overrides.pop("patient", {})}
    w = world(staff, patient=patient, **overrides)
    order = order_flow.start_fill(w["pharmacist"], w["rx"].id)
    run_order_to(w, order.id, "dispensed")
    db.session.commit()
    return w, order


def reminder_rows(order_id: int) -> list[OutboxMessage]:
    return list(db.session.execute(
        sa.select(OutboxMessage).where(OutboxMessage.order_id == order_id,
                                       OutboxMessage.kind.in_(list(planning.REMINDER_KINDS)))
        .order_by(OutboxMessage.due_at).execution_options(populate_existing=True)
    ).scalars())


def fresh(row_id: int) -> OutboxMessage:
    db.session.expire_all()
    row = db.session.get(OutboxMessage, row_id)
    assert row is not None
    return row


def attempts_of(row_id: int) -> list[str]:
    return list(db.session.execute(
        sa.select(DeliveryAttempt.result).where(DeliveryAttempt.message_id == row_id).order_by(DeliveryAttempt.id)
    ).scalars())


def first_reminders_due(staff: dict, clock: Any, n: int) -> list[int]:
    """n patients, each with their first reminder (7 days before order-by) due now; their row ids."""
    ids = []
    for i in range(n):
        _, order = dispensed(staff, i)
        ids.append(reminder_rows(order.id)[0].id)
    clock.set(fresh(ids[0]).due_at)
    return ids


def morning(day: date, hour: int = 7) -> datetime:
    """`hour`:00 on `day` in the pharmacy's time zone, as the UTC instant the clock is set to."""
    return datetime.combine(day, time(hour), tzinfo=settings().timezone).astimezone(UTC)


def auto_refill_asked(staff: dict, clock: Any) -> tuple[dict[str, Any], RefillRequest]:
    """A patient on auto-refill whose first fill was dispensed and whose automatic refill was asked for at 7:00 on
    its order-by date (the daily run, once); the world and that request (inside a request context, committed)."""
    w = world(staff)
    rx_id = w["rx"].id
    run_order_to(w, order_flow.start_fill(w["pharmacist"], rx_id).id, "dispensed")
    autorefill.enrol(Actor(kind="patient", patient_id=w["patient"].id), rx_id)
    db.session.commit()
    order_by = next_refill(db.session.get(Prescription, rx_id)).order_by
    assert order_by is not None
    clock.set(morning(order_by))
    assert autorefill.run_due().requested == 1
    db.session.commit()
    request = db.session.execute(sa.select(RefillRequest).where(RefillRequest.source == RequestSource.AUTO,
                                                                RefillRequest.prescription_id == rx_id)).scalar_one()
    return w, request


def texting_patient(staff: dict, number: str) -> dict[str, Any]:
    """A patient who takes texts only at `number` (verified, consent given), with a dispensed fill so reminders are
    planned; the world (inside a request context, committed)."""
    from pharmacy.sms import services as sms
    from pharmacy.sms.rules import Choice

    w = world(staff)
    run_order_to(w, order_flow.start_fill(w["pharmacist"], w["rx"].id).id, "dispensed")
    me = Actor(kind="patient", patient_id=w["patient"].id)
    sms.number_verified(me, number, consent=True)
    sms.set_channel(me, Choice.SMS)
    db.session.commit()
    return w
