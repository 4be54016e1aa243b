"""Renewals: when a prescription has no refills left (or expires), the pharmacy asks the prescriber for a new one.

The pharmacist's task (one open per prescription), sending it to the prescriber (email in the outbox, a printable
copy for fax), the renewals still awaited, and carrying a waiting refill request over to the new prescription.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import joinedload

from pharmacy.core import audit, signals
from pharmacy.core.actor import Actor
from pharmacy.core.context import now
from pharmacy.core.db import first_ids
from pharmacy.core.errors import Conflict, NotFound
from pharmacy.core.roles import Permission
from pharmacy.extensions import db
from pharmacy.patients.models import Patient
from pharmacy.prescriptions import rules as rx_rules
from pharmacy.prescriptions.models import Prescriber, Prescription
from pharmacy.prescriptions.rules import RxStatus
from pharmacy.refills.models import RenewalRequest
from pharmacy.refills.rules import RefillRequestState, RenewalState
from pharmacy.refills.services import (
    OPEN_RENEWAL_STATES,
    _latest_dispensed,
    _load_request,
    _open_request,
    _rx_for,
    rx_facts,
)
from pharmacy.reminders import outbox
from pharmacy.reminders.rules import MessageKind


def _open_renewal(rx_id: int) -> RenewalRequest | None:
    return db.session.execute(
        sa.select(RenewalRequest).where(RenewalRequest.prescription_id == rx_id,
                                        RenewalRequest.state.in_(OPEN_RENEWAL_STATES))
    ).scalar_one_or_none()


def ensure_renewal_task(rx_id: int, *, reason: str) -> RenewalRequest:
    """The pharmacist's task to contact the prescriber; one open per prescription."""
    existing = _open_renewal(rx_id)
    if existing is not None:
        return existing
    rx = db.session.get(Prescription, rx_id)
    assert rx is not None
    renewal = RenewalRequest(prescription_id=rx.id, prescriber_id=rx.prescriber_id, patient_id=rx.patient_id,
                             state=RenewalState.NEEDED, reason=reason[:200], created_at=now())
    try:
        with db.session.begin_nested():
            db.session.add(renewal)
            db.session.flush()
    except IntegrityError:
        found = _open_renewal(rx_id)
        if found is None:
            raise
        return found
    return renewal


def ask_prescriber(actor: Actor, *, request_id: int | None = None, prescription_id: int | None = None) -> RenewalRequest:
    """Send the renewal request to the prescriber (email in the outbox; a printable copy for fax)."""
    audit.require(actor, Permission.DECIDE_REFILL, what="ask prescribers for renewals")
    if request_id is not None:
        req = _load_request(request_id)
        if req.state not in (RefillRequestState.OPEN, RefillRequestState.AWAITING_RENEWAL):
            raise Conflict(f"This request is {req.state.value.replace('_', ' ')}; nothing to renew for it.")
        prescription_id = req.prescription_id
    else:
        req = _open_request(prescription_id or 0)
    rx = _rx_for(prescription_id or 0, lock=True)
    if rx.status in (RxStatus.DISCONTINUED, RxStatus.REPLACED):
        raise Conflict("This prescription is closed.")
    renewal = ensure_renewal_task(rx.id, reason="renewal requested by the pharmacy")
    if renewal.state == RenewalState.SENT:
        raise Conflict("The renewal request has already been sent to the prescriber.")
    renewal.state = RenewalState.SENT
    renewal.sent_at = now()
    renewal.sent_by_id = actor.user_id
    prescriber: Prescriber = rx.prescriber
    # A prescriber reachable electronically gets an NCPDP RxRenewalRequest instead (e-prescribing listens).
    if not signals.handled(signals.renewal_to_send.send(renewal, prescription=rx, actor=actor)):
        outbox.enqueue(MessageKind.PRESCRIBER_RENEWAL, dedupe_key=f"prescriber_renewal:{renewal.id}",
                       patient_id=rx.patient_id, prescription_id=rx.id, renewal_id=renewal.id,
                       to_address=prescriber.email)
    if req is not None:
        req.state = RefillRequestState.AWAITING_RENEWAL
        req.renewal_id = renewal.id
        outbox.enqueue_notice(MessageKind.RENEWAL_IN_PROGRESS, patient_id=rx.patient_id, prescription_id=rx.id,
                              refill_request_id=req.id)
    db.session.flush()
    audit.record(actor, "renewal.send", patient_id=rx.patient_id, entity=("renewal_request", renewal.id))
    return renewal


def send_renewal(actor: Actor, renewal_id: int) -> RenewalRequest:
    """The renewals list's "send to prescriber" button: ask_prescriber for that renewal's prescription."""
    audit.require(actor, Permission.DECIDE_REFILL, what="ask prescribers for renewals")
    renewal = db.session.get(RenewalRequest, renewal_id)
    if renewal is None:
        raise NotFound("No such renewal request.")
    if renewal.state not in OPEN_RENEWAL_STATES:
        raise Conflict(f"This renewal is {renewal.state.value}; nothing to send.")
    return ask_prescriber(actor, prescription_id=renewal.prescription_id)


def link_renewal(actor: Actor, old_rx_id: int, new_rx_id: int) -> None:
    """A new prescription arrived: close the renewal and carry the waiting request over to it."""
    t = now()
    for renewal in db.session.execute(
        sa.select(RenewalRequest).where(RenewalRequest.prescription_id == old_rx_id,
                                        RenewalRequest.state.in_(OPEN_RENEWAL_STATES))
    ).scalars():
        renewal.state = RenewalState.RECEIVED
        renewal.resolved_at = t
        renewal.new_prescription_id = new_rx_id
        audit.record(actor, "renewal.received", patient_id=renewal.patient_id,
                     entity=("renewal_request", renewal.id), details={"new": new_rx_id})
    waiting = _open_request(old_rx_id)
    if waiting is not None:
        waiting.prescription_id = new_rx_id
        waiting.state = RefillRequestState.OPEN
        audit.record(actor, "refill.carried_over", patient_id=waiting.patient_id,
                     entity=("refill_request", waiting.id), details={"from": old_rx_id, "to": new_rx_id})
    db.session.flush()


def renewals_waiting(actor: Actor, *, limit: int = 100) -> list[RenewalRequest]:
    """Renewals still to send or still awaited from the prescriber, oldest first."""
    audit.require(actor, Permission.VIEW_CLINICAL, what="see renewals")
    first = first_ids(RenewalRequest.id, RenewalRequest.state.in_(OPEN_RENEWAL_STATES),
                      (RenewalRequest.created_at, RenewalRequest.id), limit)
    return list(db.session.execute(
        sa.select(RenewalRequest).join(first, first.c.id == RenewalRequest.id)
        .options(joinedload(RenewalRequest.prescription).joinedload(Prescription.patient),
                 joinedload(RenewalRequest.prescription).joinedload(Prescription.prescriber),
                 joinedload(RenewalRequest.prescription).joinedload(Prescription.formula))
        .order_by(RenewalRequest.created_at, RenewalRequest.id)
    ).unique().scalars())


@dataclass
class RenewalDocument:
    """What a renewal request to the prescriber says (the printable page faxed when there is no email)."""

    renewal: RenewalRequest
    rx: Prescription
    patient: Patient
    prescriber: Prescriber
    product: str
    dose: str
    quantity: str
    last_fill: date | None
    refills_authorized: int
    refills_used: int


def renewal_document(actor: Actor, renewal_id: int) -> RenewalDocument:
    """The renewal request for printing/faxing; reading it is a read of the patient's record (audited)."""
    audit.require(actor, Permission.VIEW_CLINICAL, what="see renewals")
    renewal = db.session.get(RenewalRequest, renewal_id)
    if renewal is None:
        raise NotFound("No such renewal request.")
    rx = _rx_for(renewal.prescription_id)
    facts = rx_facts([rx.id], with_requests=False)[rx.id]
    last = _latest_dispensed(rx.id)
    audit.record(actor, "renewal.view", patient_id=rx.patient_id, entity=("renewal_request", renewal.id))
    formula = rx.formula
    return RenewalDocument(
        renewal=renewal, rx=rx, patient=rx.patient, prescriber=rx.prescriber,
        product=rx_rules.product_name(formula.form, formula.strength_mg), dose=rx_rules.format_mg(rx.dose_mg),
        quantity=rx_rules.quantity_text(formula.form, rx.quantity), last_fill=last.dispensed_on if last else None,
        refills_authorized=rx.refills_authorized or 0, refills_used=facts.refills_used,
    )
