"""Production pages: the plan for the next business days (/production, and as CSV), and batches — several
patients' orders of one formula made together."""
from __future__ import annotations

from typing import Any

from flask import Blueprint, Flask, Response, flash, redirect, render_template, request, url_for

from pharmacy.compounding import batches
from pharmacy.compounding.rules import STATE_LABELS
from pharmacy.core import sessions, uow
from pharmacy.core.auth import current_actor, staff_required
from pharmacy.core.errors import DomainError, ValidationFailed
from pharmacy.core.forms import form_values, load
from pharmacy.core.numbers import digits_only
from pharmacy.inventory import settings
from pharmacy.production import services
from pharmacy.production.rules import SOURCE_LABELS, Source
from pharmacy.production.schemas import BatchCheckSchema, BatchPlanSchema, BatchRecordSchema
from pharmacy.workflows import batches as batch_flow

bp = Blueprint("production", __name__)
ID = "int(max=2147483647)"


def init_app(app: Flask) -> None:
    settings.init_app(app)


@bp.app_template_global("production_block_shown")
def production_block_shown() -> bool:
    """Whether the Today page leaves room for the production block (it is fetched after the page, below)."""
    return services.shows_plan(current_actor())


@bp.get("/production/today")
@staff_required
def today_fragment() -> Any:
    """The Today page's production block on its own. Working out the plan reads every prescription due soon
    (most of a second at chain scale), so the Today page does not wait for it: app.js fetches this fragment once
    the page is shown, and without script the block links here."""
    block = services.today_block(current_actor())
    if request.headers.get("X-Fragment") == "1":
        sessions.leave_cookie()  # fetched by Today after it is shown, while the pharmacist may already move on
        return render_template("production/_today.html", prod=block)
    return render_template("production/today.html", prod=block)


@bp.get("/production")
@staff_required
def plan() -> Any:
    return render_template("production/plan.html", plan=services.plan(current_actor()), sources=list(Source),
                           source_labels=SOURCE_LABELS)


@bp.get("/production.csv")
@staff_required
def plan_csv() -> Any:
    result = services.plan(current_actor())
    response = Response(services.to_csv(result), mimetype="text/csv")
    response.headers["Content-Disposition"] = f'attachment; filename="production-plan-{result.today.isoformat()}.csv"'
    return response


def _lists() -> dict[str, Any]:
    data = form_values(request.form)
    for key in ("order_ids", "lot_id", "lot_qty"):
        data.pop(key, None)
        if key in request.form:
            data[key] = request.form.getlist(key)
    return data


def _render_new(formula_id: int | None, errors: dict[str, list[str]] | None = None, status: int = 200) -> Any:
    found = batches.candidates(current_actor(), formula_id)
    chosen = {int(i) for i in request.form.getlist("order_ids") if digits_only(i)} if request.method == "POST" else set()
    return render_template("production/batch_new.html", c=found, errors=errors or {}, chosen=chosen,
                           formula_id=formula_id), status


@bp.get("/production/batches/new")
@staff_required
def new_batch() -> Any:
    return _render_new(request.args.get("formula_id", type=int))


@bp.post("/production/batches")
@staff_required
def create_batch() -> Any:
    batches.may_compound(current_actor())
    formula_id = request.form.get("formula_id", type=int)
    values = _lists()
    values.pop("formula_id", None)  # which formula's list to show again, not part of the batch
    data, errors = load(BatchPlanSchema(), values)
    if data is None:
        return _render_new(formula_id, errors, 422)
    try:
        batch = batch_flow.plan(current_actor(), data["order_ids"], lots=data["lots"])
    except ValidationFailed as exc:
        uow.discard()
        return _render_new(formula_id, exc.fields or {"_schema": [exc.message]}, 422)
    flash(f"Batch planned: {len(data['order_ids'])} orders. Weigh and record it below.", "success")
    return redirect(url_for("production.batch", batch_id=batch.id))


def _render_batch(batch_id: int, message: str | None = None, errors: dict[str, list[str]] | None = None,
                  status: int = 200) -> Any:
    view = batches.batch_view(current_actor(), batch_id)
    return render_template("production/batch.html", v=view, b=view.batch, message=message, errors=errors or {},
                           state_labels=STATE_LABELS, form=request.form if request.method == "POST" else {}), status


@bp.get(f"/production/batches/<{ID}:batch_id>")
@staff_required
def batch(batch_id: int) -> Any:
    return _render_batch(batch_id)


def _step(batch_id: int, done: str, call: Any) -> Any:
    try:
        call()
    except ValidationFailed as exc:
        uow.discard()
        return _render_batch(batch_id, exc.message, exc.fields, 422)
    except DomainError as exc:
        if exc.status in (403, 404):
            raise
        uow.discard()
        return _render_batch(batch_id, exc.message, {}, exc.status)
    flash(done, "success")
    return redirect(url_for("production.batch", batch_id=batch_id))


@bp.post(f"/production/batches/<{ID}:batch_id>/record")
@staff_required
def record(batch_id: int) -> Any:
    batches.may_compound(current_actor())
    data, errors = load(BatchRecordSchema(), _lists())
    if data is None:
        return _render_batch(batch_id, "Please check the form: nothing was saved.", errors, 422)
    return _step(batch_id, "Batch recorded: one lot number and BUD for every order in it.",
                 lambda: batch_flow.record(current_actor(), batch_id, lots=data["lots"],
                                           quantity_made=data["quantity_made"]))


@bp.post(f"/production/batches/<{ID}:batch_id>/check")
@staff_required
def check(batch_id: int) -> Any:
    batches.may_check(current_actor())
    data, errors = load(BatchCheckSchema(), form_values(request.form))
    if data is None:
        return _render_batch(batch_id, "Please check the form: nothing was saved.", errors, 422)
    return _step(batch_id, "Final check recorded for every order of the batch.",
                 lambda: batch_flow.check(current_actor(), batch_id, **data))


@bp.post(f"/production/batches/<{ID}:batch_id>/release")
@staff_required
def release(batch_id: int) -> Any:
    batches.may_check(current_actor())
    return _step(batch_id, "Released: every order of the batch is ready.",
                 lambda: batch_flow.release(current_actor(), batch_id))
