"""Text-message use cases: a patient's contact choices, consent (given, taken back at once by STOP), the texts
patients send us (STOP, START, HELP, REFILL) and the provider's delivery reports.

Consent is recorded with its time and source in sms_consent_events (and the current state on the patient's
contact preference); a STOP cancels every text still waiting for that number in the same transaction.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from pharmacy.core import audit
from pharmacy.core.actor import ANONYMOUS, Actor
from pharmacy.core.context import now, settings, today
from pharmacy.core.errors import Conflict, DomainError, Forbidden, ValidationFailed
from pharmacy.extensions import db
from pharmacy.prescriptions.models import Prescription
from pharmacy.prescriptions.rules import RxStatus
from pharmacy.refills.rules import RequestSource
from pharmacy.reminders import planning
from pharmacy.reminders.models import DeliveryAttempt, OutboxMessage
from pharmacy.reminders.rules import OutboxState
from pharmacy.sms import rules
from pharmacy.sms.models import ContactPreference, InboundText, SmsConsentEvent
from pharmacy.sms.rules import Choice, Keyword
from pharmacy.workflows import refill_requests

log = logging.getLogger(__name__)

OPTED_OUT = "the patient replied STOP"


# ---- preferences -------------------------------------------------------------------------------------------------


def preference(patient_id: int) -> ContactPreference | None:
    return db.session.get(ContactPreference, patient_id)


def ensure_preference(patient_id: int) -> ContactPreference:
    row = preference(patient_id)
    if row is None:
        row = ContactPreference(patient_id=patient_id, channel=Choice.EMAIL.value, sms_consent=False,
                                updated_at=now())
        db.session.add(row)
        db.session.flush()
    return row


def _patient(actor: Actor) -> int:
    if actor.kind != "patient" or actor.patient_id is None:
        raise Forbidden("Only the patient may change how they are contacted.")
    return actor.patient_id


def set_channel(actor: Actor, choice: Choice) -> ContactPreference:
    """Email, text or both. Texts need a verified number with consent first (the portal's "Text messages")."""
    patient_id = _patient(actor)
    row = ensure_preference(patient_id)
    if choice.value == row.channel and not row.texts_ready:
        return row  # the choice kept while texts are stopped, sent back unchanged: nothing to do (START restores it)
    if choice != Choice.EMAIL and not row.texts_ready:
        raise ValidationFailed("Add and confirm your mobile number first.",
                               fields={"channel": "Add and confirm your mobile number before choosing texts."})
    changed = row.channel != choice.value
    row.channel = choice.value
    row.updated_at = now()
    db.session.flush()
    if changed:
        # A patient without an email address is planned for only while texts reach them (planning.facts_query).
        planning.replan_patient(patient_id)
    audit.record(actor, "contact.channel", patient_id=patient_id, entity=("patient", patient_id),
                 details={"channel": choice.value, "changed": changed})
    return row


def set_pause(actor: Actor, until: date | None) -> ContactPreference:
    """Hold refill reminders (email and text) through `until`; None resumes them. Notices about the patient's own
    requests and orders, and renewal notices, still come."""
    patient_id = _patient(actor)
    if until is not None and until < today():
        raise ValidationFailed("Choose a day from today on.", fields={"paused_until": "Choose today or a later day."})
    if until is not None and (until - today()).days > 180:
        raise ValidationFailed("Pause for at most six months.", fields={"paused_until": "At most six months ahead."})
    row = ensure_preference(patient_id)
    row.paused_until = until
    row.updated_at = now()
    db.session.flush()
    audit.record(actor, "reminders.pause" if until else "reminders.resume", patient_id=patient_id,
                 entity=("patient", patient_id))
    return row


def record_consent(patient_id: int | None, phone: str, action: str, source: str, detail: str | None = None) -> None:
    db.session.add(SmsConsentEvent(patient_id=patient_id, phone=phone, action=action, source=source,
                                   detail=(detail or None) and detail[:120], at=now()))


def number_verified(actor: Actor, phone: str, *, consent: bool) -> ContactPreference:
    """The patient proved the number is theirs (a code sent to it). With `consent` they agree to texts."""
    patient_id = _patient(actor)
    row = ensure_preference(patient_id)
    t = now()
    row.sms_number = phone
    row.sms_verified_at = t
    if consent:
        row.sms_consent, row.sms_consent_at, row.sms_consent_source = True, t, "portal"
        record_consent(patient_id, phone, "opt_in", "portal", "number verified with a code")
    row.updated_at = t
    db.session.flush()
    audit.record(actor, "contact.number_verified", patient_id=patient_id, entity=("patient", patient_id),
                 details={"consent": consent})
    return row


def stop_texts(actor: Actor) -> None:
    """The portal's "stop texts": the same as replying STOP."""
    patient_id = _patient(actor)
    row = preference(patient_id)
    if row is None or not row.sms_number:
        return
    _opt_out([row], row.sms_number, source="portal", detail="portal")
    audit.record(actor, "contact.sms_opt_out", patient_id=patient_id, entity=("patient", patient_id))


def _opt_out(rows: list[ContactPreference], phone: str, *, source: str, detail: str | None) -> None:
    """Consent taken back (STOP, the portal, the carrier), honoured at once.

    The patient's choice of channel is left as it is: consent is what lets a text go, everywhere a text or its
    email is decided (`takes_texts`, the email's `texts_only`, fanout, the text's own check), so a texts-only
    patient gets their reminders by email while consent is withdrawn — and START gives them back their texts,
    the choice they made, rather than leaving them on an email they may never read.
    """
    t = now()
    for row in rows:
        row.sms_consent, row.sms_consent_at, row.sms_consent_source = False, t, source
        row.updated_at = t
        record_consent(row.patient_id, phone, "opt_out", source, detail)
    if not rows:
        record_consent(None, phone, "opt_out", source, detail)
    ids = [r.patient_id for r in rows]
    # Honoured at once: nothing still waiting goes to this number (codes included).
    db.session.execute(
        sa.update(OutboxMessage).where(
            OutboxMessage.channel == "sms", OutboxMessage.state == OutboxState.PENDING,
            sa.or_(OutboxMessage.patient_id.in_(ids) if ids else sa.false(), OutboxMessage.to_address == phone))
        .values(state=OutboxState.CANCELLED, cancelled_reason=OPTED_OUT).execution_options(synchronize_session=False)
    )
    db.session.flush()


def rows_for_number(phone: str, *, verified_only: bool = True) -> list[ContactPreference]:
    stmt = sa.select(ContactPreference).where(ContactPreference.sms_number == phone)
    if verified_only:
        stmt = stmt.where(ContactPreference.sms_verified_at.is_not(None))
    return list(db.session.execute(stmt.order_by(ContactPreference.patient_id)).scalars())


# ---- texts patients send us ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Inbound:
    keyword: Keyword
    outcome: str
    reply: str | None


def handle_inbound(provider_id: str, from_number: str, body: str) -> Inbound:
    """Act on one incoming text, once per provider id (a webhook Twilio retries is answered, not acted on again)."""
    seen = db.session.execute(sa.select(InboundText).where(InboundText.provider_id == provider_id)).scalar_one_or_none()
    if seen is not None:
        return Inbound(Keyword(seen.keyword), seen.outcome, seen.reply)
    phone = rules.normalise_phone(from_number) or from_number[:16]
    word = rules.keyword(body)
    rows = rows_for_number(phone, verified_only=word != Keyword.STOP)
    cfg = settings()
    portal = f"{cfg.base_url}/my/"
    reply: str | None = None
    patient_id = rows[0].patient_id if len(rows) == 1 else None
    if word == Keyword.STOP:
        _opt_out(rows, phone, source="sms_keyword", detail=(body or "").strip().upper()[:20])
        outcome = "opted out"  # the provider confirms a STOP itself (carrier rules); we add nothing
        for row in rows:
            audit.record(Actor(kind="patient", patient_id=row.patient_id), "contact.sms_opt_out",
                         patient_id=row.patient_id, details={"via": "STOP"})
    elif word == Keyword.START:
        t = now()
        for row in rows:
            row.sms_consent, row.sms_consent_at, row.sms_consent_source = True, t, "sms_keyword"
            row.updated_at = t
            record_consent(row.patient_id, phone, "opt_in", "sms_keyword", "START")
            db.session.flush()
            planning.replan_patient(row.patient_id)  # reminders a text-only patient lost meanwhile come back
        outcome = "opted in" if rows else "unknown number"
        reply = None if rows else _unknown(cfg)
    elif word == Keyword.HELP:
        record_consent(patient_id, phone, "help", "sms_keyword", "HELP")
        outcome = "help"
        reply = rules.help_reply(pharmacy=cfg.pharmacy_name, phone=cfg.pharmacy_phone, portal_url=portal)
    elif word == Keyword.REFILL:
        outcome, reply = _refill(rows, phone, cfg)
    else:
        outcome = "not understood"
        reply = (f"{cfg.pharmacy_name}: we could not read that. Reply REFILL to order your refill, HELP for help, "
                 f"or call {cfg.pharmacy_phone}.")
    db.session.add(InboundText(provider_id=provider_id[:64], phone=phone, patient_id=patient_id, keyword=word.value,
                               outcome=outcome[:40], reply=reply[:320] if reply else None, received_at=now()))
    try:
        with db.session.begin_nested():
            db.session.flush()
    except IntegrityError:  # the same webhook, twice at once: the other one acted
        raise Conflict("This message is already being handled.") from None
    return Inbound(word, outcome, reply)


def _unknown(cfg: object = None) -> str:
    return (f"{settings().pharmacy_name}: we could not match this number to a patient, so we cannot take a refill "
            f"request by text. Please call {settings().pharmacy_phone}.")


def _refill(rows: list[ContactPreference], phone: str, cfg: object) -> tuple[str, str]:
    """REFILL from a verified number opens the refill request the pharmacy approves as any other."""
    name, call = settings().pharmacy_name, settings().pharmacy_phone
    if len(rows) != 1:
        audit.record(ANONYMOUS, "sms.refill_refused", outcome="denied",
                     details={"why": "unknown number" if not rows else "number shared by several patients"},
                     survive_rollback=True)
        if not rows:
            return "refused: unknown number", _unknown(cfg)
        return "refused: shared number", f"{name}: please call {call} so we know whose refill to make."
    patient_id = rows[0].patient_id
    rxs = list(db.session.execute(
        sa.select(Prescription.id).where(Prescription.patient_id == patient_id, Prescription.status == RxStatus.ACTIVE)
        .order_by(Prescription.id)).scalars())
    if len(rxs) != 1:
        return ("refused: several prescriptions" if rxs else "refused: no active prescription",
                f"{name}: please choose your refill in your account ({settings().base_url}/my/) or call {call}.")
    actor = Actor(kind="patient", patient_id=patient_id, prescription_id=rxs[0])
    try:
        result = refill_requests.request(actor, rxs[0], source=RequestSource.SMS, note="Asked by text message (REFILL).")
    except DomainError as exc:
        return "refused: " + type(exc).__name__, f"{name}: {exc.message} Questions: {call}."
    audit.record(actor, "sms.refill", patient_id=patient_id, entity=("refill_request", result.request.id),
                 details={"created": result.created})
    if not result.created:
        return "already requested", f"{name}: you have already asked for this refill; we are on it."
    if result.request.state.value == "awaiting_renewal":
        return "renewal", f"{name}: we will ask your prescriber for a renewal and let you know. Questions: {call}."
    return "requested", f"{name}: thank you, we got your refill request. We will let you know when it is ready."


# ---- delivery reports ----------------------------------------------------------------------------------------------


def handle_status(provider_id: str, status: str, error_code: int | None) -> bool:
    """Twilio's status callback: keep the latest status; an undelivered text is failed for a pharmacist to see."""
    row = db.session.execute(
        sa.select(OutboxMessage).where(OutboxMessage.provider_id == provider_id).with_for_update()
    ).scalar_one_or_none()
    if row is None:
        return False
    status = status.strip().lower()[:24]
    if not rules.later_status(row.provider_status, status):
        return True
    row.provider_status = status
    detail = f"{status}" + (f" (Twilio {error_code})" if error_code else "")
    db.session.add(DeliveryAttempt(message_id=row.id, at=now(), result=status[:16], detail=f"carrier: {detail}"))
    if status in ("undelivered", "failed"):
        row.state = OutboxState.FAILED
        row.last_error = f"carrier: {detail}"[:400]
    if error_code == rules.OPTED_OUT_CODE and row.to_address:
        _opt_out(rows_for_number(row.to_address, verified_only=False), row.to_address, source="carrier",
                 detail=provider_id)
    db.session.flush()
    return True


def opted_out_by_carrier(phone: str, provider_id: str | None) -> None:
    """Twilio refused a text because the number replied STOP to us before: record it as the patient's choice."""
    _opt_out(rows_for_number(phone, verified_only=False), phone, source="carrier", detail=provider_id)
