"""Delivering outbound SCRIPT messages to the intermediary: claim, post, record — at least once, never lost.

The same life as an email in the outbox (reminders/delivery.py), smaller: `pending` → claimed (`sending`, a lease,
the worker's id) → `sent`, or back to `pending` with a backoff (60 s doubling to an hour) after a transient failure,
or `failed` after a permanent one or too many attempts (shown on the queue page, to retry or cancel). Every try is
an ErxDeliveryAttempt row and an audit event.

No transaction is open while talking to the intermediary. A message posted and then not recorded (the process died
in between) goes out again when its lease expires, with the same MessageID: the intermediary (and the prescriber's
system) drop the duplicate by MessageID, exactly as this pharmacy does with theirs.

Each step (a claim, each message's outcome) is committed at once through core/uow.commit_step.
"""
from __future__ import annotations

import logging
import os
import socket
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

import sqlalchemy as sa

from pharmacy.core import audit, uow
from pharmacy.core.actor import SYSTEM
from pharmacy.core.context import now
from pharmacy.eprescribing import ncpdp, rules
from pharmacy.eprescribing.models import ErxDeliveryAttempt, ErxMessage
from pharmacy.eprescribing.rules import Direction, MessageState
from pharmacy.eprescribing.settings import erx_settings
from pharmacy.extensions import db

log = logging.getLogger(__name__)

LEASE = timedelta(minutes=5)
BATCH_SIZE = 20
MAX_ANSWER_BYTES = 256 * 1024

#: (url, body, bearer token, timeout) → (HTTP status or None when nothing came back, the answer's bytes)
Transport = Callable[[str, bytes, str | None, float], tuple[int | None, bytes]]


@dataclass
class DeliveryReport:
    claimed: int = 0
    sent: int = 0
    retried: int = 0
    failed: int = 0
    expired_leases: int = 0

    def line(self) -> str:
        return (f"claimed {self.claimed}, sent {self.sent}, retried {self.retried}, failed {self.failed}, "
                f"expired leases {self.expired_leases}")


def http_post(url: str, body: bytes, token: str | None, timeout: float) -> tuple[int | None, bytes]:
    """POST the message as application/xml; the status and body that came back (None: no answer at all)."""
    headers = {"Content-Type": "application/xml; charset=utf-8", "Accept": "application/xml"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")  # noqa: S310 - http(s) only
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - scheme checked in settings
            return response.status, response.read(MAX_ANSWER_BYTES)
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read(MAX_ANSWER_BYTES)
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        log.warning("intermediary unreachable (%s)", type(exc).__name__)
        return None, b""


def worker_id() -> str:
    return f"{socket.gethostname()[:30]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _is_postgres() -> bool:
    return db.session.get_bind().dialect.name == "postgresql"


def _attempt(row_id: int, result: str, detail: str | None) -> None:
    db.session.add(ErxDeliveryAttempt(message_id=row_id, at=now(), result=result, detail=(detail or "")[:400] or None))


def release_expired_leases() -> int:
    """Messages left `sending` by a worker that died go back to `pending`, due now (they are sent again)."""
    t = now()
    ids = list(db.session.execute(
        sa.select(ErxMessage.id).where(ErxMessage.state == MessageState.SENDING, ErxMessage.lease_until < t)
        .order_by(ErxMessage.id).limit(200)
    ).scalars())
    for row_id in ids:
        done = db.session.execute(
            sa.update(ErxMessage).where(ErxMessage.id == row_id, ErxMessage.state == MessageState.SENDING,
                                        ErxMessage.lease_until < t)
            .values(state=MessageState.PENDING, lease_until=None, claimed_by=None, next_attempt_at=t)
            .execution_options(synchronize_session=False)
        )
        if done.rowcount == 1:
            _attempt(row_id, "expired_lease", "the delivery process stopped before recording the outcome")
    uow.commit_step()
    return len(ids)


def claim(worker: str, *, limit: int = BATCH_SIZE) -> list[int]:
    """Claim up to `limit` due outbound messages for `worker` and commit; their ids, oldest first.

    On PostgreSQL the due rows are picked FOR UPDATE SKIP LOCKED so schedulers side by side never take the same
    message; on SQLite (one scheduler) the UPDATE's own `state = 'pending'` decides."""
    t = now()
    due = (sa.select(ErxMessage.id)
           .where(ErxMessage.direction == Direction.OUTBOUND, ErxMessage.state == MessageState.PENDING,
                  ErxMessage.next_attempt_at <= t)
           .order_by(ErxMessage.next_attempt_at, ErxMessage.id).limit(limit))
    if _is_postgres():
        due = due.with_for_update(skip_locked=True)
    ids = list(db.session.execute(due).scalars())
    claimed = []
    for row_id in ids:
        done = db.session.execute(
            sa.update(ErxMessage).where(ErxMessage.id == row_id, ErxMessage.state == MessageState.PENDING)
            .values(state=MessageState.SENDING, lease_until=t + LEASE, claimed_by=worker)
            .execution_options(synchronize_session=False)
        )
        if done.rowcount == 1:
            claimed.append(row_id)
    uow.commit_step()
    return claimed


def read_answer(raw: bytes) -> tuple[str | None, ncpdp.Answer]:
    """The intermediary's Status/Error/Verify, read with our own parser (anything else: no answer)."""
    if not raw:
        return None, ncpdp.Answer()
    try:
        message = ncpdp.parse(raw)
    except ncpdp.ScriptError as exc:
        return None, ncpdp.Answer(description=f"unreadable answer: {exc.description}"[:400])
    if message.kind in ("Status", "Error", "Verify") and message.answer is not None:
        return message.kind, message.answer
    return None, ncpdp.Answer(description=f"unexpected answer: {message.kind}")


def deliver_due(*, worker: str | None = None, transport: Transport = http_post, limit: int = BATCH_SIZE,
                should_stop: Callable[[], bool] | None = None) -> DeliveryReport:
    """One delivery run (the scheduler's job and `flask erx deliver`)."""
    cfg = erx_settings()
    report = DeliveryReport()
    if cfg.intermediary_url is None:
        return report  # nowhere to send: messages wait in the outbox (the queue page says so)
    worker = worker or worker_id()
    report.expired_leases = release_expired_leases()
    ids = claim(worker, limit=limit)
    report.claimed = len(ids)
    for position, row_id in enumerate(ids):
        if should_stop is not None and should_stop():
            _hand_back(ids[position:], worker)
            break
        row = db.session.execute(
            sa.select(ErxMessage).where(ErxMessage.id == row_id).execution_options(populate_existing=True)
        ).scalar_one_or_none()
        if row is None or row.state != MessageState.SENDING or row.claimed_by != worker:
            uow.commit_step()
            continue
        body = row.body
        uow.commit_step()  # nothing open while the intermediary answers
        status, raw = transport(cfg.intermediary_url, body, cfg.intermediary_token, cfg.timeout_seconds)
        kind, answer = read_answer(raw)
        outcome = rules.classify_answer(status, kind, answer.code)
        row = db.session.execute(
            sa.select(ErxMessage).where(ErxMessage.id == row_id).execution_options(populate_existing=True)
        ).scalar_one()
        detail = f"HTTP {status if status is not None else 'no answer'}" + (
            f"; {kind} {answer.code}: {answer.description}" if kind else (f"; {answer.description}" if answer.description
                                                                          else ""))
        row.attempts += 1
        row.lease_until, row.claimed_by = None, None
        row.answer_kind, row.answer_code = kind, (answer.code or None)
        row.answer_text = answer.description[:400] or None
        row.answer_body = raw or None
        if outcome == "sent":
            row.state, row.sent_at, row.last_error = MessageState.SENT, now(), None
            report.sent += 1
            action = "erx.message.sent"
        elif outcome == "transient" and row.attempts < cfg.max_attempts:
            row.state, row.last_error = MessageState.PENDING, detail[:400]
            row.next_attempt_at = now() + rules.next_attempt_delay(row.attempts)
            report.retried += 1
            action = "erx.message.retry_later"
        else:
            row.state, row.last_error = MessageState.FAILED, detail[:400]
            report.failed += 1
            action = "erx.message.failed"
        _attempt(row.id, outcome, detail)
        audit.record(SYSTEM, action, patient_id=row.patient_id, entity=("erx_message", row.id),
                     outcome="ok" if outcome == "sent" else "failed", details={"kind": row.kind, "attempt": row.attempts})
        uow.commit_step()
    if report.claimed:
        log.info("e-prescribing delivery: %s", report.line())
    return report


def _hand_back(ids: list[int], worker: str) -> None:
    """A stop was asked for: the rest of the claim goes back to pending at once (not after the lease)."""
    db.session.execute(
        sa.update(ErxMessage).where(ErxMessage.id.in_(ids), ErxMessage.state == MessageState.SENDING,
                                    ErxMessage.claimed_by == worker)
        .values(state=MessageState.PENDING, lease_until=None, claimed_by=None)
        .execution_options(synchronize_session=False)
    )
    uow.commit_step()
