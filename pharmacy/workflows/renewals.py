"""Asking the prescriber for a renewal, across features: a prescriber who e-prescribes to us gets an NCPDP
RxRenewalRequest; anyone else an email through the outbox (with a printable copy for fax). A patient who is
waiting is told either way.
"""
from __future__ import annotations

from pharmacy.core.actor import Actor
from pharmacy.refills import renewals
from pharmacy.refills.models import RenewalRequest
from pharmacy.reminders import outbox
from pharmacy.reminders.rules import MessageKind
from pharmacy.workflows import eprescribing


def ask_prescriber(actor: Actor, *, request_id: int | None = None, prescription_id: int | None = None) -> RenewalRequest:
    sent = renewals.ask_prescriber(actor, request_id=request_id, prescription_id=prescription_id)
    rx, renewal = sent.rx, sent.renewal
    if not eprescribing.send_renewal_electronically(renewal, prescription=rx, actor=actor):
        outbox.enqueue(MessageKind.PRESCRIBER_RENEWAL, dedupe_key=f"prescriber_renewal:{renewal.id}",
                       patient_id=rx.patient_id, prescription_id=rx.id, renewal_id=renewal.id,
                       to_address=rx.prescriber.email)
    if sent.waiting is not None:
        outbox.enqueue_notice(MessageKind.RENEWAL_IN_PROGRESS, patient_id=rx.patient_id, prescription_id=rx.id,
                              refill_request_id=sent.waiting.id)
    return renewal


def send_renewal(actor: Actor, renewal_id: int) -> RenewalRequest:
    """The renewals list's "send to prescriber" button."""
    return ask_prescriber(actor, prescription_id=renewals.renewal_to_send(actor, renewal_id))
