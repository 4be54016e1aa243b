"""Patient input and output, shared by the intake form and the API.

Lists (conditions, medications, allergies) are lists here: the form's one-item-a-line text is split by the form's
view (patients/views.py), so a JSON client that sends `"allergies": "penicillin"` gets a 422, not a list guessed
from its text (found by `make fuzz`)."""
from __future__ import annotations

from typing import Any

from marshmallow import ValidationError, fields, pre_load, validate, validates

from pharmacy.compounding.rules import DeliveryMethod
from pharmacy.core.schemas import BaseSchema, BoundedDate, Flag, PastDate, TrimmedString
from pharmacy.patients.rules import SideEffect

NAME = validate.Length(min=1, max=80)
LIST_ITEM = TrimmedString(validate=validate.Length(min=1, max=120))


class PatientInSchema(BaseSchema):
    first_name = TrimmedString(required=True, validate=NAME)
    last_name = TrimmedString(required=True, validate=NAME)
    date_of_birth = PastDate(required=True, future_error="A birth date cannot be in the future.")
    email = fields.Email(load_default=None, allow_none=True, validate=validate.Length(max=254))
    phone = TrimmedString(load_default=None, allow_none=True,
                          validate=validate.Regexp(r"^[0-9 ()+.\-]{7,32}$", error="Enter a phone number."))
    address_line1 = TrimmedString(load_default=None, allow_none=True, validate=validate.Length(max=120))
    address_line2 = TrimmedString(load_default=None, allow_none=True, validate=validate.Length(max=120))
    city = TrimmedString(load_default=None, allow_none=True, validate=validate.Length(max=80))
    state = TrimmedString(load_default=None, allow_none=True,
                          validate=validate.Regexp(r"^[A-Za-z]{2}$", error="Use the two-letter state code."))
    postal_code = TrimmedString(load_default=None, allow_none=True,
                                validate=validate.Regexp(r"^\d{5}(-\d{4})?$", error="Use a ZIP code like 62704."))
    conditions = fields.List(LIST_ITEM, load_default=list, validate=validate.Length(max=30))
    medications = fields.List(LIST_ITEM, load_default=list, validate=validate.Length(max=50))
    allergies = fields.List(LIST_ITEM, load_default=list, validate=validate.Length(max=30))
    reminders_opt_in = Flag(load_default=True)
    delivery_preference = fields.Enum(DeliveryMethod, by_value=True, load_default=DeliveryMethod.PICKUP)
    shipping_days = fields.Integer(load_default=None, allow_none=True, validate=validate.Range(0, 14))
    notes = TrimmedString(load_default=None, allow_none=True, validate=validate.Length(max=2000))

    @pre_load
    def _state_upper(self, data: Any, **kwargs: Any) -> Any:
        if isinstance(data, dict) and data.get("state"):
            data = {**data, "state": str(data["state"]).upper()}
        return data

    @validates("email")
    def _email_lower(self, value: str | None, **kwargs: Any) -> None:
        if value is not None and value != value.strip():
            raise ValidationError("Remove spaces around the email address.")


class PatientOutSchema(BaseSchema):
    id = fields.Integer()
    first_name = fields.String()
    last_name = fields.String()
    date_of_birth = fields.Date()
    email = fields.String(allow_none=True)
    phone = fields.String(allow_none=True)
    address_line1 = fields.String(allow_none=True)
    address_line2 = fields.String(allow_none=True)
    city = fields.String(allow_none=True)
    state = fields.String(allow_none=True)
    postal_code = fields.String(allow_none=True)
    conditions = fields.List(fields.String())
    medications = fields.List(fields.String())
    allergies = fields.List(fields.String())
    reminders_opt_in = fields.Boolean()
    delivery_preference = fields.Enum(DeliveryMethod, by_value=True)
    shipping_days = fields.Integer()


class SideEffectInSchema(BaseSchema):
    effect = fields.Enum(SideEffect, by_value=True, required=True)
    noted_on = BoundedDate(load_default=None)
    persistent = Flag(load_default=False)
    note = TrimmedString(load_default=None, allow_none=True, validate=validate.Length(max=1000))
