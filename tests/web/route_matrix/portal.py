"""Routes of the patient portal (/my/…), its calendar feed and the text-message webhooks.

The "other_patient" visitor is signed in to the portal as *another* patient (open_patient_session below): every
page answers with that patient's own records, and any id of the victim's (a prescription, a payment) is "missing".
Staff and anonymous visitors have no portal session: they are sent to the portal's sign-in page ("ok": a redirect
that is not the staff sign-in) and see nothing. Unsigned webhooks are refused (403) whoever sends them.
"""
from __future__ import annotations

import secrets
from typing import Any

from flask import Flask
from flask.testing import FlaskClient

from tests.web.route_matrix import PRINCIPALS, Route, staff_page

NO_SUCH = 999999


def open_patient_session(app: Flask, client: FlaskClient, world: dict[str, Any]) -> None:
    """Sign world["other"] in to the portal in this client, and give the victim a payment to probe."""
    from itsdangerous import URLSafeSerializer

    from pharmacy.billing import services as billing
    from pharmacy.core.context import now
    from pharmacy.extensions import db
    from pharmacy.portal.models import PortalSession
    from pharmacy.portal.rules import token_hash
    from tests.factories import actor

    token = secrets.token_urlsafe(32)
    with app.test_request_context("/"):
        db.session.add(PortalSession(token_hash=token_hash(token), patient_id=world["other"].id, created_at=now(),
                                     last_seen_at=now()))
        pay = billing.record_payment(actor(world["staff"]["technician"]), patient_id=world["patient"].id,
                                     amount_cents=1000, method="cash")
        world["victim_payment"] = pay.payment.id
        db.session.commit()
    value = URLSafeSerializer(app.config["SECRET_KEY"], salt="ldn.portal.cookie").dumps(
        {"b": "matrix", "s": token})
    client.set_cookie("portal", value, path="/my")


def _mine(endpoint: str, path: Any, method: str = "GET", data: Any = None, other: str = "ok") -> Route:
    """A signed-in page: the other patient gets their own (or "missing" for the victim's ids); the rest are
    redirected to the portal's sign-in page."""
    expect = dict.fromkeys(PRINCIPALS, "ok")
    expect["other_patient"] = other
    return Route(endpoint, method, path, expect, data=data)


def _all(endpoint: str, path: Any, outcome: str, method: str = "GET", data: Any = None) -> Route:
    return Route(endpoint, method, path, dict.fromkeys(PRINCIPALS, outcome), data=data)


ROUTES: list[Route] = [
    _mine("portal.home", lambda w: "/my/"),
    _mine("portal.extend", lambda w: "/my/session/extend", method="POST"),
    _mine("portal.refill", lambda w: f"/my/refill/{w['rx'].id}", other="missing"),
    _mine("portal.refill", lambda w: f"/my/refill/{w['rx'].id}", method="POST", data=lambda w: {"delivery": "pickup"},
          other="missing"),
    _mine("portal.auto_refill", lambda w: f"/my/auto-refill/{w['rx'].id}", method="POST",
          data=lambda w: {"action": "join"}, other="missing"),
    _all("portal.skip_link", lambda w: "/my/auto-refill/skip/not-a-real-link", "invalid"),
    _all("portal.skip_link", lambda w: "/my/auto-refill/skip/not-a-real-link", "invalid", method="POST"),
    _mine("portal.orders", lambda w: "/my/orders"),
    _mine("portal.money", lambda w: "/my/money"),
    _mine("portal.receipt", lambda w: f"/my/receipts/{w.get('victim_payment', NO_SUCH)}.pdf", other="missing"),
    _mine("portal.statement", lambda w: "/my/statements/2026.pdf"),
    _mine("portal.reminders", lambda w: "/my/reminders"),
    _mine("portal.reminders", lambda w: "/my/reminders", method="POST", data=lambda w: {"reminders": "on"}),
    _mine("portal.skip_next", lambda w: "/my/reminders/skip-next", method="POST"),
    _mine("portal.number", lambda w: "/my/reminders/number", method="POST", data=lambda w: {"phone": "217 555 0199"}),
    _mine("portal.number_confirm", lambda w: "/my/reminders/number/confirm", method="POST",
          data=lambda w: {"code": "123456", "consent": "yes"}),
    _mine("portal.stop_texts", lambda w: "/my/reminders/stop-texts", method="POST"),
    _mine("portal.delivery", lambda w: "/my/delivery"),
    _mine("portal.delivery", lambda w: "/my/delivery", method="POST", data=lambda w: {"delivery": "pickup"}),
    _mine("portal.side_effects", lambda w: "/my/side-effects"),
    _mine("portal.side_effects", lambda w: "/my/side-effects", method="POST", data=lambda w: {"effect": "headache"}),
    _mine("portal.calendar", lambda w: "/my/calendar"),
    _mine("portal.calendar_download", lambda w: "/my/calendar.ics"),
    _mine("portal.calendar_feed_new", lambda w: "/my/calendar/feed", method="POST"),
    _mine("portal.calendar_feed_revoke", lambda w: "/my/calendar/feed/revoke", method="POST"),
    # Last: signing out, and starting a new sign-in, end this browser's session.
    _mine("portal.sign_out", lambda w: "/my/sign-out", method="POST"),
    _all("portal.sign_in", lambda w: "/my/sign-in", "ok"),
    _all("portal.sign_in", lambda w: "/my/sign-in", "ok", method="POST", data=lambda w: {"contact": "x@example.com"}),
    _all("portal.enter_code", lambda w: "/my/sign-in/code", "ok"),
    _all("portal.enter_code", lambda w: "/my/sign-in/code", "ok", method="POST",
         data=lambda w: {"code": "123456", "month": 1, "day": 2, "year": 1950}),
    _all("portal_feed.feed", lambda w: "/calendar/not-a-real-feed.ics", "missing"),
    _all("sms.inbound", lambda w: "/sms/inbound", "forbidden", method="POST",
         data=lambda w: {"From": "+12175550101", "Body": "REFILL", "MessageSid": "SMforged"}),
    _all("sms.status", lambda w: "/sms/status", "forbidden", method="POST",
         data=lambda w: {"MessageSid": "SMforged", "MessageStatus": "delivered"}),
    # Auto-refill enrolled by the pharmacy with the patient's recorded consent: pharmacists only.
    staff_page("autorefill.enrol", lambda w: f"/prescriptions/{w['rx'].id}/auto-refill", method="POST",
               data=lambda w: {"consent": "by phone, spoke to the patient"}, technician="forbidden", admin="forbidden"),
    staff_page("autorefill.leave", lambda w: f"/prescriptions/{w['rx'].id}/auto-refill/end", method="POST",
               technician="forbidden", admin="forbidden"),
    Route("patients.side_effect_reviewed", "POST", lambda w: f"/patients/side-effects/{NO_SUCH}/reviewed",
          {"anonymous": "login", "other_patient": "login", "technician": "missing", "pharmacist": "missing",
           "admin": "forbidden"}),
]
