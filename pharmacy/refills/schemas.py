"""Refill-request input and output, shared by the patient pages, the dashboard forms and the JSON API."""
from __future__ import annotations

from datetime import date
from typing import Any

from marshmallow import ValidationError, fields, post_load, pre_load, validate, validates_schema

from pharmacy.compounding.rules import DeliveryMethod
from pharmacy.core.schemas import REASON, BaseSchema, Id, PastDate, TrimmedString, today_or_none
from pharmacy.refills.rules import RefillRequestState, RenewalState, RequestSource

DELIVERY = fields.Enum(DeliveryMethod, by_value=True, load_default=None,
                       error_messages={"unknown": "Choose pick-up or shipping."})
NOTE = TrimmedString(load_default=None, allow_none=True, validate=validate.Length(max=400))
TOKEN = TrimmedString(validate=validate.Length(min=10, max=1000))


# ---- input ----------------------------------------------------------------------------------------


_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")


class MonthField(fields.Integer):
    """A month as a number (9) or a name, whole or short ("Sept", "sep.", "September"): a box that silently cut
    "Sept" to "Se" would count a real birth date as a wrong try."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> int:
        if isinstance(value, str):
            word = value.strip().lower().rstrip(".")
            if word.isalpha() and len(word) >= 3:
                for number, short in enumerate(_MONTHS, start=1):
                    if short.startswith(word[:3]) and (
                            word == "sept" or all(a == b for a, b in zip(word, _MONTH_NAMES[number - 1], strict=False))):
                        return number
                raise ValidationError("Enter the month as a number from 1 to 12, or its name (e.g. Sept).")
        return super()._deserialize(value, attr, data, **kwargs)


_MONTH_NAMES = ("january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
                "november", "december")


class BirthDateFormSchema(BaseSchema):
    """The refill link's one question. Three boxes (month, day, year) or one ISO date, as the page sends them.

    A typed date that does not exist (31 February) is a field error, not a wrong-date attempt:
    only a real date counts against the link's attempt limit.
    """

    month = MonthField(validate=validate.Range(1, 12, error="Enter the month as a number from 1 to 12."),
                       error_messages={"invalid": "Enter the month as a number from 1 to 12, or its name (e.g. Sept)."})
    day = fields.Integer(validate=validate.Range(1, 31, error="Enter the day as a number from 1 to 31."))
    year = fields.Integer(validate=validate.Range(1900, 2100, error="Enter the year with four digits, e.g. 1975."))
    date_of_birth = PastDate()

    @validates_schema
    def _complete(self, data: dict[str, Any], **kwargs: Any) -> None:
        if "date_of_birth" in data:
            return
        parts = ("month", "day", "year")
        if not all(p in data for p in parts):
            raise ValidationError("Enter your date of birth: month, day and year.", field_name="date_of_birth")
        try:
            typed = date(data["year"], data["month"], data["day"])
        except ValueError:
            raise ValidationError("That date does not exist; check the day and month.",
                                  field_name="date_of_birth") from None
        now = today_or_none()
        if now is not None and typed > now:  # an invalid answer, not a wrong one: it does not count against the link
            raise ValidationError("That date is in the future.", field_name="date_of_birth")

    @post_load
    def _to_date(self, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        if "date_of_birth" not in data:
            data["date_of_birth"] = date(data["year"], data["month"], data["day"])
        return {"date_of_birth": data["date_of_birth"]}


class LinkRequestFormSchema(BaseSchema):
    """The patient's one-click confirmation: only the delivery choice travels with it."""

    delivery = DELIVERY


class StaffRequestFormSchema(BaseSchema):
    """A refill asked for by phone or at the counter, entered by staff."""

    delivery = DELIVERY
    note = NOTE


class DeclineSchema(BaseSchema):
    reason = REASON


class RefillRequestInSchema(BaseSchema):
    """POST /api/v1/refill-requests: a signed link token and date of birth (patient), or a prescription (staff)."""

    token = TOKEN
    date_of_birth = PastDate()
    prescription_id = Id()
    delivery = DELIVERY
    note = NOTE

    @pre_load
    def _blank_is_missing(self, data: Any, **kwargs: Any) -> Any:
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if v not in ("", None)}
        return data


# ---- output ---------------------------------------------------------------------------------------


class EligibilitySchema(BaseSchema):
    ok = fields.Boolean()
    code = fields.String(metadata={"description": "ok, inactive, in_progress, already_requested, expired, no_refills"})
    message = fields.String()
    needs_renewal = fields.Boolean()


class DeliveryOptionSchema(BaseSchema):
    method = fields.Enum(DeliveryMethod, by_value=True)
    total_cents = fields.Integer()
    shipping_cents = fields.Integer()
    on = fields.Date(metadata={"description": "Ready for pick-up, or the day the parcel arrives"})
    available = fields.Boolean()


class RefillSummarySchema(BaseSchema):
    """What the next fill will be, when, and what it costs (the patient page, as JSON)."""

    product = fields.String()
    directions = fields.String(attribute="dose_text")
    next_step = fields.String(allow_none=True)
    quantity = fields.String(attribute="quantity_text")
    days_supply = fields.Integer(attribute="fill_days")
    days_left = fields.Integer(allow_none=True)
    run_out = fields.Date(allow_none=True)
    refills_left = fields.Integer()
    eligibility = fields.Nested(EligibilitySchema)
    delivery = fields.Enum(DeliveryMethod, by_value=True)
    price_cents = fields.Integer()
    shipping_cents = fields.Integer()
    total_cents = fields.Integer()
    lead_time_business_days = fields.Integer(attribute="lead_time_days")
    ready_on = fields.Date()
    arrives_on = fields.Date(allow_none=True)
    options = fields.List(fields.Nested(DeliveryOptionSchema))


class RefillRequestSchema(BaseSchema):
    id = fields.Integer()
    prescription_id = fields.Integer()
    patient_id = fields.Integer()
    state = fields.Enum(RefillRequestState, by_value=True)
    source = fields.Enum(RequestSource, by_value=True)
    delivery_method = fields.Enum(DeliveryMethod, by_value=True)
    requested_at = fields.DateTime()
    decided_at = fields.DateTime(allow_none=True)
    decline_reason = fields.String(allow_none=True)
    order_id = fields.Integer(allow_none=True)
    renewal_id = fields.Integer(allow_none=True)
    note = fields.String(allow_none=True)


class RequestResultSchema(BaseSchema):
    """The request (new or the one already open) and, for a patient, what it will bring."""

    created = fields.Boolean()
    request = fields.Nested(RefillRequestSchema)
    summary = fields.Nested(RefillSummarySchema, allow_none=True)


class QueueItemSchema(BaseSchema):
    request = fields.Nested(RefillRequestSchema)
    rx_number = fields.String(attribute="rx.rx_number")
    patient_name = fields.String(attribute="patient.full_name")
    refills_left = fields.Integer()
    eligibility = fields.Nested(EligibilitySchema)
    earliest_dispense_date = fields.Date(attribute="earliest_dispense", allow_none=True)


class ApprovalSchema(BaseSchema):
    request_id = fields.Integer()
    order_id = fields.Integer()
    fill_number = fields.Integer()
    earliest_dispense_date = fields.Date(allow_none=True)
    price_cents = fields.Integer()
    shipping_cents = fields.Integer()


class RenewalSchema(BaseSchema):
    id = fields.Integer()
    prescription_id = fields.Integer()
    prescriber_id = fields.Integer()
    state = fields.Enum(RenewalState, by_value=True)
    reason = fields.String()
    created_at = fields.DateTime()
    sent_at = fields.DateTime(allow_none=True)
    new_prescription_id = fields.Integer(allow_none=True)
