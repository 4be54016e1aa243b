"""Delivering the outbox: claim due rows, render, send, record — at least once, never lost.

The life of a row: `pending` → claimed (`sending`, with a lease and the worker's id) → `sent`,
or back to `pending` with a backoff after a transient failure, or `failed` after a permanent
one (5yz) or too many attempts. `cancelled` when it is no longer wanted. Every attempt is a
`DeliveryAttempt` row.

Why at-least-once and not exactly-once: an SMTP server may accept a message and the process
die before the row is marked sent; nothing can make "handed over" and "recorded" one atomic
step. So the window is kept as small as possible (the row is committed as sent right after the
server's 250) and each email carries a deterministic Message-ID so a receiver can drop the
duplicate. Everything else is exactly-once:

* Claims are exclusive: on PostgreSQL `SELECT … FOR UPDATE SKIP LOCKED` (any number of
  schedulers), on SQLite a conditional `UPDATE … WHERE state='pending'` checked by row count
  (one scheduler; SQLite serialises writers).
* Each row is re-confirmed (still `sending`, still ours, lease extended) in its own committed
  transaction just before it is sent, so a row whose lease expired and was taken over by
  another worker is never sent by the first one too.
* No transaction is open while talking to the mail server; each state change is committed at
  once, so a crash loses at most the message in flight.

This module (and scheduler.py) commit: delivery is a job, its own unit of work.
"""
from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass, fields
from datetime import timedelta

import sqlalchemy as sa

from pharmacy.compounding.models import Order
from pharmacy.compounding.rules import OrderState
from pharmacy.core.context import now, settings
from pharmacy.extensions import db
from pharmacy.patients.models import Patient
from pharmacy.prescriptions.models import Prescription
from pharmacy.prescriptions.rules import RxStatus
from pharmacy.refills.models import OPEN_REQUEST_STATES, RefillRequest
from pharmacy.reminders import rendering, rules, transports
from pharmacy.reminders.models import DeliveryAttempt, OutboxMessage
from pharmacy.reminders.rules import MessageKind, OutboxState

log = logging.getLogger(__name__)

#: How long a claim is valid. Far longer than one message can take (SMTP timeout ~10 s), renewed
#: before every send, and short enough that rows of a crashed process go out again within minutes.
LEASE = timedelta(minutes=5)
BATCH_SIZE = 50
REFILL_REMINDERS = (MessageKind.REMINDER_EARLY, MessageKind.REMINDER_ORDER_BY, MessageKind.REMINDER_OVERDUE)
OPEN_ORDER_STATES = [s for s in OrderState if s not in (OrderState.DISPENSED, OrderState.CANCELLED)]


@dataclass
class DeliveryReport:
    """What one run did (counts only: it is printed and logged)."""

    claimed: int = 0
    sent: int = 0
    retried: int = 0
    failed: int = 0
    cancelled: int = 0
    skipped: int = 0  # claimed by us, then taken over by another worker after our lease expired
    expired_leases: int = 0

    def add(self, other: DeliveryReport) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def line(self) -> str:
        return ", ".join(f"{f.name.replace('_', ' ')} {getattr(self, f.name)}" for f in fields(self))


def worker_id() -> str:
    """Who holds a claim: host, process and a random suffix (two workers in one process differ)."""
    return f"{socket.gethostname()[:30]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _is_postgres() -> bool:
    return db.session.get_bind().dialect.name == "postgresql"


def default_transport() -> transports.Transport:
    return transports.from_settings(settings().smtp)


def _attempt(row_id: int, result: str, detail: str | None = None) -> None:
    db.session.add(DeliveryAttempt(message_id=row_id, at=now(), result=result,
                                   detail=detail[:400] if detail else None))


# ---- leases ---------------------------------------------------------------------------------------


def release_expired_leases(*, limit: int = 500) -> int:
    """Rows left `sending` by a process that died go back to `pending`, due now; one attempt row each.

    Their send may or may not have reached the server before the crash (the at-least-once
    window): they go out again with the same Message-ID. A row that keeps killing its
    worker is failed after `outbox_max_attempts` expired leases instead of looping forever.
    """
    t = now()
    stmt = (
        sa.select(OutboxMessage.id)
        .where(OutboxMessage.state == OutboxState.SENDING, OutboxMessage.lease_until < t)
        .order_by(OutboxMessage.id).limit(limit)
    )
    if _is_postgres():
        stmt = stmt.with_for_update(skip_locked=True)
    ids = list(db.session.execute(stmt).scalars())
    released = 0
    max_attempts = settings().outbox_max_attempts
    for row_id in ids:
        expired_before = db.session.execute(
            sa.select(sa.func.count()).select_from(DeliveryAttempt).where(
                DeliveryAttempt.message_id == row_id, DeliveryAttempt.result == "expired_lease")
        ).scalar_one()
        giving_up = expired_before + 1 >= max_attempts
        values = {"lease_until": None, "claimed_by": None, "next_attempt_at": t,
                  "state": OutboxState.FAILED if giving_up else OutboxState.PENDING}
        if giving_up:
            values["last_error"] = "the delivery process stopped while sending this message, repeatedly"
        result = db.session.execute(
            sa.update(OutboxMessage)
            .where(OutboxMessage.id == row_id, OutboxMessage.state == OutboxState.SENDING,
                   OutboxMessage.lease_until < t)
            .values(**values).execution_options(synchronize_session=False)
        )
        if result.rowcount == 1:
            _attempt(row_id, "expired_lease", "claim expired before the message was marked sent")
            released += 1
    db.session.commit()
    if released:
        log.warning("released %d expired delivery lease(s)", released)
    return released


# ---- claiming -------------------------------------------------------------------------------------


def claim_batch(worker: str, *, limit: int = BATCH_SIZE, lease: timedelta = LEASE) -> list[int]:
    """Claim up to `limit` due rows for `worker` (state `sending`, lease set) and commit; their ids, oldest first."""
    t = now()
    due = (
        sa.select(OutboxMessage.id)
        .where(OutboxMessage.state == OutboxState.PENDING, OutboxMessage.next_attempt_at <= t)
        .order_by(OutboxMessage.next_attempt_at, OutboxMessage.id).limit(limit)
    )
    claim = {"state": OutboxState.SENDING, "lease_until": t + lease, "claimed_by": worker}
    if _is_postgres():
        # Rows locked by another worker's claim are skipped, not waited for: several schedulers
        # share the outbox without ever taking the same row.
        ids = list(db.session.execute(due.with_for_update(skip_locked=True)).scalars())
        if ids:
            db.session.execute(
                sa.update(OutboxMessage).where(OutboxMessage.id.in_(ids)).values(**claim)
                .execution_options(synchronize_session=False)
            )
    else:
        # SQLite has no row locks (FOR UPDATE is ignored): the UPDATE's own condition decides,
        # and the row count says whether this worker won the row.
        ids = []
        for row_id in db.session.execute(due).scalars().all():
            result = db.session.execute(
                sa.update(OutboxMessage)
                .where(OutboxMessage.id == row_id, OutboxMessage.state == OutboxState.PENDING)
                .values(**claim).execution_options(synchronize_session=False)
            )
            if result.rowcount == 1:
                ids.append(row_id)
    db.session.commit()
    return ids


def _load(row_id: int) -> OutboxMessage | None:
    stmt = sa.select(OutboxMessage).where(OutboxMessage.id == row_id).execution_options(populate_existing=True)
    if _is_postgres():
        stmt = stmt.with_for_update()
    return db.session.execute(stmt).scalar_one_or_none()


# ---- is it still wanted? ----------------------------------------------------------------------------


def unwanted_reason(row: OutboxMessage) -> str | None:
    """Why a message should no longer go out (None: send it). Checked just before sending.

    Planning cancels rows when things change, but a change may have slipped past it (a direct
    data fix, a race with the claim): a reminder about a refill already requested, for a
    stopped prescription, or to a patient who opted out must never be sent.
    """
    kind = MessageKind(row.kind)
    if kind == MessageKind.PRESCRIBER_RENEWAL:
        return None if row.to_address else "the prescriber has no email address"
    patient = db.session.get(Patient, row.patient_id) if row.patient_id else None
    if patient is None:
        return "the patient record is gone"
    if not (patient.email or row.to_address):
        return "the patient has no email address"
    if kind not in (*REFILL_REMINDERS, MessageKind.RENEWAL_NEEDED):
        return None
    rx = db.session.get(Prescription, row.prescription_id) if row.prescription_id else None
    if rx is None or rx.status != RxStatus.ACTIVE:
        return f"prescription {rx.status.value if rx else 'gone'}"
    if kind in REFILL_REMINDERS and not patient.reminders_opt_in:
        return "patient opted out"
    if row.order_id is not None:
        this_fill = sa.select(Order.fill_number).where(Order.id == row.order_id).scalar_subquery()
        newer = db.session.execute(
            sa.select(Order.id).where(Order.prescription_id == rx.id, Order.state == OrderState.DISPENSED,
                                      Order.fill_number > this_fill).limit(1)
        ).first()
        if newer is not None:
            return "a later fill was dispensed"
    if kind in REFILL_REMINDERS:
        open_order = db.session.execute(
            sa.select(Order.id).where(Order.prescription_id == rx.id, Order.state.in_(OPEN_ORDER_STATES)).limit(1)
        ).first()
        if open_order is not None:
            return "refill ordered"
        open_request = db.session.execute(
            sa.select(RefillRequest.id).where(RefillRequest.prescription_id == rx.id,
                                              RefillRequest.state.in_(OPEN_REQUEST_STATES)).limit(1)
        ).first()
        if open_request is not None:
            return "refill requested"
    return None


# ---- one message --------------------------------------------------------------------------------------


def _prepare(row_id: int, worker: str, lease: timedelta) -> tuple[OutboxMessage, rendering.RenderedEmail] | str:
    """Confirm the claim (extending the lease), check the message is wanted and render it; commit.

    Returns the row and the email, or the outcome ("skipped", "cancelled", "failed") when
    there is nothing to send.
    """
    row = _load(row_id)
    if row is None or row.state != OutboxState.SENDING or row.claimed_by != worker:
        db.session.rollback()
        return "skipped"
    reason = unwanted_reason(row)
    if reason is not None:
        row.state, row.cancelled_reason = OutboxState.CANCELLED, reason[:200]
        row.lease_until = row.claimed_by = None
        _attempt(row.id, "cancelled", reason)
        db.session.commit()
        return "cancelled"
    try:
        email = rendering.render(row)
    except rendering.RenderError as exc:
        row.state, row.cancelled_reason = OutboxState.CANCELLED, exc.reason[:200]
        row.lease_until = row.claimed_by = None
        _attempt(row.id, "cancelled", exc.reason)
        db.session.commit()
        return "cancelled"
    except Exception as exc:  # a template or data bug: stop retrying, show it to the pharmacist
        db.session.rollback()
        row = _load(row_id)
        assert row is not None
        row.attempts += 1
        row.state, row.last_error = OutboxState.FAILED, f"could not build the email: {type(exc).__name__}"
        row.lease_until = row.claimed_by = None
        _attempt(row.id, "permanent", row.last_error)
        db.session.commit()
        log.error("outbox message %d could not be rendered (%s)", row_id, type(exc).__name__)
        return "failed"
    row.lease_until = now() + lease
    db.session.commit()
    return row, email


def _mark_sent(row_id: int, email: rendering.RenderedEmail, transport: transports.Transport) -> None:
    row = _load(row_id)
    if row is None:
        db.session.rollback()
        return
    detail = transport.name
    if row.state != OutboxState.SENT:
        # Marked sent whoever holds the row now: it *was* handed over, and a worker that took the
        # row over after our lease expired will then see `sent` and not send it again.
        row.state = OutboxState.SENT
        row.sent_at = now()
        row.attempts += 1
        row.last_error = None
        row.lease_until = row.claimed_by = None
        row.subject, row.body_text, row.body_html = email.subject, email.text, email.html
    else:
        detail = f"{transport.name} (again)"
    _attempt(row.id, "sent", detail)
    db.session.commit()


def _mark_failed_attempt(row_id: int, worker: str, error: transports.TransportError) -> str:
    """Record a failed attempt: back to pending with a backoff, or failed. Returns "retried" or "failed"."""
    row = _load(row_id)
    if row is None:
        db.session.rollback()
        return "skipped"
    failure = error.failure
    _attempt(row.id, str(failure), error.summary())
    if row.state != OutboxState.SENDING or row.claimed_by != worker:
        db.session.commit()  # someone else owns it now: log the attempt, leave the state to them
        return "skipped"
    t = now()
    row.attempts += 1
    row.last_error = error.summary()
    row.lease_until = row.claimed_by = None
    gave_up = failure == rules.SmtpFailure.PERMANENT or rules.should_give_up(
        row.attempts, settings().outbox_max_attempts)
    if gave_up:
        row.state = OutboxState.FAILED
    else:
        row.state = OutboxState.PENDING
        row.next_attempt_at = rules.next_attempt_at(row.attempts, t)
    db.session.commit()
    return "failed" if gave_up else "retried"


def _count(report: DeliveryReport, outcome: str) -> None:
    setattr(report, outcome, getattr(report, outcome) + 1)


# ---- a run ------------------------------------------------------------------------------------------


def deliver_batch(ids: list[int], worker: str, transport: transports.Transport, *, lease: timedelta = LEASE,
                  should_stop: Callable[[], bool] = lambda: False) -> tuple[DeliveryReport, bool]:
    """Send claimed rows over one transport session. Returns the report and whether the server was unusable.

    When the connection itself fails (server down, refused, timed out), every row of the batch
    not yet sent gets the same transient attempt and backoff — trying each one against a dead
    server would only multiply timeouts — and the run stops.
    """
    report = DeliveryReport(claimed=len(ids))
    remaining = list(ids)
    with transport:
        while remaining:
            if should_stop():
                break
            row_id = remaining.pop(0)
            prepared = _prepare(row_id, worker, lease)
            if isinstance(prepared, str):
                _count(report, prepared)
                continue
            row, email = prepared
            message = email.to_message(message_id=row.message_id)
            try:
                transport.send(message, sender=rendering.sender_address(), recipients=[email.to_address])
            except transports.TransportError as exc:
                outcome = _mark_failed_attempt(row_id, worker, exc)
                _count(report, outcome)
                log.warning("outbox message %d: %s failure (code %s, %s)", row_id, exc.failure, exc.code,
                            exc.exc_name or "reply")
                if exc.connection:
                    for other in remaining:
                        _count(report, _mark_failed_attempt(other, worker, exc))
                    remaining.clear()
                    return _release_unsent(report, worker, ids), True
                continue
            _mark_sent(row_id, email, transport)
            report.sent += 1
    return _release_unsent(report, worker, ids), False


def _release_unsent(report: DeliveryReport, worker: str, ids: list[int]) -> DeliveryReport:
    """A run stopped early (shutdown): rows still claimed by us go back to pending at once."""
    if not ids:
        return report
    db.session.execute(
        sa.update(OutboxMessage)
        .where(OutboxMessage.id.in_(ids), OutboxMessage.state == OutboxState.SENDING,
               OutboxMessage.claimed_by == worker)
        .values(state=OutboxState.PENDING, lease_until=None, claimed_by=None)
        .execution_options(synchronize_session=False)
    )
    db.session.commit()
    return report


def deliver_due(*, transport: transports.Transport | None = None, worker: str | None = None,
                batch_size: int = BATCH_SIZE, max_batches: int | None = None, lease: timedelta = LEASE,
                should_stop: Callable[[], bool] = lambda: False) -> DeliveryReport:
    """Release expired leases, then claim and send due rows batch after batch until none are due.

    Commits as it goes (this is a job). Stops early when the mail server is unusable (the
    rows keep their backoff), after `max_batches`, or when `should_stop()` turns true.
    """
    db.session.commit()  # start from a clean transaction: claims must see committed rows only
    worker = worker or worker_id()
    transport = transport or default_transport()
    report = DeliveryReport(expired_leases=release_expired_leases())
    batches = 0
    while not should_stop() and (max_batches is None or batches < max_batches):
        ids = claim_batch(worker, limit=batch_size, lease=lease)
        if not ids:
            break
        batches += 1
        batch_report, server_down = deliver_batch(ids, worker, transport, lease=lease, should_stop=should_stop)
        report.add(batch_report)
        if server_down:
            break
    if report.claimed or report.expired_leases:
        log.info("delivery run (%s): %s", transport.name, report.line())
    return report
