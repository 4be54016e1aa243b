"""Patients with planned reminders, and reading the outbox back: shared by the delivery and outbox tests."""
from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from pharmacy.extensions import db
from pharmacy.reminders import planning
from pharmacy.reminders.models import DeliveryAttempt, OutboxMessage
from pharmacy.workflows import orders as order_flow
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
