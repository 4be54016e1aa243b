"""Compounding pages: the order queue, the order (with its next steps), labels and records, formulas,
ingredient lots and the lot recall."""
from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, flash, redirect, render_template, request, url_for

from pharmacy.billing import services as billing
from pharmacy.compounding import labels, queries, recall, rules, services
from pharmacy.compounding import lots as lot_services
from pharmacy.compounding.rules import BUD_DAYS, CATEGORY_LABELS, STATE_LABELS, DeliveryMethod
from pharmacy.compounding.schemas import IngredientLotInSchema, OrderPageTransitionSchema, ReturnFillSchema
from pharmacy.core import uow
from pharmacy.core.auth import current_actor, staff_required
from pharmacy.core.context import today
from pharmacy.core.errors import DomainError, Forbidden, NotFound, ValidationFailed
from pharmacy.core.forms import form_values, load
from pharmacy.core.roles import Permission
from pharmacy.prescriptions import rules as rx_rules
from pharmacy.prescriptions.rules import format_date
from pharmacy.workflows import orders as order_flow

bp = Blueprint("compounding", __name__)

ID = "int(max=2147483647)"
STEP_LABELS = {
    "verified": "Verify",
    "plan_batch": "Choose lots", "compounding": "Record compounding", "checked": "Final check", "ready": "Release",
    "dispensed": "Dispense", "on_hold": "Put on hold", "cancelled": "Cancel order", "resume": "Resume",
}
DELIVERY_OPTIONS = [(DeliveryMethod.PICKUP.value, "Picked up"), (DeliveryMethod.SHIP.value, "Shipped")]
METHOD_LABELS = {"cash": "Cash", "card": "Card", "check": "Check", "hsa_fsa": "HSA/FSA"}


@bp.app_template_global("fill_label")
def fill_label(authorized_fill: int, partial: bool = False) -> str:
    return rules.fill_label(authorized_fill, partial=partial)


def _pdf(data: bytes, filename: str) -> Response:
    response = Response(data, mimetype="application/pdf")
    response.headers["Content-Disposition"] = f'inline; filename="{filename}"'
    return response


@bp.get("/orders")
@staff_required
def queue() -> Any:
    """The board: every step's count and its 10 oldest orders; `?state=verified&page=2` lists one step, 50 a page.

    Why 10 on the board: work is taken oldest first, and a step's next orders are one click away; the board
    with 50 of each of six steps was 300 rows (100 KB) on every visit — most of the page's time at chain scale."""
    state = None
    if request.args.get("state"):
        try:
            state = rules.OrderState(request.args["state"])
        except ValueError:
            raise NotFound("No such step in the order queue.") from None
        if state not in queries.QUEUE_ORDER:
            raise NotFound("No such step in the order queue.")
    page = max(1, request.args.get("page", 1, type=int) or 1)
    per_state = queries.QUEUE_PAGE if state else queries.QUEUE_BOARD
    return render_template("compounding/queue.html", labels=STATE_LABELS, one_state=state, per_page=queries.QUEUE_PAGE,
                           groups=queries.queue(current_actor(), state=state, page=page, per_state=per_state))


def render_order(order_id: int, *, status: int = 200, message: str | None = None,
                 errors: dict[str, list[str]] | None = None, step: str | None = None) -> Any:
    """The order page; after a refused step it is shown again with the message next to that step's form."""
    actor = current_actor()
    view = queries.order_view(actor, order_id)
    money = None
    if view.order.state in (rules.OrderState.READY, rules.OrderState.DISPENSED) and actor.can(Permission.VIEW_BILLING):
        # What the patient owes, shown where the bag is handed over (a patient once went home owing $120.40).
        money = {"patient": billing.balance(actor, view.patient.id), "order": billing.order_ledger(view.order)}
    return render_template(
        "compounding/order.html", view=view, o=view.order, message=message, errors=errors or {}, failed_step=step,
        step_labels=STEP_LABELS, state_labels=STATE_LABELS, delivery_options=DELIVERY_OPTIONS,
        form=request.form if request.method == "POST" else {}, money=money,
        bag_code=rules.bag_code(view.rx.rx_number, view.order.fill_number), method_labels=METHOD_LABELS,
        return_reasons=[(r.value, label) for r, label in rules.RETURN_REASON_LABELS.items()],
        batch=(batch := queries.batch_record(view.order)), made=labels.made_text(view, batch)[1],
        used_amount=labels.used_amount,
    ), status


@bp.get(f"/orders/<{ID}:order_id>")
@staff_required
def order(order_id: int) -> Any:
    return render_order(order_id)


def _transition_values() -> dict[str, Any]:
    data = form_values(request.form)
    data.pop("lot_id", None)
    data.pop("lot_qty", None)
    if "lot_id" in request.form or "lot_qty" in request.form:
        data["lot_id"] = request.form.getlist("lot_id")
        data["lot_qty"] = request.form.getlist("lot_qty")
    return data


def _refused(order_id: int, exc: DomainError, step: str) -> Any:
    """A step the services refused: nothing of it is kept, and the page says why next to that step's form."""
    uow.discard()
    fields = exc.fields if isinstance(exc, ValidationFailed) else {}
    return render_order(order_id, status=exc.status, message=exc.message, errors=fields, step=step)


@bp.post(f"/orders/<{ID}:order_id>/transitions")
@staff_required
def transition(order_id: int) -> Any:
    """Every button of the order page posts here with `to` (the API's /transitions, as a form)."""
    step = request.form.get("to", "")
    data, errors = load(OrderPageTransitionSchema(), _transition_values())
    if data is None:
        return render_order(order_id, status=422, message="Please check the form: nothing was saved.",
                            errors=errors, step=step)
    to = data.pop("to")
    try:
        outcome = order_flow.transition(current_actor(), order_id, to, data)
    except (Forbidden, NotFound):
        raise
    except DomainError as exc:
        return _refused(order_id, exc, step)
    result = outcome.order
    if to == "checked" and result.qc_passed is False:
        flash(services.qc_failure_message(result), "error")
    else:
        flash(" ".join(filter(None, [_done(to, result), outcome.message])), "success")
    return redirect(url_for("compounding.order", order_id=order_id))


def qty_text(order: Any) -> str:
    return rx_rules.quantity_text(order.prescription.formula.form, order.quantity)


def _done(to: str, order: Any) -> str:
    words = {
        "verified": "Verified: choose the lots for the batch.",
        "plan_batch": f"Batch planned: make {qty_text(order)} for {order.days_supply} days.",
        "compounding": f"Compounding recorded: lot {order.lot_number}, BUD {format_date(order.bud) if order.bud else '—'}.",
        "checked": "Final check passed: ready to release.",
        "ready": "Released: ready for pickup or shipping.",
        "dispensed": "Dispensed.",
        "on_hold": "Order on hold.",
        "cancelled": "Order cancelled.",
        "resume": "Order resumed.",
    }
    if to == "compounding" and order.qc_passed is False:
        return "Sent back to be re-made: record the new batch."
    text = words.get(to, "Done.")
    return f"{text} {order.cap_note}" if to in ("plan_batch", "compounding") and order.cap_note else text


@bp.post(f"/orders/<{ID}:order_id>/return")
@staff_required
def return_fill(order_id: int) -> Any:
    """Take a dispensed fill back (lost in the post, damaged, dispensed in error)."""
    data, errors = load(ReturnFillSchema(), form_values(request.form))
    if data is None:
        return render_order(order_id, status=422, message="Please check the form: nothing was saved.",
                            errors=errors, step="return")
    try:
        outcome = order_flow.return_fill(current_actor(), order_id, data["reason"].value, data["note"])
    except (Forbidden, NotFound):
        raise
    except DomainError as exc:
        return _refused(order_id, exc, "return")
    flash(f"Order {order_id} returned. {outcome.message}", "success")
    return redirect(url_for("compounding.order", order_id=order_id))


@bp.get(f"/orders/<{ID}:order_id>/label.pdf")
@staff_required
def label(order_id: int) -> Any:
    stock = request.args.get("stock", labels.DEFAULT_STOCK)
    if stock not in labels.STOCKS:
        raise ValidationFailed("Unknown label stock.", fields={"stock": f"Choose one of: {', '.join(labels.STOCKS)}."})
    pdf = labels.label_pdf(current_actor(), order_id, stock=stock)
    return _pdf(pdf, f"label-order-{order_id}-{stock}.pdf")


@bp.get(f"/orders/<{ID}:order_id>/record")
@staff_required
def record(order_id: int) -> Any:
    view = labels.record_view(current_actor(), order_id)
    batch = queries.batch_record(view.order)
    to_make, made = labels.made_text(view, batch)
    return render_template("compounding/record.html", view=view, o=view.order, bud_note=labels.bud_note(view),
                           to_make=to_make, made=made, batch=batch, used_amount=labels.used_amount,
                           category=CATEGORY_LABELS[view.formula.usp_category],  # type: ignore[union-attr]
                           bud_days=BUD_DAYS[view.formula.usp_category],  # type: ignore[union-attr]
                           storage=labels.storage_text(view.formula.usp_category, view.formula.storage))  # type: ignore[union-attr]


@bp.get(f"/orders/<{ID}:order_id>/record.pdf")
@staff_required
def record_pdf(order_id: int) -> Any:
    return _pdf(labels.record_pdf(current_actor(), order_id), f"compounding-record-{order_id}.pdf")


@bp.get("/formulas")
@staff_required
def formulas() -> Any:
    return render_template("compounding/formulas.html", formulas=lot_services.formulas(current_actor()),
                           categories=CATEGORY_LABELS, bud_days=BUD_DAYS)


@bp.get(f"/formulas/<{ID}:formula_id>")
@staff_required
def formula(formula_id: int) -> Any:
    f = lot_services.formula_record(current_actor(), formula_id)
    return render_template("compounding/formula.html", f=f, categories=CATEGORY_LABELS, bud_days=BUD_DAYS,
                           storage=labels.storage_text(f.usp_category, f.storage))


def _render_lots(form: Any, errors: dict[str, list[str]], status: int = 200) -> Any:
    return render_template("compounding/lots.html", lots=lot_services.lot_list(current_actor()), form=form,
                           errors=errors), status


@bp.get("/lots")
@staff_required
def lots() -> Any:
    return _render_lots({"received_on": today().isoformat()}, {})


@bp.post("/lots")
@staff_required
def receive_lot() -> Any:
    actor = current_actor()
    lot_services.may_receive_lots(actor)
    data, errors = load(IngredientLotInSchema(), form_values(request.form))
    if data is not None:
        try:
            lot = lot_services.receive_lot(actor, data)
        except ValidationFailed as exc:
            uow.discard()
            errors = exc.fields or {"_schema": [exc.message]}
        else:
            flash(f"{lot.ingredient_name} lot {lot.lot_number} received.", "success")
            return redirect(url_for("compounding.lots"))
    return _render_lots(request.form, errors, 422)


def _recall_args() -> tuple[str | None, str | None]:
    return (request.args.get("ingredient_lot", "").strip() or None, request.args.get("order_lot", "").strip() or None)


@bp.get("/recall", endpoint="recall")
@staff_required
def recall_page() -> Any:
    ingredient_lot, order_lot = _recall_args()
    result, errors, status = None, {}, 200
    if ingredient_lot or order_lot:
        try:
            result = recall.find(current_actor(), ingredient_lot=ingredient_lot, order_lot=order_lot)
        except ValidationFailed as exc:
            errors, status = exc.fields, 422
    else:
        recall.recall_form(current_actor())
    return render_template("compounding/recall.html", result=result, errors=errors,
                           form={"ingredient_lot": ingredient_lot or "", "order_lot": order_lot or ""}), status


@bp.get("/recall.csv")
@staff_required
def recall_csv() -> Any:
    ingredient_lot, order_lot = _recall_args()
    result = recall.find(current_actor(), ingredient_lot=ingredient_lot, order_lot=order_lot)
    name = (ingredient_lot or order_lot or "lot").replace('"', "")
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:40]
    response = Response(recall.to_csv(result), mimetype="text/csv")
    response.headers["Content-Disposition"] = f'attachment; filename="recall-{safe}.csv"'
    return response
