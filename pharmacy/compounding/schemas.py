"""Order, lot and recall input/output, shared by the order page's forms and the JSON API."""
from __future__ import annotations

from decimal import Decimal
from typing import Any

from marshmallow import ValidationError, fields, pre_load, validate, validates_schema

from pharmacy.compounding.rules import (
    RETURN_REASON_LABELS,
    TRANSITION_TARGETS,
    DeliveryMethod,
    OrderState,
    ReturnReason,
    UspCategory,
)
from pharmacy.core.numbers import digits_only
from pharmacy.core.schemas import BaseSchema, BoundedDate, DecimalString, TrimmedString
from pharmacy.prescriptions.rules import Form
from pharmacy.prescriptions.schemas import AlertOutSchema

ID = fields.Integer(required=True, strict=True, validate=validate.Range(min=1, max=2**31 - 1))
REASON_TEXT = validate.Length(min=3, max=400)


class StartFillSchema(BaseSchema):
    delivery = fields.Enum(DeliveryMethod, by_value=True, load_default=None, allow_none=True,
                           metadata={"description": "pickup or ship; default: the patient's usual delivery"})


class IngredientLotUsedSchema(BaseSchema):
    ingredient_lot_id = ID
    quantity_used = DecimalString(load_default=None, allow_none=True, places=3, min_value=Decimal("0.001"),
                                  max_value=Decimal("1000000"),
                                  metadata={"description": "In the ingredient's unit from the master formula, as "
                                                           "weighed or measured (required when compounding; not "
                                                           "given when planning the batch)"})


class OrderTransitionSchema(BaseSchema):
    """Move an order: `to` names the step; the other fields are that step's record.

    verified: nothing. plan_batch: lots (ids only) — fixes the BUD and the quantity to make before compounding.
    compounding: lots with the measured quantity_used + quantity_made (from checked: reason, i.e. send back).
    checked: qc_notes, deviations. ready: nothing. dispensed: method, carrier + tracking_number when
    shipped, too_soon_reason (a pharmacist) when too soon. on_hold / cancelled: reason. resume: nothing.
    """

    to = fields.String(required=True, validate=validate.OneOf(TRANSITION_TARGETS))
    lots = fields.List(fields.Nested(IngredientLotUsedSchema), validate=validate.Length(min=1, max=20))
    quantity_made = DecimalString(places=3, min_value=Decimal("0.001"), max_value=Decimal("1000000"))
    qc_notes = TrimmedString(allow_none=True, validate=validate.Length(max=400))
    deviations = TrimmedString(allow_none=True, validate=validate.Length(max=400))
    method = fields.Enum(DeliveryMethod, by_value=True)
    carrier = TrimmedString(validate=validate.Length(min=2, max=40))
    tracking_number = TrimmedString(validate=validate.Regexp(r"^[A-Za-z0-9][A-Za-z0-9 \-]{3,59}$",
                                                             error="Letters, digits, spaces and dashes (4–60)."))
    too_soon_reason = TrimmedString(validate=REASON_TEXT)
    reason = TrimmedString(validate=REASON_TEXT)
    # dispensed: the code on the bag's label, scanned (or typed) at the counter; a different bag's code is refused.
    bag_code = TrimmedString(validate=validate.Length(min=1, max=40))

    @pre_load
    def _form_lots(self, data: Any, **kwargs: Any) -> Any:
        """The order page sends parallel lot_id/lot_qty inputs (one row per ingredient); the API sends objects."""
        if isinstance(data, dict) and ("lot_id" in data or "lot_qty" in data):
            data = dict(data)
            ids = data.pop("lot_id", []) or []
            qtys = data.pop("lot_qty", []) or []
            ids = ids if isinstance(ids, list) else [ids]
            qtys = qtys if isinstance(qtys, list) else [qtys]
            lots = []
            for i in range(max(len(ids), len(qtys))):
                lot_id = str(ids[i]).strip() if i < len(ids) else ""
                qty = str(qtys[i]).strip() if i < len(qtys) else ""
                if lot_id or qty:
                    lots.append({"ingredient_lot_id": int(lot_id) if digits_only(lot_id) and len(lot_id) < 11 else lot_id,
                                 "quantity_used": qty or None})
            data["lots"] = lots
        return data

    @validates_schema
    def _step_fields(self, data: dict[str, Any], **kwargs: Any) -> None:
        """A field that belongs to another step is a mistake worth saying, not silently ignored."""
        allowed = {
            "verified": set(), "ready": set(), "resume": set(), "plan_batch": {"lots"},
            "compounding": {"lots", "quantity_made", "reason"}, "checked": {"qc_notes", "deviations"},
            "dispensed": {"method", "carrier", "tracking_number", "too_soon_reason", "bag_code"},
            "on_hold": {"reason"}, "cancelled": {"reason"},
        }.get(data.get("to", ""), set())
        extra = sorted(k for k in data if k != "to" and k not in allowed)
        if extra:
            raise ValidationError({k: [f"Not used when moving to {data['to']}."] for k in extra})


class OrderPageTransitionSchema(OrderTransitionSchema):
    """The order page's buttons: as the API, except that dispensing there needs the bag's label scanned (the API's
    callers confirm the bag their own way)."""

    @validates_schema
    def _bag_scanned(self, data: dict[str, Any], **kwargs: Any) -> None:
        if data.get("to") == "dispensed" and not data.get("bag_code"):
            raise ValidationError({"bag_code": ["Scan the barcode on the bag's label (or type the code under it)."]})


class ReturnFillSchema(BaseSchema):
    """Taking a dispensed fill back (compounding/returns.py): why, from a fixed list, and an optional note."""

    reason = fields.Enum(ReturnReason, by_value=True, required=True, error_messages={
        "unknown": "Choose one of: " + "; ".join(RETURN_REASON_LABELS.values()) + "."})
    note = TrimmedString(load_default=None, validate=validate.Length(max=240))


class IngredientLotInSchema(BaseSchema):
    ingredient_name = TrimmedString(required=True, validate=validate.Length(min=1, max=120))
    supplier = TrimmedString(required=True, validate=validate.Length(min=1, max=120))
    lot_number = TrimmedString(required=True, validate=validate.Regexp(
        r"^[A-Za-z0-9][A-Za-z0-9 ._/\-]{0,39}$", error="Letters, digits and . _ / - (at most 40)."))
    expiry_date = BoundedDate(required=True)
    received_on = BoundedDate(load_default=None, allow_none=True)


class OrderQueueQuerySchema(BaseSchema):
    state = fields.Enum(OrderState, by_value=True, validate=validate.OneOf(
        [OrderState.REQUESTED, OrderState.VERIFIED, OrderState.COMPOUNDING, OrderState.CHECKED, OrderState.READY,
         OrderState.ON_HOLD], error="One of the open steps: requested, verified, compounding, checked, ready, on_hold."),
        metadata={
        "description": "One step's list (requested, verified, compounding, checked, ready, on_hold), paged; without "
                       "it, every step's first page"})
    page = fields.Integer(load_default=1, validate=validate.Range(min=1, max=100_000), metadata={
        "description": "With `state`: the page of that step's list, 50 orders a page, oldest first (`count` is the "
                       "step's total)"})


class RecallQuerySchema(BaseSchema):
    ingredient_lot = TrimmedString(validate=validate.Length(min=1, max=40),
                                   metadata={"description": "An ingredient lot number (as on the supplier's label)"})
    order_lot = TrimmedString(validate=validate.Length(min=1, max=32),
                              metadata={"description": "A compounded batch's lot number, e.g. L261123-001"})

    @validates_schema
    def _one(self, data: dict[str, Any], **kwargs: Any) -> None:
        if bool(data.get("ingredient_lot")) == bool(data.get("order_lot")):
            raise ValidationError("Give an ingredient lot number or an order lot number (one of them).",
                                  field_name="_schema")


# ---- output ----------------------------------------------------------------------------------------


class IngredientLotUsedOutSchema(BaseSchema):
    ingredient_lot_id = fields.Integer()
    ingredient = fields.String()
    supplier = fields.String()
    lot_number = fields.String()
    expiry_date = fields.Date()
    quantity_used = DecimalString()
    unit = fields.String()


class IngredientLotOutSchema(BaseSchema):
    id = fields.Integer()
    ingredient_name = fields.String()
    supplier = fields.String()
    lot_number = fields.String()
    expiry_date = fields.Date()
    received_on = fields.Date(allow_none=True)


class LotChoiceSchema(BaseSchema):
    ingredient = fields.String()
    unit = fields.String()
    expected_quantity = DecimalString(metadata={"description": "The master formula's amount for this batch"})
    lots = fields.List(fields.Nested(IngredientLotOutSchema), metadata={"description": "Unexpired, soonest expiry first"})


class OrderOutSchema(BaseSchema):
    id = fields.Integer()
    prescription_id = fields.Integer()
    rx_number = fields.String()
    patient_id = fields.Integer()
    patient_name = fields.String()
    fill_number = fields.Integer()
    state = fields.Enum(OrderState, by_value=True)
    held_from = fields.Enum(OrderState, by_value=True, allow_none=True)
    hold_reason = fields.String(allow_none=True)
    cancel_reason = fields.String(allow_none=True)
    product = fields.String()
    form = fields.Enum(Form, by_value=True)
    quantity = DecimalString()
    quantity_text = fields.String()
    days_supply = fields.Integer()
    cap_note = fields.String(allow_none=True)
    delivery_method = fields.Enum(DeliveryMethod, by_value=True)
    carrier = fields.String(allow_none=True)
    tracking_number = fields.String(allow_none=True)
    lot_number = fields.String(allow_none=True)
    bud = fields.Date(allow_none=True)
    storage = fields.String()
    quantity_made = DecimalString(allow_none=True)
    qc_yield_pct = DecimalString(allow_none=True)
    qc_passed = fields.Boolean(allow_none=True)
    qc_notes = fields.String(allow_none=True)
    deviations = fields.String(allow_none=True)
    earliest_dispense_date = fields.Date(allow_none=True)
    too_soon = fields.Boolean()
    dispensed_on = fields.Date(allow_none=True, metadata={"description": "The day it left the pharmacy"})
    supply_starts_on = fields.Date(allow_none=True, metadata={
        "description": "The day the patient has it (pickup day, or the parcel's expected arrival)"})
    run_out_date = fields.Date(allow_none=True, metadata={"description": "Last day covered once this fill joined "
                                                                          "the supply"})
    authorized_fill = fields.Integer(metadata={"description": "0 = the original fill, 1.. = refills; partial "
                                                             "fills of one authorized fill share it"})
    fill_progress = fields.String(allow_none=True, metadata={
        "description": "For a partial fill: \"14 of 60 days; 46 days still owed on this fill\""})
    price_cents = fields.Integer()
    shipping_cents = fields.Integer()
    created_at = fields.DateTime()
    state_changed_at = fields.DateTime()
    returned_at = fields.DateTime(allow_none=True, metadata={
        "description": "When a dispensed fill was taken back (it is cancelled since, and counts for nothing)"})
    return_reason = fields.String(allow_none=True, metadata={
        "description": "Why: " + ", ".join(r.value for r in ReturnReason)})
    returnable = fields.Boolean(metadata={"description": "Whether POST …/return may take this fill back"})
    next_steps = fields.List(fields.String(), metadata={"description": "Values of `to` that may come next"})
    alerts = fields.List(fields.Nested(AlertOutSchema))
    lots_used = fields.List(fields.Nested(IngredientLotUsedOutSchema))
    lot_choices = fields.List(fields.Nested(LotChoiceSchema),
                              metadata={"description": "While the batch may be recorded: the lots to choose from"})
    message = fields.String(allow_none=True, metadata={"description": "What happened, e.g. a failed quality check"})


class OrderQueueItemSchema(BaseSchema):
    id = fields.Integer()
    rx_number = fields.String()
    patient_id = fields.Integer()
    patient_name = fields.String()
    product = fields.String()
    quantity = DecimalString()
    delivery_method = fields.Enum(DeliveryMethod, by_value=True)
    created_at = fields.DateTime()
    state_changed_at = fields.DateTime()


class OrderQueueGroupSchema(BaseSchema):
    state = fields.Enum(OrderState, by_value=True)
    count = fields.Integer()
    orders = fields.List(fields.Nested(OrderQueueItemSchema))


class RecallRowSchema(BaseSchema):
    order_id = fields.Integer()
    order_lot = fields.String(allow_none=True)
    state = fields.Enum(OrderState, by_value=True)
    reached_patient = fields.Boolean(metadata={"description": "It left the pharmacy (dispensed, even if returned "
                                                              "since): call the patient"})
    return_reason = fields.String(allow_none=True, metadata={"description": "Set when the fill was returned"})
    compounded_on = fields.Date(allow_none=True)
    dispensed_on = fields.Date(allow_none=True)
    bud = fields.Date(allow_none=True)
    delivery_method = fields.String(metadata={"description": "pickup or ship"})
    patient_id = fields.Integer()
    patient_name = fields.String()
    date_of_birth = fields.Date()
    phone = fields.String(allow_none=True)
    email = fields.String(allow_none=True)
    rx_number = fields.String()
    product = fields.String()
    quantity = fields.String()
    ingredient_lots = fields.List(fields.String())


class RecallResultSchema(BaseSchema):
    ingredient_lot = fields.String(allow_none=True)
    order_lot = fields.String(allow_none=True)
    matched_lots = fields.List(fields.String(), metadata={"description": "Ingredient lots matched (supplier and lot)"})
    orders = fields.List(fields.Nested(RecallRowSchema))
    patient_count = fields.Integer()


class FormulaOutSchema(BaseSchema):
    id = fields.Integer()
    code = fields.String()
    name = fields.String()
    form = fields.Enum(Form, by_value=True)
    strength_mg = DecimalString()
    usp_category = fields.Enum(UspCategory, by_value=True)
