"""JSON API for patients (bearer token; the same services and schemas as the dashboard)."""
from __future__ import annotations

from typing import Any

from flask_smorest import Blueprint
from marshmallow import fields, validate

from pharmacy.core.auth import api_auth, current_actor
from pharmacy.core.schemas import BaseSchema
from pharmacy.patients import services
from pharmacy.patients.schemas import PatientInSchema, PatientOutSchema
from pharmacy.workflows import patient_changes

blp = Blueprint("patients-api", __name__, url_prefix="/api/v1/patients",
                description="Patients: contact details, conditions and medications (screened on every change).")

ID = "int(max=2147483647)"


class PatientPageArgsSchema(BaseSchema):
    page = fields.Integer(load_default=1, validate=validate.Range(min=1, max=1_000_000))
    per_page = fields.Integer(load_default=services.PAGE_SIZE, validate=validate.Range(min=1, max=services.MAX_PAGE_SIZE))


class PatientPatchSchema(PatientInSchema):
    """PATCH: only the fields sent are changed (none is required, no defaults are filled in)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["partial"] = True
        super().__init__(*args, **kwargs)


class PatientDetailSchema(PatientOutSchema):
    notes = fields.String(allow_none=True)
    created_at = fields.DateTime()
    updated_at = fields.DateTime()


class PatientPageSchema(BaseSchema):
    items = fields.List(fields.Nested(PatientOutSchema))
    page = fields.Integer()
    per_page = fields.Integer()
    has_next = fields.Boolean()


@blp.route("", methods=["GET"])
@api_auth()
@blp.arguments(PatientPageArgsSchema, location="query")
@blp.response(200, PatientPageSchema)
def list_patients(args: dict[str, Any]) -> Any:
    """List patients by name, a page at a time."""
    page = services.list_patients(current_actor(), page=args["page"], per_page=args["per_page"])
    return {"items": page.items, "page": page.page, "per_page": args["per_page"], "has_next": page.has_next}


@blp.route("", methods=["POST"])
@api_auth()
@blp.arguments(PatientInSchema)
@blp.response(201, PatientDetailSchema)
def create_patient(data: dict[str, Any]) -> Any:
    """Add a patient."""
    return services.create_patient(current_actor(), data)


@blp.route(f"/<{ID}:patient_id>", methods=["GET"])
@api_auth()
@blp.response(200, PatientDetailSchema)
def get_patient(patient_id: int) -> Any:
    """Get one patient."""
    return services.view_patient(current_actor(), patient_id)


@blp.route(f"/<{ID}:patient_id>", methods=["PATCH"])
@api_auth()
@blp.arguments(PatientPatchSchema)
@blp.response(200, PatientDetailSchema)
def update_patient(data: dict[str, Any], patient_id: int) -> Any:
    """Change some of a patient's details; new conditions or medications re-screen every active prescription."""
    return patient_changes.update(current_actor(), patient_id, data)
