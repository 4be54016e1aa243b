"""Review of the compounding side (fresh eyes): defects a pharmacist at the bench or the checking pharmacist would hit.

Each test fails on the code as reviewed and passes once the defect named in its docstring is fixed.
"""
from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from pharmacy.compounding import recall
from pharmacy.compounding import services as orders
from pharmacy.compounding.models import IngredientLot, Order
from pharmacy.compounding.rules import OrderState
from pharmacy.core.context import today
from pharmacy.core.errors import DomainError
from pharmacy.extensions import db
from pharmacy.workflows import inventory as inventory_flow
from pharmacy.workflows import orders as order_flow
from tests import factories


def _lots_of(w: dict[str, Any]) -> list[IngredientLot]:
    return list(db.session.execute(sa.select(IngredientLot).where(
        IngredientLot.ingredient_name.in_([i.name for i in w["formula"].ingredients]),
        IngredientLot.expiry_date >= today())).scalars())


def test_an_order_made_from_a_recalled_lot_cannot_be_dispensed(app_ctx: Flask, staff: dict) -> None:
    """The supplier recalls the naltrexone lot after an order made from it has passed its check and sits in the
    "ready" bin. The recall page lists it among "the orders still in the pharmacy that must not go out", yet the
    counter can scan the bag and dispense it: nothing after compounding looks at quarantine, so the patient takes
    home capsules made from a recalled powder.

    Correct: dispensing (and the final check / release) refuses an order any of whose ingredient lots is quarantined,
    naming the lot, until it is re-made from good lots (or a pharmacist releases the lot from quarantine).
    Cause: compounding/dispensing.dispense_order (and services.check_order / release_order) never read
    IngredientLot.quarantined_at; only services._checked_lots does, at planning and compounding."""
    w = factories.world(staff)
    order = order_flow.start_fill(w["technician"], w["rx"].id)
    factories.run_order_to(w, order.id, "ready")
    naltrexone = next(lot for lot in _lots_of(w) if lot.ingredient_name.startswith("Naltrexone"))
    inventory_flow.recall_lot(w["technician"], naltrexone.id, "Supplier recall notice 2026-114")

    with pytest.raises(DomainError, match=r"(?i)quarantin|recall"):
        order_flow.dispense(w["technician"], order.id)
    assert db.session.get(Order, order.id).state != OrderState.DISPENSED


def test_an_order_made_from_a_recalled_lot_does_not_pass_its_final_check(app_ctx: Flask, staff: dict) -> None:
    """The lot is recalled while the order waits for its final check. The checking pharmacist passes it (the yield is
    fine) and nothing says that one of its ingredient lots is now quarantined: the recalled batch moves on to release.

    Correct: the final check refuses (or fails) an order made from a quarantined lot and says which lot, so it is
    re-made. Cause: compounding/services.check_order does not look at the lots used (`order.lots_used`)."""
    w = factories.world(staff)
    order = order_flow.start_fill(w["technician"], w["rx"].id)
    factories.run_order_to(w, order.id, "compounding")
    naltrexone = next(lot for lot in _lots_of(w) if lot.ingredient_name.startswith("Naltrexone"))
    inventory_flow.recall_lot(w["technician"], naltrexone.id, "Supplier recall notice 2026-114")

    try:
        checked = orders.check_order(w["pharmacist2"], order.id)
    except DomainError as exc:
        assert "quarantin" in exc.message.lower() or "recall" in exc.message.lower()
        return
    assert checked.state != OrderState.CHECKED, "a batch made from a recalled lot passed its final check"


def test_a_batch_sent_back_at_the_check_must_be_remade_before_it_is_checked_again(app_ctx: Flask,
                                                                                  staff: dict) -> None:
    """The checking pharmacist finds the capsule weights out of range and sends the checked order back "to be
    re-made". Without anyone re-making it, the order can be checked again at once — by the same checker or another —
    and passes on the very record that was just rejected (same lot number, same quantity made), then released.

    Correct: an order sent back (qc_passed is False since the send-back) cannot pass the final check until a new
    compounding record is made (compound_order resets qc_passed to None and gives a new lot number). Cause:
    compounding/services.check_order only checks the state (compounding) and that a quantity was made; it should refuse
    while `order.qc_passed is False` ("record the re-made batch first")."""
    w = factories.world(staff)
    order = order_flow.start_fill(w["technician"], w["rx"].id)
    factories.run_order_to(w, order.id, "checked")
    rejected_lot = order.lot_number
    orders.send_back(w["pharmacist2"], order.id, "Capsule weights out of range: re-make")

    with pytest.raises(DomainError):
        orders.check_order(w["pharmacist2"], order.id)
    again = db.session.get(Order, order.id)
    assert again.state == OrderState.COMPOUNDING and again.lot_number == rejected_lot


def test_choosing_lots_again_after_compounding_does_not_rewrite_the_record_of_the_batch_in_hand(
        app_ctx: Flask, staff: dict) -> None:
    """The technician weighs a 30-capsule order from naltrexone lot NTX-SHORT (expires in 40 days, so the BUD is
    40 days out), then — still at "compounding", before the check — presses "Choose lots" again and picks the
    long-dated lot. Nothing is re-made, yet the order's record now names lots that were never weighed (no amounts),
    its BUD jumps to the 180-day default, and the checking pharmacist passes it. The label says "Discard after" a
    date 140 days past the expiry of the powder actually in the capsules, and a recall of NTX-SHORT no longer lists
    this patient.

    Correct: re-planning an order that already has a compounding record either is refused or voids that record
    (no quantity made, so the final check refuses until the batch is re-made); the batch in hand never gets a BUD
    past the expiry of a lot it was made from, and a recall of that lot still finds it.
    Cause: compounding/services.plan_batch accepts OrderState.COMPOUNDING (PLANNABLE) and, through _apply, replaces
    `order.bud` and `order.lots_used` (measured rows) while leaving quantity_made, lot_number and compounded_by —
    the record of what was made — in place for check_order."""
    w = factories.world(staff)
    long_lots = _lots_of(w)
    short = factories.lot("Naltrexone hydrochloride USP", "NTX-SHORT", expiry=today() + timedelta(days=40))
    mcc = next(lot for lot in long_lots if not lot.ingredient_name.startswith("Naltrexone"))
    order = order_flow.start_fill(w["technician"], w["rx"].id)
    orders.verify_order(w["pharmacist"], order.id)
    orders.plan_batch(w["technician"], order.id, lots=[{"ingredient_lot_id": short.id},
                                                       {"ingredient_lot_id": mcc.id}])
    assert order.quantity == Decimal(30)
    orders.compound_order(w["technician"], order.id, quantity_made=Decimal(30), lots=[
        {"ingredient_lot_id": short.id, "quantity_used": "135"}, {"ingredient_lot_id": mcc.id, "quantity_used": "4.2"}])
    assert order.bud == short.expiry_date

    orders.plan_batch(w["technician"], order.id, lots=[{"ingredient_lot_id": x.id} for x in long_lots])
    try:
        orders.check_order(w["pharmacist2"], order.id)
    except DomainError:
        return  # refused until the batch is re-made: correct
    made = db.session.get(Order, order.id)
    assert made.bud <= short.expiry_date, (
        f"label BUD {made.bud} is past the expiry ({short.expiry_date}) of the naltrexone lot actually weighed")
    assert order.id in {r.order_id for r in recall.find(w["pharmacist"], ingredient_lot="NTX-SHORT").orders}
