"""Stock facts other features read (the production plan): what each ingredient's usable lots hold, and the unit and
reorder point each ingredient is kept in. Read-only; the ledger is written by inventory/services.py."""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import date
from decimal import Decimal

import sqlalchemy as sa

from pharmacy.compounding.models import IngredientLot
from pharmacy.extensions import db
from pharmacy.inventory import rules
from pharmacy.inventory.models import InventoryItem, LotStock
from pharmacy.inventory.rules import LotLevel


def items() -> dict[str, InventoryItem]:
    """Each ingredient kept as stock (its unit and reorder point), by name: one statement."""
    return {i.ingredient_name: i for i in db.session.execute(sa.select(InventoryItem)).scalars()}


def usable_levels(names: Iterable[str], units: dict[str, str], day: date) -> dict[str, list[LotLevel]]:
    """Per ingredient, its usable lots (unexpired on `day`, not quarantined, with stock — or not counted yet, their
    quantity unknown: `counted=False`) and what each holds, in the unit given for the ingredient (else the lot's
    own): one statement, even for no ingredient (the same count whatever the plan holds)."""
    wanted = sorted(set(names))
    out: dict[str, list[LotLevel]] = defaultdict(list)
    rows = db.session.execute(
        sa.select(IngredientLot.id, IngredientLot.ingredient_name, IngredientLot.expiry_date, IngredientLot.supplier,
                  IngredientLot.lot_number, LotStock.on_hand, LotStock.unit)
        .outerjoin(LotStock, LotStock.ingredient_lot_id == IngredientLot.id)
        .where(IngredientLot.ingredient_name.in_(wanted), IngredientLot.expiry_date >= day,
               IngredientLot.quarantined_at.is_(None),
               sa.or_(LotStock.on_hand > 0, LotStock.ingredient_lot_id.is_(None)))
    ).all()
    for lot_id, name, expiry, supplier, number, on_hand, unit in rows:
        if on_hand is None:  # never counted: named, its quantity not guessed
            out[name].append(LotLevel(lot_id=lot_id, expiry=expiry, on_hand=Decimal(0),
                                      label=f"{supplier} lot {number}", counted=False))
            continue
        try:
            level = rules.convert(Decimal(on_hand), unit, units.get(name, unit))
        except rules.UnitMismatch:
            continue
        out[name].append(LotLevel(lot_id=lot_id, expiry=expiry, on_hand=level, label=f"{supplier} lot {number}"))
    return out
