"""JSON API for prescribers and prescriptions: intake (screened at once), alerts and overrides, hold,
resume, discontinue and replace. Same services and schemas as the dashboard."""
from __future__ import annotations

from typing import Any

from flask_smorest import Blueprint
from marshmallow import fields, validate

from pharmacy.core.auth import api_auth, current_actor
from pharmacy.core.context import today
from pharmacy.core.schemas import BaseSchema
from pharmacy.prescriptions import rules, services
from pharmacy.prescriptions.rules import Form
from pharmacy.prescriptions.schemas import (
    AdoptSchema,
    AlertOutSchema,
    PrescriberInSchema,
    PrescriberOutSchema,
    PrescriptionInSchema,
    PrescriptionOutSchema,
    ReasonSchema,
)
from pharmacy.supply.schemas import SupplyOutSchema, supply_dict
from pharmacy.workflows import prescription_changes as changes

blp = Blueprint("prescriptions-api", __name__, url_prefix="/api/v1",
                description="Prescribers and prescriptions; every prescription is safety-screened when it is "
                            "written and again at every fill.")

ID = "int(max=2147483647)"


class PrescriptionCreateSchema(PrescriptionInSchema):
    form = fields.Enum(Form, by_value=True, load_default=None, allow_none=True,
                       metadata={"description": "Optional: must match the formula's form when given"})


class PrescriptionReplaceSchema(PrescriptionCreateSchema):
    """A replacement is for the same patient: patient_id may be left out (if given it must match)."""

    patient_id = fields.Integer(load_default=None, allow_none=True, validate=validate.Range(min=1, max=2**31 - 1))


class AlertDetailSchema(AlertOutSchema):
    resolved_by = fields.String(allow_none=True, metadata={"description": "Who overrode or acknowledged it"})
    can_override = fields.Boolean(metadata={"description": "A pharmacist may override (stop) or acknowledge it"})
    blocks = fields.Boolean(metadata={"description": "It stops verification and dispensing while unresolved"})


class OrderBriefSchema(BaseSchema):
    id = fields.Integer()
    fill_number = fields.Integer()
    state = fields.String()
    days_supply = fields.Integer()
    dispensed_on = fields.Date(allow_none=True)


class PrescriptionDetailSchema(PrescriptionOutSchema):
    product = fields.String()
    created_at = fields.DateTime()
    alerts = fields.List(fields.Nested(AlertDetailSchema))
    refills_used = fields.Integer()
    refills_left = fields.Integer()
    supply = fields.Nested(SupplyOutSchema)
    blocked = fields.Boolean(metadata={"description": "A safety stop is unresolved: no fill can be made"})
    can_start_fill = fields.Boolean()
    fill_note = fields.String(allow_none=True)
    orders = fields.List(fields.Nested(OrderBriefSchema))
    replaced_by = fields.List(fields.Integer())
    titration_chart = fields.List(fields.List(fields.String()),
                                  metadata={"description": "Dated rows: [dates, amount each day, dose]"})


def _alert(a: Any) -> dict[str, Any]:
    return {
        "id": a.id, "code": a.code, "severity": a.severity, "message": a.message, "order_id": a.order_id,
        "resolved": a.resolved, "resolved_at": a.resolved_at, "resolution_reason": a.resolution_reason,
        "resolved_by": a.resolved_by.full_name if a.resolved_by else None,
        "can_override": rules.can_override(a.severity), "blocks": a.severity != rules.Severity.WARNING,
    }


def _detail(view: services.PrescriptionView) -> dict[str, Any]:
    rx = view.rx
    out = {name: getattr(rx, name) for name in PrescriptionOutSchema().fields}
    out.update(
        product=view.product, created_at=rx.created_at, alerts=[_alert(a) for a in view.alerts],
        refills_used=view.refills_used, refills_left=view.refills_left, can_start_fill=view.can_start_fill,
        supply=supply_dict(view.supply, today()), blocked=view.blocked,
        fill_note=view.fill_note, replaced_by=[r.id for r in view.replaced_by],
        orders=[{"id": o.id, "fill_number": o.fill_number, "state": o.state.value, "days_supply": o.days_supply,
                 "dispensed_on": o.dispensed_on} for o in view.orders],
        titration_chart=[list(row) for row in rules.titration_chart_rows(view.schedule, rx.formula.form)]
        if view.schedule else [],
    )
    return out


@blp.route("/prescribers", methods=["GET"])
@api_auth()
@blp.response(200, PrescriberOutSchema(many=True))
def list_prescribers() -> Any:
    """List prescribers by name."""
    return services.list_prescribers(current_actor())


@blp.route("/prescribers", methods=["POST"])
@api_auth()
@blp.arguments(PrescriberInSchema)
@blp.response(201, PrescriberOutSchema)
def create_prescriber(data: dict[str, Any]) -> Any:
    """Add a prescriber (the NPI's check digit is verified)."""
    return services.create_prescriber(current_actor(), data)


@blp.route("/prescriptions", methods=["POST"])
@api_auth()
@blp.arguments(PrescriptionCreateSchema)
@blp.response(201, PrescriptionDetailSchema)
def create_prescription(data: dict[str, Any]) -> Any:
    """Enter a prescription: it is checked against the dose rules, stored and screened; the alerts come back."""
    return _detail(services.view_of(services.create_prescription(current_actor(), data)))


@blp.route(f"/prescriptions/<{ID}:rx_id>", methods=["GET"])
@api_auth()
@blp.response(200, PrescriptionDetailSchema)
def get_prescription(rx_id: int) -> Any:
    """Get a prescription with its alerts, fills and refills left."""
    return _detail(services.prescription_view(current_actor(), rx_id))


@blp.route(f"/prescriptions/<{ID}:rx_id>/alerts/<{ID}:alert_id>/override", methods=["POST"])
@api_auth()
@blp.arguments(ReasonSchema)
@blp.response(200, AlertDetailSchema)
def override_alert(data: dict[str, Any], rx_id: int, alert_id: int) -> Any:
    """Override a stop or acknowledge a warning (a pharmacist, with a reason); hard stops cannot be overridden."""
    return _alert(services.resolve_alert(current_actor(), alert_id, data["reason"], prescription_id=rx_id))


@blp.route(f"/prescriptions/<{ID}:rx_id>/hold", methods=["POST"])
@api_auth()
@blp.arguments(ReasonSchema)
@blp.response(200, PrescriptionDetailSchema)
def hold(data: dict[str, Any], rx_id: int) -> Any:
    """Put a prescription on hold (no reminders, no new fills) with a reason."""
    return _detail(services.view_of(changes.hold(current_actor(), rx_id, data["reason"])))


@blp.route(f"/prescriptions/<{ID}:rx_id>/resume", methods=["POST"])
@api_auth()
@blp.response(200, PrescriptionDetailSchema)
def resume(rx_id: int) -> Any:
    """Resume a prescription that is on hold."""
    return _detail(services.view_of(changes.resume(current_actor(), rx_id)))


@blp.route(f"/prescriptions/<{ID}:rx_id>/replaces", methods=["POST"])
@api_auth()
@blp.arguments(AdoptSchema)
@blp.response(200, PrescriptionDetailSchema)
@blp.alt_response(409, description="The other one is closed, or this one was dispensed already (the message says)")
def adopt(data: dict[str, Any], rx_id: int) -> Any:
    """Mark this prescription (not yet dispensed) as the replacement of another current one of the patient — a
    renewal or dose change that arrived as a new prescription: the old one is closed as replaced and its supply
    carried over, as with "replace"."""
    return _detail(services.view_of(changes.adopt(current_actor(), rx_id, data["old_prescription_id"])))


@blp.route(f"/prescriptions/<{ID}:rx_id>/discontinue", methods=["POST"])
@api_auth()
@blp.arguments(ReasonSchema)
@blp.response(200, PrescriptionDetailSchema)
def discontinue(data: dict[str, Any], rx_id: int) -> Any:
    """Discontinue a prescription with a reason: its orders not yet dispensed are cancelled."""
    return _detail(services.view_of(changes.discontinue(current_actor(), rx_id, data["reason"])))


@blp.route(f"/prescriptions/<{ID}:rx_id>/replace", methods=["POST"])
@api_auth()
@blp.arguments(PrescriptionReplaceSchema)
@blp.response(201, PrescriptionDetailSchema)
def replace(data: dict[str, Any], rx_id: int) -> Any:
    """Replace a prescription (a dose change or a renewal): the new one is linked to the old, which closes."""
    return _detail(services.view_of(changes.replace(current_actor(), rx_id, data)))
