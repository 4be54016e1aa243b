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
