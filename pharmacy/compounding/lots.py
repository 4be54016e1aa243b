"""Master formulas and ingredient lots: the formula records, the lots on file, receiving a lot into stock,
and the unexpired lots a batch may be compounded from (first-expiry, first-out).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import selectinload

from pharmacy.compounding.models import Formula, FormulaIngredient, IngredientLot
from pharmacy.core import audit
from pharmacy.core.actor import Actor
from pharmacy.core.context import now, today
from pharmacy.core.errors import Conflict, NotFound, ValidationFailed
from pharmacy.core.ids import valid_id
from pharmacy.core.roles import Permission
from pharmacy.extensions import db


def usable_lots(formula: Formula) -> dict[str, list[IngredientLot]]:
    """Unexpired lots per ingredient of a formula, soonest expiry first (first-expiry, first-out); a quarantined
    (recalled) lot is never offered."""
    names = [i.name for i in formula.ingredients]
    lots = db.session.execute(
        sa.select(IngredientLot).where(IngredientLot.ingredient_name.in_(names), IngredientLot.expiry_date >= today(),
                                       IngredientLot.quarantined_at.is_(None))
        .order_by(IngredientLot.expiry_date, IngredientLot.id)
    ).scalars()
    out: dict[str, list[IngredientLot]] = {n: [] for n in names}
    for lot in lots:
        out[lot.ingredient_name].append(lot)
    return out


def formulas(actor: Actor) -> list[Formula]:
    """Every master formulation record, active ones first."""
    audit.require(actor, Permission.VIEW_CLINICAL, what="see formulas")
    return list(db.session.execute(
        sa.select(Formula).options(selectinload(Formula.ingredients))
        .order_by(Formula.active.desc(), Formula.form, Formula.strength_mg, Formula.id)
    ).scalars())


def formula_record(actor: Actor, formula_id: int) -> Formula:
    """One master formulation record (USP <795>) with its ingredients."""
    audit.require(actor, Permission.VIEW_CLINICAL, what="see formulas")
    formula = db.session.execute(
        sa.select(Formula).where(Formula.id == formula_id).options(selectinload(Formula.ingredients))
    ).scalar_one_or_none() if valid_id(formula_id) else None
    if formula is None:
        raise NotFound("No such formula.")
    return formula


@dataclass
class LotList:
    lots: list[IngredientLot]
    ingredient_names: list[str]
    today: Any


def lot_list(actor: Actor) -> LotList:
    """Ingredient lots on file (unexpired first, soonest expiry first) and the ingredient names a lot may be for."""
    audit.require(actor, Permission.VIEW_CLINICAL, what="see ingredient lots")
    day = today()
    lots = list(db.session.execute(
        sa.select(IngredientLot).order_by((IngredientLot.expiry_date < day).asc(), IngredientLot.ingredient_name,
                                          IngredientLot.expiry_date, IngredientLot.id).limit(500)
    ).scalars())
    return LotList(lots=lots, ingredient_names=ingredient_names(), today=day)


def ingredient_names() -> list[str]:
    return list(db.session.execute(
        sa.select(FormulaIngredient.name).distinct().order_by(FormulaIngredient.name)
    ).scalars())


def may_receive_lots(actor: Actor) -> None:
    """Forbidden (and audited) unless the actor may receive stock: asked before the form is read."""
    audit.require(actor, Permission.MANAGE_INVENTORY, what="receive ingredient lots")


def receive_lot(actor: Actor, data: dict[str, Any]) -> IngredientLot:
    """A lot received into stock: for an ingredient of a formula, unexpired, not already on file."""
    audit.require(actor, Permission.MANAGE_INVENTORY, what="receive ingredient lots")
    day = today()
    errors: dict[str, str] = {}
    name = (data.get("ingredient_name") or "").strip()
    supplier = (data.get("supplier") or "").strip()
    number = (data.get("lot_number") or "").strip()
    expiry = data.get("expiry_date")
    received = data.get("received_on") or day
    if name not in ingredient_names():
        errors["ingredient_name"] = "Choose an ingredient of a formula."
    if expiry is None:
        errors["expiry_date"] = "Enter the expiry date."
    elif expiry < day:
        errors["expiry_date"] = "This lot has already expired: it cannot be received into stock."
    if received > day:
        errors["received_on"] = "The received date cannot be in the future."
    elif expiry is not None and received > expiry:
        errors["received_on"] = "The received date is after the expiry date."
    if not supplier:
        errors["supplier"] = "Enter the supplier."
    if not number:
        errors["lot_number"] = "Enter the lot number."
    if supplier and number and db.session.execute(sa.select(IngredientLot.id).where(
            sa.func.lower(IngredientLot.supplier) == supplier.lower(), IngredientLot.lot_number == number)).first():
        errors["lot_number"] = f"Lot {number} from {supplier} is already on file."
    if errors:
        raise ValidationFailed("The lot was not saved.", fields=errors)
    lot = IngredientLot(ingredient_name=name, supplier=supplier, lot_number=number, expiry_date=expiry,
                        received_on=received, created_at=now())
    db.session.add(lot)
    try:
        db.session.flush()
    except IntegrityError:
        raise Conflict(f"Lot {number} from {supplier} was received at the same moment by someone else.") from None
    audit.record(actor, "ingredient_lot.receive", entity=("ingredient_lot", lot.id))
    return lot


def quarantine_lot(actor: Actor, lot_id: int, reason: str) -> IngredientLot:
    """A recalled or suspect lot is quarantined: it cannot be chosen at compounding until a pharmacist releases it.
    Anyone who keeps the stock may quarantine (stopping is always allowed); the recall list says who received it."""
    audit.require(actor, Permission.MANAGE_INVENTORY, what="quarantine ingredient lots")
    lot = _locked_lot(lot_id)
    text = (reason or "").strip()
    if not 3 <= len(text) <= 400:
        raise ValidationFailed("Say why the lot is quarantined.", fields={"reason": "Say why (3–400 characters)."})
    if lot.quarantined_at is not None:
        raise Conflict(f"{lot.ingredient_name} lot {lot.lot_number} is already quarantined.")
    lot.quarantined_at = now()
    lot.quarantine_reason = text
    lot.quarantined_by_id = actor.user_id
    db.session.flush()
    audit.record(actor, "ingredient_lot.quarantine", entity=("ingredient_lot", lot.id), details={"reason": text})
    return lot


def release_lot(actor: Actor, lot_id: int, reason: str) -> IngredientLot:
    """Out of quarantine (the supplier withdrew the recall, the test came back clean): a pharmacist's decision."""
    audit.require(actor, Permission.CHECK_ORDER, what="release quarantined lots")
    lot = _locked_lot(lot_id)
    text = (reason or "").strip()
    if not 3 <= len(text) <= 400:
        raise ValidationFailed("Say why the lot may be used again.", fields={"reason": "Say why (3–400 characters)."})
    if lot.quarantined_at is None:
        raise Conflict(f"{lot.ingredient_name} lot {lot.lot_number} is not quarantined.")
    lot.quarantined_at = None
    lot.quarantine_reason = None
    lot.quarantined_by_id = None
    db.session.flush()
    audit.record(actor, "ingredient_lot.release", entity=("ingredient_lot", lot.id), details={"reason": text})
    return lot


def _locked_lot(lot_id: int) -> IngredientLot:
    lot = db.session.execute(sa.select(IngredientLot).where(IngredientLot.id == lot_id).with_for_update()
                             ).scalar_one_or_none() if valid_id(lot_id) else None
    if lot is None:
        raise NotFound("No such ingredient lot.")
    return lot
