"""Inventory forms: a lot received with its quantity, a stock record (waste, adjustment, count), a reorder point,
a quarantine."""
from __future__ import annotations

from decimal import Decimal

from marshmallow import fields, validate

from pharmacy.compounding.schemas import IngredientLotInSchema
from pharmacy.core.schemas import REASON, BaseSchema, DecimalString, TrimmedString
from pharmacy.inventory.rules import STOCK_UNITS

QUANTITY = dict(places=3, max_value=Decimal("1000000"))


class ReceiveSchema(IngredientLotInSchema):
    quantity = DecimalString(required=True, min_value=Decimal("0.001"), **QUANTITY,
                             metadata={"description": "How much of the lot was received"})
    unit = fields.String(required=True, validate=validate.OneOf(STOCK_UNITS, error="Choose the unit."))


class StockRecordSchema(BaseSchema):
    kind = fields.String(required=True, validate=validate.OneOf(("waste", "adjust", "count"),
                                                                error="Choose waste, adjustment or count."))
    quantity = DecimalString(required=True, min_value=Decimal("-1000000"), **QUANTITY)
    reason = TrimmedString(load_default=None, allow_none=True, validate=validate.Length(max=400))


class ReorderPointSchema(BaseSchema):
    ingredient_name = TrimmedString(required=True, validate=validate.Length(min=1, max=120))
    reorder_point = DecimalString(required=True, min_value=Decimal(0), **QUANTITY)
    reorder_quantity = DecimalString(load_default=None, allow_none=True, min_value=Decimal("0.001"), **QUANTITY)
    unit = fields.String(load_default=None, allow_none=True, validate=validate.OneOf(STOCK_UNITS))


class ReasonSchema(BaseSchema):
    reason = REASON


# ---- stock as JSON (/api/v1/inventory) --------------------------------------------------------------------------


class LotStockOutSchema(BaseSchema):
    id = fields.Integer()
    lot_number = fields.String()
    supplier = fields.String()
    expiry_date = fields.Date()
    received_on = fields.Date(allow_none=True)
    state = fields.String(metadata={"description": "ok, expiring, expired, quarantined, empty or untracked"})
    on_hand = DecimalString(allow_none=True, metadata={"description": "None: never counted"})
    unit = fields.String(allow_none=True)
    quarantine_reason = fields.String(allow_none=True)


class IngredientStockOutSchema(BaseSchema):
    name = fields.String()
    unit = fields.String()
    usable_on_hand = DecimalString()
    reorder_point = DecimalString(allow_none=True)
    reorder_quantity = DecimalString(allow_none=True)
    low = fields.Boolean()
    lots = fields.List(fields.Nested(LotStockOutSchema))


class InventoryOutSchema(BaseSchema):
    today = fields.Date()
    expiry_warning_days = fields.Integer()
    ingredients = fields.List(fields.Nested(IngredientStockOutSchema))


class StockMoveOutSchema(BaseSchema):
    id = fields.Integer()
    ingredient_lot_id = fields.Integer()
    kind = fields.String()
    quantity = DecimalString()
    unit = fields.String()
    on_hand = DecimalString(allow_none=True, metadata={"description": "The lot's stock after it"})
