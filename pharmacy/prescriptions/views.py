"""Prescription pages: prescribers, intake, the prescription (alerts, fills, titration chart) and its changes."""
from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

from flask import Blueprint, flash, redirect, render_template, request, url_for
from werkzeug.datastructures import MultiDict

from pharmacy.compounding.rules import DeliveryMethod
from pharmacy.compounding.views import render_order
from pharmacy.core import uow
from pharmacy.core.auth import current_actor, staff_required
from pharmacy.core.context import today
from pharmacy.core.errors import DomainError, Forbidden, NotFound, ValidationFailed
from pharmacy.core.forms import form_values, load
from pharmacy.prescriptions import rules, services
from pharmacy.prescriptions.models import Prescription
from pharmacy.prescriptions.rules import DosingTime, Form
from pharmacy.prescriptions.schemas import AdoptSchema, PrescriberInSchema, PrescriptionInSchema
from pharmacy.workflows import orders
from pharmacy.workflows import prescription_changes as changes

bp = Blueprint("prescriptions", __name__)

ID = "int(max=2147483647)"
STEP_ROWS = 4  # blank titration rows offered (more can be added by saving with all rows filled)
FORM_NAMES = {Form.CAPSULE: "Capsules", Form.SUBLINGUAL_LIQUID: "Sublingual liquid",
              Form.TRANSDERMAL_CREAM: "Transdermal cream"}
TIMING_OPTIONS = [(DosingTime.BEDTIME.value, "At bedtime (usual: 9 pm – midnight)"),
                  (DosingTime.MORNING.value, "In the morning (if sleep is disturbed)")]
DELIVERY_OPTIONS = [(DeliveryMethod.PICKUP.value, "Pickup"), (DeliveryMethod.SHIP.value, "Ship")]


# ---- filters every page may use ------------------------------------------------------------------


@bp.app_template_filter("qty")
def qty_filter(quantity: Decimal | None, form: Form) -> str:
    """"30 capsules", "45 mL": ISMP-safe amounts (no trailing zero, a leading zero)."""
    return "" if quantity is None else rules.quantity_text(form, quantity)


@bp.app_template_filter("amount")
def amount_filter(value: Decimal | None) -> str:
    """"90", "0.5", "8.4": an exact amount as ISMP wants it written (no trailing zero, a leading zero)."""
    return "" if value is None else rules.format_amount(value)


@bp.app_template_filter("mg")
def mg_filter(dose: Decimal | None) -> str:
    return "" if dose is None else rules.format_mg(dose)


@bp.app_template_filter("ldate")
def long_date_filter(value: date | None) -> str:
    """"Dec 1, 2026": month names, so day and month cannot be swapped."""
    return "" if value is None else rules.format_date(value)


# ---- prescribers -----------------------------------------------------------------------------------


@bp.get("/prescribers")
@staff_required
def prescribers() -> Any:
    return render_template("prescriptions/prescribers.html", prescribers=services.list_prescribers(current_actor()))


@bp.route("/prescribers/new", methods=["GET", "POST"])
@staff_required
def new_prescriber() -> Any:
    actor = current_actor()
    services.prescriber_form(actor)
    back = request.values.get("patient_id", type=int)
    errors: dict[str, list[str]] = {}
    if request.method == "POST":
        data, errors = load(PrescriberInSchema(), {k: v for k, v in form_values(request.form).items()
                                                   if k != "patient_id"})
        if data is not None:
            try:
                prescriber = services.create_prescriber(actor, data)
            except ValidationFailed as exc:
                uow.discard()
                errors = exc.fields or {"_schema": [exc.message]}
            else:
                flash(f"{prescriber.display_name} was added.", "success")
                if back:
                    return redirect(url_for("prescriptions.new", patient_id=back, prescriber_id=prescriber.id))
                return redirect(url_for("prescriptions.prescribers"))
    return render_template("prescriptions/prescriber_form.html", form=request.form, errors=errors,
                           back=back), 422 if errors else 200


# ---- intake and replacement -------------------------------------------------------------------------


def _intake_values(form: MultiDict[str, str]) -> dict[str, Any]:
    """The form's values for PrescriptionInSchema: titration rows stay paired (blank rows are dropped there)."""
    data = form_values(form)
    data.pop("step_dose", None)
    data.pop("step_days", None)
    doses, days = form.getlist("step_dose"), form.getlist("step_days")
    if any(v.strip() for v in [*doses, *days]):
        data["step_dose"] = doses
        data["step_days"] = days
    return data


def _step_rows(pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The titration rows to show: the filled ones (in the order the schema numbers them), then blanks."""
    filled = [(d, n) for d, n in pairs if str(d).strip() or str(n).strip()]
    return filled + [("", "")] * max(STEP_ROWS - len(filled), 1)


def _form_steps(form: MultiDict[str, str]) -> list[tuple[str, str]]:
    doses, days = form.getlist("step_dose"), form.getlist("step_days")
    return [(doses[i] if i < len(doses) else "", days[i] if i < len(days) else "")
            for i in range(max(len(doses), len(days)))]


def _options(choices: services.IntakeForm) -> dict[str, Any]:
    grouped: dict[Form, list[tuple[int, str]]] = {}
    for f in choices.formulas:
        grouped.setdefault(f.form, []).append((f.id, f"{f.name} ({f.code})"))
    return {
        "formula_options": [(FORM_NAMES[form], items) for form, items in grouped.items()],
        "prescriber_options": [(p.id, f"{p.display_name} · NPI {p.npi}") for p in choices.prescribers],
        "timing_options": TIMING_OPTIONS,
    }


def _render_intake(choices: services.IntakeForm, form: dict[str, Any], steps: list[tuple[str, str]],
                   errors: dict[str, list[str]], status: int = 200, message: str | None = None) -> Any:
    return render_template("prescriptions/form.html", choices=choices, form=form, steps=_step_rows(steps),
                           errors=errors, message=message, **_options(choices)), status


def _errors_of(exc: ValidationFailed) -> dict[str, list[str]]:
    return exc.fields or {"_schema": [exc.message]}


def _saved_message(rx: Prescription, verb: str) -> tuple[str, str]:
    """What to say after saving, and how: a hard stop is never announced as a success (red, "blocked")."""
    alerts = services.screening.alerts_for(rx.id)
    if not alerts:
        return f"{rx.rx_number} {verb}. The safety screen found nothing.", "success"
    if any(a.severity.value == "hard_stop" for a in alerts):
        return (f"{rx.rx_number} {verb}, but it is blocked: the safety screen found a hard stop. No fill can be "
                "started until the cause is resolved (see below)."), "error"
    stops = sum(1 for a in alerts if a.severity.value in ("hard_stop", "overridable_stop", "acknowledge"))
    text = (f"{rx.rx_number} {verb}. The safety screen raised {len(alerts)} alert{'s' if len(alerts) != 1 else ''}"
            f"{f', {stops} needing a pharmacist before any fill' if stops else ''}: see below.")
    return text, "warning" if stops else "success"


@bp.route("/prescriptions/new", methods=["GET", "POST"])
@staff_required
def new() -> Any:
    actor = current_actor()
    patient_id = request.values.get("patient_id", type=int)
    choices = services.intake_form(actor, patient_id)
    if request.method == "GET":
        if choices.patient is None:
            flash("Open the patient's page first, then choose New prescription.", "warning")
            return redirect(url_for("patients.index"))
        form = {"patient_id": choices.patient.id, "written_date": today().isoformat(), "dosing_time": "bedtime",
                "refills_authorized": "0", "prescriber_id": request.args.get("prescriber_id", "")}
        return _render_intake(choices, form, [], {})
    data, errors = load(PrescriptionInSchema(), _intake_values(request.form))
    if data is not None:
        try:
            rx = services.create_prescription(actor, data)
        except ValidationFailed as exc:
            uow.discard()
            errors = _errors_of(exc)
            choices = services.intake_form(actor, patient_id)
        else:
            flash(*_saved_message(rx, "saved"))
            if choices.current:  # the form warned; say it again once it is done, naming both
                flash(f"{rx.rx_number} is active beside {', '.join(c.rx_number for c in choices.current)}: the patient "
                      "now has two LDN prescriptions. If this was a dose change or a renewal, discontinue the old one "
                      "(or next time use Replace).", "warning")
            return redirect(url_for("prescriptions.detail", rx_id=rx.id))
    if choices.patient is None and "patient_id" not in errors:
        errors["patient_id"] = ["Unknown patient: start from the patient's page."]
    return _render_intake(choices, request.form.to_dict(), _form_steps(request.form), errors, 422)


def _form_of(rx: Prescription) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """A replacement starts from the old prescription: same formula, dose, plan and refills, written today."""
    form = {
        "formula_id": rx.formula_id, "prescriber_id": rx.prescriber_id, "dose_mg": rules.format_amount(rx.dose_mg),
        "dosing_time": rx.dosing_time.value, "days_supply": rx.days_supply,
        "refills_authorized": rx.refills_authorized, "written_date": today().isoformat(),
        "indication": rx.indication, "indication_code": rx.indication_code,
    }
    steps = [(rules.format_amount(s.dose_mg), str(s.days)) for s in rules.parse_titration(rx.titration)]
    return form, steps


@bp.route(f"/prescriptions/<{ID}:rx_id>/replace", methods=["GET", "POST"])
@staff_required
def replace(rx_id: int) -> Any:
    actor = current_actor()
    choices = services.replace_form(actor, rx_id)
    if request.method == "GET":
        form, steps = _form_of(choices.replaces)  # type: ignore[arg-type]
        return _render_intake(choices, form, steps, {})
    data, errors = load(PrescriptionInSchema(partial=("patient_id",)), _intake_values(request.form))
    if data is not None:
        try:
            rx = changes.replace(actor, rx_id, data)
        except ValidationFailed as exc:
            uow.discard()
            errors = _errors_of(exc)
            choices = services.replace_form(actor, rx_id)
        else:
            flash(*_saved_message(rx, f"replaces {choices.replaces.rx_number}"))  # type: ignore[union-attr]
            return redirect(url_for("prescriptions.detail", rx_id=rx.id))
    return _render_intake(choices, request.form.to_dict(), _form_steps(request.form), errors, 422)


# ---- the prescription page and its actions ---------------------------------------------------------


def _detail(rx_id: int, *, status: int = 200, message: str | None = None, errors: dict[str, list[str]] | None = None,
            alert_errors: dict[int, dict[str, list[str]]] | None = None) -> Any:
    view = services.prescription_view(current_actor(), rx_id)
    chart = rules.titration_chart_rows(view.schedule, view.rx.formula.form) if view.schedule else []
    return render_template("prescriptions/detail.html", view=view, chart=chart, message=message,
                           errors=errors or {}, alert_errors=alert_errors or {},
                           delivery_options=DELIVERY_OPTIONS), status


@bp.get(f"/prescriptions/<{ID}:rx_id>")
@staff_required
def detail(rx_id: int) -> Any:
    return _detail(rx_id)


def _failed(rx_id: int, exc: DomainError, *, alert_id: int | None = None) -> Any:
    """Re-show the prescription page with what went wrong; nothing of the attempt is kept."""
    if isinstance(exc, Forbidden | NotFound):
        raise exc
    uow.discard()
    fields = exc.fields if isinstance(exc, ValidationFailed) else {}
    if alert_id is not None:
        return _detail(rx_id, status=exc.status, message=exc.message, alert_errors={alert_id: fields})
    return _detail(rx_id, status=exc.status, message=exc.message, errors=fields)


@bp.post(f"/prescriptions/<{ID}:rx_id>/alerts/<{ID}:alert_id>/resolve")
@staff_required
def resolve_alert(rx_id: int, alert_id: int) -> Any:
    actor = current_actor()
    order_id = request.form.get("order_id", type=int)
    try:
        alert = services.resolve_alert(actor, alert_id, request.form.get("reason", ""), prescription_id=rx_id)
    except DomainError as exc:
        if order_id and not isinstance(exc, Forbidden | NotFound):

            uow.discard()
            return render_order(order_id, status=exc.status, message=exc.message,
                                errors={f"alert-{alert_id}": exc.fields.get("reason", [])})
        return _failed(rx_id, exc, alert_id=alert_id)
    done = "acknowledged" if alert.severity.value == "acknowledge" else "overridden"
    flash(f"Alert {done}; your name, the time and the reason are recorded.", "success")
    if order_id:
        return redirect(url_for("compounding.order", order_id=order_id))
    return redirect(url_for("prescriptions.detail", rx_id=rx_id))


@bp.post(f"/prescriptions/<{ID}:rx_id>/hold")
@staff_required
def hold(rx_id: int) -> Any:
    actor = current_actor()
    reason = request.form.get("reason", "")
    try:
        changes.hold(actor, rx_id, reason)
    except DomainError as exc:
        return _failed(rx_id, exc)
    flash("Prescription on hold: no reminders and no new fills until it is resumed.", "success")
    return redirect(url_for("prescriptions.detail", rx_id=rx_id))


@bp.post(f"/prescriptions/<{ID}:rx_id>/resume")
@staff_required
def resume(rx_id: int) -> Any:
    actor = current_actor()
    try:
        changes.resume(actor, rx_id)
    except DomainError as exc:
        return _failed(rx_id, exc)
    flash("Prescription active again.", "success")
    return redirect(url_for("prescriptions.detail", rx_id=rx_id))


@bp.post(f"/prescriptions/<{ID}:rx_id>/replaces")
@staff_required
def adopt(rx_id: int) -> Any:
    """This prescription (entered apart, not yet dispensed) replaces another current one of the patient."""
    data, errors = load(AdoptSchema(), form_values(request.form))
    if data is None:
        return _detail(rx_id, status=422, message="Choose the prescription this one replaces.", errors=errors)
    try:
        new = changes.adopt(current_actor(), rx_id, data["old_prescription_id"])
    except DomainError as exc:
        return _failed(rx_id, exc)
    flash(f"{new.rx_number} now replaces {new.replaces.rx_number if new.replaces else 'it'}: the supply on hand "
          "carries over and the old one is closed.", "success")
    return redirect(url_for("prescriptions.detail", rx_id=rx_id))


@bp.post(f"/prescriptions/<{ID}:rx_id>/discontinue")
@staff_required
def discontinue(rx_id: int) -> Any:
    actor = current_actor()
    reason = request.form.get("reason", "")
    try:
        changes.discontinue(actor, rx_id, reason)
    except DomainError as exc:
        return _failed(rx_id, exc)
    flash("Prescription discontinued; its open orders were cancelled.", "success")
    return redirect(url_for("prescriptions.detail", rx_id=rx_id))


@bp.post(f"/prescriptions/<{ID}:rx_id>/fills")
@staff_required
def start_fill(rx_id: int) -> Any:
    actor = current_actor()
    orders.may_start_fills(actor)
    delivery = request.form.get("delivery") or None
    if delivery not in (None, *DeliveryMethod):
        return _detail(rx_id, status=422, message="Choose pickup or ship.", errors={"delivery": ["Choose one."]})
    try:
        order = orders.start_fill(actor, rx_id, delivery=DeliveryMethod(delivery) if delivery else None)
    except DomainError as exc:
        return _failed(rx_id, exc)
    flash(f"Fill started: order {order.id} is waiting for a pharmacist's verification."
          + (f" {order.cap_note}" if order.cap_note else ""), "success")
    return redirect(url_for("compounding.order", order_id=order.id))
