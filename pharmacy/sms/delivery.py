"""Delivering texts: the same outbox, claims, leases, retries and attempt log as email (reminders/claims.py), with
a transport for Twilio's Messages API.

A text row's life is an email's: `pending` → claimed (`sending`, a lease, the worker) → `sent`, or back to
`pending` with the same backoff after a transient failure (none reached Twilio, 429, 5xx), or `failed` after a
permanent one (a number that cannot take texts, a refused request) or too many attempts, shown on the dashboard.
Before each send the claim is confirmed and the text checked against the current rows (consent, the patient's
choice, the prescription, a refill already asked for, a pause, quiet hours), and no transaction is open while
Twilio is being called. A text accepted by Twilio is marked sent at once; should the process die in between, the
row comes back when its lease expires and — this is the one-message window email has too — it is first looked
for among the texts Twilio already took (same number, same words, since its first claim), so it is not sent twice.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import sqlalchemy as sa

from pharmacy.core import uow
from pharmacy.core.context import now, settings
from pharmacy.extensions import db
from pharmacy.reminders import claims, rendering
from pharmacy.reminders import delivery as email_delivery
from pharmacy.reminders import rules as reminder_rules
from pharmacy.reminders.delivery import DeliveryReport
from pharmacy.reminders.models import DeliveryAttempt, OutboxMessage
from pharmacy.reminders.rules import MessageKind, OutboxState
from pharmacy.sms import fanout, rules, services, transports
from pharmacy.sms.models import ContactPreference

log = logging.getLogger(__name__)


def default_transport() -> transports.SmsTransport:
    return transports.from_settings(settings().twilio)


def unwanted(row: OutboxMessage, pref: ContactPreference | None, facts: Any) -> str | None:
    """Why this text must not go (None: send it)."""
    kind = MessageKind(row.kind)
    if kind == MessageKind.ONE_TIME_CODE:
        return None if row.to_address else "no number for the code"
    if pref is None or not pref.sms_number or not pref.sms_verified_at:
        return "no verified mobile number"
    if not pref.sms_consent:
        return services.OPTED_OUT
    if pref.channel not in (rules.Choice.SMS.value, rules.Choice.BOTH.value):
        return "patient chose email"
    if kind.value not in rules.TEXT_KINDS:
        return "not sent as a text"
    adapted = SimpleNamespace(
        patient_found=facts.patient_found, email=pref.sms_number, reminders_opt_in=facts.reminders_opt_in,
        rx_status=facts.rx_status, newer_fill=facts.newer_fill, open_order=facts.open_order,
        open_request=facts.open_request, superseded=facts.superseded, texts_only=False, paused=facts.paused)
    return reminder_rules.unwanted_reason(kind, order_id=row.order_id, to_address=None, facts=adapted)


def _ours(row_id: int, worker: str, lease: timedelta) -> bool:
    """Still `sending` and ours: extend the lease (committed by the caller)."""
    return db.session.execute(
        sa.update(OutboxMessage).where(OutboxMessage.id == row_id, OutboxMessage.state == OutboxState.SENDING,
                                       OutboxMessage.claimed_by == worker)
        .values(lease_until=now() + lease).execution_options(synchronize_session=False)
    ).rowcount == 1


def _finish(row_id: int, worker: str, result: str, detail: str, **values: Any) -> None:
    changed = db.session.execute(
        sa.update(OutboxMessage).where(OutboxMessage.id == row_id, OutboxMessage.state == OutboxState.SENDING,
                                       OutboxMessage.claimed_by == worker)
        .values(lease_until=None, claimed_by=None, **values).execution_options(synchronize_session=False)
    ).rowcount == 1
    if changed:
        claims.attempt(row_id, result, detail)
    uow.commit_step()


def compose(row: OutboxMessage, *, preview: bool = False) -> tuple[str, str]:
    """(the text, the copy kept on the row): the words come from the same facts the email would show. `preview`:
    for the outbox page before sending (a masked code, a placeholder skip link)."""
    cfg = settings()
    ctx = rendering.Batch.load([row.id]).context(row.id, preview=preview)
    kind = MessageKind(row.kind)
    words = dict(pharmacy=cfg.pharmacy_name, phone=cfg.pharmacy_phone, portal_url=f"{cfg.base_url}/my/",
                 order_by=ctx.get("order_by"), ready_on=ctx.get("ready_on"), skip_url=ctx.get("skip_url"),
                 minutes=ctx.get("minutes"))
    body = rules.text_for(kind.value, code=ctx.get("code"), **words)
    kept = rules.text_for(kind.value, code=rendering.MASK, **words) if kind == MessageKind.ONE_TIME_CODE else body
    return body, kept


def preview(row: OutboxMessage) -> tuple[str | None, str]:
    """An unsent text for the staff outbox page: (the number it goes to, the words as they will go, with no working
    code or link). Registered as the "sms" channel's preview in reminders.services (sms/views.init_app)."""
    pref = db.session.get(ContactPreference, row.patient_id) if row.patient_id else None
    to = row.to_address or (pref.sms_number if pref else None)
    return to, compose(row, preview=True)[1]


def _already_taken(transport: transports.SmsTransport, row: OutboxMessage, to: str, body: str) -> str | None:
    """After an expired lease: did Twilio take this very text before the process died? Its id, or None."""
    crashed = db.session.execute(
        sa.select(sa.func.min(DeliveryAttempt.at)).where(DeliveryAttempt.message_id == row.id,
                                                         DeliveryAttempt.result == "expired_lease")
    ).scalar_one_or_none()
    finder = getattr(transport, "find_sent", None)
    if crashed is None or finder is None:
        return None
    since = row.created_at
    return finder(to=to, body=body, since=since)


def deliver_one(row_id: int, worker: str, transport: transports.SmsTransport, *,
                lease: timedelta = claims.LEASE) -> tuple[str, transports.SmsError | None]:
    """Send one claimed text. Returns the outcome (sent, retried, failed, cancelled, skipped, deferred) and the
    error when the provider could not be reached at all (the caller then stops the batch)."""
    cfg = settings()
    row = db.session.execute(sa.select(OutboxMessage).where(OutboxMessage.id == row_id)
                             .execution_options(populate_existing=True)).scalar_one_or_none()
    if row is None or not _ours(row_id, worker, lease):
        db.session.rollback()
        return "skipped", None
    pref = db.session.get(ContactPreference, row.patient_id) if row.patient_id else None
    reason = unwanted(row, pref, email_delivery.wanted_facts(row))
    if reason is not None:
        _finish(row_id, worker, "cancelled", reason, state=OutboxState.CANCELLED, cancelled_reason=reason[:200])
        return "cancelled", None
    t = now()
    if row.kind != MessageKind.ONE_TIME_CODE and not rules.in_send_hours(
            t, tz=cfg.timezone, start_hour=cfg.sms_start_hour, end_hour=cfg.sms_end_hour):
        later = rules.next_send_time(t, tz=cfg.timezone, start_hour=cfg.sms_start_hour, end_hour=cfg.sms_end_hour)
        _finish(row_id, worker, "deferred", "quiet hours", state=OutboxState.PENDING, next_attempt_at=later)
        return "deferred", None
    to = row.to_address or (pref.sms_number if pref else None)
    try:
        body, kept = compose(row)
    except rendering.RenderError as exc:
        _finish(row_id, worker, "cancelled", exc.reason, state=OutboxState.CANCELLED, cancelled_reason=exc.reason[:200])
        return "cancelled", None
    assert to is not None
    taken = _already_taken(transport, row, to, body)
    uow.commit_step()  # the claim is confirmed; nothing is held open while the provider is called
    if taken is not None:
        accepted = transports.Accepted(provider_id=taken, status="sent")
    else:
        callback = None if transport.local_only else f"{cfg.base_url}/sms/status"
        try:
            accepted = transport.send(to=to, body=body, status_callback=callback)
        except transports.SmsError as exc:
            return _failed(row_id, worker, to, exc), (exc if exc.connection else None)
    db.session.execute(
        sa.update(OutboxMessage).where(OutboxMessage.id == row_id, OutboxMessage.state != OutboxState.SENT)
        .values(state=OutboxState.SENT, sent_at=now(), attempts=OutboxMessage.attempts + 1, last_error=None,
                lease_until=None, claimed_by=None, to_address=to, body_text=kept, subject=None, body_html=None,
                provider_id=accepted.provider_id, provider_status=accepted.status)
        .execution_options(synchronize_session=False)
    )
    claims.attempt(row_id, "sent", f"{transport.name}" + (" (found already sent)" if taken else ""))
    uow.commit_step()
    return "sent", None


def _failed(row_id: int, worker: str, to: str, error: transports.SmsError) -> str:
    """A failed send: back to pending with the email backoff, or failed (permanent, or too many attempts)."""
    row = db.session.execute(sa.select(OutboxMessage).where(OutboxMessage.id == row_id)
                             .execution_options(populate_existing=True)).scalar_one()
    failure = error.failure
    claims.attempt(row_id, failure.value, error.summary())
    if row.state != OutboxState.SENDING or row.claimed_by != worker:
        uow.commit_step()
        return "skipped"
    row.attempts += 1
    row.last_error = error.summary()
    row.lease_until = row.claimed_by = None
    gave_up = failure == rules.Failure.PERMANENT or reminder_rules.should_give_up(
        row.attempts, settings().outbox_max_attempts)
    if gave_up:
        row.state = OutboxState.FAILED
    else:
        row.state = OutboxState.PENDING
        row.next_attempt_at = reminder_rules.next_attempt_at(row.attempts, now())
    if error.code == rules.OPTED_OUT_CODE:
        services.opted_out_by_carrier(to, None)
    uow.commit_step()
    log.warning("text %d: %s failure (status %s, code %s)", row_id, failure.value, error.status, error.code)
    return "failed" if gave_up else "retried"


def deliver_due(*, transport: transports.SmsTransport | None = None, worker: str | None = None,
                batch_size: int = claims.BATCH_SIZE, max_batches: int | None = None,
                lease: timedelta = claims.LEASE, should_stop: Callable[[], bool] = lambda: False) -> DeliveryReport:
    """Spawn the texts now due, release expired leases, then claim and send text rows batch after batch.

    A job: every step is committed as it goes. Stops early when the provider cannot be reached (the rows of the
    batch not yet tried go back to pending at once, with no attempt counted), after `max_batches`, or on
    `should_stop()`.
    """
    uow.commit_step()
    worker = worker or claims.worker_id()
    transport = transport or default_transport()
    fanout.spawn_due()
    uow.commit_step()
    report = DeliveryReport(expired_leases=claims.release_expired_leases())
    batches = 0
    while not should_stop() and (max_batches is None or batches < max_batches):
        ids = claims.claim_batch(worker, limit=batch_size, lease=lease, channel="sms")
        if not ids:
            break
        batches += 1
        report.claimed += len(ids)
        down = None
        for index, row_id in enumerate(ids):
            if should_stop():
                _release(worker, ids[index:])
                break
            try:
                outcome, down = deliver_one(row_id, worker, transport, lease=lease)
            except Exception:
                db.session.rollback()
                _release(worker, ids[index:])
                raise
            if outcome == "deferred":
                outcome = "skipped"
            setattr(report, outcome, getattr(report, outcome) + 1)
            if down is not None:
                _release(worker, ids[index + 1:])
                break
        if down is not None:
            break
    if report.claimed or report.expired_leases:
        log.info("text delivery run (%s): %s", transport.name, report.line())
    return report


def _release(worker: str, ids: list[int]) -> None:
    if not ids:
        return
    db.session.execute(
        sa.update(OutboxMessage).where(OutboxMessage.id.in_(ids), OutboxMessage.state == OutboxState.SENDING,
                                       OutboxMessage.claimed_by == worker)
        .values(state=OutboxState.PENDING, lease_until=None, claimed_by=None)
        .execution_options(synchronize_session=False)
    )
    uow.commit_step()
