"""The staff side of issue 19: a pharmacist enrols a prescription in auto-refill on the patient page with the
patient's recorded consent (and ends it); the outbox shows a text as a text — its number and words, never an email
preview, and never a working code."""
from __future__ import annotations

import re
from typing import Any

import pytest
import sqlalchemy as sa

from pharmacy.autorefill.models import Enrolment
from pharmacy.core.actor import Actor
from pharmacy.core.models import AuditEvent
from pharmacy.extensions import db
from pharmacy.portal import services as portal
from pharmacy.reminders.models import OutboxMessage
from pharmacy.reminders.rules import OutboxState
from pharmacy.sms import delivery as sms_delivery
from pharmacy.sms import services as sms
from pharmacy.sms.transports import OutboxOnlySms
from pharmacy.workflows import orders as order_flow
from tests import factories
from tests.conftest import login

NUMBER = "+12175550101"


@pytest.fixture
def world(app: Any, staff: dict) -> dict[str, Any]:
    """A patient with an active prescription whose first fill is dispensed (so reminders can be written)."""

    with app.test_request_context("/"):
        w = factories.world(staff)
        fill = order_flow.start_fill(w["pharmacist"], w["rx"].id)
        factories.run_order_to(w, fill.id, "dispensed")
        db.session.commit()
        return {"patient_id": w["patient"].id, "rx_id": w["rx"].id, "fill_id": fill.id}


def _live(app: Any, rx_id: int) -> Enrolment | None:
    with app.app_context():
        row = db.session.execute(sa.select(Enrolment).where(Enrolment.prescription_id == rx_id,
                                                            Enrolment.ended_at.is_(None))).scalar_one_or_none()
        db.session.expunge_all()
        return row


def test_a_pharmacist_enrols_with_the_patients_consent_and_ends_it(app, client, world, staff) -> None:
    login(client, staff["pharmacist"])
    page = client.get(f"/patients/{world['patient_id']}").get_data(as_text=True)
    assert "Auto-refill: off" in page and "How the patient agreed" in page

    # No consent recorded: refused, field by field, and nothing enrolled.
    r = client.post(f"/prescriptions/{world['rx_id']}/auto-refill", data={"consent": " "})
    assert r.status_code == 422 and "say how and when the patient agreed" in r.get_data(as_text=True)
    assert _live(app, world["rx_id"]) is None

    r = client.post(f"/prescriptions/{world['rx_id']}/auto-refill", data={"consent": "by phone, Nov 23, spoke to her"})
    assert r.status_code == 303 and r.headers["Location"].endswith(
        f"/patients/{world['patient_id']}#auto-refill-{world['rx_id']}")
    row = _live(app, world["rx_id"])
    assert row is not None and row.consent == "by phone, Nov 23, spoke to her" and row.enrolled_by_id == staff[
        "pharmacist"].id
    page = client.get(f"/patients/{world['patient_id']}").get_data(as_text=True)
    assert "Auto-refill: on" in page and "consent: by phone, Nov 23, spoke to her" in page
    # Enrolling again changes nothing (one live enrolment per prescription).
    client.post(f"/prescriptions/{world['rx_id']}/auto-refill", data={"consent": "again"})
    assert _live(app, world["rx_id"]).id == row.id

    r = client.post(f"/prescriptions/{world['rx_id']}/auto-refill/end")
    assert r.status_code == 303 and _live(app, world["rx_id"]) is None
    assert "Auto-refill: off" in client.get(f"/patients/{world['patient_id']}").get_data(as_text=True)
    with app.app_context():
        actions = list(db.session.execute(sa.select(AuditEvent.action).where(
            AuditEvent.action.like("autorefill.%")).order_by(AuditEvent.id)).scalars())
    assert actions == ["autorefill.enrol", "autorefill.leave"]


def test_a_technician_sees_the_state_but_cannot_enrol(app, client, world, staff) -> None:
    login(client, staff["technician"])
    page = client.get(f"/patients/{world['patient_id']}").get_data(as_text=True)
    assert "Auto-refill: off" in page and "How the patient agreed" not in page
    r = client.post(f"/prescriptions/{world['rx_id']}/auto-refill", data={"consent": "by phone"})
    assert r.status_code == 403 and _live(app, world["rx_id"]) is None


def test_the_patient_page_shows_a_portal_enrolment_as_the_patients_own(app, client, world, staff) -> None:
    with app.test_request_context("/"):
        from pharmacy.autorefill import services as autorefill

        autorefill.enrol(Actor(kind="patient", patient_id=world["patient_id"]), world["rx_id"])
        db.session.commit()
    login(client, staff["pharmacist"])
    page = client.get(f"/patients/{world['patient_id']}").get_data(as_text=True)
    assert "Auto-refill: on" in page and "enrolled by the patient in the portal" in page
    assert "End auto-refill" in page


def test_the_outbox_shows_a_text_as_a_text_with_its_code_masked(app, client, world, staff) -> None:
    with app.test_request_context("/"):
        me = Actor(kind="patient", patient_id=world["patient_id"])
        sent = portal.start_number_check(me, "(217) 555-0101")  # a code by text, waiting in the outbox
        db.session.commit()
        assert sent.channel == "sms"
        row_id = db.session.execute(sa.select(OutboxMessage.id).where(OutboxMessage.channel == "sms")).scalar_one()
    login(client, staff["pharmacist"])
    listing = client.get("/outbox").get_data(as_text=True)
    assert re.search(rf'data-outbox-id="{row_id}".*?data-channel="sms"', listing, re.S)

    page = client.get(f"/outbox/{row_id}").get_data(as_text=True)
    assert f"Text #{row_id}" in page and "To (mobile)" in page and NUMBER in page
    assert "Your code is" not in page or "••••••" in page
    assert "Subject" not in page and "<iframe" not in page and "Message-ID" not in page
    assert "Cancel text" in page
    words = re.search(r'<p id="text-version"><samp>(.*?)</samp></p>', page, re.S).group(1)
    assert "••••••" in words and not re.search(r"\d{6}", words)

    # Sent: the stored copy (the code still masked), the provider's id.
    transport = OutboxOnlySms()
    with app.app_context():
        sms_delivery.deliver_due(transport=transport)
        db.session.remove()
    (to, body), = transport.sent
    assert to == NUMBER and re.search(r"\d{6}", body)
    page = client.get(f"/outbox/{row_id}").get_data(as_text=True)
    assert "As sent" in page and "Provider id" in page and "local-" in page
    words = re.search(r'<p id="text-version"><samp>(.*?)</samp></p>', page, re.S).group(1)
    assert "••••••" in words and not re.search(r"\d{6}", words)


def test_an_unsent_reminder_text_previews_as_a_text(app, client, world, staff) -> None:
    """A reminder text spawned beside its email: the preview is the text's words (no drug name), to the verified
    number; the email row beside it still previews as an email."""
    with app.test_request_context("/"):
        from pharmacy.reminders import outbox
        from pharmacy.reminders.rules import MessageKind

        me = Actor(kind="patient", patient_id=world["patient_id"])
        sms.number_verified(me, NUMBER, consent=True)
        row = outbox.enqueue(MessageKind.REMINDER_EARLY, dedupe_key="test:early:sms", patient_id=world["patient_id"],
                             prescription_id=world["rx_id"], order_id=world["fill_id"], channel="sms")
        db.session.commit()
        row_id = row.id
    login(client, staff["pharmacist"])
    page = client.get(f"/outbox/{row_id}").get_data(as_text=True)
    assert f"Text #{row_id}" in page and NUMBER in page
    words = re.search(r'<p id="text-version"><samp>(.*?)</samp></p>', page, re.S).group(1)
    assert words.strip() and "altrexone" not in words and "LDN" not in words


def test_retrying_and_cancelling_a_text_speak_of_a_text(app, client, world, staff) -> None:
    """The outbox's Retry and Cancel answer in the message's own words: a text is not called an email."""
    with app.test_request_context("/"):
        me = Actor(kind="patient", patient_id=world["patient_id"])
        portal.start_number_check(me, "(217) 555-0101")
        db.session.commit()
        row_id = db.session.execute(sa.select(OutboxMessage.id).where(OutboxMessage.channel == "sms")).scalar_one()
        db.session.execute(sa.update(OutboxMessage).where(OutboxMessage.id == row_id)
                           .values(state=OutboxState.FAILED, last_error="the provider refused the number"))
        db.session.commit()
    login(client, staff["pharmacist"])
    page = client.post(f"/outbox/{row_id}/retry", follow_redirects=True).get_data(as_text=True)
    assert "The text is queued again" in page and "email" not in page.split("queued again")[0][-60:]
    page = client.post(f"/outbox/{row_id}/cancel", follow_redirects=True).get_data(as_text=True)
    assert "The text was cancelled; it will not be sent." in page
    conflict = client.post(f"/outbox/{row_id}/cancel", headers={"Accept": "application/json"})
    assert conflict.status_code == 409 and "pending or failed text" in conflict.get_data(as_text=True)
