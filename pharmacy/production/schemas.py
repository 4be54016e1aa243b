"""Production forms: a batch (the orders and the lots), its record, its final check."""
from __future__ import annotations

from decimal import Decimal
from typing import Any

from marshmallow import fields, pre_load, validate

from pharmacy.core.schemas import BaseSchema, DecimalString, Id, TrimmedString


def _lines(data: Any) -> Any:
    """The batch form sends parallel lot_id / lot_qty inputs, one row per ingredient."""
    if isinstance(data, dict) and ("lot_id" in data or "lot_qty" in data):
        data = dict(data)
        ids, qtys = data.pop("lot_id", []) or [], data.pop("lot_qty", []) or []
        ids = ids if isinstance(ids, list) else [ids]
        qtys = qtys if isinstance(qtys, list) else [qtys]
        data["lots"] = [{"ingredient_lot_id": i, **({"quantity_used": q} if q else {})}
                        for i, q in zip(ids, qtys + [""] * (len(ids) - len(qtys)), strict=False) if i]
    return data


class LotLineSchema(BaseSchema):
    ingredient_lot_id = Id(required=True)
    quantity_used = DecimalString(load_default=None, places=3, min_value=Decimal("0.001"),
                                  max_value=Decimal("1000000"))


class BatchPlanSchema(BaseSchema):
    order_ids = fields.List(Id(), required=True, validate=validate.Length(min=2, max=50,
                                                                          error="Choose two or more orders (up to 50)."))
    lots = fields.List(fields.Nested(LotLineSchema), required=True,
                       validate=validate.Length(min=1, max=20, error="Choose a lot for each ingredient."))

    @pre_load
    def _form(self, data: Any, **kwargs: Any) -> Any:
        return _lines(data)


class BatchRecordSchema(BaseSchema):
    lots = fields.List(fields.Nested(LotLineSchema), required=True, validate=validate.Length(min=1, max=20))
    quantity_made = DecimalString(required=True, places=3, min_value=Decimal("0.001"), max_value=Decimal("1000000"))

    @pre_load
    def _form(self, data: Any, **kwargs: Any) -> Any:
        return _lines(data)


class BatchCheckSchema(BaseSchema):
    qc_notes = TrimmedString(load_default=None, allow_none=True, validate=validate.Length(max=400))
    deviations = TrimmedString(load_default=None, allow_none=True, validate=validate.Length(max=400))


# ---- the plan as JSON (GET /api/v1/production/plan) -------------------------------------------------------------


class PlanQuerySchema(BaseSchema):
    days = fields.Integer(load_default=None, validate=validate.Range(min=1, max=30, error="Plan 1 to 30 business days."),
                          metadata={"description": "Business days to plan (the pharmacy's setting by default)"})


class PlanLineOutSchema(BaseSchema):
    formula_id = fields.Integer()
    product = fields.String()
    units = DecimalString()
    units_text = fields.String()
    preparations = fields.Integer()
    late = fields.Integer(metadata={"description": "Preparations that can no longer be ready by the day needed"})
    by_source = fields.Dict(keys=fields.String(), values=fields.Integer(),
                            metadata={"description": "Preparations by where the work comes from (order, request, "
                                                     "auto, expected, renewal)"})


class PlanDayOutSchema(BaseSchema):
    day = fields.Date()
    load = fields.Integer()
    capacity = fields.Integer()
    overloaded = fields.Boolean()
    moved_in = fields.Integer()
    moved_out = fields.Integer()
    over = fields.Integer()
    lines = fields.List(fields.Nested(PlanLineOutSchema))


class IngredientNeedOutSchema(BaseSchema):
    name = fields.String()
    unit = fields.String()
    needed = DecimalString()
    on_hand = DecimalString(metadata={"description": "Usable today"})
    short_on = fields.Date(allow_none=True)
    shortfall = DecimalString()
    reorder_point = DecimalString(allow_none=True)
    first_lot_id = fields.Integer(allow_none=True, metadata={"description": "The lot to use first (FEFO)"})
    uncounted_lot_ids = fields.List(fields.Integer(), metadata={
        "description": "Usable lots not counted yet (received before stock was kept): their stock is not in on_hand, "
                       "and a shortfall may be covered by them — count them"})


class PlanOutSchema(BaseSchema):
    today = fields.Date()
    capacity = fields.Integer()
    total = fields.Integer()
    unplanned = fields.Integer()
    warnings = fields.List(fields.String())
    days = fields.List(fields.Nested(PlanDayOutSchema))
    ingredients = fields.List(fields.Nested(IngredientNeedOutSchema))
