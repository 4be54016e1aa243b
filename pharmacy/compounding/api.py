"""JSON API for compounding orders: start a fill, the queue, an order, its transitions, its label, lot recall."""
from __future__ import annotations

from typing import Any

from flask import Response
from flask_smorest import Blueprint

from pharmacy.compounding import labels, queries, recall, services
from pharmacy.compounding.rules import OrderState
from pharmacy.compounding.schemas import (
    OrderOutSchema,
    OrderQueueGroupSchema,
    OrderQueueQuerySchema,
    OrderTransitionSchema,
    RecallQuerySchema,
    RecallResultSchema,
    ReturnFillSchema,
    StartFillSchema,
)
from pharmacy.core.auth import api_auth, current_actor
from pharmacy.prescriptions import rules as rx_rules
from pharmacy.workflows import orders as order_flow

blp = Blueprint("orders-api", __name__, url_prefix="/api/v1",
                description="Compounding orders, one per fill: requested → verified → compounding → checked → "
                            "ready → dispensed, with hold and cancel; labels and lot recall.")

ID = "int(max=2147483647)"
PDF = {"content": {"application/pdf": {"schema": {"type": "string", "format": "binary"}}}}


def _order(view: queries.OrderView, message: str | None = None) -> dict[str, Any]:
    o, rx, f = view.order, view.rx, view.formula
    assert f is not None
    return {
        **{name: getattr(o, name) for name in (
            "id", "prescription_id", "patient_id", "fill_number", "state", "held_from", "hold_reason", "cancel_reason",
            "quantity", "days_supply", "cap_note", "delivery_method", "carrier", "tracking_number", "lot_number",
            "bud", "quantity_made", "qc_yield_pct", "qc_passed", "qc_notes", "deviations", "earliest_dispense_date",
            "dispensed_on", "supply_starts_on", "run_out_date", "authorized_fill", "price_cents", "shipping_cents",
            "created_at", "state_changed_at", "returned_at", "return_reason")},
        "returnable": view.returnable,
        "fill_progress": view.fill_progress,
        "rx_number": rx.rx_number, "patient_name": f"{view.patient.first_name} {view.patient.last_name}",
        "product": view.product, "form": f.form, "quantity_text": rx_rules.quantity_text(f.form, o.quantity),
        "storage": labels.storage_text(f.usp_category, f.storage),
        "too_soon": view.too_soon, "next_steps": [to for to, _ in view.moves],
        "alerts": view.alerts,
        "lots_used": [{"ingredient_lot_id": u.ingredient_lot_id, "ingredient": u.ingredient_lot.ingredient_name,
                       "supplier": u.ingredient_lot.supplier, "lot_number": u.ingredient_lot.lot_number,
                       "expiry_date": u.ingredient_lot.expiry_date, "quantity_used": u.quantity_used, "unit": u.unit}
                      for u in view.lots],
        "lot_choices": [{"ingredient": ing.name, "unit": ing.unit, "expected_quantity": view.expected.get(ing.name),
                         "lots": view.lot_choices.get(ing.name, [])} for ing in f.ingredients] if view.can_record_batch
        else [],
        "message": message,
    }


@blp.route(f"/prescriptions/<{ID}:rx_id>/fills", methods=["POST"])
@api_auth()
@blp.arguments(StartFillSchema)
@blp.response(201, OrderOutSchema)
def start_fill(data: dict[str, Any], rx_id: int) -> Any:
    """Start the next fill of a prescription: a new order, screened again and capped to its BUD."""
    order = order_flow.start_fill(current_actor(), rx_id, delivery=data.get("delivery"))
    return _order(queries.order_view(current_actor(), order.id))


@blp.route("/orders", methods=["GET"])
@api_auth()
@blp.arguments(OrderQueueQuerySchema, location="query")
@blp.response(200, OrderQueueGroupSchema(many=True))
def queue(args: dict[str, Any]) -> Any:
    """The open orders grouped by state, with counts, oldest first: every step's first 50, or with `state` one step's
    list a page at a time (`?state=requested&page=2`) — every order counted can be reached."""
    return [
        {"state": g.state, "count": g.count, "orders": [
            {"id": o.id, "rx_number": o.rx_number, "patient_id": o.patient_id,
             "patient_name": f"{o.first_name} {o.last_name}",
             "product": rx_rules.product_name(o.form, o.strength_mg),
             "quantity": o.quantity, "delivery_method": o.delivery_method, "created_at": o.created_at,
             "state_changed_at": o.state_changed_at} for o in g.orders]}
        for g in queries.queue(current_actor(), state=args.get("state"), page=args.get("page", 1), changed_at=True)
    ]


@blp.route(f"/orders/<{ID}:order_id>", methods=["GET"])
@api_auth()
@blp.response(200, OrderOutSchema)
def get_order(order_id: int) -> Any:
    """Get an order with its alerts, compounding record and the steps that may come next."""
    return _order(queries.order_view(current_actor(), order_id))


@blp.route(f"/orders/<{ID}:order_id>/transitions", methods=["POST"])
@api_auth()
@blp.arguments(OrderTransitionSchema)
@blp.response(200, OrderOutSchema)
@blp.alt_response(409, description="The move is not allowed from the order's state (the message says why)")
def transition(data: dict[str, Any], order_id: int) -> Any:
    """Move an order to its next step (the wrong role gets 403; a move the workflow does not allow gets 409)."""
    to = data.pop("to")
    outcome = order_flow.transition(current_actor(), order_id, to, data)
    order = outcome.order
    message = services.qc_failure_message(order) if to == "checked" and order.qc_passed is False else outcome.message
    if order.state == OrderState.COMPOUNDING and to == "compounding" and order.qc_passed is False:
        message = "Sent back to be re-made."
    return _order(queries.order_view(current_actor(), order_id), message)


@blp.route(f"/orders/<{ID}:order_id>/return", methods=["POST"])
@api_auth()
@blp.arguments(ReturnFillSchema)
@blp.response(200, OrderOutSchema)
@blp.alt_response(409, description="Not a dispensed fill, or not the latest of its prescription (the message says)")
def return_fill(data: dict[str, Any], order_id: int) -> Any:
    """Take a dispensed fill back (lost in the post, damaged, dispensed in error): it stops counting as supply, a
    refill used and a charge; the message says what the patient holds now. Pharmacists only."""
    outcome = order_flow.return_fill(current_actor(), order_id, data["reason"].value, data.get("note"))
    return _order(queries.order_view(current_actor(), order_id), outcome.message)


@blp.route(f"/orders/<{ID}:order_id>/label.pdf", methods=["GET"])
@api_auth()
@blp.doc(responses={"200": {"description": "The label as a PDF", **PDF}})
def label(order_id: int) -> Any:
    """The order's label as a PDF (once it is compounded: it needs the lot number and BUD)."""
    pdf = labels.label_pdf(current_actor(), order_id)
    response = Response(pdf, mimetype="application/pdf")
    response.headers["Content-Disposition"] = f'inline; filename="label-order-{order_id}.pdf"'
    return response


@blp.route("/recall", methods=["GET"])
@api_auth()
@blp.arguments(RecallQuerySchema, location="query")
@blp.response(200, RecallResultSchema)
def lot_recall(args: dict[str, Any]) -> Any:
    """Every order (and patient) made with an ingredient lot, or the batch with an order lot number."""
    result = recall.find(current_actor(), ingredient_lot=args.get("ingredient_lot"), order_lot=args.get("order_lot"))
    return {
        "ingredient_lot": result.ingredient_lot, "order_lot": result.order_lot, "matched_lots": result.matched_lots,
        "patient_count": result.patient_count,
        "orders": [{**r.__dict__, "reached_patient": r.reached_patient} for r in result.orders],
    }
