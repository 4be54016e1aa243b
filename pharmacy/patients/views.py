"""Patient pages: the list, intake of a new patient, editing details (which re-screens), the patient record."""
from __future__ import annotations

from typing import Any

from flask import Blueprint, flash, redirect, render_template, request, url_for
from werkzeug.datastructures import MultiDict

from pharmacy.compounding.rules import DeliveryMethod
from pharmacy.core import uow
from pharmacy.core.auth import current_actor, staff_required
from pharmacy.core.context import today
from pharmacy.core.errors import ValidationFailed
from pharmacy.core.forms import form_values, load
from pharmacy.core.schemas import lines_to_list
from pharmacy.dashboard import patient_page
from pharmacy.patients import self_service, services
from pharmacy.patients.models import Patient
from pharmacy.patients.rules import LABELS
from pharmacy.patients.schemas import PatientInSchema, SideEffectInSchema
from pharmacy.workflows import patient_changes

bp = Blueprint("patients", __name__, url_prefix="/patients")

ID = "int(max=2147483647)"  # larger numbers name no row (and SQLite cannot compare them)
DELIVERY_OPTIONS = [(DeliveryMethod.PICKUP.value, "Pickup at the pharmacy"), (DeliveryMethod.SHIP.value, "Ship")]


@bp.get("/")
@staff_required
def index() -> Any:
    page = request.args.get("page", 1, type=int)
    return render_template("patients/index.html", page=services.list_patients(current_actor(), page=page))


def _values(form: MultiDict[str, str]) -> dict[str, Any]:
    """The form as the schema wants it: an unticked checkbox sends nothing, which means "no"; the lists' textareas
    hold one item a line."""
    data = lines_to_list(form_values(form), "conditions", "medications", "allergies")
    data["reminders_opt_in"] = "true" if form.get("reminders_opt_in") else "false"
    return data


def _form_of(patient: Patient) -> dict[str, Any]:
    """A patient's details as the form shows them (lists one item per line)."""
    return {
        "first_name": patient.first_name, "last_name": patient.last_name,
        "date_of_birth": patient.date_of_birth.isoformat(), "email": patient.email or "", "phone": patient.phone or "",
        "address_line1": patient.address_line1 or "", "address_line2": patient.address_line2 or "",
        "city": patient.city or "", "state": patient.state or "", "postal_code": patient.postal_code or "",
        "conditions": "\n".join(patient.conditions or []), "medications": "\n".join(patient.medications or []),
        "allergies": "\n".join(patient.allergies or []), "reminders_opt_in": patient.reminders_opt_in,
        "delivery_preference": patient.delivery_preference.value, "shipping_days": patient.shipping_days,
        "notes": patient.notes or "",
    }


def _render_form(*, patient: Patient | None, form: dict[str, Any], errors: dict[str, list[str]], status: int = 200,
                 message: str | None = None) -> Any:
    return render_template("patients/form.html", patient=patient, form=form, errors=errors, message=message,
                           delivery_options=DELIVERY_OPTIONS), status


@bp.route("/new", methods=["GET", "POST"])
@staff_required
def new() -> Any:
    actor = current_actor()
    services.new_patient_form(actor)
    if request.method == "GET":
        return _render_form(patient=None, form={"reminders_opt_in": True, "delivery_preference": "pickup"}, errors={})
    form = request.form.to_dict()
    form["reminders_opt_in"] = bool(request.form.get("reminders_opt_in"))
    data, errors = load(PatientInSchema(), _values(request.form))
    if data is not None:
        try:
            patient = services.create_patient(actor, data)
        except ValidationFailed as exc:
            uow.discard()
            errors = exc.fields or {"_schema": [exc.message]}
        else:
            flash(f"{patient.full_name} was added.", "success")
            return redirect(url_for("patients.detail", patient_id=patient.id))
    return _render_form(patient=None, form=form, errors=errors, status=422)


@bp.get(f"/<{ID}:patient_id>")
@staff_required
def detail(patient_id: int) -> Any:

    return render_template("patients/detail.html", record=patient_page.patient_record(current_actor(), patient_id),
                           today_date=today(), side_effect_choices=[(k.value, v) for k, v in LABELS.items()])


@bp.route(f"/<{ID}:patient_id>/edit", methods=["GET", "POST"])
@staff_required
def edit(patient_id: int) -> Any:
    actor = current_actor()
    patient = services.edit_form(actor, patient_id)
    if request.method == "GET":
        return _render_form(patient=patient, form=_form_of(patient), errors={})
    form = request.form.to_dict()
    form["reminders_opt_in"] = bool(request.form.get("reminders_opt_in"))
    data, errors = load(PatientInSchema(), _values(request.form))
    if data is not None:
        try:
            patient_changes.update(actor, patient_id, data)
        except ValidationFailed as exc:
            uow.discard()
            patient = services.get_patient(actor, patient_id)
            errors = exc.fields or {"_schema": [exc.message]}
        else:
            flash("Details saved. Conditions and medications were screened again against every active prescription.",
                  "success")
            return redirect(url_for("patients.detail", patient_id=patient_id))
    return _render_form(patient=patient, form=form, errors=errors, status=422)


@bp.post(f"/<{ID}:patient_id>/side-effects")
@staff_required
def add_side_effect(patient_id: int) -> Any:
    """Log a side effect; the suggested action (docs/domain.md) is shown with it on the patient page."""

    values = form_values(request.form)
    values["persistent"] = bool(request.form.get("persistent"))
    data, errors = load(SideEffectInSchema(), values)
    if data is None:
        raise ValidationFailed("The side effect was not recorded.", fields=errors)
    entry = services.add_side_effect(current_actor(), patient_id, data)
    flash("Side effect recorded." + (f" Suggested: {entry.suggested_action}" if entry.suggested_action else ""),
          "success")
    return redirect(url_for("patients.detail", patient_id=patient_id, _anchor="side-effects"))


@bp.post("/side-effects/<int:entry_id>/reviewed")
@staff_required
def side_effect_reviewed(entry_id: int) -> Any:
    """A patient's side-effect report read by the pharmacy: it leaves the Today page (the log keeps it)."""
    self_service.mark_reviewed(current_actor(), entry_id)
    flash("Marked as reviewed. It stays in the patient's side-effect log.", "success")
    return redirect(url_for("dashboard.home", _anchor="patient-reports"), 303)
