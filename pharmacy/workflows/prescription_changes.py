"""Changing a prescription, across features: putting it on hold or resuming it, discontinuing it, replacing it
(a dose change or a renewal). Each touches the refill requests, orders and reminders that hang off it.
"""
from __future__ import annotations

from typing import Any

from pharmacy.autorefill import turns as autorefill_turns
from pharmacy.core.actor import Actor
from pharmacy.prescriptions import screening
from pharmacy.prescriptions import services as prescriptions
from pharmacy.prescriptions.models import Prescription
from pharmacy.refills import renewals
from pharmacy.refills import services as refills
from pharmacy.reminders import planning
from pharmacy.supply import services as supply
from pharmacy.workflows import orders


def hold(actor: Actor, rx_id: int, reason: str) -> Prescription:
    """Pause: no reminders and no new fills until resumed (open orders stay as they are)."""
    rx = prescriptions.hold_prescription(actor, rx_id, reason)
    planning.cancel_for_prescription(rx.id, reason=f"prescription {rx.status.value}")
    return rx


def resume(actor: Actor, rx_id: int) -> Prescription:
    """Active again: its reminders come back as planned from its supply."""
    rx = prescriptions.resume_prescription(actor, rx_id)
    planning.replan_prescription(rx.id)
    return rx


def discontinue(actor: Actor, rx_id: int, reason: str) -> Prescription:
    """Stop for good: reminders stop, orders not yet dispensed are cancelled, waiting requests and renewals closed."""
    rx = prescriptions.discontinue_prescription(actor, rx_id, reason)
    planning.cancel_for_prescription(rx.id, reason=f"prescription {rx.status.value}")
    why = f"Prescription discontinued: {rx.status_reason}"
    orders.cancel_open_orders(actor, rx.id, why)
    refills.close_open_requests(actor, rx.id, why)
    screening.rescreen_patient(actor, rx.patient)  # a newer prescription's "duplicate" stop may be over
    return rx


def replace(actor: Actor, rx_id: int, data: dict[str, Any]) -> Prescription:
    """A dose change or a renewal: the new prescription takes over the old one's supply on hand, its waiting
    request, renewal and auto-refill enrolment; the old one's unfinished orders (made for the old dose) and
    reminders stop, and the new one's are planned from the run-out it carries (the patient must still be told when
    to order)."""
    old, new = prescriptions.replace_prescription(actor, rx_id, data)
    _take_over(actor, old, new)
    return new


def adopt(actor: Actor, new_id: int, old_id: int) -> Prescription:
    """A prescription entered apart (typically an e-prescribed renewal that came as a new prescription) becomes the
    replacement of the patient's older one: the same as `replace` from then on — the supply on hand carried, the old
    one's unfinished orders and reminders stopped, a waiting renewal linked, and the duplicate stop lifted."""
    old, new = prescriptions.adopt_as_replacement(actor, new_id, old_id)
    _take_over(actor, old, new)
    return new


def _take_over(actor: Actor, old: Prescription, new: Prescription) -> None:
    """What follows a replacement, however it was made: the new one holds the old one's supply, the old one's
    unfinished orders (made for the old dose) and reminders stop, a waiting renewal moves, so does an auto-refill
    enrolment (asked for on the carried supply's order-by date, as the old one would have been — again, when the
    order its turn led to was just cancelled), the new one's
    reminders are planned from the run-out it carries, and the patient is screened again (the duplicate check sees
    the old one closed)."""
    supply.carry_over(new, old)
    cancelled = orders.cancel_open_orders(actor, old.id, f"Prescription replaced by {new.rx_number}")
    planning.cancel_for_prescription(old.id, reason="prescription replaced")
    renewals.link_renewal(actor, old.id, new.id)
    if autorefill_turns.follow_replacement(actor, old.id, new.id) is not None and cancelled:
        # The refill auto-refill asked for was being made for the old dose and is cancelled: the carried supply's
        # turn is given back, so the new prescription's fill is asked for (as after a returned fill).
        autorefill_turns.reopen_turn(new)
    planning.replan_prescription(new.id)
    screening.rescreen_patient(actor, new.patient)
