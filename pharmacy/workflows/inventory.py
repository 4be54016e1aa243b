"""Stock across features: a lot received with its quantity (compounding's lot and inventory's ledger together),
and a recall that quarantines the lot and lists every batch and patient it reached."""
from __future__ import annotations

from typing import Any

from pharmacy.compounding import lots, recall
from pharmacy.compounding.models import IngredientLot
from pharmacy.core.actor import Actor
from pharmacy.inventory import services as inventory


def receive(actor: Actor, data: dict[str, Any]) -> IngredientLot:
    """The lot on file (supplier, number, expiry) and its quantity in stock, in one transaction."""
    inventory.may_receive(actor)
    lot = lots.receive_lot(actor, data)
    inventory.receive(actor, lot.id, data.get("quantity"), data.get("unit") or "")
    return lot


def recall_lot(actor: Actor, lot_id: int, reason: str) -> tuple[IngredientLot, recall.RecallResult]:
    """Quarantine the lot (it can no longer be chosen at compounding) and list every order — single or batch — made
    from it, with the patients who received it."""
    lot = lots.quarantine_lot(actor, lot_id, reason)
    return lot, recall.find(actor, ingredient_lot=lot.lot_number)


def release_lot(actor: Actor, lot_id: int, reason: str) -> IngredientLot:
    """Out of quarantine (a pharmacist's decision)."""
    return lots.release_lot(actor, lot_id, reason)
