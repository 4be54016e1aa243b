"""Patient use cases: intake, edits (with re-screening), the patient record, listing."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import joinedload

from pharmacy.core import audit
from pharmacy.core.actor import Actor
from pharmacy.core.errors import NotFound
from pharmacy.core.roles import Permission
from pharmacy.extensions import db
from pharmacy.patients.models import Patient
from pharmacy.prescriptions.models import Prescription

PAGE_SIZE = 50


@dataclass
class PatientPage:
    items: list[Patient]
    page: int
    has_next: bool


@dataclass
class PatientRecord:
    patient: Patient
    prescriptions: list[Prescription] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


def list_patients(actor: Actor, *, page: int = 1) -> PatientPage:
    audit.require(actor, Permission.VIEW_CLINICAL, what="list patients")
    page = max(page, 1)
    rows = list(
        db.session.execute(
            sa.select(Patient)
            .order_by(Patient.name_key, Patient.id)
            .offset((page - 1) * PAGE_SIZE)
            .limit(PAGE_SIZE + 1)
        ).scalars()
    )
    return PatientPage(rows[:PAGE_SIZE], page, len(rows) > PAGE_SIZE)


def get_patient(actor: Actor, patient_id: int) -> Patient:
    audit.require(actor, Permission.VIEW_CLINICAL, patient_id=patient_id, what="open a patient record")
    patient = db.session.get(Patient, patient_id)
    if patient is None:
        raise NotFound("No such patient.")
    return patient


def patient_record(actor: Actor, patient_id: int) -> PatientRecord:
    patient = get_patient(actor, patient_id)
    rxs = list(
        db.session.execute(
            sa.select(Prescription).where(Prescription.patient_id == patient_id)
            .options(joinedload(Prescription.formula), joinedload(Prescription.prescriber))
            .order_by(Prescription.written_date.desc(), Prescription.id.desc())
        ).scalars()
    )
    audit.record(actor, "patient.view", patient_id=patient_id, entity=("patient", patient_id))
    return PatientRecord(patient=patient, prescriptions=rxs)


PATIENT_FIELDS = (
    "first_name", "last_name", "date_of_birth", "email", "phone", "address_line1", "address_line2", "city",
    "state", "postal_code", "conditions", "medications", "allergies", "reminders_opt_in", "delivery_preference",
    "shipping_days", "notes",
)


def _clean(data: dict[str, Any]) -> dict[str, Any]:
    from pharmacy.core.context import today
    from pharmacy.core.errors import ValidationFailed
    from pharmacy.patients.rules import normalise_list

    out = {k: v for k, v in data.items() if k in PATIENT_FIELDS}
    for key in ("conditions", "medications", "allergies"):
        if key in out:
            out[key] = normalise_list(out[key] or [])
    if out.get("email"):
        out["email"] = out["email"].strip().lower()
    if "date_of_birth" in out and out["date_of_birth"] > today():
        raise ValidationFailed("Check the date of birth.", fields={"date_of_birth": "A birth date cannot be in the future."})
    return out


def create_patient(actor: Actor, data: dict[str, Any]) -> Patient:
    """Intake: a new patient record (validated data from PatientInSchema)."""
    from pharmacy.core.context import now, settings
    from pharmacy.dashboard.services import name_key

    audit.require(actor, Permission.EDIT_PATIENT, what="add patients")
    values = _clean(data)
    if values.get("shipping_days") is None:
        values["shipping_days"] = settings().default_shipping_days
    t = now()
    patient = Patient(**values, created_at=t, updated_at=t)
    patient.name_key = name_key(patient.last_name, patient.first_name)
    db.session.add(patient)
    db.session.flush()
    audit.record(actor, "patient.create", patient_id=patient.id, entity=("patient", patient.id))
    return patient


def update_patient(actor: Actor, patient_id: int, data: dict[str, Any]) -> Patient:
    """Edit details; a change to conditions or medications re-runs the safety screen of every active prescription."""
    from pharmacy.core.context import now
    from pharmacy.dashboard.services import name_key
    from pharmacy.prescriptions import screening

    audit.require(actor, Permission.EDIT_PATIENT, patient_id=patient_id, what="edit patient records")
    patient = db.session.get(Patient, patient_id)
    if patient is None:
        raise NotFound("No such patient.")
    values = _clean(data)
    changed = sorted(k for k, v in values.items() if getattr(patient, k) != v)
    for key in changed:
        setattr(patient, key, values[key])
    if not changed:
        return patient
    patient.name_key = name_key(patient.last_name, patient.first_name)
    patient.updated_at = now()
    db.session.flush()
    # Field names only: the values are PHI and the audit trail is read by admins.
    audit.record(actor, "patient.update", patient_id=patient.id, entity=("patient", patient.id),
                 details={"fields": changed})
    if {"conditions", "medications"} & set(changed):
        screening.rescreen_patient(actor, patient)
    if "reminders_opt_in" in changed:
        from pharmacy.reminders import planning

        planning.replan_patient(patient.id)
    return patient


def add_side_effect(actor: Actor, patient_id: int, data: dict[str, Any]) -> Any:
    """Log a side effect with the suggested action from DOMAIN.md "Side effects worth logging"."""
    from pharmacy.core.context import now, today
    from pharmacy.patients.models import SideEffectEntry
    from pharmacy.patients.rules import suggested_action

    audit.require(actor, Permission.EDIT_PATIENT, patient_id=patient_id, what="log side effects")
    patient = db.session.get(Patient, patient_id)
    if patient is None:
        raise NotFound("No such patient.")
    current_form = db.session.execute(
        sa.select(Prescription).where(Prescription.patient_id == patient_id, Prescription.status == "active")
        .options(joinedload(Prescription.formula)).order_by(Prescription.written_date.desc()).limit(1)
    ).scalar_one_or_none()
    form = current_form.formula.form.value if current_form else None
    entry = SideEffectEntry(
        patient_id=patient_id, effect=data["effect"].value, noted_on=data.get("noted_on") or today(),
        note=data.get("note"), recorded_by_id=actor.user_id, created_at=now(),
        suggested_action=suggested_action(data["effect"], form=form, persistent=data.get("persistent", False)),
    )
    db.session.add(entry)
    db.session.flush()
    audit.record(actor, "side_effect.create", patient_id=patient_id, entity=("side_effect", entry.id),
                 details={"effect": entry.effect})
    return entry
