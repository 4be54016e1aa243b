"""The prescriber's one question on a renewal link: their NPI."""
from __future__ import annotations

from marshmallow import validate

from pharmacy.core.schemas import BaseSchema, TrimmedString


class NpiFormSchema(BaseSchema):
    npi = TrimmedString(required=True, validate=validate.Regexp(r"^[0-9]{10}$", error="Enter the 10 digits of your NPI."))
