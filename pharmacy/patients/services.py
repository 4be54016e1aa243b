"""Patient use cases: intake, edits, side effects, listing. (The patient page, which reads every feature, is
dashboard/patient_page.py; what an edit means for screening and reminders is workflows/patient_changes.py.)"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import joinedload

from pharmacy.core import audit
from pharmacy.core.actor import Actor
from pharmacy.core.context import now, settings, today
from pharmacy.core.errors import NotFound, ValidationFailed
from pharmacy.core.ids import valid_id
from pharmacy.core.roles import Permission
from pharmacy.extensions import db
from pharmacy.patients import rules
from pharmacy.patients.models import Patient, SideEffectEntry
from pharmacy.prescriptions.models import Prescription

PAGE_SIZE = 50


@dataclass
class PatientPage:
    items: list[Patient]
    page: int
    has_next: bool


MAX_PAGE_SIZE = 200


def list_patients(actor: Actor, *, page: int = 1, per_page: int = PAGE_SIZE) -> PatientPage:
    audit.require(actor, Permission.VIEW_CLINICAL, what="list patients")
    page = min(max(page, 1), 1_000_000)
    per_page = min(max(per_page, 1), MAX_PAGE_SIZE)
    rows = list(
        db.session.execute(
            sa.select(Patient)
            .order_by(Patient.name_key, Patient.id)
            .offset((page - 1) * per_page)
            .limit(per_page + 1)
        ).scalars()
    )
    audit.record_reads(actor, "patient.list", [p.id for p in rows[:per_page]])
    return PatientPage(rows[:per_page], page, len(rows) > per_page)


def _safe_id(value: Any) -> int | None:
    """An id that can be stored or looked up (anything else names no patient)."""
    return value if valid_id(value) else None


def get_patient(actor: Actor, patient_id: int) -> Patient:
    audit.require(actor, Permission.VIEW_CLINICAL, patient_id=_safe_id(patient_id), what="open a patient record")
    patient = db.session.get(Patient, patient_id) if _safe_id(patient_id) else None
    if patient is None:
        raise NotFound("No such patient.")
    return patient


def view_patient(actor: Actor, patient_id: int) -> Patient:
    """One patient's details, read (and audited as read) by staff or an integration."""
    patient = get_patient(actor, patient_id)
    audit.record(actor, "patient.view", patient_id=patient.id, entity=("patient", patient.id))
    return patient


PATIENT_FIELDS = (
    "first_name", "last_name", "date_of_birth", "email", "phone", "address_line1", "address_line2", "city",
    "state", "postal_code", "conditions", "medications", "allergies", "reminders_opt_in", "delivery_preference",
    "shipping_days", "notes",
)


def _clean(data: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in data.items() if k in PATIENT_FIELDS}
    for key in ("conditions", "medications", "allergies"):
        if key in out:
            out[key] = rules.normalise_list(out[key] or [])
    if out.get("email"):
        out["email"] = out["email"].strip().lower()
    if "date_of_birth" in out and out["date_of_birth"] > today():
        raise ValidationFailed("Check the date of birth.", fields={"date_of_birth": "A birth date cannot be in the future."})
    return out


def new_patient_form(actor: Actor) -> None:
    """Showing the intake form is for those who may add patients."""
    audit.require(actor, Permission.EDIT_PATIENT, what="add patients")


def edit_form(actor: Actor, patient_id: int) -> Patient:
    """The edit form shows the patient's details: for those who may edit, and a read of the record (audited)."""
    audit.require(actor, Permission.EDIT_PATIENT, patient_id=_safe_id(patient_id), what="edit patient records")
    patient = get_patient(actor, patient_id)
    audit.record(actor, "patient.view", patient_id=patient.id, entity=("patient", patient.id),
                 details={"page": "edit"})
    return patient


def create_patient(actor: Actor, data: dict[str, Any]) -> Patient:
    """Intake: a new patient record (validated data from PatientInSchema)."""
    audit.require(actor, Permission.EDIT_PATIENT, what="add patients")
    values = _clean(data)
    if values.get("shipping_days") is None:
        values["shipping_days"] = settings().default_shipping_days
    t = now()
    patient = Patient(**values, created_at=t, updated_at=t)
    patient.name_key = rules.name_key(patient.last_name, patient.first_name)
    db.session.add(patient)
    db.session.flush()
    audit.record(actor, "patient.create", patient_id=patient.id, entity=("patient", patient.id))
    return patient


@dataclass(frozen=True)
class PatientUpdate:
    """An edit and the fields it changed (workflows/patient_changes.py re-screens or re-plans from them)."""

    patient: Patient
    changed: list[str]


def update_patient(actor: Actor, patient_id: int, data: dict[str, Any]) -> PatientUpdate:
    """Edit details; only the changed fields are written, and named (never their values) in the audit trail."""
    audit.require(actor, Permission.EDIT_PATIENT, patient_id=_safe_id(patient_id), what="edit patient records")
    patient = get_patient(actor, patient_id)
    values = _clean(data)
    if values.get("shipping_days", 0) is None:
        values.pop("shipping_days")  # a blank field keeps the current number of shipping days
    changed = sorted(k for k, v in values.items() if getattr(patient, k) != v)
    for key in changed:
        setattr(patient, key, values[key])
    if not changed:
        return PatientUpdate(patient, [])
    patient.name_key = rules.name_key(patient.last_name, patient.first_name)
    patient.updated_at = now()
    db.session.flush()
    # Field names only: the values are PHI and the audit trail is read by admins.
    audit.record(actor, "patient.update", patient_id=patient.id, entity=("patient", patient.id),
                 details={"fields": changed})
    return PatientUpdate(patient, changed)


def add_side_effect(actor: Actor, patient_id: int, data: dict[str, Any]) -> Any:
    """Log a side effect with the suggested action from docs/domain.md "Side effects worth logging"."""
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
        suggested_action=rules.suggested_action(data["effect"], form=form, persistent=data.get("persistent", False)),
    )
    db.session.add(entry)
    db.session.flush()
    audit.record(actor, "side_effect.create", patient_id=patient_id, entity=("side_effect", entry.id),
                 details={"effect": entry.effect})
    return entry
