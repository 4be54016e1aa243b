"""Batch compounding across features: the batch's record and the stock it uses in one transaction, and releasing
every checked order of a batch (each with its own ready notice, as workflows/orders.release does)."""
from __future__ import annotations

from typing import Any

from pharmacy.compounding import batches
from pharmacy.compounding.models import Batch
from pharmacy.core.actor import Actor
from pharmacy.core.errors import InvalidTransition
from pharmacy.inventory import services as inventory
from pharmacy.workflows import orders as order_flow


def plan(actor: Actor, order_ids: list[int], *, lots: list[Any]) -> Batch:
    return batches.plan(actor, order_ids, lots=lots)


def record(actor: Actor, batch_id: int, *, lots: list[dict[str, Any]], quantity_made: Any) -> Batch:
    """The batch record, and the measured amounts of each lot leave the shelf once for the whole batch."""
    done = batches.record(actor, batch_id, lots=lots, quantity_made=quantity_made)
    inventory.draw_down_batch(actor, done.batch, done.lots)
    return done.batch


def check(actor: Actor, batch_id: int, *, qc_notes: str | None = None, deviations: str | None = None) -> Batch:
    return batches.check(actor, batch_id, qc_notes=qc_notes, deviations=deviations)


def release(actor: Actor, batch_id: int) -> Batch:
    """Release every order of the batch that passed its final check (each patient told, as for a single order)."""
    batch = batches.load(batch_id, lock=False)
    ids = batches.checked_order_ids(batch)
    if not ids:
        raise InvalidTransition("No order of this batch has passed its final check.")
    for order_id in ids:
        order_flow.release(actor, order_id)
    return batch
