"""Stock of ingredient lots: receipts, uses by compounding, waste, adjustments and counts, each a row of the ledger
(`stock_moves`) written with the lot's running totals (`lot_stock`, the row locked) in the caller's transaction;
reorder points; the /inventory page, the Today alerts and the stock levels the production plan reads.

The lots themselves are compounding's (compounding/lots.py receives and quarantines them); workflows/inventory.py
joins the two (a lot received with its quantity, a recall that quarantines), workflows/orders.py and
workflows/batches.py draw stock down in the same transaction as the compounding record.
"""
from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any, NamedTuple

import sqlalchemy as sa

from pharmacy.compounding.models import Batch, FormulaIngredient, IngredientLot, Order, OrderIngredientLot
from pharmacy.core import audit
from pharmacy.core.actor import Actor
from pharmacy.core.context import now, today
from pharmacy.core.errors import NotFound, ValidationFailed
from pharmacy.core.ids import valid_id
from pharmacy.core.roles import Permission
from pharmacy.extensions import db
from pharmacy.inventory import rules
from pharmacy.inventory.models import InventoryItem, LotStock, StockMove
from pharmacy.inventory.rules import LotState, MoveKind
from pharmacy.inventory.settings import stock_settings

MAX_QUANTITY = Decimal(1_000_000)
REASON_MAX = 400


# ---- writing the ledger -------------------------------------------------------------------------------------

def _lot(lot_id: int) -> IngredientLot:
    lot = db.session.get(IngredientLot, lot_id) if valid_id(lot_id) else None
    if lot is None:
        raise NotFound("No such ingredient lot.")
    return lot


def _locked_stock(lot_id: int) -> LotStock | None:
    """The lot's running totals, locked for this transaction (two compoundings from one lot queue up here)."""
    return db.session.execute(
        sa.select(LotStock).where(LotStock.ingredient_lot_id == lot_id).with_for_update()
    ).scalar_one_or_none()


def _move(actor: Actor, lot_id: int, kind: MoveKind, quantity: Decimal, unit: str, *, reason: str | None = None,
          order_id: int | None = None, batch_id: int | None = None, counted: Decimal | None = None,
          ) -> StockMove:
    """One ledger row, in the lot's own unit, and the lot's totals moved with it. The first move of a lot kept
    before stock was (an old lot used or counted) opens its totals in the unit of that move."""
    stock = _locked_stock(lot_id)
    t = now()
    if stock is None:
        stock = LotStock(ingredient_lot_id=lot_id, unit=rules.unit_of(unit), received=Decimal(0), used=Decimal(0),
                         wasted=Decimal(0), adjusted=Decimal(0), on_hand=Decimal(0), updated_at=t)
        db.session.add(stock)
    qty = rules.convert(quantity, unit, stock.unit).quantize(Decimal("0.001"))
    if kind is MoveKind.COUNT and counted is not None:
        counted = rules.convert(counted, unit, stock.unit).quantize(Decimal("0.001"))
        qty = rules.count_difference(stock.on_hand, counted)
    if kind is not MoveKind.COUNT and qty == 0:
        raise ValidationFailed("That quantity is too small to record.", fields={"quantity": "More than 0.001."})
    move = StockMove(ingredient_lot_id=lot_id, kind=kind, quantity=qty, unit=stock.unit, counted=counted,
                     reason=reason, order_id=order_id, batch_id=batch_id, at=t, by_id=actor.user_id)
    db.session.add(move)
    if kind is MoveKind.RECEIPT:
        stock.received += qty
    elif kind is MoveKind.USE:
        stock.used -= qty
    elif kind is MoveKind.WASTE:
        stock.wasted -= qty
    else:
        stock.adjusted += qty
    if kind is MoveKind.COUNT:
        stock.counted_at = t
    stock.on_hand += qty
    stock.updated_at = t
    db.session.flush()
    return move


def _quantity(value: Any, field_name: str = "quantity") -> Decimal:
    try:
        d = value if isinstance(value, Decimal) else Decimal(str(value).strip())
    except (ArithmeticError, ValueError):
        d = None
    if d is None or not d.is_finite() or abs(d) > MAX_QUANTITY:
        raise ValidationFailed("Enter a number.", fields={field_name: "Enter a number (up to 1,000,000)."})
    return d


def _reason(reason: str | None, *, required: bool) -> str | None:
    text = (reason or "").strip() or None
    if required and (text is None or len(text) < 3):
        raise ValidationFailed("Say why.", fields={"reason": "Say why (a few words)."})
    if text is not None and len(text) > REASON_MAX:
        raise ValidationFailed("The reason is too long.", fields={"reason": f"At most {REASON_MAX} characters."})
    return text


def lot_stock(lot_id: int) -> LotStock | None:
    """A lot's kept totals (None: received before stock was kept, not counted since)."""
    return db.session.get(LotStock, lot_id)


def ingredient_unit(name: str) -> str | None:
    """The unit the master formulas measure this ingredient in (the first formula's, in code order)."""
    return db.session.execute(
        sa.select(FormulaIngredient.unit).where(FormulaIngredient.name == name).order_by(FormulaIngredient.id).limit(1)
    ).scalar_one_or_none()


def may_receive(actor: Actor) -> None:
    """Forbidden (and audited) unless the actor keeps the stock: asked before the form is read."""
    audit.require(actor, Permission.MANAGE_INVENTORY, what="keep stock")


def may_release(actor: Actor) -> None:
    """Forbidden (and audited) unless the actor may release a quarantined lot (a pharmacist)."""
    audit.require(actor, Permission.CHECK_ORDER, what="release quarantined lots")


def receive(actor: Actor, lot_id: int, quantity: Any, unit: str) -> StockMove:
    """The quantity of a lot just received (workflows/inventory.receive: the lot and its stock together). The unit
    must measure what the formulas measure (grams against milligrams is fine, grams against capsules is not)."""
    audit.require(actor, Permission.MANAGE_INVENTORY, what="receive stock")
    lot = _lot(lot_id)
    amount = _quantity(quantity)
    if amount <= 0:
        raise ValidationFailed("The lot was not saved.", fields={"quantity": "Enter the quantity received."})
    unit = rules.unit_of(unit)
    formula_unit = ingredient_unit(lot.ingredient_name)
    if formula_unit:
        try:
            rules.convert(Decimal(1), formula_unit, unit)
        except rules.UnitMismatch:
            msg = f"{lot.ingredient_name} is measured in {formula_unit} in the formulas: receive it by weight, " \
                  "volume or count to match." if formula_unit != "each" else \
                  f"{lot.ingredient_name} is counted (each) in the formulas."
            raise ValidationFailed("The lot was not saved.", fields={"unit": msg}) from None
    move = _move(actor, lot.id, MoveKind.RECEIPT, amount, unit)
    _ensure_item(lot.ingredient_name, unit)
    audit.record(actor, "stock.receive", entity=("ingredient_lot", lot.id),
                 details={"quantity": str(move.quantity), "unit": move.unit})
    return move


def _ensure_item(name: str, unit: str) -> InventoryItem:
    item = db.session.execute(sa.select(InventoryItem).where(InventoryItem.ingredient_name == name)).scalar_one_or_none()
    if item is None:
        item = InventoryItem(ingredient_name=name, unit=unit, reorder_point=Decimal(0), updated_at=now())
        db.session.add(item)
        db.session.flush()
    return item


def record(actor: Actor, lot_id: int, kind: str, quantity: Any, *, reason: str | None = None,
           unit: str | None = None) -> StockMove:
    """Waste (spilled, damaged, expired and discarded), an adjustment (with its sign) or a count (what is on the
    shelf: the ledger records the difference). Waste and adjustments say why."""
    audit.require(actor, Permission.MANAGE_INVENTORY, what="record stock")
    lot = _lot(lot_id)
    try:
        move_kind = MoveKind(kind)
    except ValueError:
        raise ValidationFailed("Unknown kind of stock record.", fields={"kind": "waste, adjust or count."}) from None
    if move_kind in (MoveKind.RECEIPT, MoveKind.USE):
        raise ValidationFailed("Receipts and uses are recorded by receiving a lot and by compounding.",
                               fields={"kind": "waste, adjust or count."})
    amount = _quantity(quantity, "quantity")  # the field the form and the API send, a count included
    stock = db.session.get(LotStock, lot.id)
    use_unit = rules.unit_of(unit) if unit else (stock.unit if stock else ingredient_unit(lot.ingredient_name) or "g")
    if move_kind is MoveKind.COUNT:
        move = _move(actor, lot.id, MoveKind.COUNT, Decimal(0), use_unit, counted=amount,
                     reason=_reason(reason, required=False))
    else:
        why = _reason(reason, required=True)
        move = _move(actor, lot.id, move_kind, rules.signed(move_kind, amount), use_unit, reason=why)
    audit.record(actor, f"stock.{move_kind.value}", entity=("ingredient_lot", lot.id),
                 details={"quantity": str(move.quantity), "unit": move.unit})
    return move


def _uses(rows: Iterable[tuple[int, Decimal | None, str]]) -> dict[int, tuple[Decimal, str]]:
    """Total measured amount per lot (in the formula's unit), for the ledger's "use" rows."""
    out: dict[int, tuple[Decimal, str]] = {}
    for lot_id, qty, unit in rows:
        if qty is None or qty <= 0:
            continue
        have = out.get(lot_id)
        if have is not None and have[1] != unit:
            qty = rules.convert(qty, unit, have[1])
            unit = have[1]
        out[lot_id] = ((have[0] if have else Decimal(0)) + qty, unit)
    return out


def draw_down_order(actor: Actor, order: Order) -> list[StockMove]:
    """The lots a single order was just compounded from leave the shelf: one "use" row per lot, the measured
    amounts (compounding requires them), in the same transaction as the compounding record. A re-made batch
    draws again: the first one's ingredients were used up too."""
    used = _uses((u.ingredient_lot_id, u.quantity_used, u.unit) for u in order.lots_used)
    moves = [_move(actor, lot_id, MoveKind.USE, -qty, unit, order_id=order.id) for lot_id, (qty, unit) in used.items()]
    if moves:
        audit.record(actor, "stock.use", patient_id=order.patient_id, entity=("order", order.id),
                     details={"lots": len(moves)})
    return moves


def draw_down_batch(actor: Actor, batch: Batch, lots: dict[int, tuple[Decimal, str]]) -> list[StockMove]:
    """A batch's lots leave the shelf once, for all its orders: the measured amounts of the batch record."""
    moves = [_move(actor, lot_id, MoveKind.USE, -qty, unit, batch_id=batch.id)
             for lot_id, (qty, unit) in lots.items() if qty > 0]
    audit.record(actor, "stock.use", entity=("batch", batch.id), details={"lots": len(moves)})
    return moves


def set_reorder_point(actor: Actor, ingredient_name: str, reorder_point: Any, *, unit: str | None = None,
                      reorder_quantity: Any = None) -> InventoryItem:
    """The level at which an ingredient is low (Today says so), and how much is usually ordered."""
    audit.require(actor, Permission.MANAGE_INVENTORY, what="set reorder points")
    name = (ingredient_name or "").strip()
    known = set(ingredient_names())
    if name not in known:
        raise ValidationFailed("Unknown ingredient.", fields={"ingredient_name": "Choose an ingredient."})
    point = _quantity(reorder_point, "reorder_point")
    if point < 0:
        raise ValidationFailed("The reorder point was not saved.", fields={"reorder_point": "0 or more."})
    again = None
    if reorder_quantity not in (None, ""):
        again = _quantity(reorder_quantity, "reorder_quantity")
        if again <= 0:
            raise ValidationFailed("The reorder point was not saved.", fields={"reorder_quantity": "More than 0."})
    item = db.session.execute(sa.select(InventoryItem).where(InventoryItem.ingredient_name == name)
                              .with_for_update()).scalar_one_or_none()
    chosen = rules.unit_of(unit) if unit else (item.unit if item else ingredient_unit(name) or "g")
    if item is None:
        item = InventoryItem(ingredient_name=name, unit=chosen, reorder_point=point, updated_at=now())
        db.session.add(item)
    item.unit, item.reorder_point, item.reorder_quantity = chosen, point, again
    item.updated_at, item.updated_by_id = now(), actor.user_id
    db.session.flush()
    audit.record(actor, "stock.reorder_point", entity=("inventory_item", item.id),
                 details={"reorder_point": str(point), "unit": chosen})
    return item


# ---- reading ------------------------------------------------------------------------------------------------

def ingredient_names() -> list[str]:
    """Every ingredient of a formula, and any ingredient a lot is on file for."""
    names = db.session.execute(
        sa.union(sa.select(FormulaIngredient.name), sa.select(IngredientLot.ingredient_name))
    ).scalars()
    return sorted(set(names))


class LotLine(NamedTuple):
    """What the stock views show of a lot: its columns, not the ORM object (Today reads every lot on each visit)."""

    id: int
    ingredient_name: str
    supplier: str
    lot_number: str
    expiry_date: date
    received_on: date | None
    quarantined_at: datetime | None
    quarantine_reason: str | None


class StockLine(NamedTuple):
    unit: str
    received: Decimal
    used: Decimal
    wasted: Decimal
    adjusted: Decimal
    on_hand: Decimal


LOT_COLUMNS = (IngredientLot.id, IngredientLot.ingredient_name, IngredientLot.supplier, IngredientLot.lot_number,
               IngredientLot.expiry_date, IngredientLot.received_on, IngredientLot.quarantined_at,
               IngredientLot.quarantine_reason)


@dataclass
class LotRow:
    lot: LotLine
    stock: StockLine | None
    state: LotState

    @property
    def on_hand(self) -> Decimal | None:
        return self.stock.on_hand if self.stock else None


@dataclass
class IngredientStock:
    name: str
    unit: str
    reorder_point: Decimal | None
    reorder_quantity: Decimal | None
    usable_on_hand: Decimal = Decimal(0)
    lots: list[LotRow] = field(default_factory=list)

    @property
    def low(self) -> bool:
        return rules.is_low(self.usable_on_hand, self.reorder_point)


@dataclass
class InventoryView:
    ingredients: list[IngredientStock]
    today: date
    warn_days: int
    units: tuple[str, ...] = rules.STOCK_UNITS


def _level(row: LotRow, unit: str) -> Decimal:
    if row.stock is None or row.stock.on_hand <= 0:
        return Decimal(0)
    try:
        return rules.convert(row.stock.on_hand, row.stock.unit, unit)
    except rules.UnitMismatch:
        return Decimal(0)


class _StockStatements:
    """What the stock views read, built once per process (Today shows the stock alerts on every visit)."""

    def __init__(self) -> None:
        self.items = sa.select(InventoryItem)
        self.units = (sa.select(FormulaIngredient.name, sa.func.min(FormulaIngredient.unit))
                      .group_by(FormulaIngredient.name))
        lots = sa.select(*LOT_COLUMNS, LotStock.unit, LotStock.received, LotStock.used, LotStock.wasted,
                         LotStock.adjusted, LotStock.on_hand).join(
            LotStock, LotStock.ingredient_lot_id == IngredientLot.id, isouter=True)
        order = (IngredientLot.ingredient_name, IngredientLot.expiry_date, IngredientLot.id)
        self.every_lot = lots.order_by(*order).limit(2000)
        self.lots = lots.where(sa.or_(IngredientLot.expiry_date >= sa.bindparam("b_day", type_=sa.Date),
                                      LotStock.on_hand > 0, IngredientLot.quarantined_at.is_not(None))
                               ).order_by(*order).limit(2000)


@functools.cache
def _stock_statements() -> _StockStatements:
    return _StockStatements()


def stock_by_ingredient(*, include_old: bool = False) -> list[IngredientStock]:
    """Per ingredient: its lots with their totals and state, and what can still be used (in the ingredient's unit).
    Three statements: the items, the lots with their totals (expired ones only when they still hold stock or are
    asked for), the formulas' ingredient names and units."""
    day = today()
    warn = stock_settings().expiry_warning_days
    q = _stock_statements()
    items = {i.ingredient_name: i for i in db.session.execute(q.items).scalars()}
    units = dict(db.session.execute(q.units).all())
    rows = []
    for row in db.session.execute(q.every_lot if include_old else q.lots, {"b_day": day}):
        lot, stock = LotLine(*row[:8]), StockLine(*row[8:])
        rows.append((lot, stock if stock.unit is not None else None))
    out: dict[str, IngredientStock] = {}
    for name in sorted(set(units) | set(items) | {lot.ingredient_name for lot, _ in rows}):
        item = items.get(name)
        out[name] = IngredientStock(name=name, unit=item.unit if item else units.get(name) or "g",
                                    reorder_point=item.reorder_point if item else None,
                                    reorder_quantity=item.reorder_quantity if item else None)
    for lot, stock in rows:
        state = rules.lot_state(expiry=lot.expiry_date, quarantined=lot.quarantined_at is not None,
                                on_hand=stock.on_hand if stock else None, day=day, warn_days=warn)
        entry = out[lot.ingredient_name]
        row = LotRow(lot=lot, stock=stock, state=state)
        entry.lots.append(row)
        if rules.usable(expiry=lot.expiry_date, quarantined=lot.quarantined_at is not None, day=day):
            entry.usable_on_hand += _level(row, entry.unit)
    return list(out.values())


def inventory_view(actor: Actor, *, include_old: bool = False) -> InventoryView:
    audit.require(actor, Permission.VIEW_CLINICAL, what="see inventory")
    return InventoryView(ingredients=stock_by_ingredient(include_old=include_old), today=today(),
                         warn_days=stock_settings().expiry_warning_days)


@dataclass
class LotLedger:
    lot: IngredientLot
    stock: LotStock | None
    moves: list[StockMove]
    state: LotState
    ledger_sum: Decimal


def lot_ledger(actor: Actor, lot_id: int, *, limit: int = 300) -> LotLedger:
    """One lot's moves, newest first, with the totals they add up to."""
    audit.require(actor, Permission.VIEW_CLINICAL, what="see inventory")
    lot = _lot(lot_id)
    stock = db.session.get(LotStock, lot.id)
    moves = list(db.session.execute(sa.select(StockMove).where(StockMove.ingredient_lot_id == lot.id)
                                    .order_by(StockMove.id.desc()).limit(limit)).scalars())
    total = db.session.execute(sa.select(sa.func.coalesce(sa.func.sum(StockMove.quantity), 0))
                               .where(StockMove.ingredient_lot_id == lot.id)).scalar_one()
    state = rules.lot_state(expiry=lot.expiry_date, quarantined=lot.quarantined_at is not None,
                            on_hand=stock.on_hand if stock else None, day=today(),
                            warn_days=stock_settings().expiry_warning_days)
    return LotLedger(lot=lot, stock=stock, moves=moves, state=state, ledger_sum=Decimal(total))


@dataclass
class Alerts:
    """What the Today page says about stock."""

    low: list[IngredientStock] = field(default_factory=list)
    expiring: list[LotRow] = field(default_factory=list)
    quarantined: list[LotRow] = field(default_factory=list)
    to_count: list[LotRow] = field(default_factory=list)  # below zero: the ledger and the shelf disagree
    warn_days: int = 0

    @property
    def any(self) -> bool:
        return bool(self.low or self.expiring or self.quarantined or self.to_count)


def alerts(actor: Actor) -> Alerts | None:
    """Low stock per ingredient, lots with stock expiring within the warning window, quarantined lots still on the
    shelf, and lots whose ledger went below zero. None for roles without clinical access."""
    if not actor.can(Permission.VIEW_CLINICAL):
        return None
    out = Alerts(warn_days=stock_settings().expiry_warning_days)
    for ingredient in stock_by_ingredient():
        if ingredient.low:
            out.low.append(ingredient)
        for row in ingredient.lots:
            if row.state is LotState.EXPIRING:
                out.expiring.append(row)
            elif row.state is LotState.QUARANTINED and row.on_hand and row.on_hand > 0:
                out.quarantined.append(row)
            elif row.stock is not None and row.stock.on_hand < 0:
                out.to_count.append(row)
    out.expiring.sort(key=lambda r: r.lot.expiry_date)
    return out


def ledger_mismatches() -> list[tuple[int, Decimal, Decimal]]:
    """Lots whose kept totals differ from the sum of their ledger rows (should be none): (lot, kept, ledger)."""
    sums = (sa.select(StockMove.ingredient_lot_id.label("lot_id"), sa.func.sum(StockMove.quantity).label("total"))
            .group_by(StockMove.ingredient_lot_id).subquery())
    rows = db.session.execute(
        sa.select(LotStock.ingredient_lot_id, LotStock.on_hand, sums.c.total)
        .join(sums, sums.c.lot_id == LotStock.ingredient_lot_id, isouter=True)
    ).all()
    out = []
    for lot_id, kept, total in rows:
        ledger = Decimal(total or 0)
        if kept != ledger:
            out.append((lot_id, kept, ledger))
    return out


def batch_lot_amounts(batch_id: int) -> dict[int, tuple[Decimal, str]]:
    """What a batch's orders record of each lot, added up (in the formula's units)."""
    rows = db.session.execute(
        sa.select(OrderIngredientLot.ingredient_lot_id, OrderIngredientLot.quantity_used, OrderIngredientLot.unit)
        .join(Order, Order.id == OrderIngredientLot.order_id).where(Order.batch_id == batch_id)
    ).all()
    return _uses(rows)
