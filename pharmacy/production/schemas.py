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
