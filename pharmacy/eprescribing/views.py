"""The intake queue pages: waiting e-prescriptions and faxes, the review page (as written beside the form), the
pharmacist's decisions, and the messages verbatim. The intermediary's endpoint is endpoint.py."""
from __future__ import annotations

from typing import Any

from flask import Blueprint, Flask, Response, flash, redirect, render_template, request, url_for

from pharmacy.core import uow
from pharmacy.core.auth import current_actor, staff_required
from pharmacy.core.errors import DomainError, Forbidden, NotFound, ValidationFailed
from pharmacy.core.forms import form_values, load
from pharmacy.dashboard import search as patient_search
from pharmacy.eprescribing import endpoint, messages, services, settings
from pharmacy.eprescribing.rules import IntakeKind, Source
from pharmacy.extensions import csrf
from pharmacy.prescriptions.rules import DosingTime
from pharmacy.prescriptions.schemas import PrescriptionInSchema
from pharmacy.workflows import eprescribing as workflow

bp = Blueprint("eprescribing", __name__, url_prefix="/eprescriptions")

ID = "int(max=2147483647)"
TIMING_OPTIONS = [(DosingTime.BEDTIME.value, "At bedtime (usual: 9 pm – midnight)"),
                  (DosingTime.MORNING.value, "In the morning (if sleep is disturbed)")]
KIND_TEXT = {IntakeKind.NEW_RX: "New prescription", IntakeKind.RENEWAL: "Renewal approved",
             IntakeKind.RENEWAL_DENIED: "Renewal denied", IntakeKind.CANCEL_RX: "Cancelled by the prescriber"}
SOURCE_TEXT = {Source.NCPDP: "e-prescription (NCPDP)", Source.FHIR: "FHIR", Source.FAX: "fax / scan"}


def init_app(app: Flask) -> None:
    """Settings checked at start-up and the intermediary's endpoint (bearer token, no cookies: no CSRF)."""
    settings.init_app(app)
    app.register_blueprint(endpoint.bp)
    csrf.exempt(endpoint.bp)
    app.jinja_env.globals.update(erx_kind_text=KIND_TEXT, erx_source_text=SOURCE_TEXT)


@bp.get("")
@staff_required
def queue() -> Any:
    page = services.queue(current_actor())
    return render_template("eprescribing/queue.html", page=page,
                           intermediary=settings.erx_settings().intermediary_url is not None)


def _render_review(intake_id: int, *, errors: dict[str, list[str]] | None = None, form: dict[str, Any] | None = None,
                   message: str | None = None, status: int = 200, search: Any = None) -> Any:
    review = services.review(current_actor(), intake_id)
    values = {**review.form, **(form or {})}
    grouped: dict[str, list[tuple[int, str]]] = {}
    for f in review.formulas:
        grouped.setdefault(f.form.value.replace("_", " ").capitalize(), []).append((f.id, f"{f.name} ({f.code})"))
    return render_template(
        "eprescribing/review.html", review=review, form=values, errors=errors or {}, message=message,
        formula_options=list(grouped.items()),
        prescriber_options=[(p.id, f"{p.display_name} · NPI {p.npi}") for p in review.prescribers],
        timing_options=TIMING_OPTIONS, search=search, search_q=search.q if search else "",
        change_reasons=workflow.CHANGE_REASONS,
    ), status


@bp.get(f"/<{ID}:intake_id>")
@staff_required
def review(intake_id: int) -> Any:
    q = request.args.get("q", "").strip()
    search = patient_search.search(current_actor(), q) if q else None
    return _render_review(intake_id, search=search)


def _failed(intake_id: int, exc: DomainError, form: dict[str, Any] | None = None) -> Any:
    """Show the review page again with what went wrong; nothing of the attempt is kept."""
    if isinstance(exc, Forbidden | NotFound):
        raise exc
    uow.discard()
    errors = exc.fields if isinstance(exc, ValidationFailed) else {}
    return _render_review(intake_id, errors=errors, form=form, message=exc.message, status=exc.status)


@bp.post(f"/<{ID}:intake_id>/accept")
@staff_required
def accept(intake_id: int) -> Any:
    actor = current_actor()
    values = form_values(request.form)
    data, errors = load(PrescriptionInSchema(), values)
    if data is None:
        return _render_review(intake_id, errors=errors, form=request.form.to_dict(), status=422,
                              message="Please check the form: nothing was saved.")
    try:
        rx = workflow.accept(actor, intake_id, data)
    except DomainError as exc:
        return _failed(intake_id, exc, request.form.to_dict())
    flash(f"Accepted as {rx.rx_number}. The safety screen ran as for any new prescription: see below.", "success")
    return redirect(url_for("prescriptions.detail", rx_id=rx.id))


@bp.post(f"/<{ID}:intake_id>/reject")
@staff_required
def reject(intake_id: int) -> Any:
    try:
        workflow.reject(current_actor(), intake_id, request.form.get("reason", ""))
    except DomainError as exc:
        return _failed(intake_id, exc)
    flash("Rejected; the reason is recorded (and sent back to an e-prescribing prescriber).", "success")
    return redirect(url_for("eprescribing.queue"))


@bp.post(f"/<{ID}:intake_id>/patient")
@staff_required
def choose_patient(intake_id: int) -> Any:
    try:
        services.choose_patient(current_actor(), intake_id, request.form.get("patient_id", type=int) or 0)
    except DomainError as exc:
        return _failed(intake_id, exc)
    flash("Patient chosen for this prescription.", "success")
    return redirect(url_for("eprescribing.review", intake_id=intake_id))


@bp.post(f"/<{ID}:intake_id>/patient/new")
@staff_required
def add_patient(intake_id: int) -> Any:
    try:
        patient = workflow.add_patient_from_intake(current_actor(), intake_id)
    except DomainError as exc:
        return _failed(intake_id, exc)
    flash(f"{patient.first_name} {patient.last_name} was added as a new patient.", "success")
    return redirect(url_for("eprescribing.review", intake_id=intake_id))


@bp.post(f"/<{ID}:intake_id>/prescriber/new")
@staff_required
def add_prescriber(intake_id: int) -> Any:
    try:
        doc = workflow.add_prescriber_from_intake(current_actor(), intake_id)
    except DomainError as exc:
        return _failed(intake_id, exc)
    flash(f"{doc.display_name} was added.", "success")
    return redirect(url_for("eprescribing.review", intake_id=intake_id))


@bp.post(f"/<{ID}:intake_id>/clarify")
@staff_required
def clarify(intake_id: int) -> Any:
    try:
        workflow.ask_clarification(current_actor(), intake_id, request.form.get("question", ""),
                                   request.form.get("request_code", "S"))
    except DomainError as exc:
        return _failed(intake_id, exc)
    flash("The question is on its way to the prescriber (RxChangeRequest); the answer will show here.", "success")
    return redirect(url_for("eprescribing.review", intake_id=intake_id))


@bp.post(f"/<{ID}:intake_id>/done")
@staff_required
def done(intake_id: int) -> Any:
    try:
        services.mark_done(current_actor(), intake_id, request.form.get("note"))
    except DomainError as exc:
        return _failed(intake_id, exc)
    flash("Marked as dealt with.", "success")
    return redirect(url_for("eprescribing.queue"))


@bp.get(f"/messages/<{ID}:message_id>")
@staff_required
def message(message_id: int) -> Any:
    row = messages.message_view(current_actor(), message_id)
    return render_template("eprescribing/message.html", row=row, attempts=messages.attempts_of(row.id))


@bp.get(f"/messages/<{ID}:message_id>.xml")
@staff_required
def message_xml(message_id: int) -> Any:
    row = messages.message_view(current_actor(), message_id)
    return Response(row.body, mimetype="text/plain; charset=utf-8",
                    headers={"Content-Disposition": f'inline; filename="message-{row.id}.xml.txt"'})


@bp.post(f"/messages/<{ID}:message_id>/retry")
@staff_required
def retry(message_id: int) -> Any:
    messages.retry_outbound(current_actor(), message_id)
    flash("The message will be sent again now.", "success")
    return redirect(url_for("eprescribing.message", message_id=message_id))


@bp.post(f"/messages/<{ID}:message_id>/cancel")
@staff_required
def cancel(message_id: int) -> Any:
    messages.cancel_outbound(current_actor(), message_id)
    flash("The message will not be sent.", "success")
    return redirect(url_for("eprescribing.message", message_id=message_id))
