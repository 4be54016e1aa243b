"""Editing a patient, across features: new conditions, medications, allergies or birth date re-run the safety
screen of every active prescription and open order; turning reminders off or on cancels or re-plans them, and so
does a change of how the patient's refills travel (pick-up or shipping, the shipping days), which moves every
order-by date (refills.rules.next_fill_delivery).
"""
from __future__ import annotations

from typing import Any

from pharmacy.compounding.rules import DeliveryMethod
from pharmacy.core.actor import Actor
from pharmacy.patients import self_service
from pharmacy.patients import services as patients
from pharmacy.patients.models import Patient
from pharmacy.prescriptions import screening
from pharmacy.reminders import planning

#: The patient's fields the reminders are timed by: opting in or out, and how the next fill travels (the order-by
#: date of a parcel is its shipping days earlier than a pick-up's).
REPLAN_FIELDS = frozenset({"reminders_opt_in", "delivery_preference", "shipping_days"})


def update(actor: Actor, patient_id: int, data: dict[str, Any]) -> Patient:
    edit = patients.update_patient(actor, patient_id, data)
    if {"conditions", "medications", "allergies", "date_of_birth"} & set(edit.changed):
        screening.rescreen_patient(actor, edit.patient)
    if REPLAN_FIELDS & set(edit.changed):
        planning.replan_patient(edit.patient.id)
    return edit.patient


def update_own_delivery(actor: Actor, *, delivery: DeliveryMethod, address: dict[str, Any]) -> list[str]:
    """The patient's own choice of pick-up or shipping (the portal), with the address: when the choice changes,
    their reminders are re-planned for the order-by date of the way the next fill will now travel — the date the
    portal shows them at once. Returns the fields that changed."""
    changed = self_service.update_own_delivery(actor, delivery=delivery, address=address)
    if REPLAN_FIELDS & set(changed):
        assert actor.patient_id is not None  # own_patient checked it
        planning.replan_patient(actor.patient_id)
    return changed
