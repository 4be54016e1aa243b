"""Auto-refill on the staff side: a pharmacist enrols a prescription with the patient's recorded consent (how and
when they agreed, in words), or ends it. The block sits on the patient page (templates/autorefill/_staff_block.html,
included once per prescription); patients enrol themselves in the portal (portal/views.py).
"""
from __future__ import annotations

from typing import Any

from flask import Blueprint, Flask, flash, redirect, request, url_for

from pharmacy.autorefill import schemas, services
from pharmacy.core.auth import current_actor, staff_required
from pharmacy.core.errors import ValidationFailed
from pharmacy.core.forms import form_values, load

bp = Blueprint("autorefill", __name__, url_prefix="/prescriptions")
ID = "int(max=2147483647)"


def _back(patient_id: int, rx_id: int) -> Any:
    return redirect(url_for("patients.detail", patient_id=patient_id, _anchor=f"auto-refill-{rx_id}"), 303)


@bp.post(f"/<{ID}:rx_id>/auto-refill")
@staff_required
def enrol(rx_id: int) -> Any:
    data, errors = load(schemas.StaffEnrolForm(), form_values(request.form))
    if data is None:
        raise ValidationFailed("Auto-refill was not started: say how and when the patient agreed (e.g. “by phone, "
                               "Dec 2, spoke to the patient”).", fields=errors)
    row = services.enrol(current_actor(), rx_id, consent=data["consent"])
    flash("Auto-refill is on: the refill will be asked for on each order-by date, and the patient told with a link "
          "to skip it.", "success")
    return _back(row.patient_id, rx_id)


@bp.post(f"/<{ID}:rx_id>/auto-refill/end")
@staff_required
def leave(rx_id: int) -> Any:
    patient_id = services.leave(current_actor(), rx_id)
    flash("Auto-refill is off for this prescription. Reminders go on as usual.", "success")
    return _back(patient_id, rx_id)


def init_app(app: Flask) -> None:
    # The patient page asks once for all its prescriptions (one query, however many there are).
    app.jinja_env.globals["auto_refill_enrolments"] = services.live_enrolments
