"""JSON API for stock: every ingredient with its lots and what can be used, lots received with their quantity, and
stock records (waste, adjustments, counts) — the same services as /inventory, for a scale or a supplier's feed."""
from __future__ import annotations

from typing import Any

from flask_smorest import Blueprint

from pharmacy.compounding.models import IngredientLot
from pharmacy.core.auth import api_auth, current_actor
from pharmacy.inventory import services
from pharmacy.inventory.models import LotStock, StockMove
from pharmacy.inventory.schemas import (
    InventoryOutSchema,
    LotStockOutSchema,
    ReceiveSchema,
    StockMoveOutSchema,
    StockRecordSchema,
)
from pharmacy.workflows import inventory as inventory_flow

blp = Blueprint("inventory-api", __name__, url_prefix="/api/v1",
                description="Stock per ingredient lot: on hand, usable, reorder points; receiving a lot; waste, "
                            "adjustments and counts. Every change is a line in the lot's ledger, audited.")
ID = "int(max=2147483647)"


def _lot(lot: IngredientLot | services.LotLine, stock: LotStock | services.StockLine | None,
         state: Any = None) -> dict[str, Any]:
    return {"id": lot.id, "lot_number": lot.lot_number, "supplier": lot.supplier, "expiry_date": lot.expiry_date,
            "received_on": lot.received_on, "state": state.value if state is not None else None,
            "on_hand": stock.on_hand if stock else None, "unit": stock.unit if stock else None,
            "quarantine_reason": lot.quarantine_reason}


@blp.route("/inventory", methods=["GET"])
@api_auth()
@blp.response(200, InventoryOutSchema)
def inventory() -> Any:
    """Every ingredient: its lots (soonest expiry first) with their state and stock, what can be used, low or not."""
    view = services.inventory_view(current_actor())
    return {"today": view.today, "expiry_warning_days": view.warn_days, "ingredients": [
        {"name": i.name, "unit": i.unit, "usable_on_hand": i.usable_on_hand, "reorder_point": i.reorder_point,
         "reorder_quantity": i.reorder_quantity, "low": i.low,
         "lots": [_lot(r.lot, r.stock, r.state) for r in i.lots]} for i in view.ingredients]}


@blp.route("/inventory/lots", methods=["POST"])
@api_auth()
@blp.arguments(ReceiveSchema)
@blp.response(201, LotStockOutSchema)
def receive(data: dict[str, Any]) -> Any:
    """A lot received: on file (supplier, number, expiry) with its quantity in stock, in one transaction."""
    lot = inventory_flow.receive(current_actor(), data)
    return _lot(lot, services.lot_stock(lot.id))


@blp.route(f"/inventory/lots/<{ID}:lot_id>/records", methods=["POST"])
@api_auth()
@blp.arguments(StockRecordSchema)
@blp.response(201, StockMoveOutSchema)
def record(data: dict[str, Any], lot_id: int) -> Any:
    """Waste or an adjustment (each with a reason), or a count of what is on the shelf (the ledger keeps the
    difference)."""
    move: StockMove = services.record(current_actor(), lot_id, data["kind"], data["quantity"],
                                      reason=data.get("reason"))
    stock = services.lot_stock(lot_id)
    return {"id": move.id, "ingredient_lot_id": move.ingredient_lot_id, "kind": move.kind.value,
            "quantity": move.quantity, "unit": move.unit, "on_hand": stock.on_hand if stock else None}
