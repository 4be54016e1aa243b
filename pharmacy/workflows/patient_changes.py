"""Editing a patient, across features: new conditions, medications, allergies or birth date re-run the safety
screen of every active prescription and open order; turning reminders off or on cancels or re-plans them.
"""
from __future__ import annotations

from typing import Any

from pharmacy.core.actor import Actor
from pharmacy.patients import services as patients
from pharmacy.patients.models import Patient
from pharmacy.prescriptions import screening
from pharmacy.reminders import planning


def update(actor: Actor, patient_id: int, data: dict[str, Any]) -> Patient:
    edit = patients.update_patient(actor, patient_id, data)
    if {"conditions", "medications", "allergies", "date_of_birth"} & set(edit.changed):
        screening.rescreen_patient(actor, edit.patient)
    if "reminders_opt_in" in edit.changed:
        planning.replan_patient(edit.patient.id)
    return edit.patient
