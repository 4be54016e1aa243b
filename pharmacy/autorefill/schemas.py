"""The staff form that enrols a prescription in auto-refill: how the patient agreed, in the pharmacist's words."""
from __future__ import annotations

from marshmallow import validate

from pharmacy.core.schemas import BaseSchema, TrimmedString


class StaffEnrolForm(BaseSchema):
    consent = TrimmedString(
        required=True, validate=validate.Length(min=3, max=200, error="Between 3 and 200 characters."),
        error_messages={"required": "Say how and when the patient agreed (e.g. “by phone, 2 Dec, spoke to the patient”)."})
