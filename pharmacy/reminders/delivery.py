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

* Claims are exclusive and cost one statement per batch (claims.py: `UPDATE … WHERE id IN (SELECT …
  LIMIT n [FOR UPDATE SKIP LOCKED]) AND state='pending' RETURNING …`), and rows of a worker that died
  go back to pending when their lease expires (claims.release_expired_leases).
* Each row is re-confirmed (still `sending`, still ours, lease extended) and checked against the
  current rows (still wanted?) in a committed transaction just before it is sent, so a row whose
  lease expired and was taken over by another worker is never sent by the first one too. That
  transaction also records the previous message as sent: one commit per message, and nothing but
  those few statements between a server's 250 and its commit.
* No transaction is open while talking to the mail server, so a crash loses at most the message
  in flight.
* What an email *shows* (names, the next fill's price and dates) is read once per batch
  (rendering.Batch); the formulas, price list and shipping fee once per run.

Delivery is a job: each step (a claim, each message's outcome) is committed at once, through
core/uow.commit_step or the batch connection's own short transactions.
"""
from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass, fields
from datetime import timedelta
from typing import Any

import sqlalchemy as sa

from pharmacy.compounding.models import Order
from pharmacy.compounding.rules import OrderState
from pharmacy.core import uow
from pharmacy.core.context import now, settings, today
from pharmacy.core.db import UTCDateTime
from pharmacy.extensions import db
from pharmacy.patients.models import Patient
from pharmacy.prescriptions.models import Prescription
from pharmacy.refills.models import OPEN_REQUEST_STATES, RefillRequest
from pharmacy.reminders import claims, rendering, rules, transports
from pharmacy.reminders.models import DeliveryAttempt, OutboxMessage
from pharmacy.reminders.rules import MessageKind, OutboxState
from pharmacy.sms.models import ContactPreference

log = logging.getLogger(__name__)

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


def _core(statement: Any, params: dict[str, Any] | None = None) -> Any:
    """A Core statement on the session's connection (in its transaction), without the ORM's per-statement work:
    the per-message statements of a delivery run are plain Core, and are sent a few hundred times a second."""
    return db.session.connection().execute(statement, params)


def default_transport() -> transports.Transport:
    return transports.from_settings(settings().smtp)


def _load(row_id: int) -> OutboxMessage | None:
    stmt = sa.select(OutboxMessage).where(OutboxMessage.id == row_id).execution_options(populate_existing=True)
    if claims.is_postgres():
        stmt = stmt.with_for_update()
    return db.session.execute(stmt).scalar_one_or_none()


# ---- is it still wanted? ----------------------------------------------------------------------------


def _superseded(t: sa.Table, row: sa.BindParameter[int]) -> sa.Label[bool]:
    """Whether a later reminder about the same fill is already due (or went out): after downtime the early and the
    order-by reminders fall due together, and the patient should get the latest one only. Only a row of the same
    channel counts: the text beside an email (sms/fanout: due when spawned, so "later") is the same reminder by
    another way, never a later one — a patient who chose email and text gets both."""
    later = t.alias("later")
    return sa.exists().where(
        later.c.order_id == sa.bindparam("b_order", type_=sa.Integer),
        later.c.kind.in_(sorted(rules.REFILL_REMINDERS)),
        later.c.id != row,
        later.c.channel == sa.select(t.c.channel).where(t.c.id == row).scalar_subquery(),
        later.c.due_at > sa.select(t.c.due_at).where(t.c.id == row).scalar_subquery(),
        later.c.due_at <= sa.bindparam("b_now", type_=UTCDateTime()),
        later.c.state.in_((OutboxState.PENDING, OutboxState.SENDING, OutboxState.SENT)),
    ).label("superseded")


class _Statements:
    """The statements sent for every message, built once per process with bind parameters: building (and
    hashing) a SQLAlchemy construct costs more than the database takes to run it, hundreds of times a second."""

    def __init__(self) -> None:
        t, a = OutboxMessage.__table__, DeliveryAttempt.__table__
        p, rx, o, rr = Patient.__table__, Prescription.__table__, Order.__table__, RefillRequest.__table__
        cp = ContactPreference.__table__
        row = sa.bindparam("b_id", type_=sa.Integer)
        at = sa.bindparam("b_at", type_=UTCDateTime())
        self.sent = (
            sa.update(t).where(t.c.id == row, t.c.state != OutboxState.SENT)
            .values(state=OutboxState.SENT, sent_at=at, attempts=t.c.attempts + 1, last_error=None, lease_until=None,
                    claimed_by=None, subject=sa.bindparam("b_subject"), body_text=sa.bindparam("b_text"),
                    body_html=sa.bindparam("b_html"))
        )
        self.exists = sa.select(t.c.id).where(t.c.id == row)
        self.attempt = sa.insert(a).values(message_id=row, at=at, result=sa.bindparam("b_result"),
                                           detail=sa.bindparam("b_detail"))
        # Whether a message is still wanted: the patient's current email and choice, the prescription's status,
        # a later fill, an open order or request — scalar subqueries, each an indexed lookup.
        patient = sa.bindparam("b_patient", type_=sa.Integer)
        rx_id = sa.bindparam("b_rx", type_=sa.Integer)
        this_fill = sa.select(o.c.fill_number).where(o.c.id == sa.bindparam("b_order", type_=sa.Integer))
        facts = [
            sa.exists().where(p.c.id == patient).label("patient_found"),
            sa.select(p.c.email).where(p.c.id == patient).scalar_subquery().label("email"),
            sa.select(p.c.reminders_opt_in).where(p.c.id == patient).scalar_subquery().label("reminders_opt_in"),
            sa.select(rx.c.status).where(rx.c.id == rx_id).scalar_subquery().label("rx_status"),
            sa.exists().where(o.c.prescription_id == rx_id, o.c.state == OrderState.DISPENSED,
                              o.c.fill_number > this_fill.scalar_subquery()).label("newer_fill"),
            sa.exists().where(o.c.prescription_id == rx_id, o.c.state.in_(OPEN_ORDER_STATES)).label("open_order"),
            sa.exists().where(rr.c.prescription_id == rx_id, rr.c.state.in_(OPEN_REQUEST_STATES)).label("open_request"),
            _superseded(t, row),
            # The patient's contact choices (pharmacy/sms): text messages only, with a number that takes them; a pause.
            sa.exists().where(cp.c.patient_id == patient, cp.c.channel == "sms", cp.c.sms_consent.is_(True),
                              cp.c.sms_number.is_not(None), cp.c.sms_verified_at.is_not(None)).label("texts_only"),
            sa.exists().where(cp.c.patient_id == patient,
                              cp.c.paused_until >= sa.bindparam("b_today", type_=sa.Date())).label("paused"),
        ]
        self.facts = sa.select(*facts)
        # Still `sending` and ours: the lease is extended, and (where UPDATE … RETURNING exists) the facts come back
        # from the same statement.
        mine = sa.and_(t.c.id == row, t.c.state == OutboxState.SENDING,
                       t.c.claimed_by == sa.bindparam("b_worker", type_=sa.String))
        lease = sa.bindparam("b_lease", type_=UTCDateTime())
        self.confirm = sa.update(t).where(mine).values(lease_until=lease)
        # PostgreSQL, not waiting: a row another transaction holds is passed over (the caller then commits first).
        self.confirm_or_skip = sa.update(t).where(
            t.c.id == sa.select(t.c.id).where(mine).with_for_update(skip_locked=True).scalar_subquery()
        ).values(lease_until=lease)
        self.confirm_returning = self.confirm.returning(*facts)
        self.confirm_or_skip_returning = self.confirm_or_skip.returning(*facts)


@functools.cache
def _statements() -> _Statements:
    return _Statements()


def _facts_params(patient_id: int | None, prescription_id: int | None, order_id: int | None) -> dict[str, Any]:
    return {"b_patient": patient_id, "b_rx": prescription_id, "b_order": order_id, "b_now": now(), "b_today": today()}


def wanted_facts(row: OutboxMessage) -> Any:
    """The facts the wanted-check reads about a message (rules.WantedFacts), from the current rows; for another
    channel's delivery (pharmacy/sms), which applies its own rules to the same facts."""
    params = {"b_id": row.id, **_facts_params(row.patient_id, row.prescription_id, row.order_id)}
    return _core(_statements().facts, params).one()


def unwanted_reason(row: OutboxMessage) -> str | None:
    """Why a message should no longer go out (None: send it), read from the current rows in one statement.

    Delivery checks this just before each send, in the transaction that confirms the claim (see _prepare);
    never from data read earlier for the batch.
    """
    kind = MessageKind(row.kind)
    params = {"b_id": row.id, **_facts_params(row.patient_id, row.prescription_id, row.order_id)}
    facts = _core(_statements().facts, params).one()
    return rules.unwanted_reason(kind, order_id=row.order_id, to_address=row.to_address, facts=facts)


# ---- one message --------------------------------------------------------------------------------------


def _confirm_claim(conn: sa.Connection, row_id: int, worker: str, lease: timedelta, *, wait: bool,
                   facts_of: Any = None) -> Any:
    """Still `sending` and still ours? Extend the lease, and return the wanted-facts of the message (`facts_of`: its
    batch row) — or None when it is not ours any more. Without `wait`, a row locked by another transaction
    (PostgreSQL) counts as not ours for now rather than being waited for: the caller commits what it holds first."""
    q = _statements()
    skip = claims.is_postgres() and not wait
    params = {"b_id": row_id, "b_worker": worker, "b_lease": now() + lease}
    if facts_of is not None:
        params.update(_facts_params(facts_of.patient_id, facts_of.prescription_id, facts_of.order_id))
    else:
        params.update(_facts_params(None, None, None))
    if claims.update_returning():
        return conn.execute(q.confirm_or_skip_returning if skip else q.confirm_returning, params).first()
    if conn.execute(q.confirm_or_skip if skip else q.confirm, params).rowcount != 1:
        return None
    return conn.execute(q.facts, params).one()


def _insert_attempt(row_id: int, result: str, detail: str | None, conn: sa.Connection | None = None) -> None:
    (conn or db.session.connection()).execute(_statements().attempt, {
        "b_id": row_id, "b_at": now(), "b_result": result, "b_detail": detail[:400] if detail else None})


def _finish(conn: sa.Connection, row_id: int, worker: str, result: str, detail: str, **values: Any) -> bool:
    """Move one of our rows out of `sending` (cancelled, failed) with its attempt row; False if not ours any more."""
    table = OutboxMessage.__table__
    changed = conn.execute(
        sa.update(table).where(table.c.id == row_id, table.c.state == OutboxState.SENDING,
                               table.c.claimed_by == worker)
        .values(lease_until=None, claimed_by=None, **values)
    ).rowcount == 1
    if changed:
        _insert_attempt(row_id, result, detail, conn)
    return changed


def _record_sent(conn: sa.Connection, row_id: int, email: rendering.RenderedEmail,
                 transport: transports.Transport) -> None:
    """The server said 250: the row is `sent` (whoever holds it now), with the email as sent. Not committed."""
    q = _statements()
    # Marked sent whoever holds the row now: it *was* handed over, and a worker that took the row over
    # after our lease expired will then see `sent` and not send it again.
    text = email.kept_text if email.kept_text is not None else email.text
    html = email.kept_html if email.kept_html is not None else email.html
    changed = conn.execute(q.sent, {"b_id": row_id, "b_at": now(), "b_subject": email.subject, "b_text": text,
                                    "b_html": html}).rowcount == 1
    if changed:
        _insert_attempt(row_id, "sent", transport.name, conn)
    elif conn.execute(q.exists, {"b_id": row_id}).first() is not None:
        _insert_attempt(row_id, "sent", f"{transport.name} (again)", conn)


def _mark_sent(conn: sa.Connection, row_id: int, email: rendering.RenderedEmail,
               transport: transports.Transport) -> None:
    with conn.begin():
        _record_sent(conn, row_id, email, transport)


def _check_in(conn: sa.Connection, row_id: int, row: Any, worker: str, lease: timedelta, *, wait: bool) -> str | None:
    """Inside the caller's transaction: confirm our claim and check the message is still wanted.

    None: send it. "skipped" (not ours any more), "cancelled" (no longer wanted; recorded), or — only without
    `wait`, on PostgreSQL — "locked": another transaction holds the row right now.
    """
    facts = _confirm_claim(conn, row_id, worker, lease, wait=wait, facts_of=row)
    if facts is None:
        return "locked" if not wait and claims.is_postgres() else "skipped"
    reason = "the message is gone" if row is None else rules.unwanted_reason(
        MessageKind(row.kind), order_id=row.order_id, to_address=row.to_address, facts=facts)
    if reason is None:
        return None
    _finish(conn, row_id, worker, "cancelled", reason, state=OutboxState.CANCELLED, cancelled_reason=reason[:200])
    return "cancelled"


def _prepare(conn: sa.Connection, row_id: int, worker: str, lease: timedelta, batch: rendering.Batch,
             sent: tuple[int, rendering.RenderedEmail] | None,
             transport: transports.Transport) -> rendering.RenderedEmail | str:
    """Before sending one row: record the previous send, confirm this claim, check the message is wanted;
    commit; then build the email from the batch.

    Returns the email, or the outcome ("skipped", "cancelled", "failed") when there is nothing to send.
    The previous message's "sent" shares this transaction: it is committed right after the server's
    250 with nothing in between but these few statements — no rendering and no network — so the
    at-least-once window stays what it was. Should any of them fail, "sent" is committed on its own first.
    `conn` is the batch's own connection (one transaction per message, no pool round trip for each).
    """
    row = batch.rows.get(row_id)
    try:
        with conn.begin():  # one transaction: the previous "sent", this claim confirmed, its wanted-check
            if sent is not None:
                _record_sent(conn, sent[0], sent[1], transport)
            outcome = _check_in(conn, row_id, row, worker, lease, wait=False)
    except BaseException:
        if sent is not None:  # rolled back with the rest: "sent" is committed on its own
            _mark_sent(conn, sent[0], sent[1], transport)
        raise
    if outcome == "locked":
        # Another transaction held the row a moment ago (PostgreSQL): what we held is committed, now wait for it.
        with conn.begin():
            outcome = _check_in(conn, row_id, row, worker, lease, wait=True)
    if outcome is not None:
        return outcome
    try:
        return batch.render(row_id)
    except rendering.RenderError as exc:
        with conn.begin():
            _finish(conn, row_id, worker, "cancelled", exc.reason, state=OutboxState.CANCELLED,
                    cancelled_reason=exc.reason[:200])
        return "cancelled"
    except Exception as exc:  # a template or data bug: stop retrying, show it to the pharmacist
        error = f"could not build the email: {type(exc).__name__}"
        table = OutboxMessage.__table__
        with conn.begin():
            _finish(conn, row_id, worker, "permanent", error, state=OutboxState.FAILED, last_error=error,
                    attempts=table.c.attempts + 1)
        log.error("outbox message %d could not be rendered (%s)", row_id, type(exc).__name__)
        return "failed"


def _mark_failed_attempt(row_id: int, worker: str, error: transports.TransportError) -> str:
    """Record a failed attempt: back to pending with a backoff, or failed. Returns "retried" or "failed"."""
    row = _load(row_id)
    if row is None:
        db.session.rollback()
        return "skipped"
    failure = error.failure
    claims.attempt(row.id, str(failure), error.summary())
    if row.state != OutboxState.SENDING or row.claimed_by != worker:
        uow.commit_step()  # someone else owns it now: log the attempt, leave the state to them
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
    uow.commit_step()
    return "failed" if gave_up else "retried"


def _count(report: DeliveryReport, outcome: str) -> None:
    setattr(report, outcome, getattr(report, outcome) + 1)


# ---- a run ------------------------------------------------------------------------------------------


def deliver_batch(ids: list[int], worker: str, transport: transports.Transport, *, lease: timedelta = claims.LEASE,
                  should_stop: Callable[[], bool] = lambda: False,
                  cache: rendering.RunCache | None = None) -> tuple[DeliveryReport, bool]:
    """Send claimed rows over one transport session. Returns the report and whether the server was unusable.

    The batch's rows and what their emails show are read once (rendering.Batch, a fixed number of
    statements); each row then costs one transaction — the previous row's "sent", this row's claim
    confirmed and its wanted-check — plus rendering and the send itself. When the connection itself
    fails (server down, refused, timed out), every row of the batch not yet sent gets the same transient
    attempt and backoff — trying each one against a dead server would only multiply timeouts — and the
    run stops.
    """
    report = DeliveryReport(claimed=len(ids))
    remaining = list(ids)
    sent: tuple[int, rendering.RenderedEmail] | None = None
    batch = rendering.Batch.load(ids, cache)
    uow.commit_step()  # the session's reads end here (on SQLite its transaction holds the write lock)
    conn = db.engine.connect()
    try:
        with transport:
            while remaining:
                if should_stop():
                    break
                row_id = remaining.pop(0)
                # From here _prepare records it: with this row's check, or on its own should that fail (and then
                # it raises) — not a second time by the `finally` below, as a send "(again)" that never happened.
                previous, sent = sent, None
                prepared = _prepare(conn, row_id, worker, lease, batch, previous, transport)
                if isinstance(prepared, str):
                    _count(report, prepared)
                    continue
                email = prepared
                message = email.to_message(message_id=batch.rows[row_id].message_id)
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
                sent = (row_id, email)
                report.sent += 1
            if sent is not None:  # the batch's last message: committed before the connection is closed
                _mark_sent(conn, sent[0], sent[1], transport)
                sent = None
    finally:
        try:
            if sent is not None:  # only on an unexpected error: what was handed over is still recorded
                _mark_sent(conn, sent[0], sent[1], transport)
        finally:
            conn.close()
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
    uow.commit_step()
    return report


def _release_after_error(worker: str, ids: list[int]) -> None:
    """An unexpected error (the database, a bug) stopped a batch: its rows not yet sent go back to pending now
    rather than waiting out their lease — an expired lease counts as an attempt, and a repeating error would
    otherwise fail the batch's other messages one expiry at a time. Best effort: the error itself is re-raised."""
    try:
        db.session.rollback()
        _release_unsent(DeliveryReport(), worker, ids)
    except Exception as exc:  # the database may be what failed; the leases expire as before
        db.session.rollback()
        log.warning("could not release a failed batch's rows (%s)", type(exc).__name__)


def deliver_due(*, transport: transports.Transport | None = None, worker: str | None = None,
                batch_size: int = claims.BATCH_SIZE, max_batches: int | None = None, lease: timedelta = claims.LEASE,
                should_stop: Callable[[], bool] = lambda: False) -> DeliveryReport:
    """Release expired leases, then claim and send due rows batch after batch until none are due.

    Commits as it goes (this is a job). Stops early when the mail server is unusable (the
    rows keep their backoff), after `max_batches`, or when `should_stop()` turns true.
    """
    uow.commit_step()  # start from a clean transaction: claims must see committed rows only
    worker = worker or claims.worker_id()
    transport = transport or default_transport()
    report = DeliveryReport(expired_leases=claims.release_expired_leases())
    batches = 0
    cache = rendering.RunCache()  # formulas, the price list and the shipping fee: read once per run
    while not should_stop() and (max_batches is None or batches < max_batches):
        ids = claims.claim_batch(worker, limit=batch_size, lease=lease)
        if not ids:
            break
        batches += 1
        try:
            batch_report, server_down = deliver_batch(ids, worker, transport, lease=lease, should_stop=should_stop,
                                                      cache=cache)
        except Exception:
            _release_after_error(worker, ids)
            raise
        report.add(batch_report)
        if server_down:
            break
    if report.claimed or report.expired_leases:
        log.info("delivery run (%s): %s", transport.name, report.line())
    return report
