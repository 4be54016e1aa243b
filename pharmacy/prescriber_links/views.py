"""The prescriber's renewal page (/renewal-request/<token>): asks for the NPI, then shows the request."""
from __future__ import annotations

from typing import Any

from flask import Blueprint, render_template, request

from pharmacy.core.context import settings, today
from pharmacy.core.errors import LinkInvalid, ValidationFailed
from pharmacy.core.forms import form_values, load
from pharmacy.extensions import limiter
from pharmacy.prescriber_links import services
from pharmacy.prescriber_links.schemas import NpiFormSchema

bp = Blueprint("prescriber_links", __name__)


@bp.errorhandler(LinkInvalid)
def _link_problem(exc: LinkInvalid) -> Any:
    """Expired, closed, locked or tampered: say which and how to reach the pharmacy, show nothing else."""
    reason = exc.reason if exc.reason in services.HTTP_STATUS else "invalid"
    return render_template("prescriber_links/problem.html", reason=reason,
                           link_days=services.RENEWAL_LINK_DAYS), services.HTTP_STATUS[reason]


def _form(token: str, errors: dict[str, list[str]] | None = None, status: int = 200) -> Any:
    return render_template("prescriber_links/confirm.html", token=token, errors=errors or {}), status


@bp.get("/renewal-request/<token>")
def confirm_form(token: str) -> Any:
    """The first page asks only for the prescriber's NPI."""
    services.open_link(token)
    return _form(token)


@bp.post("/renewal-request/<token>")
@limiter.limit("10 per minute")
def show(token: str) -> Any:
    """The renewal request, once the NPI matches (a wrong one counts against the link)."""
    data, errors = load(NpiFormSchema(), form_values(request.form))
    if data is None:
        services.open_link(token)  # a bad link says so before any form message does
        return _form(token, errors, 422)
    try:
        doc = services.confirm_prescriber(token, data["npi"])
    except ValidationFailed as exc:
        return _form(token, exc.fields, 422)
    cfg = settings()
    return render_template("prescriber_links/document.html", doc=doc, pharmacy_address=cfg.pharmacy_address,
                           pharmacy_email=cfg.pharmacy_email, pharmacy_npi=cfg.pharmacy_npi, printed_on=today())
