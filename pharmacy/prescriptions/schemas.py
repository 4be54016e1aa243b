"""Prescriber and prescription input/output, shared by the intake forms and the API."""
from __future__ import annotations

from decimal import Decimal
from typing import Any

from marshmallow import ValidationError, fields, post_load, pre_load, validate, validates

from pharmacy.core.npi import npi_is_valid
from pharmacy.core.schemas import REASON, BaseSchema, BoundedDate, DecimalString, Id, PastDate, TrimmedString
from pharmacy.prescriptions.rules import DosingTime, RxStatus, Severity

DOSE = DecimalString(required=True, places=3, min_value=Decimal("0.001"), max_value=Decimal("100"))


class PrescriberInSchema(BaseSchema):
    first_name = TrimmedString(required=True, validate=validate.Length(min=1, max=80))
    last_name = TrimmedString(required=True, validate=validate.Length(min=1, max=80))
    credentials = TrimmedString(load_default=None, allow_none=True, validate=validate.Length(max=20))
    npi = TrimmedString(required=True)
    phone = TrimmedString(load_default=None, allow_none=True, validate=validate.Length(max=32))
    fax = TrimmedString(load_default=None, allow_none=True, validate=validate.Length(max=32))
    email = fields.Email(load_default=None, allow_none=True, validate=validate.Length(max=254))
    address = TrimmedString(load_default=None, allow_none=True, validate=validate.Length(max=240))

    @validates("npi")
    def _npi(self, value: str, **kwargs: Any) -> None:
        if not npi_is_valid(value):
            raise ValidationError("Not a valid NPI: 10 digits starting with 1 or 2, with a correct check digit.")


class PrescriberOutSchema(BaseSchema):
    id = fields.Integer()
    first_name = fields.String()
    last_name = fields.String()
    credentials = fields.String(allow_none=True)
    npi = fields.String()
    phone = fields.String(allow_none=True)
    fax = fields.String(allow_none=True)
    email = fields.String(allow_none=True)


class TitrationStepSchema(BaseSchema):
    dose_mg = DOSE
    days = fields.Integer(required=True, validate=validate.Range(min=1, max=180, error="Each step lasts 1–180 days."))


class PrescriptionInSchema(BaseSchema):
    patient_id = Id(required=True)
    prescriber_id = Id(required=True)
    formula_id = Id(required=True)
    dose_mg = DOSE
    titration = fields.List(fields.Nested(TitrationStepSchema), load_default=list, validate=validate.Length(max=12))
    dosing_time = fields.Enum(DosingTime, by_value=True, load_default=DosingTime.BEDTIME)
    quantity = DecimalString(load_default=None, allow_none=True, places=1, min_value=Decimal("0.1"),
                             max_value=Decimal("2000"))
    days_supply = fields.Integer(load_default=None, allow_none=True, validate=validate.Range(1, 366))
    refills_authorized = fields.Integer(load_default=0, allow_none=True, validate=validate.Range(0, 99))
    written_date = PastDate(required=True, future_error="The written date cannot be in the future.")
    expiry_date = BoundedDate(load_default=None, allow_none=True)
    directions = TrimmedString(load_default=None, allow_none=True, validate=validate.Length(min=5, max=1000))
    indication = TrimmedString(load_default="Multiple sclerosis", validate=validate.Length(min=2, max=120))
    indication_code = TrimmedString(
        load_default="G35", validate=validate.Regexp(r"^[A-TV-Z][0-9][0-9AB](\.?[0-9A-Z]{0,4})?$",
                                                     error="Use an ICD-10 code such as G35.")
    )

    @pre_load
    def _form_titration(self, data: Any, **kwargs: Any) -> Any:
        """The HTML form sends titration as parallel step_dose/step_days lists; the API sends objects."""
        if isinstance(data, dict) and ("step_dose" in data or "step_days" in data):
            data = dict(data)
            doses = data.pop("step_dose", []) or []
            days = data.pop("step_days", []) or []
            doses = doses if isinstance(doses, list) else [doses]
            days = days if isinstance(days, list) else [days]
            steps = []
            for i in range(max(len(doses), len(days))):
                dose = doses[i] if i < len(doses) else ""
                day = days[i] if i < len(days) else ""
                if str(dose).strip() or str(day).strip():
                    steps.append({"dose_mg": dose, "days": day})
            data["titration"] = steps
        return data

    @post_load
    def _missing_refills(self, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        if data.get("refills_authorized") is None:
            data["refills_authorized"] = 0  # a missing count means zero, never unlimited (docs/domain.md)
        return data


class ReasonSchema(BaseSchema):
    reason = REASON


class AdoptSchema(BaseSchema):
    """This prescription replaces another current one of the patient (a renewal entered as a new prescription)."""

    old_prescription_id = Id(required=True, metadata={"description": "The prescription this one replaces"})


class AlertOutSchema(BaseSchema):
    id = fields.Integer()
    code = fields.String()
    severity = fields.Enum(Severity, by_value=True)
    message = fields.String()
    order_id = fields.Integer(allow_none=True)
    resolved = fields.Boolean()
    resolved_at = fields.DateTime(allow_none=True)
    resolution_reason = fields.String(allow_none=True)


class PrescriptionOutSchema(BaseSchema):
    id = fields.Integer()
    rx_number = fields.String()
    patient_id = fields.Integer()
    prescriber_id = fields.Integer()
    formula_id = fields.Integer()
    dose_mg = DecimalString()
    titration = fields.Raw(allow_none=True)
    dosing_time = fields.Enum(DosingTime, by_value=True)
    quantity = DecimalString()
    days_supply = fields.Integer()
    refills_authorized = fields.Integer()
    written_date = fields.Date()
    expiry_date = fields.Date()
    directions = fields.String()
    indication = fields.String()
    indication_code = fields.String()
    status = fields.Enum(RxStatus, by_value=True)
    status_reason = fields.String(allow_none=True)
    replaces_id = fields.Integer(allow_none=True)
