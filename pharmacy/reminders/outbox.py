"""Writing to the email outbox: rows in the same transaction as the change that caused them.

A row is unique per cause (`dedupe_key`), so planning twice, a retried request or two workers
racing cannot produce a second email. Delivery (delivery.py) renders and sends after commit.
"""
from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from pharmacy.core.context import now, settings
from pharmacy.extensions import db
from pharmacy.reminders import rules
from pharmacy.reminders.models import OutboxMessage
from pharmacy.reminders.rules import MessageKind, OutboxState


def mail_domain() -> str:
    sender = settings().mail_from
    return sender.rsplit("@", 1)[-1].strip(" >") or "pharmacy.local"


def enqueue(kind: MessageKind, *, dedupe_key: str, patient_id: int | None, due_at: datetime | None = None,
            prescription_id: int | None = None, order_id: int | None = None, refill_request_id: int | None = None,
            renewal_id: int | None = None, to_address: str | None = None,
            channel: str = "email") -> OutboxMessage | None:
    """Add a message unless one with the same key exists; returns the new row or None. `channel`: "email", or
    "sms" for a text (pharmacy/sms), delivered by that channel's own run from the same table."""
    exists = db.session.execute(sa.select(OutboxMessage.id).where(OutboxMessage.dedupe_key == dedupe_key)).first()
    if exists:
        return None
    t = now()
    due = due_at or t
    row = OutboxMessage(
        dedupe_key=dedupe_key, kind=kind, patient_id=patient_id, prescription_id=prescription_id, order_id=order_id,
        refill_request_id=refill_request_id, renewal_id=renewal_id, to_address=to_address, due_at=due,
        next_attempt_at=due, state=OutboxState.PENDING, attempts=0, created_at=t, channel=channel,
        message_id=f"<pending.{uuid.uuid4().hex}@{mail_domain()}>",
    )
    try:
        with db.session.begin_nested():
            db.session.add(row)
            db.session.flush()
    except IntegrityError:  # a concurrent writer got there first: that row is the one
        return None
    row.message_id = rules.message_id(row.id, dedupe_key, mail_domain())
    db.session.flush()
    return row


def enqueue_notice(kind: MessageKind, *, patient_id: int, prescription_id: int | None = None,
                   order_id: int | None = None, refill_request_id: int | None = None,
                   renewal_id: int | None = None) -> OutboxMessage | None:
    """A transactional notice (request approved, order ready, shipped …), due now, once per cause."""
    if order_id is not None:
        key = f"{kind.value}:order:{order_id}"
    elif refill_request_id is not None:
        key = f"{kind.value}:request:{refill_request_id}"
    elif renewal_id is not None:
        key = f"{kind.value}:renewal:{renewal_id}"
    else:
        key = f"{kind.value}:rx:{prescription_id}:{uuid.uuid4().hex[:8]}"
    return enqueue(kind, dedupe_key=key, patient_id=patient_id, prescription_id=prescription_id, order_id=order_id,
                   refill_request_id=refill_request_id, renewal_id=renewal_id)


def cancel_where(condition: sa.ColumnElement[bool], reason: str) -> int:
    """Cancel pending rows matching the condition (rows being sent or sent are left alone)."""
    result = db.session.execute(
        sa.update(OutboxMessage)
        .where(condition, OutboxMessage.state == OutboxState.PENDING)
        .values(state=OutboxState.CANCELLED, cancelled_reason=reason[:200], lease_until=None)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0)


def cancel_notices(*, order_id: int | None = None, prescription_id: int | None = None,
                   kinds: Iterable[MessageKind] | None = None, reason: str) -> int:
    condition = sa.true()
    if order_id is not None:
        condition = sa.and_(condition, OutboxMessage.order_id == order_id)
    if prescription_id is not None:
        condition = sa.and_(condition, OutboxMessage.prescription_id == prescription_id)
    if kinds is not None:
        condition = sa.and_(condition, OutboxMessage.kind.in_(list(kinds)))
    return cancel_where(condition, reason)
