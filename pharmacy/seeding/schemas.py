"""Schemas for the demo-data files in seeds/: every row is checked before anything is written."""
from __future__ import annotations

from decimal import Decimal

from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate, validates

from pharmacy.compounding.rules import DeliveryMethod, OrderState, UspCategory
from pharmacy.core.npi import npi_is_valid
from pharmacy.core.schemas import DecimalString
from pharmacy.patients.rules import SideEffect
from pharmacy.prescriptions.rules import DosingTime, Form, RxStatus

POSITIVE = DecimalString(required=True, min_value=Decimal("0.001"))


class IngredientRow(Schema):
    name = fields.String(required=True, validate=validate.Length(min=1, max=120))
    salt_form = fields.String(load_default=None)
    amount = POSITIVE
    unit = fields.String(required=True)
    per = fields.String(load_default="100 capsules")
    active = fields.Boolean(load_default=False)


class FormulaRow(Schema):
    code = fields.String(required=True, validate=validate.Length(min=2, max=32))
    name = fields.String(required=True)
    form = fields.Enum(Form, by_value=True, required=True)
    strength_mg = POSITIVE
    usp_category = fields.Enum(UspCategory, by_value=True, required=True)
    storage = fields.String(required=True)
    container = fields.String(required=True)
    lead_time_business_days = fields.Integer(required=True, validate=validate.Range(0, 30))
    method = fields.String(required=True)
    equipment = fields.String(load_default=None)
    calculations = fields.String(load_default=None)
    quality_checks = fields.String(load_default=None)
    ingredients = fields.List(fields.Nested(IngredientRow), required=True, validate=validate.Length(min=1))


class LotRow(Schema):
    ingredient_name = fields.String(required=True)
    supplier = fields.String(required=True)
    lot_number = fields.String(required=True, validate=validate.Length(min=1, max=40))
    expiry_in_days = fields.Integer(required=True)
    received_days_ago = fields.Integer(load_default=0, validate=validate.Range(min=0))
    # On the shelf on load day (recorded as its receipt in the stock ledger); no quantity: stock not kept.
    quantity = fields.Decimal(load_default=None, allow_none=True, places=3, validate=validate.Range(min=0, min_inclusive=False))
    unit = fields.String(load_default=None, allow_none=True, validate=validate.OneOf(("mg", "g", "kg", "mL", "L", "each")))


class ReorderRow(Schema):
    ingredient_name = fields.String(required=True)
    unit = fields.String(required=True, validate=validate.OneOf(("mg", "g", "kg", "mL", "L", "each")))
    reorder_point = fields.Decimal(required=True, places=3, validate=validate.Range(min=0))
    reorder_quantity = fields.Decimal(load_default=None, allow_none=True, places=3)


class PriceRow(Schema):
    formula = fields.String(required=True)
    quantity = POSITIVE
    days_supply = fields.Integer(required=True, validate=validate.Range(1, 366))
    price_cents = fields.Integer(required=True, validate=validate.Range(min=0))


class FeeRow(Schema):
    code = fields.String(required=True)
    amount_cents = fields.Integer(required=True, validate=validate.Range(min=0))


class PrescriberRow(Schema):
    class Meta:
        unknown = EXCLUDE

    first_name = fields.String(required=True)
    last_name = fields.String(required=True)
    credentials = fields.String(load_default=None)
    npi = fields.String(required=True)
    phone = fields.String(load_default=None)
    fax = fields.String(load_default=None)
    email = fields.Email(load_default=None)
    address = fields.String(load_default=None)

    @validates("npi")
    def _npi(self, value: str, **kwargs: object) -> None:
        if not npi_is_valid(value):
            raise ValidationError(f"{value!r} is not a valid NPI (check digit).")


class FillRow(Schema):
    days_ago = fields.Integer(load_default=None, validate=validate.Range(min=0, max=3650))
    state = fields.Enum(OrderState, by_value=True, load_default=OrderState.DISPENSED)
    hold_reason = fields.String(load_default=None)


class StepRow(Schema):
    dose_mg = POSITIVE
    days = fields.Integer(required=True, validate=validate.Range(min=1, max=180))


class PrescriptionRow(Schema):
    formula = fields.String(required=True)
    prescriber = fields.String(required=True)
    dose_mg = POSITIVE
    titration = fields.List(fields.Nested(StepRow), load_default=list)
    dosing_time = fields.Enum(DosingTime, by_value=True, load_default=DosingTime.BEDTIME)
    days_supply = fields.Integer(required=True, validate=validate.Range(1, 366))
    quantity = DecimalString(load_default=None, min_value=Decimal("0.001"))
    refills_authorized = fields.Integer(load_default=0, validate=validate.Range(0, 99))
    written_days_ago = fields.Integer(required=True, validate=validate.Range(0, 3650))
    status = fields.Enum(RxStatus, by_value=True, load_default=RxStatus.ACTIVE)
    status_reason = fields.String(load_default=None)
    fills = fields.List(fields.Nested(FillRow), load_default=list)
    refill_request = fields.String(load_default=None, validate=validate.OneOf(["open"]))


class AddressRow(Schema):
    line1 = fields.String(required=True)
    line2 = fields.String(load_default=None)
    city = fields.String(required=True)
    state = fields.String(required=True, validate=validate.Length(equal=2))
    postal_code = fields.String(required=True)


class SideEffectRow(Schema):
    effect = fields.Enum(SideEffect, by_value=True, required=True)
    days_ago = fields.Integer(required=True, validate=validate.Range(min=0))
    note = fields.String(load_default=None)


class PatientRow(Schema):
    first_name = fields.String(required=True, validate=validate.Length(min=1, max=80))
    last_name = fields.String(required=True, validate=validate.Length(min=1, max=80))
    date_of_birth = fields.Date(required=True)
    email = fields.Email(load_default=None)
    phone = fields.String(load_default=None)
    address = fields.Nested(AddressRow, load_default=None)
    conditions = fields.List(fields.String(), load_default=list)
    medications = fields.List(fields.String(), load_default=list)
    reminders_opt_in = fields.Boolean(load_default=True)
    delivery = fields.Enum(DeliveryMethod, by_value=True, load_default=DeliveryMethod.PICKUP)
    shipping_days = fields.Integer(load_default=None, validate=validate.Range(0, 14))
    prescriptions = fields.List(fields.Nested(PrescriptionRow), load_default=list)
    side_effects = fields.List(fields.Nested(SideEffectRow), load_default=list)
