"""A refill request across features: asking (from a link, the API, the counter), approving (the request becomes
an order) and declining — with the reminders each stops or brings back and the notices the patient gets.
"""
from __future__ import annotations

from datetime import date

from pharmacy.compounding.models import Order
from pharmacy.compounding.rules import DeliveryMethod
from pharmacy.core import links
from pharmacy.core.actor import Actor
from pharmacy.refills import services as refills
from pharmacy.refills.models import RefillRequest
from pharmacy.refills.rules import RequestSource
from pharmacy.refills.services import RefillSummary, RequestOutcome
from pharmacy.reminders import outbox, planning
from pharmacy.reminders.rules import MessageKind
from pharmacy.supply import reads
from pharmacy.workflows import orders


def request(actor: Actor, rx_id: int, *, source: RequestSource, delivery: DeliveryMethod | None = None,
            claims: links.LinkClaims | None = None, note: str | None = None) -> RequestOutcome:
    """Open (or find) the request; a new one stops the early reminders it answers and tells the patient."""
    outcome = refills.request_refill(actor, rx_id, source=source, delivery=delivery, claims=claims, note=note)
    if outcome.created:
        req = outcome.request
        planning.cancel_for_prescription(req.prescription_id, reason="refill requested",
                                         kinds=planning.REMINDER_KINDS[:3])
        kind = MessageKind.RENEWAL_IN_PROGRESS if outcome.needs_renewal else MessageKind.REQUEST_RECEIVED
        outbox.enqueue_notice(kind, patient_id=req.patient_id, prescription_id=req.prescription_id,
                              refill_request_id=req.id)
    return outcome


def request_by_link(token: str, dob: date, *, delivery: DeliveryMethod | None = None,
                    source: RequestSource = RequestSource.API) -> tuple[RequestOutcome, RefillSummary]:
    """The API's patient path in one step: confirm the date of birth, open (or find) the request, say what it brings."""
    claims = refills.request_by_link(token, dob)
    outcome = request(refills.patient_actor(claims), claims.prescription_id or 0, source=source, delivery=delivery,
                      claims=claims)
    return outcome, refills.summary(reads.prescription(outcome.request.prescription_id))


def approve(actor: Actor, request_id: int) -> Order:
    """Approve: the next fill's order is created as quoted (too-soon is checked again when it is dispensed)."""
    req, rx = refills.approvable(actor, request_id)
    order = orders.new_fill(actor, rx, delivery=req.delivery_method)
    refills.mark_approved(actor, req, order)
    outbox.enqueue_notice(MessageKind.REQUEST_APPROVED, patient_id=req.patient_id, prescription_id=rx.id,
                          refill_request_id=req.id)
    return order


def decline(actor: Actor, request_id: int, reason: str) -> RefillRequest:
    """Decline with a reason the patient reads; their reminders come back (the refill is not coming)."""
    req = refills.decline(actor, request_id, reason)
    outbox.enqueue_notice(MessageKind.REQUEST_DECLINED, patient_id=req.patient_id,
                          prescription_id=req.prescription_id, refill_request_id=req.id)
    planning.replan_prescription(req.prescription_id)
    return req
