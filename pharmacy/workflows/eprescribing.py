"""E-prescribing across features: what an inbound SCRIPT message does, and what a pharmacist's decision does.

- A NewRx (or a FHIR MedicationRequest, or a fax) becomes an entry of the intake queue — nothing else. Only a
  pharmacist accepting it creates a prescription, through prescriptions.services.create_prescription (screening
  runs exactly as for a typed prescription); an approved renewal goes through workflows.prescription_changes.replace,
  which links the renewal, carries the supply on hand and a waiting refill request over.
- A CancelRx stops the prescription through workflows.prescription_changes.discontinue (open orders, refill
  requests and reminders cancelled there) and a CancelRxResponse goes back saying what was already dispensed.
- A renewal request to a prescriber reachable electronically is an RxRenewalRequest (workflows.renewals asks
  send_renewal_electronically first) instead of an email carrying the patient's name and date of birth; their
  RxRenewalResponse either waits for the pharmacist as the renewed prescription or, denied, tells the patient.
- Every inbound message is answered (Status or Error) and kept verbatim with its answer; the same message posted
  twice gets the same answer and creates nothing new. A message that cannot be acted on is refused whole: its
  handler runs in a savepoint, so nothing is half-created.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import date

import sqlalchemy as sa
from marshmallow import ValidationError

from pharmacy.compounding.models import Order
from pharmacy.compounding.rules import OrderState
from pharmacy.core import audit
from pharmacy.core.actor import Actor
from pharmacy.core.context import today
from pharmacy.core.errors import Conflict, DomainError, Forbidden, ValidationFailed
from pharmacy.core.forms import flatten
from pharmacy.core.numbers import digits_only
from pharmacy.core.roles import Permission
from pharmacy.documents import services as documents
from pharmacy.documents.models import Document
from pharmacy.documents.rules import DocumentSource
from pharmacy.eprescribing import messages, ncpdp, rules, services
from pharmacy.eprescribing.models import ErxIntake, ErxMessage
from pharmacy.eprescribing.rules import (
    IntakeKind,
    IntakeState,
    Source,
    WrittenMedication,
    WrittenPatient,
    WrittenPrescriber,
    WrittenPrescription,
)
from pharmacy.extensions import db
from pharmacy.patients import services as patients
from pharmacy.patients.models import Patient
from pharmacy.patients.schemas import PatientInSchema
from pharmacy.prescriptions import rules as rx_rules
from pharmacy.prescriptions import services as prescriptions
from pharmacy.prescriptions.models import Prescriber, Prescription
from pharmacy.prescriptions.rules import Form, RxStatus
from pharmacy.prescriptions.schemas import PrescriberInSchema
from pharmacy.refills import services as refills
from pharmacy.refills.models import OPEN_REQUEST_STATES, RefillRequest, RenewalRequest
from pharmacy.workflows import prescription_changes, refill_requests

log = logging.getLogger(__name__)


@dataclass
class Reply:
    """What the endpoint sends back: a SCRIPT Status or Error (already serialised)."""

    body: bytes
    kind: str
    code: str


class _Refusal(Exception):
    """A handler's "no": answered with Error `code` and `description`; the savepoint undoes anything it began."""

    def __init__(self, description: str, code: str = ncpdp.ERROR_REJECTED) -> None:
        super().__init__(description)
        self.description, self.code = description, code


# ---- inbound SCRIPT ----------------------------------------------------------------------------------------------


def receive_script(actor: Actor, raw: bytes) -> Reply:
    """POST /ncpdp/script: keep the message, act on it, answer it. Idempotent by sender and MessageID."""
    if actor.scope != "ncpdp":
        raise Forbidden("Only the e-prescribing intermediary's token may post SCRIPT messages.")
    try:
        message = ncpdp.parse(raw)
    except ncpdp.ScriptError as exc:
        return _refuse_unreadable(actor, raw, exc)
    row, new = messages.record_inbound(actor, raw, kind=message.kind, header=message.header)
    if not new and not _answered_for_good(row):
        db.session.refresh(row, with_for_update=True)  # two retries at once: the second waits, then replays
    if not new:
        if not _answered_for_good(row):
            # Answered "try again" (Error 600/601/602) and tried again: processed now, as if it were new (the first
            # attempt's work was rolled back with its savepoint, so nothing is done twice).
            audit.record(actor, "erx.message.receive", patient_id=row.patient_id, entity=("erx_message", row.id),
                         details={"kind": row.kind, "again_after": row.answer_code})
        else:
            audit.record(actor, "erx.message.duplicate", patient_id=row.patient_id, entity=("erx_message", row.id))
            if row.answer_body:
                return Reply(row.answer_body, row.answer_kind or "Status", row.answer_code or "")
            return _answer(row, message.header, "Status", ncpdp.STATUS_OK, "Already received.", store=False)
    handler = _HANDLERS.get(message.kind)
    if handler is None:
        return _refuse(actor, row, message.header, ncpdp.ERROR_REJECTED,
                       f"{message.kind} is sent by a pharmacy, not received by one.")
    try:
        with db.session.begin_nested():
            kind, code, description = handler(actor, row, message)
    except _Refusal as refusal:
        return _refuse(actor, row, message.header, refusal.code, refusal.description)
    except DomainError as exc:
        log.warning("SCRIPT %s could not be processed (%s)", message.kind, type(exc).__name__)
        return _refuse(actor, row, message.header, ncpdp.ERROR_UNABLE,
                       f"The pharmacy could not process this {message.kind}: {exc.message}")
    return _answer(row, message.header, kind, code, description)


def _answered_for_good(row: ErxMessage) -> bool:
    """Whether the answer already given to an inbound message is final (replayed when it comes again).

    Not yet answered (a twin post still being processed) counts as final: "Already received". Error 600/601/602 is
    "try again" — the sender will, and the retry must be processed, or a CancelRx refused once for a passing reason
    (the service account's permission) would be answered 601 for ever and the prescription never stopped."""
    if not row.answer_kind:
        return True
    return not (row.answer_kind == "Error" and (row.answer_code or "").strip() in TEMPORARY_ERRORS)


#: Error codes that mean "not now" (rules.classify_answer retries our own messages on them).
TEMPORARY_ERRORS = ("600", "601", "602")


def _refuse(actor: Actor, row: ErxMessage, header: ncpdp.Header | None, code: str, description: str) -> Reply:
    """A readable message refused (Error): answered, listed under *Messages refused on arrival*, and audited —
    kind and code only; the reason stays on the row."""
    audit.record(actor, "erx.message.refuse", outcome="failed", patient_id=row.patient_id,
                 entity=("erx_message", row.id), details={"kind": row.kind, "code": code})
    return _answer(row, header, "Error", code, description, refused=True)


def _answer(row: ErxMessage, inbound: ncpdp.Header | None, kind: str, code: str, description: str, *,
            refused: bool = False, store: bool = True) -> Reply:
    body = ncpdp.answer_message(kind, messages.answer_header(inbound), ncpdp.Answer(code=code, description=description))
    if store:
        messages.set_answer(row, kind, ncpdp.Answer(code=code, description=description), body, refused=refused)
    return Reply(body, kind, code)


def _refuse_unreadable(actor: Actor, raw: bytes, exc: ncpdp.ScriptError) -> Reply:
    row, new = messages.record_inbound(actor, raw, kind=exc.kind or "unreadable", header=exc.header)
    if not new and row.answer_body:
        return Reply(row.answer_body, row.answer_kind or "Error", row.answer_code or exc.code)
    audit.record(actor, "erx.message.refuse", outcome="failed", entity=("erx_message", row.id),
                 details={"kind": row.kind, "code": exc.code})
    return _answer(row, exc.header, "Error", exc.code, exc.description, refused=True)


def _new_rx(actor: Actor, row: ErxMessage, message: ncpdp.ScriptMessage) -> tuple[str, str, str]:
    written = message.prescription
    assert written is not None
    problem = rules.npi_problem(written.prescriber.npi)
    if problem:
        raise _Refusal(problem)
    messages.learn_address(written.prescriber.npi, message.header, written.prescriber.clinic_name)
    services.open_intake(actor, source=Source.NCPDP, kind=IntakeKind.NEW_RX, written=written, message_row=row)
    return "Status", ncpdp.STATUS_ACCEPTED, "Received into the pharmacy's intake queue; a pharmacist will review it."


def _current(rx: Prescription) -> Prescription:
    """The prescription the cancelled order stands for now: a renewal of it (approved by RxRenewalResponse, by the
    prescriber's link or on paper) replaced it, and a cancel covers the renewal too. A replacement that arrived as
    an e-prescription of its own (its own order number), or was typed in as a new order, is not the order cancelled:
    the walk stops before it, and the CancelRx finds the old prescription already stopped."""
    seen = {rx.id}
    while rx.status == RxStatus.REPLACED:
        newer = _replaced_by(rx)
        if newer is None or newer.id in seen or not _renewal_of_the_same_order(newer.id, rx.id):
            break
        seen.add(newer.id)
        rx = newer
    return rx


def _renewal_of_the_same_order(newer_id: int, old_id: int) -> bool:
    """Whether `newer_id` is a renewal of `old_id` — an approved RxRenewalResponse accepted as its replacement, or a
    renewal request answered with it — and not an e-prescription that came with its own order number."""
    accepted = sa.and_(ErxIntake.prescription_id == newer_id, ErxIntake.state == IntakeState.ACCEPTED)
    own_order = sa.exists().where(accepted, ErxIntake.kind == IntakeKind.NEW_RX)
    renewed_by_message = sa.exists().where(accepted, ErxIntake.kind == IntakeKind.RENEWAL,
                                           ErxIntake.replaces_prescription_id == old_id)
    renewed_by_request = sa.exists().where(RenewalRequest.prescription_id == old_id,
                                           RenewalRequest.new_prescription_id == newer_id)
    return bool(db.session.execute(
        sa.select(sa.and_(~own_order, sa.or_(renewed_by_message, renewed_by_request)))).scalar())


def _replaced_by(rx: Prescription) -> Prescription | None:
    """The prescription that replaced `rx` (the latest, if several did)."""
    return db.session.execute(
        sa.select(Prescription).where(Prescription.replaces_id == rx.id).order_by(Prescription.id.desc())
    ).scalars().first()


def _cancelled_entry(written: WrittenPrescription, header: ncpdp.Header) -> tuple[ErxIntake | None, str]:
    """The e-prescription a CancelRx cancels, or None and why not.

    By prescriber order number + NPI; failing that by RelatesToMessageID, but only to a NewRx *from the same sender*
    written by the same NPI (MessageIDs are unique per sender only). Either way the patient the CancelRx names must
    be the prescription's: a cancel is never applied to another patient's prescription."""
    npi = written.prescriber.npi
    intake = services.intake_for_order_number(npi, header.prescriber_order_number)
    if intake is None and header.relates_to:
        original = messages.inbound_by_message_id(header.relates_to, ("NewRx",), sender=header.sender)
        found = db.session.get(ErxIntake, original.intake_id) if original and original.intake_id else None
        if found is not None and found.kind == IntakeKind.NEW_RX and services.written_of(found).prescriber.npi == npi:
            intake = found
    if intake is None:
        return None, "No e-prescription with this prescriber order number from this prescriber was received by this pharmacy."
    if not rules.same_patient(written.patient, services.written_of(intake).patient):
        return None, ("The e-prescription with this prescriber order number is for another patient than the one named: "
                      "nothing was cancelled.")
    return intake, ""


def _dispensed(rx_id: int) -> tuple[int, date | None]:
    count, last = db.session.execute(
        sa.select(sa.func.count(), sa.func.max(Order.dispensed_on))
        .where(Order.prescription_id == rx_id, Order.state == OrderState.DISPENSED)
    ).one()
    return int(count or 0), last


def _cancel_rx(actor: Actor, row: ErxMessage, message: ncpdp.ScriptMessage) -> tuple[str, str, str]:
    """Stop the prescription the prescriber cancelled, say what had already been dispensed, queue a notice."""
    written = message.prescription
    assert written is not None
    header = message.header
    intake, not_found = _cancelled_entry(written, header)
    notice_rx: Prescription | None = None
    if intake is None:
        response = ncpdp.PrescriberResponse(outcome="denied", denial_reason=not_found)
        notice = (f"A CancelRx that matches no e-prescription received here ({not_found}): check by hand whether the "
                  "patient has a prescription from this prescriber (typed in or faxed) that should be stopped.")
    elif intake.state == IntakeState.WAITING:
        services.mark_rejected(actor, intake, "Cancelled by the prescriber (CancelRx) before it was reviewed.")
        response = ncpdp.PrescriberResponse(outcome="approved",
                                            note="Cancelled before it was reviewed: nothing was filled.")
        notice = "The prescriber cancelled an e-prescription that was still waiting in the queue; it was removed."
    elif intake.state != IntakeState.ACCEPTED or intake.prescription_id is None:
        response = ncpdp.PrescriberResponse(outcome="approved", note="It had not been accepted: nothing was filled.")
        notice = "The prescriber cancelled an e-prescription this pharmacy had not accepted; nothing to do."
    else:
        rx = _current(db.session.get(Prescription, intake.prescription_id))
        notice_rx = rx
        count, last = _dispensed(rx.id)
        already = rx.status in (RxStatus.DISCONTINUED, RxStatus.REPLACED)
        if not already:
            prescription_changes.discontinue(actor, rx.id, "Cancelled by the prescriber (NCPDP CancelRx).")
        dispensed = (f"{count} fill{'s' if count != 1 else ''} had been dispensed, the last on {last.isoformat()}; "
                     "the patient may have medication at home." if count and last else "No fill had been dispensed.")
        newer = _replaced_by(rx) if rx.status == RxStatus.REPLACED else None
        stopped = (f"{rx.rx_number} was already stopped." if already else
                   f"{rx.rx_number} is stopped: orders in progress, refill requests and reminders are cancelled.")
        if newer is not None:  # replaced by a prescription of its own order: not the one cancelled, left as it is
            stopped = (f"{rx.rx_number} was already stopped (replaced by {newer.rx_number}, a prescription of its "
                       f"own, which this cancel does not stop).")
        response = ncpdp.PrescriberResponse(outcome="approved", note=f"{stopped} {dispensed}")
        notice = f"Cancelled by the prescriber. {stopped} {dispensed}" + (" Tell the patient." if count else "") + (
            f" Check with the prescriber that {newer.rx_number} goes on." if newer is not None else "")
    reply_header = messages.answer_header(header)
    body = ncpdp.response_message("CancelRxResponse", reply_header, response)
    patient_id = notice_rx.patient_id if notice_rx else (intake.patient_id if intake else None)
    entry = services.open_intake(
        actor, source=Source.NCPDP, kind=IntakeKind.CANCEL_RX, written=written, message_row=row, notice=notice[:400],
        prescription_id=notice_rx.id if notice_rx else None, patient_id=patient_id,
        prescriber_id=notice_rx.prescriber_id if notice_rx else None,
    )
    messages.enqueue(actor, "CancelRxResponse", body, reply_header, patient_id=patient_id,
                     prescription_id=notice_rx.id if notice_rx else None, intake_id=entry.id)
    return "Status", ncpdp.STATUS_ACCEPTED, "CancelRx received; the CancelRxResponse follows."


def _renewal_response(actor: Actor, row: ErxMessage, message: ncpdp.ScriptMessage) -> tuple[str, str, str]:
    request = messages.outbound_for(message.header.relates_to, ("RxRenewalRequest",))
    if request is None or request.prescription_id is None:
        raise _Refusal(f"RelatesToMessageID {message.header.relates_to} matches no renewal request this pharmacy sent.")
    response = message.response
    assert response is not None
    old = db.session.get(Prescription, request.prescription_id)
    renewal = db.session.get(RenewalRequest, request.renewal_id) if request.renewal_id else None
    request.answer_kind, request.answer_text = "RxRenewalResponse", response.outcome
    row.prescription_id, row.patient_id, row.renewal_id = old.id, old.patient_id, request.renewal_id
    asked = ncpdp.parse(request.body).prescription or WrittenPrescription()
    prescriber = old.prescriber.display_name
    if response.approved or response.outcome == "replace":
        if message.prescription and message.prescription.medication.description:
            medication = message.prescription.medication
        else:
            medication = _approved_as_asked(asked.medication)
        written = replace(asked, medication=medication)
        note = f"{prescriber} approved the renewal of {old.rx_number}" + (f": {response.note}" if response.note else ".")
        services.open_intake(actor, source=Source.NCPDP, kind=IntakeKind.RENEWAL, written=written, message_row=row,
                             replaces_id=old.id, renewal_id=renewal.id if renewal else None, patient_id=old.patient_id,
                             prescriber_id=old.prescriber_id, notice=note[:400])
        return "Status", ncpdp.STATUS_ACCEPTED, "Renewal received; a pharmacist will review it."
    if not response.denied:
        raise _Refusal("An RxRenewalResponse must approve or deny the renewal.")
    waiting = db.session.execute(
        sa.select(RefillRequest).where(RefillRequest.prescription_id == old.id,
                                       RefillRequest.state.in_(OPEN_REQUEST_STATES))
    ).scalar_one_or_none()
    if waiting is not None:  # the patient hears it in the usual "request declined" email
        refill_requests.decline(actor, waiting.id, "Your prescriber did not renew this prescription. Please contact their "
                                           "office; we will fill it as soon as a new prescription arrives.")
    refills.close_open_requests(actor, old.id, "Renewal denied by the prescriber")
    why = response.denial_reason or response.note or "no reason given"
    told = ("The patient was emailed that their refill cannot be made." if waiting is not None else
            "No refill request was waiting, so no email went out: tell the patient.")
    services.open_intake(actor, source=Source.NCPDP, kind=IntakeKind.RENEWAL_DENIED, message_row=row,
                         written=replace(asked, medication=asked.medication), patient_id=old.patient_id,
                         prescriber_id=old.prescriber_id, prescription_id=old.id,
                         renewal_id=renewal.id if renewal else None,
                         notice=f"{prescriber} denied the renewal of {old.rx_number} ({why}). {told}"[:400])
    return "Status", ncpdp.STATUS_ACCEPTED, "Renewal response received."


def _approved_as_asked(asked: WrittenMedication) -> WrittenMedication:
    """The medication of an approval that does not restate it: what we asked for, but dated the day it was approved
    (our request carried the old prescription's written date; kept, the renewal would expire with the old one) and
    with no refills until the prescriber says how many (our request carried the old count, which nobody approved in
    words). Both are listed for the pharmacist."""
    approved_on = today()
    return replace(asked, written_date=approved_on, refills="", unread=[
        *asked.unread,
        f"The approval does not restate the medication: it is taken from the renewal request, dated "
        f"{approved_on.isoformat()} (the day it was approved), with no refills (the old prescription had "
        f"{asked.refills or '0'}): confirm the refills with the prescriber.",
    ])


def _change_response(actor: Actor, row: ErxMessage, message: ncpdp.ScriptMessage) -> tuple[str, str, str]:
    request = messages.outbound_for(message.header.relates_to, ("RxChangeRequest",))
    if request is None or request.intake_id is None:
        raise _Refusal(f"RelatesToMessageID {message.header.relates_to} matches no change request this pharmacy sent.")
    response = message.response
    assert response is not None
    intake = services.get_intake(request.intake_id)
    row.intake_id, row.patient_id = intake.id, intake.patient_id
    request.answer_kind, request.answer_text = "RxChangeResponse", response.outcome
    words = {"approved": "approved", "approved_with_changes": "approved with changes", "denied": "denied",
             "validated": "validated", "replace": "replaced", "denied_new_to_follow": "denied (a new one follows)"}
    detail = response.note or response.denial_reason
    text = f"The prescriber {words.get(response.outcome, response.outcome)} the clarification" + (
        f": {detail}" if detail else ".")
    medication = message.prescription.medication if (message.prescription and response.approved) else None
    if intake.state == IntakeState.WAITING:
        services.note_clarification(intake, text, medication)
    audit.record(actor, "erx.clarification.answer", patient_id=intake.patient_id, entity=("erx_intake", intake.id))
    return "Status", ncpdp.STATUS_ACCEPTED, "Change response received."


def _answer_to_us(actor: Actor, row: ErxMessage, message: ncpdp.ScriptMessage) -> tuple[str, str, str]:
    """A Status, Error or Verify about a message we sent: kept on that message (and shown on the queue page)."""
    ours = messages.outbound_for(message.header.relates_to, ncpdp.OUTBOUND_KINDS)
    if ours is not None and message.answer is not None:
        messages.note_receiver_answer(actor, ours, message.kind, message.answer)
        row.patient_id, row.intake_id, row.prescription_id = ours.patient_id, ours.intake_id, ours.prescription_id
    return "Status", ncpdp.STATUS_OK, "Acknowledged."


_HANDLERS = {
    "NewRx": _new_rx, "CancelRx": _cancel_rx, "RxRenewalResponse": _renewal_response,
    "RxChangeResponse": _change_response, "Status": _answer_to_us, "Error": _answer_to_us, "Verify": _answer_to_us,
}


# ---- inbound FHIR and documents ----------------------------------------------------------------------------------


def receive_fhir(actor: Actor, raw: bytes, *, key: str, written: WrittenPrescription, patient_id: int | None = None,
                 prescriber_id: int | None = None) -> tuple[ErxIntake, bool]:
    """A FHIR MedicationRequest posted by an API client: into the same queue as a NewRx, once per `key` (its
    identifier, or the body's checksum). (The entry, whether it is new.)"""
    audit.require(actor, Permission.ENTER_PRESCRIPTION, what="send prescriptions to the intake queue")
    sender = f"fhir:{actor.user_id}"
    row, new = messages.record_inbound(actor, raw, kind="MedicationRequest",
                                       header=ncpdp.Header(sender=sender, message_id=rules.message_key(key)))
    if not new and row.intake_id is not None:
        audit.record(actor, "erx.message.duplicate", entity=("erx_message", row.id))
        return services.get_intake(row.intake_id), False
    problem = rules.npi_problem(written.prescriber.npi) if written.prescriber.npi else None
    if problem:
        raise ValidationFailed(problem, fields={"requester": problem})
    intake = services.open_intake(actor, source=Source.FHIR, kind=IntakeKind.NEW_RX, written=written, message_row=row,
                                  patient_id=patient_id, prescriber_id=prescriber_id)
    messages.set_answer(row, "Accepted", ncpdp.Answer(code="202", description=f"intake {intake.id}"), b"",
                        refused=False)
    return intake, True


def receive_document(actor: Actor, *, name: str | None, data: bytes,
                     source: DocumentSource) -> tuple[Document, ErxIntake, bool]:
    """A faxed or scanned prescription: kept (once per checksum) and put in the queue for a pharmacist to type in.
    (The document, its queue entry, whether it is new.)"""
    doc, _new = documents.store_document(actor, name=name, data=data, source=source)
    existing = db.session.execute(
        sa.select(ErxIntake).where(ErxIntake.document_id == doc.id).order_by(ErxIntake.id)
    ).scalars().first()
    if existing is not None:
        return doc, existing, False
    intake = services.open_intake(actor, source=Source.FAX, kind=IntakeKind.NEW_RX, document_id=doc.id)
    return doc, intake, True


# ---- the pharmacist's decisions ----------------------------------------------------------------------------------


def accept(actor: Actor, intake_id: int, data: dict) -> Prescription:
    """Accept an entry as a prescription (data: PrescriptionInSchema's), screened like any typed-in prescription.

    A renewal becomes the replacement of the prescription it renews (linked; a waiting refill request moves to it).
    A fax is attached to the prescription it became. The prescriber's system hears back (Verify) for a NewRx."""
    intake = services.waiting_entry(actor, intake_id, permission=Permission.MANAGE_PRESCRIPTION,
                                    what="accept e-prescriptions")
    if intake.kind not in (IntakeKind.NEW_RX, IntakeKind.RENEWAL):
        raise Conflict("This entry is a notice: mark it done instead.")
    if intake.patient_id is None:
        raise ValidationFailed("Choose the patient first.", fields={"patient_id": "Choose (or add) the patient above."})
    data = {**data, "patient_id": intake.patient_id}  # the patient chosen on the entry, whatever the form says
    if intake.kind == IntakeKind.RENEWAL and intake.replaces_prescription_id:
        old = db.session.get(Prescription, intake.replaces_prescription_id)
        if old is not None and old.status in (RxStatus.DISCONTINUED, RxStatus.REPLACED):
            rx = prescriptions.create_prescription(actor, {**data, "patient_id": old.patient_id})
        else:
            rx = prescription_changes.replace(actor, intake.replaces_prescription_id, data)
    else:
        rx = prescriptions.create_prescription(actor, data)
    services.mark_accepted(actor, intake, rx)
    if intake.document_id:
        documents.attach(actor, intake.document_id, rx.id, patient_id=rx.patient_id)
    source = db.session.get(ErxMessage, intake.message_row_id) if intake.message_row_id else None
    if intake.source == Source.NCPDP and source is not None and source.sender and source.message_id:
        header = messages.answer_header(ncpdp.Header(sender=source.sender, message_id=source.message_id,
                                                     prescriber_order_number=source.prescriber_order_number or ""))
        header.rx_reference_number = rx.rx_number
        body = ncpdp.answer_message("Verify", header, ncpdp.Answer(code=ncpdp.STATUS_ACCEPTED,
                                                                   description="Accepted by the pharmacy."))
        messages.enqueue(actor, "Verify", body, header, patient_id=rx.patient_id, prescription_id=rx.id,
                         intake_id=intake.id)
    return rx


def reject(actor: Actor, intake_id: int, reason: str) -> ErxIntake:
    """Refuse an entry with the reason; an NCPDP sender gets it back as an Error."""
    intake = services.waiting_entry(actor, intake_id, permission=Permission.MANAGE_PRESCRIPTION,
                                    what="reject e-prescriptions")
    if intake.kind not in (IntakeKind.NEW_RX, IntakeKind.RENEWAL):
        raise Conflict("This entry is a notice: mark it done instead.")
    reason = (reason or "").strip()
    if not 3 <= len(reason) <= 400:
        raise ValidationFailed("Give the reason (the prescriber sees it).", fields={"reason": "3–400 characters."})
    services.mark_rejected(actor, intake, reason)
    source = db.session.get(ErxMessage, intake.message_row_id) if intake.message_row_id else None
    if intake.source == Source.NCPDP and source is not None and source.sender and source.message_id:
        header = messages.answer_header(ncpdp.Header(sender=source.sender, message_id=source.message_id,
                                                     prescriber_order_number=source.prescriber_order_number or ""))
        body = ncpdp.answer_message("Error", header, ncpdp.Answer(
            code=ncpdp.ERROR_REJECTED, description=f"Not accepted by the pharmacy: {reason}"))
        messages.enqueue(actor, "Error", body, header, patient_id=intake.patient_id, intake_id=intake.id)
    return intake


def add_patient_from_intake(actor: Actor, intake_id: int) -> Patient:
    """A patient new to the pharmacy: created from the prescription's details (checked like the patient form)."""
    intake = services.waiting_entry(actor, intake_id, permission=Permission.EDIT_PATIENT, what="add patients")
    on_file = services.patients_already_on_file(intake)
    if on_file:
        # Two e-prescriptions for one new patient: the second must not make a second chart (screening would run
        # against one and miss the other). The pharmacist chooses the patient on file instead.
        raise Conflict("A patient with this name and date of birth is already on file: choose them for this "
                       "prescription (the entry now suggests them) instead of adding a second record.")
    try:
        data = PatientInSchema().load(services.patient_values(intake))
    except ValidationError as err:
        raise ValidationFailed("The prescription's patient details are incomplete: add the patient by hand.",
                               fields=flatten(err.messages)) from None
    patient = patients.create_patient(actor, data)
    services.choose_patient(actor, intake.id, patient.id)
    return patient


def add_prescriber_from_intake(actor: Actor, intake_id: int) -> Prescriber:
    intake = services.waiting_entry(actor, intake_id, permission=Permission.EDIT_PATIENT, what="add prescribers")
    try:
        data = PrescriberInSchema().load(services.prescriber_values(intake))
    except ValidationError as err:
        raise ValidationFailed("The prescription's prescriber details are incomplete: add the prescriber by hand.",
                               fields=flatten(err.messages)) from None
    doc = prescriptions.create_prescriber(actor, data)
    services.choose_prescriber(actor, intake.id, doc.id)
    return doc


#: RxChangeRequest MessageRequestCode values offered for a clarification.
CHANGE_REASONS = {"S": "Prescription clarification", "D": "Drug use evaluation (e.g. a dose and a condition)"}


def ask_clarification(actor: Actor, intake_id: int, question: str, request_code: str = "S") -> ErxMessage:
    """An RxChangeRequest back to the prescriber (e.g. "4.5 mg with spasticity: confirm, or 3 mg?"). The entry waits
    for the answer (an RxChangeResponse), which is shown on it."""
    intake = services.waiting_entry(actor, intake_id, permission=Permission.MANAGE_PRESCRIPTION,
                                    what="ask prescribers to clarify")
    question = (question or "").strip()
    if not 3 <= len(question) <= 400:
        raise ValidationFailed("Write the question for the prescriber.", fields={"question": "3–400 characters."})
    if request_code not in CHANGE_REASONS:
        raise ValidationFailed("Choose what kind of clarification.", fields={"request_code": "Unknown."})
    source = db.session.get(ErxMessage, intake.message_row_id) if intake.message_row_id else None
    if intake.source != Source.NCPDP or source is None or not source.sender:
        raise Conflict("Only an e-prescription received by NCPDP can be answered electronically: call or fax.")
    written = services.written_of(intake)
    header = messages.answer_header(ncpdp.Header(sender=source.sender, message_id=source.message_id or "",
                                                 prescriber_order_number=source.prescriber_order_number or ""))
    body = ncpdp.rx_change_request(header, request_code=request_code, patient=written.patient,
                                   pharmacy=messages.pharmacy_identity(), prescriber=written.prescriber,
                                   prescribed=replace(written.medication, note=f"Pharmacist: {question}"))
    row = messages.enqueue(actor, "RxChangeRequest", body, header, patient_id=intake.patient_id, intake_id=intake.id)
    intake.clarification = f"Asked the prescriber: {question}"[:400]
    db.session.flush()
    return row


# ---- renewals to prescribers reachable electronically -------------------------------------------------------------


def _written_patient(p: Patient) -> WrittenPatient:
    return WrittenPatient(first_name=p.first_name, last_name=p.last_name, date_of_birth=p.date_of_birth, gender="U",
                          address_line1=p.address_line1 or "", address_line2=p.address_line2 or "", city=p.city or "",
                          state=p.state or "", postal_code=p.postal_code or "",
                          phone="".join(c for c in (p.phone or "") if digits_only(c)))


def _written_prescriber(doc: Prescriber) -> WrittenPrescriber:
    digits = lambda s: "".join(c for c in (s or "") if digits_only(c))  # noqa: E731
    return WrittenPrescriber(npi=doc.npi, first_name=doc.first_name, last_name=doc.last_name,
                             suffix=doc.credentials or "", phone=digits(doc.phone), fax=digits(doc.fax),
                             email=doc.email or "")


def written_medication(rx: Prescription, *, quantity: str | None = None, days: int | None = None) -> WrittenMedication:
    """A prescription as SCRIPT's MedicationPrescribed (what the pharmacy asks to renew)."""
    formula = rx.formula
    return WrittenMedication(
        description=f"{rx_rules.product_name(formula.form, formula.strength_mg)} (compounded LDN)",
        strength_value=rx_rules.format_amount(formula.strength_mg),
        quantity=quantity or rx_rules.format_amount(rx.quantity),
        quantity_unit="C48480" if formula.form == Form.CAPSULE else "C28254",
        days_supply=str(days or rx.days_supply), refills=str(rx.refills_authorized or 0), sig=rx.directions,
        substitutions="0", diagnoses=[rx.indication_code], written_date=rx.written_date,
    )


def send_renewal_electronically(renewal: RenewalRequest, *, prescription: Prescription, actor: Actor) -> bool:
    """An RxRenewalRequest to a prescriber reachable electronically (True), or nothing (False: the caller,
    workflows.renewals.ask_prescriber, sends the email)."""
    doc = prescription.prescriber
    address = messages.address_for(doc.npi)
    if address is None:
        return False
    last = db.session.execute(
        sa.select(Order).where(Order.prescription_id == prescription.id, Order.state == OrderState.DISPENSED)
        .order_by(Order.dispensed_on.desc(), Order.id.desc())
    ).scalars().first()
    origin = services.intake_of_prescription(prescription.id)
    origin_message = db.session.get(ErxMessage, origin.message_row_id) if origin and origin.message_row_id else None
    header = messages.outbound_header(
        to=address.address, to_qualifier=address.qualifier or "D", rx_reference=prescription.rx_number,
        prescriber_order_number=(origin_message.prescriber_order_number or "") if origin_message else "",
    )
    prescribed = written_medication(prescription)
    dispensed = (written_medication(prescription, quantity=rx_rules.format_amount(last.quantity), days=last.days_supply)
                 if last else prescribed)
    prescriber = _written_prescriber(doc)
    prescriber.clinic_name = address.clinic_name or ""
    body = ncpdp.rx_renewal_request(
        header, patient=_written_patient(prescription.patient), pharmacy=messages.pharmacy_identity(),
        prescriber=prescriber, dispensed=dispensed, prescribed=prescribed,
        last_fill=last.dispensed_on.isoformat() if last and last.dispensed_on else "",
    )
    messages.enqueue(actor, "RxRenewalRequest", body, header, patient_id=prescription.patient_id,
                     prescription_id=prescription.id, renewal_id=renewal.id)
    audit.record(actor, "erx.renewal.request", patient_id=prescription.patient_id,
                 entity=("renewal_request", renewal.id))
    return True
