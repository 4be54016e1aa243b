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
