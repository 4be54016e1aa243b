"""Twilio's webhooks: texts patients send us (/sms/inbound) and delivery reports (/sms/status).

Both demand Twilio's request signature (X-Twilio-Signature: an HMAC of the URL Twilio called and the posted
fields under the account's auth token): an unsigned or wrongly signed request gets 403 and changes nothing. The URL
checked is BASE_URL + the path, i.e. the address configured in Twilio's console, whatever proxies sit in between.
"""
from __future__ import annotations

from typing import Any

from flask import Blueprint, Flask, Response, abort, request
from twilio.request_validator import RequestValidator
from twilio.twiml.messaging_response import MessagingResponse

from pharmacy.core import audit
from pharmacy.core.actor import ANONYMOUS
from pharmacy.core.context import settings
from pharmacy.core.numbers import digits_only
from pharmacy.extensions import csrf
from pharmacy.reminders import services as reminder_services
from pharmacy.sms import delivery, services

bp = Blueprint("sms", __name__, url_prefix="/sms")
csrf.exempt(bp)  # Twilio signs its requests; it has no cookie and no CSRF token


def _signed() -> None:
    cfg = settings()
    signature = request.headers.get("X-Twilio-Signature", "")
    url = cfg.base_url + request.path + (f"?{request.query_string.decode()}" if request.query_string else "")
    valid = (cfg.twilio is not None and bool(signature)
             and RequestValidator(cfg.twilio.auth_token).validate(url, request.form.to_dict(flat=True), signature)
             and request.form.get("AccountSid") == cfg.twilio.account_sid)
    if not valid:
        audit.record(ANONYMOUS, "sms.webhook_refused", outcome="denied", details={"endpoint": request.endpoint},
                     survive_rollback=True)
        abort(403, "This request is not signed by our text-message provider.")


@bp.post("/inbound")
def inbound() -> Any:
    """A text from a patient: STOP, START, HELP or REFILL (anything else gets a short help reply)."""
    _signed()
    sid = request.form.get("MessageSid", "").strip()
    from_number = request.form.get("From", "").strip()
    if not sid or not from_number:
        abort(400, "MessageSid and From are required.")
    result = services.handle_inbound(sid, from_number, request.form.get("Body", ""))
    twiml = MessagingResponse()
    if result.reply:
        twiml.message(result.reply)
    return Response(str(twiml), mimetype="application/xml")


@bp.post("/status")
def status() -> Any:
    """A delivery report for a text we sent: queued, sent, delivered, undelivered, failed."""
    _signed()
    sid = request.form.get("MessageSid", "").strip()
    state = request.form.get("MessageStatus", "").strip()
    if not sid or not state:
        abort(400, "MessageSid and MessageStatus are required.")
    raw_code = request.form.get("ErrorCode", "").strip()
    services.handle_status(sid, state, int(raw_code) if digits_only(raw_code) else None)
    return Response(status=204)


def init_app(app: Flask) -> None:
    # The staff outbox page shows an unsent text as a text (its number and words), not as an email.
    reminder_services.CHANNEL_PREVIEWS["sms"] = delivery.preview
