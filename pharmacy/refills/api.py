"""JSON API for refill requests: patients with their signed link and date of birth, staff with a bearer token."""
from __future__ import annotations

from typing import Any

from flask import Response, g
from flask_smorest import Blueprint

from pharmacy.core.auth import api_auth, current_actor
from pharmacy.core.error_handlers import json_error
from pharmacy.core.errors import LinkInvalid, NotAuthenticated, ValidationFailed
from pharmacy.extensions import limiter
from pharmacy.refills import queue as refill_queue
from pharmacy.refills import services
from pharmacy.refills.rules import RequestSource
from pharmacy.refills.schemas import (
    ApprovalSchema,
    DeclineSchema,
    QueueItemSchema,
    RefillRequestInSchema,
    RefillRequestSchema,
    RenewalSchema,
    RequestResultSchema,
)
from pharmacy.workflows import refill_requests as refill_flow
from pharmacy.workflows import renewals as renewal_flow

blp = Blueprint("refill-requests", __name__, url_prefix="/api/v1/refill-requests",
                description="Refill requests: asked for by patients (signed link) or staff, decided by pharmacists.")


@blp.errorhandler(LinkInvalid)
def _link_problem(exc: LinkInvalid) -> Response:
    """A bad link answers with its reason as the code: expired, invalid, used or locked."""
    reason = exc.reason if exc.reason in services.LINK_HTTP_STATUS else "invalid"
    return json_error(services.LINK_HTTP_STATUS[reason], reason, exc.message)


def _staff_caller() -> bool:
    """Staff integrations are not held to the per-address limit that guards the date-of-birth check."""
    actor = g.get("actor")
    return actor is not None and actor.is_staff


@blp.route("", methods=["POST"])
@api_auth(optional=True)
@limiter.limit("10 per minute", exempt_when=_staff_caller)
@blp.arguments(RefillRequestInSchema)
@blp.response(201, RequestResultSchema, description="A new request was opened")
@blp.alt_response(200, schema=RequestResultSchema, description="The request already open (a repeated call)")
def create(data: dict[str, Any]) -> Any:
    """Ask for a refill: link token + date of birth, or a prescription with staff credentials (idempotent)."""
    actor = current_actor()
    if actor.is_staff:
        if "prescription_id" not in data:
            raise ValidationFailed("Say which prescription.", fields={"prescription_id": "Required."})
        outcome = refill_flow.request(actor, data["prescription_id"], source=RequestSource.API,
                                          delivery=data["delivery"], note=data["note"])
        result = {"created": outcome.created, "request": outcome.request, "summary": None}
    else:
        if "token" not in data:
            raise NotAuthenticated("Send the refill link's token with the date of birth, "
                                   "or a staff API token (Authorization: Bearer <token>).")
        if "date_of_birth" not in data:
            raise ValidationFailed("The date of birth is required with a refill link.",
                                   fields={"date_of_birth": "Required."})
        outcome, summary = refill_flow.request_by_link(data["token"], data["date_of_birth"],
                                                    delivery=data["delivery"])
        result = {"created": outcome.created, "request": outcome.request, "summary": summary}
    return result, (201 if outcome.created else 200)


@blp.route("", methods=["GET"])
@api_auth()
@blp.response(200, QueueItemSchema(many=True))
@blp.paginate(page=1, page_size=refill_queue.QUEUE_PAGE, max_page_size=200)
def queue(pagination_parameters: Any) -> Any:
    """The open refill requests — patients already out of medicine first, then the oldest — with eligibility and
    the earliest dispense date; `?page=2&page_size=50`, the total in the X-Pagination header."""
    pagination_parameters.item_count = refill_queue.count_open()
    return refill_queue.queue(current_actor(), page=pagination_parameters.page,
                              per_page=pagination_parameters.page_size)


@blp.route("/<int:request_id>/approve", methods=["POST"])
@api_auth()
@blp.response(200, ApprovalSchema)
def approve(request_id: int) -> Any:
    """Approve an open request: the next fill's order is created."""
    order = refill_flow.approve(current_actor(), request_id)
    return {"request_id": request_id, "order_id": order.id, "fill_number": order.fill_number,
            "earliest_dispense_date": order.earliest_dispense_date, "price_cents": order.price_cents,
            "shipping_cents": order.shipping_cents}


@blp.route("/<int:request_id>/decline", methods=["POST"])
@api_auth()
@blp.arguments(DeclineSchema)
@blp.response(200, RefillRequestSchema)
def decline(data: dict[str, Any], request_id: int) -> Any:
    """Decline an open request with the reason the patient will read."""
    return refill_flow.decline(current_actor(), request_id, data["reason"])


@blp.route("/<int:request_id>/renewal", methods=["POST"])
@api_auth()
@blp.response(200, RenewalSchema)
def renewal(request_id: int) -> Any:
    """Ask the prescriber for a renewal for this request's prescription."""
    return renewal_flow.ask_prescriber(current_actor(), request_id=request_id)
