"""Review of auto-refill skip links and text replies over HTTP: each test is a defect a patient would hit."""
from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from pharmacy import create_app
from pharmacy.autorefill import services as autorefill
from pharmacy.extensions import db
from pharmacy.prescriptions.models import Prescription
from pharmacy.refills.models import RefillRequest
from pharmacy.refills.rules import RefillRequestState, RequestSource
from pharmacy.reminders import rendering
from pharmacy.reminders.models import OutboxMessage
from pharmacy.reminders.rules import MessageKind
from pharmacy.sms import services as sms
from pharmacy.workflows import refill_requests as refill_flow
from pharmacy.workflows.next_refill import next_refill
from tests import factories
from tests.reminder_helpers import auto_refill_asked, morning, texting_patient
from tests.twilio_server import ACCOUNT, FROM, TOKEN, TwilioServer

NUMBER = "+12175550101"


@pytest.fixture
def sms_app(app_config: dict, clock: Any) -> Iterator[Flask]:
    """The app as deployed with Twilio: its webhooks demand Twilio's signature for BASE_URL + the path."""
    config = {**app_config, "TWILIO_ACCOUNT_SID": ACCOUNT, "TWILIO_AUTH_TOKEN": TOKEN, "TWILIO_FROM_NUMBER": FROM,
              "TWILIO_API_BASE": "http://127.0.0.1:9"}
    app = create_app(config, clock=clock)
    yield app
    with app.app_context():
        db.session.remove()


def _inbound(client: FlaskClient, body: str, sid: str) -> Any:
    """A text from the patient's phone, as Twilio posts it (signed)."""
    params = {"MessageSid": sid, "From": NUMBER, "To": FROM, "Body": body, "AccountSid": ACCOUNT}
    signature = TwilioServer.sign("http://pharmacy.test/sms/inbound", params)
    return client.post("/sms/inbound", data=params, headers={"X-Twilio-Signature": signature})


@pytest.mark.parametrize("body", ["Opt out", "Please stop texting me", "I want to unsubscribe"])
def test_a_reply_asking_to_stop_in_plain_words_stops_the_texts(sms_app: Flask, staff: dict, clock: Any,
                                                                body: str) -> None:
    """A patient who takes texts replies "Opt out" (or "Please stop texting me", "I want to unsubscribe"). Only a
    text whose *first* word is a keyword counts (sms/rules.keyword), so the reply is read as "not understood": the
    patient is answered "we could not read that. Reply REFILL to order your refill …", consent stays on and the next
    reminder is texted to them. "Opt out" is even one of the carriers' own words (OPTOUT), split by a space. The FCC's
    TCPA revocation rule (2024 order, 47 CFR 64.1200(a)(10)) treats a reply using "stop", "quit", "end", "revoke",
    "opt out", "cancel" or "unsubscribe" as a revocation of consent, and domain.md says "STOP/UNSUBSCRIBE/… takes it
    back at once and cancels every text still waiting for that number". Correct: such a reply withdraws consent at
    once (no further texts; no "reply REFILL" sales line in answer)."""
    with sms_app.test_request_context("/"):
        patient_id = texting_patient(staff, NUMBER)["patient"].id

    client = sms_app.test_client()
    response = _inbound(client, body, "SMoptout0001")
    assert response.status_code == 200
    with sms_app.app_context():
        pref = sms.preference(patient_id)
        assert pref is not None
        assert not pref.sms_consent, (body, response.get_data(as_text=True))


def _enrolled_and_asked(staff: dict, clock: Any) -> dict[str, Any]:
    """A patient on auto-refill whose first automatic refill was asked for on its order-by date; the skip link the
    notice carries (as rendered for the email)."""
    w, _request = auto_refill_asked(staff, clock)
    rx_id = w["rx"].id
    notice = db.session.execute(sa.select(OutboxMessage).where(
        OutboxMessage.kind == MessageKind.AUTO_REFILL_REQUESTED)).scalar_one()
    found = re.search(r"http://pharmacy\.test(/my/auto-refill/skip/[^\s\"<]+)", rendering.render(notice).text)
    assert found
    return {"w": w, "rx_id": rx_id, "skip_path": found.group(1)}


def test_an_old_skip_link_does_not_skip_the_next_months_refill(app: Flask, client: FlaskClient, staff: dict,
                                                               clock: Any) -> None:
    """The automatic refill's notice says "Not needed this time? Skip it" and its page "you can skip this refill".
    The patient lets it go ahead: the pharmacy approves it and hands it over. Three weeks later (the link works for
    30 days) the patient opens that email again and presses the button — and is told "The next automatic refill is
    skipped": the link is scoped to the prescription, not to the refill it announced (autorefill/services.
    open_skip_link, skip_next take whatever supply is current), so it silently takes *next* month's turn. On that
    supply's order-by date nothing is asked for, and a patient who trusts auto-refill runs out. Correct: a skip link
    skips the refill it was sent about; once that refill was made, it says so and skips nothing."""
    with app.test_request_context("/"):
        d = _enrolled_and_asked(staff, clock)
        w, rx_id = d["w"], d["rx_id"]
        req = db.session.execute(sa.select(RefillRequest).where(RefillRequest.source == RequestSource.AUTO)
                                 ).scalar_one()
        order = refill_flow.approve(w["pharmacist"], req.id)
        db.session.commit()
        clock.advance(timedelta(days=2))
        factories.run_order_to(w, order.id, "dispensed")
        db.session.commit()

    clock.advance(timedelta(days=19))
    opened = client.get(d["skip_path"])  # the page says so before offering a button that can do nothing
    assert opened.status_code == 409 and "already being made" in opened.get_data(as_text=True)
    page = client.post(d["skip_path"]).get_data(as_text=True)
    assert "next automatic refill is skipped" not in page

    with app.test_request_context("/"):
        order_by = next_refill(db.session.get(Prescription, rx_id)).order_by
        assert order_by is not None
        clock.set(morning(order_by))
        autorefill.run_due()
        db.session.commit()
        asked = db.session.execute(sa.select(RefillRequest).where(
            RefillRequest.source == RequestSource.AUTO, RefillRequest.state == RefillRequestState.OPEN)).scalars().all()
        assert len(asked) == 1
