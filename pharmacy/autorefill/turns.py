"""What other features' workflows change in auto-refill, without its services (which sit above them): giving a
supply's turn back when the fill it led to is returned (compounding/returns.py), and an enrolment following its
prescription when a renewal or dose change replaces it (workflows/prescription_changes).

Auto-refill asks once per supply: one Cycle per (enrolment, latest dispensed fill). When the next fill is returned
(lost in the post, say), the fill before it is the latest again and its turn was already taken — by the request
that led to the returned fill, or as "in progress" while it was made — so auto-refill would wait for good while
the patient has run out. A turn the patient chose to skip stays skipped.
"""
from __future__ import annotations

import sqlalchemy as sa

from pharmacy.autorefill.models import Cycle, Enrolment
from pharmacy.core import audit
from pharmacy.core.actor import Actor
from pharmacy.core.context import now
from pharmacy.extensions import db
from pharmacy.prescriptions.models import Prescription
from pharmacy.supply import reads


def reopen_turn(rx: Prescription) -> int:
    """Delete the non-skipped turn of the supply the patient holds under `rx` once a fill is returned (its supply
    already recomputed); how many were deleted.

    The supply is the one the daily run keys its turns on (supply/reads.supply_fill): the prescription's own latest
    dispensed fill or, for a renewal not yet dispensed, the fill it carries — so a renewal's first fill returned
    gives back the turn its request took. Enrolments on renewals that carry `rx`'s supply count too (an enrolment
    follows its prescription when it is replaced)."""
    fill = reads.supply_fill(rx)
    if fill is None:
        return 0
    carriers = sa.select(Prescription.id).where(Prescription.supply_source_id == rx.id)
    enrolments = sa.select(Enrolment.id).where(
        sa.or_(Enrolment.prescription_id == rx.id, Enrolment.prescription_id.in_(carriers)))
    result = db.session.execute(
        sa.delete(Cycle).where(Cycle.enrolment_id.in_(enrolments), Cycle.fill_order_id == fill.id,
                               Cycle.outcome != "skipped")
        .execution_options(synchronize_session=False))
    return int(result.rowcount or 0)


def follow_replacement(actor: Actor, old_rx_id: int, new_rx_id: int) -> Enrolment | None:
    """The old prescription's live enrolment moves to the one that replaced it; returns it (None: there was none).

    Why: a renewal is the very thing auto-refill's own "no refills left" path asks the prescriber for, and the new
    prescription takes over the supply, the waiting request and the reminders (workflows/prescription_changes). The
    patient agreed to have *their LDN* refilled automatically; ending that silently because the paper changed would
    leave them to notice, too late, that nothing was asked for. The enrolment keeps its id, consent and turns: a
    supply whose turn was already taken (the request moved with it) is not asked for twice. When the new
    prescription already has a live enrolment of its own (a patient who enrolled on it before it was linked as the
    replacement), the old one simply ends.
    """
    row = db.session.execute(
        sa.select(Enrolment).where(Enrolment.prescription_id == old_rx_id, Enrolment.ended_at.is_(None))
    ).scalar_one_or_none()
    if row is None:
        return None
    has_own = db.session.execute(
        sa.select(Enrolment.id).where(Enrolment.prescription_id == new_rx_id, Enrolment.ended_at.is_(None))
    ).first() is not None
    if has_own:
        row.ended_at = now()
        row.end_reason = "the prescription was replaced; the new one is enrolled"
        db.session.flush()
        audit.record(actor, "autorefill.end", patient_id=row.patient_id, entity=("prescription", old_rx_id),
                     details={"enrolment": row.id, "reason": "replaced", "new": new_rx_id})
        return None
    row.prescription_id = new_rx_id
    db.session.flush()
    audit.record(actor, "autorefill.carried_over", patient_id=row.patient_id, entity=("prescription", new_rx_id),
                 details={"enrolment": row.id, "from": old_rx_id, "to": new_rx_id})
    return row
