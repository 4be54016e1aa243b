"""What patients change themselves (the portal), and the pharmacist's side of what they report.

patients/services.py keeps the staff use cases (each demands a staff permission); here the actor is a patient
signed in to the portal, who may touch only their own record — the actor's patient_id, never an id from the
request — and the pharmacy reviews the side effects patients report.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import joinedload

from pharmacy.compounding.rules import DeliveryMethod
from pharmacy.core import audit
from pharmacy.core.actor import Actor
from pharmacy.core.context import now, today
from pharmacy.core.errors import Conflict, Forbidden, NotFound, ValidationFailed
from pharmacy.core.roles import Permission
from pharmacy.extensions import db
from pharmacy.patients.models import Patient, SideEffectEntry
from pharmacy.patients.rules import SideEffect, suggested_action
from pharmacy.prescriptions.models import Prescription
from pharmacy.prescriptions.rules import RxStatus

ADDRESS_FIELDS = ("address_line1", "address_line2", "city", "state", "postal_code")


def own_patient(actor: Actor) -> Patient:
    """The signed-in patient's own record (a patient actor carries its patient id; nothing else is reachable)."""
    if actor.kind != "patient" or actor.patient_id is None:
        raise Forbidden("Only the patient may do this here.")
    patient = db.session.get(Patient, actor.patient_id)
    if patient is None:
        raise NotFound("No such patient.")
    return patient


def update_own_delivery(actor: Actor, *, delivery: DeliveryMethod, address: dict[str, Any]) -> list[str]:
    """Pick-up or shipping, and the address to ship to; returns the fields that changed (audited by name only)."""
    patient = own_patient(actor)
    values = {k: (address.get(k) or None) for k in ADDRESS_FIELDS}
    if values["state"]:
        values["state"] = values["state"].upper()
    changed = sorted(k for k, v in values.items() if getattr(patient, k) != v)
    if delivery == DeliveryMethod.SHIP and not (values["address_line1"] and values["city"] and values["state"]
                                                 and values["postal_code"]):
        raise ValidationFailed("To have it shipped, give the full address.",
                               fields={"address_line1": "Street address, city, state and ZIP code are needed."})
    for key in changed:
        setattr(patient, key, values[key])
    if patient.delivery_preference != delivery:
        patient.delivery_preference = delivery
        changed.append("delivery_preference")
    if changed:
        patient.updated_at = now()
        db.session.flush()
    audit.record(actor, "portal.delivery_update", patient_id=patient.id, entity=("patient", patient.id),
                 details={"fields": changed})
    return changed


def report_side_effect(actor: Actor, *, effect: SideEffect, persistent: bool, started_on: date | None,
                       note: str | None) -> SideEffectEntry:
    """A side effect the patient reports: it lands in their side-effect log, with the suggested action, and
    shows on the pharmacist's Today page until someone reviews it."""
    patient = own_patient(actor)
    rx = db.session.execute(
        sa.select(Prescription).where(Prescription.patient_id == patient.id, Prescription.status == RxStatus.ACTIVE)
        .options(joinedload(Prescription.formula)).order_by(Prescription.written_date.desc()).limit(1)
    ).scalar_one_or_none()
    form = rx.formula.form.value if rx is not None else None
    timing = rx.dosing_time.value if rx is not None else None
    day = started_on or today()
    if day > today():
        raise ValidationFailed("Check the date.", fields={"started_on": "The date cannot be in the future."})
    entry = SideEffectEntry(
        patient_id=patient.id, effect=SideEffect(effect).value, noted_on=day, note=note or None,
        suggested_action=suggested_action(effect, form=form, persistent=persistent, dosing_time=timing),
        recorded_by_id=None, created_at=now(), source="patient",
    )
    db.session.add(entry)
    db.session.flush()
    audit.record(actor, "side_effect.report", patient_id=patient.id, entity=("side_effect", entry.id),
                 details={"effect": entry.effect, "persistent": persistent})
    return entry


@dataclass(frozen=True)
class ReportedEffect:
    entry: SideEffectEntry
    patient: Patient


# Read on every visit of Today, built once.
_UNREVIEWED = (sa.select(SideEffectEntry, Patient).join(Patient, Patient.id == SideEffectEntry.patient_id)
               .where(SideEffectEntry.source == "patient", SideEffectEntry.reviewed_at.is_(None))
               .order_by(SideEffectEntry.created_at, SideEffectEntry.id)
               .limit(sa.bindparam("b_limit", type_=sa.Integer)))


def unreviewed_reports(actor: Actor, *, limit: int = 10) -> list[ReportedEffect]:
    """Side effects patients reported that no pharmacist has looked at yet, oldest first (the Today page)."""
    if not actor.can(Permission.VIEW_CLINICAL):
        return []
    rows = db.session.execute(_UNREVIEWED, {"b_limit": limit}).all()
    return [ReportedEffect(entry, patient) for entry, patient in rows]


def mark_reviewed(actor: Actor, entry_id: int) -> SideEffectEntry:
    """A pharmacist has read a patient's report (and acted on it): it leaves the Today page."""
    audit.require(actor, Permission.EDIT_PATIENT, what="review side-effect reports")
    entry = db.session.get(SideEffectEntry, entry_id) if 1 <= entry_id <= 2**31 - 1 else None
    if entry is None:
        raise NotFound("No such side-effect report.")
    if entry.reviewed_at is not None:
        raise Conflict("This report has already been reviewed.")
    entry.reviewed_at = now()
    entry.reviewed_by_id = actor.user_id
    db.session.flush()
    audit.record(actor, "side_effect.review", patient_id=entry.patient_id, entity=("side_effect", entry.id))
    return entry
