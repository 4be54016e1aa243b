"""Who sends which outbox row: leases and claims.

A delivery worker claims due rows (state `sending`, a lease, its worker id) before it sends them, so that any
number of schedulers on PostgreSQL — or the one on SQLite — never take the same row, and a row whose worker died
goes back to pending when its lease expires. delivery.py sends what was claimed here.

Claims and lease releases are steps of the delivery job: each is committed at once (core/uow.commit_step).
"""
from __future__ import annotations

import logging
import os
import socket
import uuid
from datetime import timedelta

import sqlalchemy as sa

from pharmacy.core import uow
from pharmacy.core.context import now, settings
from pharmacy.extensions import db
from pharmacy.reminders.models import DeliveryAttempt, OutboxMessage
from pharmacy.reminders.rules import OutboxState

log = logging.getLogger("pharmacy.reminders.delivery")  # one log for the whole delivery run

#: How long a claim is valid. Far longer than one message can take (SMTP timeout ~10 s), renewed
#: before every send, and short enough that rows of a crashed process go out again within minutes.
LEASE = timedelta(minutes=5)
BATCH_SIZE = 50


def worker_id() -> str:
    """Who holds a claim: host, process and a random suffix (two workers in one process differ)."""
    return f"{socket.gethostname()[:30]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def is_postgres() -> bool:
    return db.session.get_bind().dialect.name == "postgresql"


def attempt(row_id: int, result: str, detail: str | None = None) -> None:
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
    if is_postgres():
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
            attempt(row_id, "expired_lease", "claim expired before the message was marked sent")
            released += 1
    uow.commit_step()
    if released:
        log.warning("released %d expired delivery lease(s)", released)
    return released


# ---- claiming -------------------------------------------------------------------------------------


def update_returning() -> bool:
    """UPDATE … RETURNING: PostgreSQL, and SQLite from 3.35 (SQLAlchemy reads the library's version)."""
    return bool(db.session.get_bind().dialect.update_returning)


def claim_batch(worker: str, *, limit: int = BATCH_SIZE, lease: timedelta = LEASE, channel: str = "email") -> list[int]:
    """Claim up to `limit` due rows for `worker` (state `sending`, lease set) and commit; their ids, oldest first.

    One statement per batch: UPDATE outbox SET state='sending', lease_until=…, claimed_by=… WHERE id IN
    (SELECT id … due … ORDER BY next_attempt_at, id LIMIT n) AND state='pending' RETURNING id, next_attempt_at
    — on PostgreSQL the due rows are picked `FOR UPDATE SKIP LOCKED` in a materialized CTE (WITH due AS
    MATERIALIZED (…) UPDATE outbox … FROM due WHERE outbox.id = due.id …). The scan reads the first n entries
    of ix_outbox_state_next_attempt, so the work follows the rows due, never the rows stored. On PostgreSQL
    SKIP LOCKED keeps any number of workers
    apart (rows another worker is claiming are passed over, not waited for); on SQLite the UPDATE's own
    `state = 'pending'` decides (SQLite serialises writers, and exactly one scheduler runs there).
    Each channel's delivery claims its own rows: email (reminders/delivery.py) and texts (sms/delivery.py).
    """
    t = now()
    table = OutboxMessage.__table__
    due = (
        sa.select(table.c.id)
        .where(table.c.state == OutboxState.PENDING, table.c.next_attempt_at <= t, table.c.channel == channel)
        .order_by(table.c.next_attempt_at, table.c.id).limit(limit)
    )
    if is_postgres():
        # A materialized CTE, not `id IN (subquery)`: PostgreSQL may run an IN subquery again for each row it
        # joins, and with SKIP LOCKED every run returns other rows — one UPDATE would then claim far more than
        # `limit`. The CTE is evaluated exactly once.
        picked = due.with_for_update(skip_locked=True).cte("due").prefix_with("MATERIALIZED")
        which = table.c.id == picked.c.id
    else:
        which = table.c.id.in_(due.scalar_subquery())
    claim = (
        sa.update(table).where(which, table.c.state == OutboxState.PENDING)
        .values(state=OutboxState.SENDING, lease_until=t + lease, claimed_by=worker)
    )
    if update_returning():
        rows = db.session.execute(claim.returning(table.c.id, table.c.next_attempt_at)).all()
    else:  # SQLite before 3.35: the same UPDATE, then read back what it claimed (the worker id is unique)
        db.session.execute(claim)
        rows = db.session.execute(
            sa.select(table.c.id, table.c.next_attempt_at).where(
                table.c.state == OutboxState.SENDING, table.c.claimed_by == worker, table.c.lease_until == t + lease)
        ).all()
    uow.commit_step()
    return [r.id for r in sorted(rows, key=lambda r: (r.next_attempt_at, r.id))]
