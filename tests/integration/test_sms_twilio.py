"""Text messages end to end against a loopback server that speaks Twilio's Messages API and signs its callbacks:
one text per reminder through outages, 4xx/5xx and retries; STOP honoured before the next send; forged webhooks
refused; REFILL only from a patient's verified number; quiet hours."""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from pharmacy import create_app
from pharmacy.core.actor import Actor
from pharmacy.extensions import db
from pharmacy.refills.models import RefillRequest
from pharmacy.reminders.models import OutboxMessage
from pharmacy.reminders.rules import MessageKind
from pharmacy.sms import delivery as sms_delivery
from pharmacy.sms import services as sms
from pharmacy.sms.rules import Choice
from pharmacy.workflows import orders as order_flow
from tests import factories
from tests.browser.conftest import LiveServer
from tests.reminder_helpers import texting_patient
from tests.twilio_server import ACCOUNT, FROM, TOKEN, TwilioServer

NUMBER = "+12175550101"


@pytest.fixture
def twilio() -> Iterator[TwilioServer]:
    server = TwilioServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def sms_app(app_config: dict, clock: Any, twilio: TwilioServer) -> Iterator[Any]:
    config = {**app_config, "TWILIO_ACCOUNT_SID": ACCOUNT, "TWILIO_AUTH_TOKEN": TOKEN, "TWILIO_FROM_NUMBER": FROM,
              "TWILIO_API_BASE": twilio.url}
    app = create_app(config, clock=clock)
    with LiveServer(app) as live:
        app.extensions["pharmacy.settings"] = replace(app.extensions["pharmacy.settings"], base_url=live.url)
        app.live_url = live.url  # type: ignore[attr-defined]
        yield app
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


@pytest.fixture
def texting(sms_app: Any, staff: dict) -> dict[str, Any]:
    """A patient who takes texts only, with a dispensed fill (so reminders are planned)."""
    with sms_app.test_request_context("/"):
        w = texting_patient(staff, NUMBER)
        return {"patient_id": w["patient"].id, "rx_id": w["rx"].id}


def _deliver(app: Any) -> Any:
    with app.app_context():
        report = sms_delivery.deliver_due()
        db.session.remove()
        return report


def _first_reminder_due(app: Any, patient_id: int) -> datetime:
    with app.app_context():
        return db.session.execute(sa.select(sa.func.min(OutboxMessage.due_at)).where(
            OutboxMessage.patient_id == patient_id, OutboxMessage.kind == MessageKind.REMINDER_EARLY)).scalar_one()


def _at(clock: Any, value: Any) -> None:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    clock.set(value)


def test_one_text_per_reminder_without_the_drug_name_and_its_status_report(sms_app, texting, twilio, clock) -> None:
    _at(clock, _first_reminder_due(sms_app, texting["patient_id"]))
    for _ in range(3):
        _deliver(sms_app)
    assert len(twilio.messages) == 1
    text = twilio.messages[0]
    assert text.to == NUMBER and "refill" in text.body and "STOP" in text.body
    for word in ("altrexone", "LDN", "mg", "sclerosis"):
        assert word not in text.body
    status, _ = twilio.status_callback(text.sid, "delivered")
    assert status == 204
    with sms_app.app_context():
        row = db.session.execute(sa.select(OutboxMessage).where(OutboxMessage.channel == "sms")).scalar_one()
        assert row.state.value == "sent" and row.provider_status == "delivered" and row.provider_id == text.sid
        email = db.session.execute(sa.select(OutboxMessage).where(
            OutboxMessage.channel == "email", OutboxMessage.id != row.id,
            OutboxMessage.due_at == row.due_at)).scalars().first()
    assert email is None or email.state.value in ("pending", "cancelled")


def test_an_outage_then_errors_then_success_sends_exactly_once(sms_app, texting, twilio, clock) -> None:
    _at(clock, _first_reminder_due(sms_app, texting["patient_id"]))
    twilio.stop()
    report = _deliver(sms_app)
    assert report.retried == 1 and report.sent == 0
    twilio.start()
    with sms_app.app_context():
        settings = sms_app.extensions["pharmacy.settings"]
        sms_app.extensions["pharmacy.settings"] = replace(
            settings, twilio=replace(settings.twilio, api_base=twilio.url))
    twilio.fail_next(503, 20500)
    clock.advance(timedelta(seconds=61))
    assert _deliver(sms_app).retried == 1
    twilio.fail_next(429, 20429)
    clock.advance(timedelta(seconds=121))
    assert _deliver(sms_app).retried == 1
    clock.advance(timedelta(seconds=241))
    assert _deliver(sms_app).sent == 1
    clock.advance(timedelta(hours=1))
    _deliver(sms_app)
    assert len(twilio.messages) == 1


def test_a_number_that_cannot_take_texts_fails_at_once(sms_app, texting, twilio, clock) -> None:
    _at(clock, _first_reminder_due(sms_app, texting["patient_id"]))
    twilio.fail_next(400, 21211)
    assert _deliver(sms_app).failed == 1
    with sms_app.app_context():
        row = db.session.execute(sa.select(OutboxMessage).where(OutboxMessage.channel == "sms")).scalar_one()
        assert row.state.value == "failed" and "21211" in (row.last_error or "")


def test_stop_is_honoured_before_the_next_send(sms_app, texting, twilio, clock) -> None:
    status, _ = twilio.inbound(sms_app.live_url + "/sms/inbound", NUMBER, "Stop", "SMin1")
    assert status == 200
    _at(clock, _first_reminder_due(sms_app, texting["patient_id"]))
    _deliver(sms_app)
    assert twilio.messages == []
    with sms_app.app_context():
        pref = sms.preference(texting["patient_id"])
        assert pref is not None and not pref.sms_consent and pref.sms_consent_source == "sms_keyword"
    # START gives consent back (recorded again, with time and source).
    assert twilio.inbound(sms_app.live_url + "/sms/inbound", NUMBER, "START", "SMin2")[0] == 200
    with sms_app.app_context():
        assert sms.preference(texting["patient_id"]).sms_consent


def test_forged_and_unsigned_webhooks_are_refused(sms_app, texting, twilio) -> None:
    url = sms_app.live_url + "/sms/inbound"
    assert twilio.inbound(url, NUMBER, "REFILL", "SMforged", signature="bm90LWEtc2lnbmF0dXJl")[0] == 403
    assert twilio.inbound(url, NUMBER, "REFILL", "SMforged2", signature="")[0] == 403
    assert twilio.post_signed(sms_app.live_url + "/sms/status", {"MessageSid": "x", "MessageStatus": "failed"},
                              signature="nope")[0] == 403
    with sms_app.app_context():
        assert db.session.execute(sa.select(sa.func.count()).select_from(RefillRequest)).scalar_one() == 0


def test_refill_by_text_only_from_the_verified_number(sms_app, texting, twilio, staff) -> None:
    url = sms_app.live_url + "/sms/inbound"
    status, reply = twilio.inbound(url, "+13125550199", "REFILL", "SMunknown")
    assert status == 200 and "could not match this number" in reply
    with sms_app.app_context():
        assert db.session.execute(sa.select(sa.func.count()).select_from(RefillRequest)).scalar_one() == 0
    # The fill in progress was dispensed, so a refill may be asked for.
    status, reply = twilio.inbound(url, NUMBER, "refill please", "SMknown")
    assert status == 200
    with sms_app.app_context():
        reqs = db.session.execute(sa.select(RefillRequest)).scalars().all()
    assert len(reqs) == 1 and reqs[0].source.value == "sms" and "got your refill request" in reply
    # Twilio retrying the same webhook does not ask twice.
    assert twilio.inbound(url, NUMBER, "refill please", "SMknown")[0] == 200
    with sms_app.app_context():
        assert db.session.execute(sa.select(sa.func.count()).select_from(RefillRequest)).scalar_one() == 1


def test_quiet_hours_hold_a_notice_until_the_morning(sms_app, texting, twilio, clock, staff) -> None:
    night = datetime(2026, 11, 24, 4, 30, tzinfo=UTC)  # 22:30 in Chicago
    _at(clock, night)
    with sms_app.test_request_context("/"):
        from pharmacy.reminders import outbox

        outbox.enqueue_notice(MessageKind.ORDER_READY, patient_id=texting["patient_id"],
                              prescription_id=texting["rx_id"])
        db.session.commit()
    _deliver(sms_app)
    assert twilio.messages == []
    _at(clock, datetime(2026, 11, 24, 15, 0, tzinfo=UTC))  # 9:00 in Chicago
    _deliver(sms_app)
    assert len(twilio.messages) == 1 and "ready" in twilio.messages[0].body


@pytest.fixture
def texting_without_email(sms_app: Any, staff: dict) -> dict[str, Any]:
    """A patient with no email address at all, a dispensed fill, then a verified mobile number and texts chosen."""
    with sms_app.test_request_context("/"):
        w = factories.world(staff, patient={"email": None})

        order = order_flow.start_fill(w["pharmacist"], w["rx"].id)
        factories.run_order_to(w, order.id, "dispensed")
        patient_id = w["patient"].id
        db.session.commit()
        before = _reminder_rows(patient_id)
        me = Actor(kind="patient", patient_id=patient_id)
        sms.number_verified(me, NUMBER, consent=True)
        sms.set_channel(me, Choice.SMS)
        db.session.commit()
        return {"patient_id": patient_id, "rx_id": w["rx"].id, "rows_before_texts": before}


def _reminder_rows(patient_id: int) -> int:
    return db.session.execute(sa.select(sa.func.count()).select_from(OutboxMessage).where(
        OutboxMessage.patient_id == patient_id, OutboxMessage.kind == MessageKind.REMINDER_EARLY,
        OutboxMessage.state == "pending")).scalar_one()


def test_a_patient_without_email_who_chose_texts_gets_each_reminder_as_one_text(sms_app, texting_without_email,
                                                                                  twilio, clock) -> None:
    """No email address: nothing was planned while nothing could reach her; once texts do, the reminders are
    planned and each goes out as exactly one text (the email row beside it is cancelled, never sent)."""
    w = texting_without_email
    assert w["rows_before_texts"] == 0
    with sms_app.app_context():
        assert _reminder_rows(w["patient_id"]) > 0
    _at(clock, _first_reminder_due(sms_app, w["patient_id"]))
    from pharmacy.reminders import delivery as email_delivery

    for _ in range(2):
        with sms_app.app_context():
            email_delivery.deliver_due()
            db.session.remove()
        _deliver(sms_app)
    assert len(twilio.messages) == 1 and twilio.messages[0].to == NUMBER
    assert "refill" in twilio.messages[0].body
    with sms_app.app_context():
        email = db.session.execute(sa.select(OutboxMessage).where(
            OutboxMessage.channel == "email", OutboxMessage.patient_id == w["patient_id"],
            OutboxMessage.kind == MessageKind.REMINDER_EARLY, OutboxMessage.sent_at.is_not(None))).scalars().all()
    assert email == []


def test_a_patient_without_email_who_keeps_email_is_not_planned_for(sms_app, staff) -> None:
    """A verified number alone (texts not chosen) does not make the patient reachable: nothing is planned."""
    with sms_app.test_request_context("/"):
        w = factories.world(staff, patient={"email": None})

        order = order_flow.start_fill(w["pharmacist"], w["rx"].id)
        factories.run_order_to(w, order.id, "dispensed")
        me = Actor(kind="patient", patient_id=w["patient"].id)
        sms.number_verified(me, NUMBER, consent=True)
        sms.set_channel(me, Choice.EMAIL)
        db.session.commit()
        assert _reminder_rows(w["patient"].id) == 0
        # Choosing texts plans them.
        sms.set_channel(me, Choice.BOTH)
        db.session.commit()
        assert _reminder_rows(w["patient"].id) > 0
