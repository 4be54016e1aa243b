"""The e-prescribing message log: our identity and envelopes, every SCRIPT message in and out verbatim with the
answer it got, the outbox's retry and cancel, and the prescribers we can reach electronically.

The intake queue those messages feed is services.py; what the messages do to other features is
workflows/eprescribing.py.
"""
from __future__ import annotations

import uuid

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from pharmacy.core import audit
from pharmacy.core.actor import Actor
from pharmacy.core.context import now, settings
from pharmacy.core.errors import Conflict, NotFound
from pharmacy.core.ids import valid_id
from pharmacy.core.numbers import digits_only
from pharmacy.core.roles import Permission
from pharmacy.eprescribing import ncpdp
from pharmacy.eprescribing.models import ErxDeliveryAttempt, ErxMessage, ErxPrescriberAddress
from pharmacy.eprescribing.rules import Direction, MessageState
from pharmacy.eprescribing.settings import erx_settings
from pharmacy.extensions import db

# ---- who we are, and message envelopes ----------------------------------------------------------------------------


def new_message_id() -> str:
    return uuid.uuid4().hex


def pharmacy_identity() -> ncpdp.Pharmacy:
    """The pharmacy as SCRIPT names it (NCPDP ID, NPI, name, address, phone)."""
    cfg = settings()
    parts = [p.strip() for p in cfg.pharmacy_address.split(",")]
    line1, city, state_zip = [*parts, "", "", ""][:3]
    state, _, postal = state_zip.partition(" ")
    phone = "".join(c for c in cfg.pharmacy_phone if digits_only(c))
    return ncpdp.Pharmacy(ncpdp_id=erx_settings().pharmacy_ncpdp_id, npi=cfg.pharmacy_npi, name=cfg.pharmacy_name,
                          address_line1=line1, city=city, state=state[:2], postal_code=postal.strip()[:10], phone=phone)


def outbound_header(*, to: str, to_qualifier: str = "D", relates_to: str = "", prescriber_order_number: str = "",
                    rx_reference: str = "") -> ncpdp.Header:
    return ncpdp.Header(
        to=to, to_qualifier=to_qualifier, sender=erx_settings().pharmacy_ncpdp_id, sender_qualifier="P",
        message_id=new_message_id(), relates_to=relates_to,
        sent_time=now().strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z",
        prescriber_order_number=prescriber_order_number, rx_reference_number=rx_reference,
    )


def answer_header(inbound: ncpdp.Header | None) -> ncpdp.Header:
    """The header of our answer to an inbound message: back to its sender, relating to its MessageID."""
    inbound = inbound or ncpdp.Header()
    return outbound_header(to=inbound.sender, to_qualifier=inbound.sender_qualifier or "D",
                           relates_to=inbound.message_id, prescriber_order_number=inbound.prescriber_order_number)


# ---- the message log ----------------------------------------------------------------------------------------------


def find_inbound(sender: str, message_id: str) -> ErxMessage | None:
    """The inbound message already received with this sender and MessageID (the same message posted again)."""
    if not message_id:
        return None
    return db.session.execute(
        sa.select(ErxMessage).where(ErxMessage.direction == Direction.INBOUND, ErxMessage.sender == sender,
                                    ErxMessage.message_id == message_id)
    ).scalar_one_or_none()


def record_inbound(actor: Actor, raw: bytes, *, kind: str, header: ncpdp.Header | None) -> tuple[ErxMessage, bool]:
    """Keep an inbound message verbatim, before anything is done with it: (the row, whether it is new).

    Unique per sender and MessageID, so two posts of the same message racing each other leave one row; the loser
    gets the winner's row back (and its answer, once given)."""
    h = header or ncpdp.Header()
    if h.message_id:
        existing = find_inbound(h.sender, h.message_id)
        if existing is not None:
            return existing, False
    row = ErxMessage(direction=Direction.INBOUND, kind=kind[:40], message_id=h.message_id or None,
                     relates_to_message_id=h.relates_to or None, sender=h.sender or None, recipient=h.to or None,
                     prescriber_order_number=h.prescriber_order_number or None, body=raw, state=MessageState.RECEIVED,
                     created_by_id=actor.user_id, created_at=now(), attempts=0)
    try:
        with db.session.begin_nested():
            db.session.add(row)
            db.session.flush()
    except IntegrityError:
        found = find_inbound(h.sender, h.message_id)
        if found is None:
            raise
        return found, False
    audit.record(actor, "erx.message.receive", entity=("erx_message", row.id), details={"kind": row.kind})
    return row, True


def set_answer(row: ErxMessage, kind: str, answer: ncpdp.Answer, body: bytes, *, refused: bool) -> None:
    """What we answered an inbound message (kept, so the same message posted again gets the same answer)."""
    row.answer_kind, row.answer_code, row.answer_text = kind, answer.code[:8], answer.description[:400]
    row.answer_body = body
    row.state = MessageState.REFUSED if refused else MessageState.RECEIVED
    db.session.flush()


def enqueue(actor: Actor, kind: str, body: bytes, header: ncpdp.Header, *, patient_id: int | None = None,
            prescription_id: int | None = None, intake_id: int | None = None,
            renewal_id: int | None = None) -> ErxMessage:
    """An outbound message into the outbox (same transaction as its cause), delivered after commit.

    The pharmacy never sends what it could not read itself: the message is parsed back first."""
    try:
        if ncpdp.parse(body).kind != kind:
            raise ncpdp.ScriptError(f"it reads back as another transaction than {kind}")
    except ncpdp.ScriptError as exc:
        raise Conflict(f"The {kind} to the prescriber could not be written ({exc.description}); nothing was sent.") \
            from None
    t = now()
    row = ErxMessage(direction=Direction.OUTBOUND, kind=kind, message_id=header.message_id,
                     relates_to_message_id=header.relates_to or None, sender=header.sender, recipient=header.to,
                     prescriber_order_number=header.prescriber_order_number or None, body=body,
                     state=MessageState.PENDING, patient_id=patient_id, prescription_id=prescription_id,
                     intake_id=intake_id, renewal_id=renewal_id, created_by_id=actor.user_id, created_at=t,
                     attempts=0, next_attempt_at=t)
    db.session.add(row)
    db.session.flush()
    audit.record(actor, "erx.message.queue", patient_id=patient_id, entity=("erx_message", row.id),
                 details={"kind": kind})
    return row


def outbound_for(relates_to: str, kinds: tuple[str, ...]) -> ErxMessage | None:
    """Our outbound message an inbound one answers (its RelatesToMessageID is our MessageID)."""
    if not relates_to:
        return None
    return db.session.execute(
        sa.select(ErxMessage).where(ErxMessage.direction == Direction.OUTBOUND, ErxMessage.message_id == relates_to,
                                    ErxMessage.kind.in_(kinds))
    ).scalars().first()


def inbound_by_message_id(message_id: str, kinds: tuple[str, ...], *, sender: str) -> ErxMessage | None:
    """An inbound message by its MessageID *from this sender*: MessageIDs are unique per sender only (the table's own
    unique key), so another system's message with the same ID is never this one."""
    if not message_id or not sender:
        return None
    return db.session.execute(
        sa.select(ErxMessage).where(ErxMessage.direction == Direction.INBOUND, ErxMessage.message_id == message_id,
                                    ErxMessage.sender == sender, ErxMessage.kind.in_(kinds))
    ).scalars().first()


def note_receiver_answer(actor: Actor, row: ErxMessage, kind: str, answer: ncpdp.Answer) -> None:
    """A Status, Error or Verify about one of our messages arrived later: keep it on that message."""
    row.answer_kind, row.answer_code, row.answer_text = kind[:24], answer.code[:8], answer.description[:400]
    if kind == "Error" and row.state == MessageState.SENT:
        row.last_error = f"The receiver answered Error {answer.code}: {answer.description}"[:400]
    db.session.flush()
    audit.record(actor, "erx.message.answered", patient_id=row.patient_id, entity=("erx_message", row.id),
                 details={"answer": kind, "code": answer.code[:8]})


# ---- prescribers reachable electronically -------------------------------------------------------------------------


def learn_address(npi: str, header: ncpdp.Header, clinic_name: str = "") -> None:
    """Remember where a prescriber's e-prescriptions come from, to send renewal requests back there."""
    if not npi or not header.sender:
        return
    row = db.session.execute(sa.select(ErxPrescriberAddress).where(ErxPrescriberAddress.npi == npi)).scalar_one_or_none()
    if row is None:
        row = ErxPrescriberAddress(npi=npi, address=header.sender, updated_at=now())
        try:
            with db.session.begin_nested():
                db.session.add(row)
                db.session.flush()
        except IntegrityError:
            row = db.session.execute(sa.select(ErxPrescriberAddress).where(ErxPrescriberAddress.npi == npi)).scalar_one()
    row.address, row.qualifier = header.sender[:64], header.sender_qualifier[:4] or None
    row.clinic_name = clinic_name[:120] or row.clinic_name
    row.updated_at = now()
    db.session.flush()


def address_for(npi: str | None) -> ErxPrescriberAddress | None:
    """Where to send SCRIPT messages for this prescriber, when they can be reached electronically (and an
    intermediary is configured); None means: the old way (email, printable page for fax)."""
    if not npi or erx_settings().intermediary_url is None:
        return None
    return db.session.execute(sa.select(ErxPrescriberAddress).where(ErxPrescriberAddress.npi == npi)).scalar_one_or_none()


# ---- verbatim messages and the outbox ------------------------------------------------------------------------------


def message_view(actor: Actor, message_id: int) -> ErxMessage:
    """A message as received or sent, verbatim. It carries patient data: audited."""
    audit.require(actor, Permission.VIEW_CLINICAL, what="read e-prescription messages")
    row = db.session.get(ErxMessage, message_id) if valid_id(message_id) else None
    if row is None:
        raise NotFound("No such message.")
    audit.record(actor, "erx.message.view", patient_id=row.patient_id, entity=("erx_message", row.id))
    return row


def attempts_of(message_id: int) -> list[ErxDeliveryAttempt]:
    return list(db.session.execute(
        sa.select(ErxDeliveryAttempt).where(ErxDeliveryAttempt.message_id == message_id).order_by(ErxDeliveryAttempt.id)
    ).scalars())


def retry_outbound(actor: Actor, message_id: int) -> ErxMessage:
    """A failed outbound message goes out again now (e.g. after the intermediary's outage is over)."""
    audit.require(actor, Permission.MANAGE_OUTBOX, what="retry e-prescription messages")
    row = db.session.get(ErxMessage, message_id) if valid_id(message_id) else None
    if row is None or row.direction != Direction.OUTBOUND:
        raise NotFound("No such outbound message.")
    if row.state not in (MessageState.FAILED, MessageState.CANCELLED):
        raise Conflict(f"This message is {row.state.value}; only a failed or cancelled one can be retried.")
    row.state, row.next_attempt_at, row.attempts, row.last_error = MessageState.PENDING, now(), 0, None
    db.session.flush()
    audit.record(actor, "erx.message.retry", patient_id=row.patient_id, entity=("erx_message", row.id))
    return row


def cancel_outbound(actor: Actor, message_id: int) -> ErxMessage:
    audit.require(actor, Permission.MANAGE_OUTBOX, what="cancel e-prescription messages")
    row = db.session.get(ErxMessage, message_id) if valid_id(message_id) else None
    if row is None or row.direction != Direction.OUTBOUND:
        raise NotFound("No such outbound message.")
    if row.state not in (MessageState.PENDING, MessageState.FAILED):
        raise Conflict(f"This message is {row.state.value}; it cannot be cancelled.")
    row.state, row.lease_until = MessageState.CANCELLED, None
    db.session.flush()
    audit.record(actor, "erx.message.cancel", patient_id=row.patient_id, entity=("erx_message", row.id))
    return row
