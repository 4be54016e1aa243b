"""The prescriber's renewal link: the email to the prescriber carries a reference and a signed link, never the
patient's name, birth date or medicine; the page behind the link asks the prescriber to identify (their NPI)
before it shows the request — the same facts as the printable page the pharmacy faxes.

A link is scoped to one prescription's open renewal request, expires after RENEWAL_LINK_DAYS, and locks after
five wrong NPIs (counted atomically, like a patient's date of birth: core/links.py). Every view of the request
is audited as a read of the patient's record by the prescriber.
"""
from __future__ import annotations

import sqlalchemy as sa

from pharmacy.core import audit, links
from pharmacy.core.actor import Actor
from pharmacy.core.errors import LinkInvalid
from pharmacy.extensions import db
from pharmacy.prescriptions.models import Prescriber, Prescription
from pharmacy.refills.models import RenewalRequest
from pharmacy.refills.renewals import RenewalDocument, build_renewal_document
from pharmacy.refills.rules import RenewalState

RENEWAL_LINK_DAYS = links.RENEWAL_LINK_DAYS
HTTP_STATUS = {"invalid": 400, "expired": 410, "used": 410, "locked": 429}


NPI = links.Question(answers="NPIs", failed_action="renewal_link.npi_failed", field="npi",
                     wrong="That NPI does not match our records.", wrong_field="That does not match the prescriber's NPI.")


def make_link_token(renewal: RenewalRequest) -> str:
    """The signed token of a renewal request's link (for the email to the prescriber)."""
    return links.make_token(links.RENEWAL, renewal.patient_id, renewal.prescription_id)


def _open_renewal(claims: links.LinkClaims) -> RenewalRequest:
    renewal = db.session.execute(
        sa.select(RenewalRequest).where(RenewalRequest.prescription_id == claims.prescription_id,
                                        RenewalRequest.patient_id == claims.patient_id)
        .order_by(RenewalRequest.id.desc()).limit(1)
    ).scalar_one_or_none()
    if renewal is None:
        raise LinkInvalid("This link is not valid.", reason="invalid")
    if renewal.state != RenewalState.SENT:
        raise LinkInvalid("This renewal request is closed.", reason="used")
    return renewal


def open_link(token: str) -> links.LinkClaims:
    """Check the link before anything is shown: signature, expiry, an open request, not locked."""
    claims = links.read_token(links.RENEWAL, token, max_age_days=RENEWAL_LINK_DAYS)
    if claims.prescription_id is None:
        raise LinkInvalid("This link is not valid.", reason="invalid")
    _open_renewal(claims)
    if links.is_locked(claims.nonce):
        raise LinkInvalid("Too many wrong NPIs were entered on this link.", reason="locked")
    return claims


def prescriber_actor(claims: links.LinkClaims) -> Actor:
    return Actor(kind="prescriber", patient_id=claims.patient_id, prescription_id=claims.prescription_id)


def confirm_prescriber(token: str, npi: str) -> RenewalDocument:
    """The request, once the prescriber's NPI is confirmed; a wrong NPI counts against the link (five lock it)."""
    claims = open_link(token)
    renewal = _open_renewal(claims)
    expected = db.session.execute(
        sa.select(Prescriber.npi).join(Prescription, Prescription.prescriber_id == Prescriber.id)
        .where(Prescription.id == renewal.prescription_id)).scalar_one()
    correct = npi == expected
    actor = prescriber_actor(claims)
    links.check_answer(claims, NPI, correct=correct, actor=actor)
    audit.record(actor, "renewal.view", patient_id=renewal.patient_id, entity=("renewal_request", renewal.id))
    return build_renewal_document(renewal)
