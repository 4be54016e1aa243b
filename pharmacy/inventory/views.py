"""Inventory pages: stock per ingredient and lot (/inventory), receiving a lot with its quantity, a lot's ledger
with waste, adjustments and counts, reorder points, and quarantine (a recall) or release."""
from __future__ import annotations

from typing import Any

from flask import Blueprint, Flask, flash, redirect, render_template, request, url_for

from pharmacy.core import uow
from pharmacy.core.auth import current_actor, staff_required
from pharmacy.core.context import today
from pharmacy.core.errors import ValidationFailed
from pharmacy.core.forms import form_values, load
from pharmacy.inventory import services, settings
from pharmacy.inventory.rules import MOVE_LABELS, LotState
from pharmacy.inventory.schemas import ReasonSchema, ReceiveSchema, ReorderPointSchema, StockRecordSchema
from pharmacy.workflows import inventory as inventory_flow

bp = Blueprint("inventory", __name__)
ID = "int(max=2147483647)"
STATE_TEXT = {LotState.OK: "in use", LotState.EXPIRING: "expiring soon", LotState.EXPIRED: "expired",
              LotState.QUARANTINED: "quarantined", LotState.EMPTY: "empty — count it",
              LotState.UNTRACKED: "not counted yet"}


def init_app(app: Flask) -> None:
    settings.init_app(app)


@bp.app_template_global("inventory_today")
def inventory_today() -> Any:
    """The Today page's stock alerts (templates/inventory/_today.html); None for roles without clinical access."""
    return services.alerts(current_actor())


def _render(form: Any, errors: dict[str, list[str]], status: int = 200, *, show_old: bool = False) -> Any:
    view = services.inventory_view(current_actor(), include_old=show_old)
    return render_template("inventory/index.html", view=view, form=form, errors=errors, state_text=STATE_TEXT,
                           show_old=show_old, ingredient_options=[(i.name, i.name) for i in view.ingredients],
                           unit_options=[(u, u) for u in view.units]), status


@bp.get("/inventory")
@staff_required
def index() -> Any:
    return _render({"received_on": today().isoformat()}, {}, show_old=request.args.get("old") == "1")


@bp.post("/inventory/receive")
@staff_required
def receive() -> Any:
    actor = current_actor()
    services.may_receive(actor)
    data, errors = load(ReceiveSchema(), form_values(request.form))
    if data is not None:
        try:
            lot = inventory_flow.receive(actor, data)
        except ValidationFailed as exc:
            uow.discard()
            errors = exc.fields or {"_schema": [exc.message]}
        else:
            flash(f"{lot.ingredient_name} lot {lot.lot_number} received: {data['quantity']} {data['unit']}.", "success")
            return redirect(url_for("inventory.index"))
    return _render(request.form, errors, 422)


@bp.post("/inventory/reorder-points")
@staff_required
def reorder_point() -> Any:
    services.may_receive(current_actor())
    data, errors = load(ReorderPointSchema(), form_values(request.form))
    if data is None:
        return _render({}, errors, 422)
    item = services.set_reorder_point(current_actor(), data["ingredient_name"], data["reorder_point"],
                                      unit=data.get("unit"), reorder_quantity=data.get("reorder_quantity"))
    flash(f"Reorder point for {item.ingredient_name}: {item.reorder_point.normalize():f} {item.unit}.", "success")
    return redirect(url_for("inventory.index"))


def _render_lot(lot_id: int, form: Any = None, errors: dict[str, list[str]] | None = None, status: int = 200) -> Any:
    ledger = services.lot_ledger(current_actor(), lot_id)
    return render_template("inventory/lot.html", ledger=ledger, lot=ledger.lot, form=form or {}, errors=errors or {},
                           labels=MOVE_LABELS, state_text=STATE_TEXT), status


@bp.get(f"/inventory/lots/<{ID}:lot_id>")
@staff_required
def lot(lot_id: int) -> Any:
    return _render_lot(lot_id)


@bp.post(f"/inventory/lots/<{ID}:lot_id>/records")
@staff_required
def record(lot_id: int) -> Any:
    services.may_receive(current_actor())
    data, errors = load(StockRecordSchema(), form_values(request.form))
    if data is None:
        return _render_lot(lot_id, request.form, errors, 422)
    try:
        move = services.record(current_actor(), lot_id, data["kind"], data["quantity"], reason=data.get("reason"))
    except ValidationFailed as exc:
        uow.discard()
        return _render_lot(lot_id, request.form, exc.fields or {"_schema": [exc.message]}, 422)
    flash(f"{MOVE_LABELS[move.kind]}: {move.quantity.normalize():f} {move.unit}.", "success")
    return redirect(url_for("inventory.lot", lot_id=lot_id))


@bp.post(f"/inventory/lots/<{ID}:lot_id>/quarantine")
@staff_required
def quarantine(lot_id: int) -> Any:
    """Quarantine (a recall): the lot cannot be chosen at compounding; the recall list shows who received it."""
    services.may_receive(current_actor())
    data, errors = load(ReasonSchema(), form_values(request.form))
    if data is None:
        return _render_lot(lot_id, request.form, errors, 422)
    lot_row, found = inventory_flow.recall_lot(current_actor(), lot_id, data["reason"])
    flash(f"{lot_row.ingredient_name} lot {lot_row.lot_number} is quarantined: it cannot be used. "
          f"{len(found.orders)} order(s) of {found.patient_count} patient(s) were made with it.", "success")
    return redirect(url_for("compounding.recall", ingredient_lot=lot_row.lot_number))


@bp.post(f"/inventory/lots/<{ID}:lot_id>/release")
@staff_required
def release(lot_id: int) -> Any:
    services.may_release(current_actor())
    data, errors = load(ReasonSchema(), form_values(request.form))
    if data is None:
        return _render_lot(lot_id, request.form, errors, 422)
    lot_row = inventory_flow.release_lot(current_actor(), lot_id, data["reason"])
    flash(f"{lot_row.ingredient_name} lot {lot_row.lot_number} may be used again.", "success")
    return redirect(url_for("inventory.lot", lot_id=lot_id))
