"""The portal's forms (marshmallow, like every form and API body): one schema per form, messages in plain words."""
from __future__ import annotations

from datetime import date
from typing import Any

from marshmallow import ValidationError, fields, post_load, pre_load, validate, validates_schema

from pharmacy.compounding.rules import DeliveryMethod
from pharmacy.core.schemas import BaseSchema, TrimmedString
from pharmacy.patients.rules import SideEffect
from pharmacy.refills.schemas import BirthDateFormSchema
from pharmacy.sms.rules import Choice

NOTE = TrimmedString(load_default=None, validate=validate.Length(max=400, error="At most 400 characters."))


def _checkbox(data: dict[str, Any], *names: str) -> dict[str, Any]:
    """An unticked checkbox sends nothing: read it as "no"."""
    out = dict(data)
    for name in names:
        out[name] = str(out.get(name, "")).lower() in ("on", "yes", "true", "1")
    return out


class ContactForm(BaseSchema):
    contact = TrimmedString(required=True, validate=validate.Length(min=3, max=254),
                            error_messages={"required": "Enter your email address or mobile number."})


class CodeForm(BirthDateFormSchema):
    """The code from the message, and the date of birth (three boxes, like the refill link)."""

    code = TrimmedString(required=True, validate=validate.Length(
                             min=6, max=12, error="Enter the 6 digits of the code we sent you."),
                         error_messages={"required": "Enter the 6-digit code."})

    @post_load
    def _to_date(self, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        if "date_of_birth" not in data:
            data["date_of_birth"] = date(data["year"], data["month"], data["day"])
        return {"date_of_birth": data["date_of_birth"], "code": data["code"]}


class RefillForm(BaseSchema):
    delivery = fields.Enum(DeliveryMethod, by_value=True, load_default=None,
                           error_messages={"unknown": "Choose pick-up or shipping."})


class RemindersForm(BaseSchema):
    reminders = fields.String(required=True, validate=validate.OneOf(["on", "off"], error="Choose on or off."))
    # Not sent: unchanged (the saved choice greyed while texts are stopped, kept for START).
    channel = fields.Enum(Choice, by_value=True, load_default=None,
                          error_messages={"unknown": "Choose email, text or both."})
    paused_until = fields.Date(load_default=None, error_messages={"invalid": "Enter a date, for example 2027-01-15."})


class NumberForm(BaseSchema):
    phone = TrimmedString(required=True, validate=validate.Length(min=7, max=24),
                          error_messages={"required": "Enter your mobile number."})


class NumberConfirmForm(BaseSchema):
    code = TrimmedString(required=True, validate=validate.Length(min=6, max=12),
                         error_messages={"required": "Enter the 6-digit code."})
    consent = fields.Boolean(load_default=False)

    @pre_load
    def _boxes(self, data: Any, **kwargs: Any) -> Any:
        return _checkbox(data, "consent") if isinstance(data, dict) else data


class DeliveryForm(BaseSchema):
    delivery = fields.Enum(DeliveryMethod, by_value=True, required=True,
                           error_messages={"unknown": "Choose pick-up or shipping.", "required": "Choose one."})
    address_line1 = TrimmedString(load_default=None, validate=validate.Length(max=120))
    address_line2 = TrimmedString(load_default=None, validate=validate.Length(max=120))
    city = TrimmedString(load_default=None, validate=validate.Length(max=80))
    state = TrimmedString(load_default=None, validate=validate.Regexp(r"^[A-Za-z]{2}$",
                                                                       error="Use the 2-letter state, e.g. IL."))
    postal_code = TrimmedString(load_default=None, validate=validate.Regexp(r"^\d{5}(-\d{4})?$",
                                                                             error="Use a 5-digit ZIP code."))


class SideEffectForm(BaseSchema):
    effect = fields.Enum(SideEffect, by_value=True, required=True,
                         error_messages={"unknown": "Choose what you noticed.", "required": "Choose what you noticed."})
    persistent = fields.Boolean(load_default=False)
    started_on = fields.Date(load_default=None, error_messages={"invalid": "Enter a date, for example 2026-11-20."})
    note = NOTE

    @pre_load
    def _boxes(self, data: Any, **kwargs: Any) -> Any:
        return _checkbox(data, "persistent") if isinstance(data, dict) else data


class FeedForm(BaseSchema):
    show_drug_name = fields.Boolean(load_default=False)

    @pre_load
    def _boxes(self, data: Any, **kwargs: Any) -> Any:
        return _checkbox(data, "show_drug_name") if isinstance(data, dict) else data


class AutoRefillForm(BaseSchema):
    action = fields.String(required=True, validate=validate.OneOf(["join", "leave", "skip"]))

    @validates_schema
    def _known(self, data: dict[str, Any], **kwargs: Any) -> None:
        if "action" not in data:
            raise ValidationError("Choose what to do.", field_name="action")
