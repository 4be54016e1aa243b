"""A text beside each email a patient also wants as a text: rows of the "sms" channel, written when the email's
time comes.

Planning writes (and re-plans, moves, cancels) the email rows; a text is spawned from an email row only once it is
due, so it always follows the plan as it finally stood, and the patient's choice as it stands now. The text is then
a row of its own — claimed, retried, failed and shown on the outbox page like any email — with its own wanted-check
at send time. An email not sent because the patient takes texts only (or has no email address) still spawns its
text; one cancelled for any other reason (a refill already requested, a later reminder) does not.
"""
from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.orm import aliased

from pharmacy.core.context import now, settings
from pharmacy.extensions import db
from pharmacy.reminders import outbox
from pharmacy.reminders.models import OutboxMessage
from pharmacy.reminders.rules import TEXTS_CHOSEN, OutboxState
from pharmacy.sms import rules
from pharmacy.sms.models import ContactPreference

#: Texts are spawned for emails due at most this long ago: switching texts on never sends old news.
WINDOW = timedelta(days=2)
SPAWN_FROM_CANCELLED = (TEXTS_CHOSEN, "the patient has no email address")
SUFFIX = ":sms"


def spawn_due(*, limit: int = 500) -> int:
    """Write the text rows due now; returns how many. Idempotent (one text per email row: its dedupe key + ":sms")."""
    t = now()
    cfg = settings()
    email = aliased(OutboxMessage)
    text = aliased(OutboxMessage)
    cp = ContactPreference
    rows = db.session.execute(
        sa.select(email.id, email.dedupe_key, email.kind, email.patient_id, email.prescription_id, email.order_id,
                  email.refill_request_id, email.renewal_id)
        .join(cp, cp.patient_id == email.patient_id)
        .where(email.channel == "email", email.kind.in_(sorted(rules.TEXT_KINDS)),
               email.due_at <= t, email.due_at >= t - WINDOW,
               sa.or_(email.state.in_([OutboxState.PENDING, OutboxState.SENDING, OutboxState.SENT]),
                      sa.and_(email.state == OutboxState.CANCELLED, email.cancelled_reason.in_(SPAWN_FROM_CANCELLED))),
               cp.channel.in_([rules.Choice.SMS.value, rules.Choice.BOTH.value]), cp.sms_consent.is_(True),
               cp.sms_number.is_not(None), cp.sms_verified_at.is_not(None),
               ~sa.exists().where(text.dedupe_key == email.dedupe_key + SUFFIX))
        .order_by(email.due_at, email.id).limit(limit)
    ).all()
    due = rules.next_send_time(t, tz=cfg.timezone, start_hour=cfg.sms_start_hour, end_hour=cfg.sms_end_hour)
    written = 0
    for r in rows:
        if len(r.dedupe_key) + len(SUFFIX) > 80:
            continue
        if outbox.enqueue(r.kind, dedupe_key=r.dedupe_key + SUFFIX, patient_id=r.patient_id,
                          prescription_id=r.prescription_id, order_id=r.order_id,
                          refill_request_id=r.refill_request_id, renewal_id=r.renewal_id, due_at=due, channel="sms"):
            written += 1
    db.session.flush()
    return written
