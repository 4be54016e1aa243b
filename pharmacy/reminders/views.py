"""The outbox pages (staff) and the email-preferences pages (patients, from the link in an email)."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from flask import Blueprint, flash, make_response, redirect, render_template, request, url_for

from pharmacy.core.auth import current_actor, staff_required
from pharmacy.core.context import settings
from pharmacy.core.errors import ValidationFailed
from pharmacy.core.security import CSP
from pharmacy.extensions import csrf, limiter
from pharmacy.reminders import services

bp = Blueprint("reminders", __name__)

STATE_BADGES = {"failed": "stop", "sending": "warn", "pending": "", "sent": "ok", "cancelled": ""}


def _local(at: datetime | None) -> str:
    """"Nov 25, 2026 10:00 AM": instants as the pharmacy reads them (the one format every page uses)."""
    if at is None:
        return ""
    local = at.astimezone(settings().timezone)
    return local.strftime("%b %-d, %Y %-I:%M %p")


def _page_globals() -> dict[str, Any]:
    return {"labels": services.KIND_LABELS, "states": services.STATE_ORDER, "badges": STATE_BADGES,
            "local": _local}


@bp.get("/outbox")
@staff_required
def outbox() -> Any:
    page = services.outbox_page(current_actor(), state=request.args.get("state") or None,
                                page=request.args.get("page", 1, type=int))
    return render_template("reminders/outbox.html", page=page, **_page_globals())


@bp.get("/outbox/<int:message_id>")
@staff_required
def message(message_id: int) -> Any:
    view = services.message_view(current_actor(), message_id)
    response = make_response(render_template("reminders/message.html", view=view, **_page_globals()))
    if view.style_sources:
        # The email is shown in <iframe sandbox srcdoc>, which inherits this policy: allow exactly
        # the email's own stylesheet (by hash), nothing else inline, and still no script at all.
        response.headers["Content-Security-Policy"] = CSP.replace(
            "style-src 'self'", "style-src 'self' " + " ".join(view.style_sources), 1)
    return response


@bp.post("/outbox/<int:message_id>/retry")
@staff_required
def retry(message_id: int) -> Any:
    row = services.retry(current_actor(), message_id)
    flash(f"The {services.noun(row)} is queued again; it goes out with the next delivery run.", "success")
    return redirect(url_for("reminders.message", message_id=message_id))


@bp.post("/outbox/<int:message_id>/cancel")
@staff_required
def cancel(message_id: int) -> Any:
    row = services.cancel(current_actor(), message_id)
    flash(f"The {services.noun(row)} was cancelled; it will not be sent.", "success")
    return redirect(url_for("reminders.message", message_id=message_id))


@bp.route("/preferences/<token>", methods=["GET", "POST"])
@limiter.limit("30 per minute")
def preferences(token: str) -> Any:
    """The patient's page: turn reminder emails off or on. Shows nothing but the pharmacy's name."""
    claims = services.open_preferences(token)
    done = None
    if request.method == "POST":
        choice = request.form.get("reminders", "")
        if choice not in ("on", "off"):
            raise ValidationFailed("Choose whether to receive reminder emails.", fields={"reminders": "Choose."})
        services.set_reminder_preference(claims.patient_id, choice == "on", via="preferences page")
        done = choice
    return render_template("reminders/preferences.html", token=token, done=done,
                           reminders_on=services.reminders_on(claims.patient_id))


@bp.post("/preferences/<token>/unsubscribe")
@limiter.limit("30 per minute")
def unsubscribe(token: str) -> Any:
    """RFC 8058 one-click unsubscribe: a mail client POSTs `List-Unsubscribe=One-Click` here, with no cookie."""
    claims = services.open_preferences(token)
    services.set_reminder_preference(claims.patient_id, False, via="one-click unsubscribe")
    return render_template("reminders/preferences.html", token=token, done="off", reminders_on=False)


# A mail provider's one-click POST carries no session and no CSRF token; the signed link is the proof.
csrf.exempt(unsubscribe)
