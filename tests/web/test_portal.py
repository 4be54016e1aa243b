"""The patient portal over HTTP: signing in with a code, its limits, sessions, and each page doing its job."""
from __future__ import annotations

import re
from datetime import date, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from icalendar import Calendar

from pharmacy.core.models import AuditEvent
from pharmacy.extensions import db
from pharmacy.patients.models import SideEffectEntry
from pharmacy.refills.models import RefillRequest
from tests import factories
from tests.portal_helpers import delivered_code, sign_in, titrating_world

DOB = date(1968, 4, 12)


@pytest.fixture
def world(app: Any, staff: dict) -> dict[str, Any]:
    with app.test_request_context("/"):
        w = titrating_world(staff)
        db.session.commit()
        return {"patient_id": w["patient"].id, "rx_id": w["rx"].id}


def test_sign_in_with_a_code_and_the_date_of_birth_then_my_ldn(app, client, world) -> None:
    sign_in(app, client, "margaret@example.com", DOB)
    page = client.get("/my/").get_data(as_text=True)
    assert "Naltrexone" in page and "your last dose is on" in page and "Ask for your next refill by" in page
    assert "1.5 mg" in page and "3 mg" in page  # the dated titration chart
    with app.app_context():
        actions = set(db.session.execute(sa.select(AuditEvent.action).where(
            AuditEvent.patient_id == world["patient_id"])).scalars())
    assert {"portal.sign_in", "portal.view"} <= actions


def test_a_patient_who_has_run_out_reads_it_in_the_past_tense_with_the_phone_number(app, client, world,
                                                                                  clock) -> None:
    clock.advance(timedelta(days=40))  # the 30-day first fill's last day was day 29
    sign_in(app, client, "margaret@example.com", DOB)
    page = " ".join(client.get("/my/").get_data(as_text=True).split())
    assert "None: your last dose was on" in page and "without it). Please call us today" in page
    assert "your last dose is on" not in page  # never the past told as the future


def test_a_code_works_once_and_expires(app, client, world, clock) -> None:
    client.post("/my/sign-in", data={"contact": "margaret@example.com"})
    code = delivered_code(app)
    form = {"code": code, "month": DOB.month, "day": DOB.day, "year": DOB.year}
    assert client.post("/my/sign-in/code", data=form).status_code == 303
    client.post("/my/sign-out")
    other = app.test_client()
    other.post("/my/sign-in", data={"contact": "margaret@example.com"})
    # The used code again (another browser that somehow has it): refused.
    with other.session_transaction():
        pass
    assert other.post("/my/sign-in/code", data=form).status_code in (409, 422)
    fresh = delivered_code(app)
    clock.advance(timedelta(minutes=11))
    r = other.post("/my/sign-in/code", data={**form, "code": fresh})
    assert r.status_code == 409 and "expired" in r.get_data(as_text=True)


def test_wrong_codes_lock_the_code_and_say_nothing_about_who_is_a_patient(app, client, world) -> None:
    known = client.post("/my/sign-in", data={"contact": "margaret@example.com"})
    stranger = app.test_client().post("/my/sign-in", data={"contact": "nobody@example.com"})
    assert known.status_code == stranger.status_code == 303
    code = delivered_code(app)
    wrong = "000000" if code != "000000" else "111111"
    statuses = [client.post("/my/sign-in/code", data={"code": wrong, "month": 4, "day": 12, "year": 1968}).status_code
                for _ in range(5)]
    assert statuses == [422, 422, 422, 422, 409]
    # Locked: even the right code no longer works.
    assert client.post("/my/sign-in/code", data={"code": code, "month": 4, "day": 12,
                                                 "year": 1968}).status_code in (303, 409)
    r = client.get("/my/")
    assert r.status_code == 303  # not signed in


def test_the_right_code_with_the_wrong_birth_date_is_refused(app, client, world) -> None:
    client.post("/my/sign-in", data={"contact": "margaret@example.com"})
    code = delivered_code(app)
    r = client.post("/my/sign-in/code", data={"code": code, "month": 4, "day": 13, "year": 1968})
    assert r.status_code == 422 and "does not match" in r.get_data(as_text=True)


def test_sessions_end_after_idle_minutes_and_at_sign_out(app, client, world, clock) -> None:
    sign_in(app, client, "margaret@example.com", DOB)
    clock.advance(timedelta(minutes=14))
    assert client.get("/my/").status_code == 200
    clock.advance(timedelta(minutes=16))
    r = client.get("/my/")
    assert r.status_code == 303 and "/my/sign-in" in r.headers["Location"]
    assert "signed out after a while" in client.get("/my/sign-in").get_data(as_text=True)


def test_request_a_refill_from_the_portal(app, client, world) -> None:
    sign_in(app, client, "margaret@example.com", DOB)
    page = client.get(f"/my/refill/{world['rx_id']}").get_data(as_text=True)
    assert "Get your next refill" in page or "already on its way" in page
    r = client.post(f"/my/refill/{world['rx_id']}", data={"delivery": "pickup"})
    assert r.status_code == 303
    with app.app_context():
        req = db.session.execute(sa.select(RefillRequest)).scalar_one()
        assert req.source.value == "portal" and req.patient_id == world["patient_id"]
    again = client.post(f"/my/refill/{world['rx_id']}", data={"delivery": "pickup"})
    assert again.status_code == 303
    with app.app_context():
        assert db.session.execute(sa.select(sa.func.count()).select_from(RefillRequest)).scalar_one() == 1


def test_report_a_side_effect_lands_in_the_log_and_on_today(app, client, world, staff) -> None:
    sign_in(app, client, "margaret@example.com", DOB)
    r = client.post("/my/side-effects", data={"effect": "insomnia", "persistent": "yes", "note": "awake at 3 am"})
    assert r.status_code == 303
    with app.app_context():
        entry = db.session.execute(sa.select(SideEffectEntry)).scalar_one()
        assert entry.source == "patient" and "morning" in (entry.suggested_action or "")
    from tests.conftest import login

    pharmacist = app.test_client()
    login(pharmacist, staff["pharmacist"])
    today = pharmacist.get("/").get_data(as_text=True)
    assert "Side effects reported by patients" in today and "Ellison" in today and "morning" in today


def test_calendar_download_and_private_feed(app, client, world) -> None:
    sign_in(app, client, "margaret@example.com", DOB)
    r = client.get("/my/calendar.ics")
    assert r.status_code == 200 and r.mimetype == "text/calendar"
    cal = Calendar.from_ical(r.data)
    titles = [str(e.get("summary")) for e in cal.walk("VEVENT")]
    assert "Order your refill" in titles and "Medicine runs out" in titles
    assert not any("LDN" in t or "altrexone" in t for t in titles)
    client.post("/my/calendar/feed", data={"show_drug_name": "yes"})
    page = client.get("/my/calendar").get_data(as_text=True)
    token = page.split("/calendar/")[1].split(".ics")[0]
    feed = app.test_client().get(f"/calendar/{token}.ics")
    assert feed.status_code == 200 and "LDN" in feed.get_data(as_text=True)
    client.post("/my/calendar/feed/revoke")
    assert app.test_client().get(f"/calendar/{token}.ics").status_code == 404


def test_reminder_choices_pause_and_skip(app, client, world) -> None:
    sign_in(app, client, "margaret@example.com", DOB)
    r = client.post("/my/reminders", data={"reminders": "on", "channel": "sms"})
    assert r.status_code == 422  # texts need a confirmed number first
    until = (date(2026, 11, 23) + timedelta(days=20)).isoformat()
    assert client.post("/my/reminders", data={"reminders": "on", "channel": "email",
                                              "paused_until": until}).status_code == 303
    assert "paused until" in client.get("/my/").get_data(as_text=True)
    assert client.post("/my/reminders/skip-next").status_code == 303


def test_receipts_and_statements_are_the_patients_own(app, client, world, staff) -> None:
    with app.test_request_context("/"):
        from pharmacy.billing import services as billing

        pay = billing.record_payment(factories.actor(staff["technician"]), patient_id=world["patient_id"],
                                     amount_cents=5500, method="card")
        db.session.commit()
        payment_id = pay.payment.id
    sign_in(app, client, "margaret@example.com", DOB)
    assert "$55.00" in client.get("/my/money").get_data(as_text=True)
    r = client.get(f"/my/receipts/{payment_id}.pdf")
    assert r.status_code == 200 and r.data.startswith(b"%PDF")
    assert client.get("/my/statements/2026.pdf").data.startswith(b"%PDF")
    assert client.get(f"/my/receipts/{payment_id + 1}.pdf").status_code == 404


def test_forms_without_the_portal_token_are_refused(app, world) -> None:
    app.config["WTF_CSRF_ENABLED"] = True
    client = app.test_client()
    assert client.post("/my/sign-in", data={"contact": "margaret@example.com"}).status_code == 422


def test_the_form_token_is_renewed_at_sign_in_and_sign_out(app, world) -> None:
    """A token read before sign-in (a shared computer, a page left open) does not carry into the signed-in portal."""
    import re

    app.config["WTF_CSRF_ENABLED"] = True
    client = app.test_client()

    def token(path: str) -> str:
        found = re.search(r'name="csrf_token" value="([0-9a-f]+)"', client.get(path).get_data(as_text=True))
        assert found, path
        return found.group(1)

    before = token("/my/sign-in")
    assert client.post("/my/sign-in", data={"contact": "margaret@example.com", "csrf_token": before}).status_code == 303
    assert token("/my/sign-in/code") == before  # the same visitor until signed in
    code = delivered_code(app)
    r = client.post("/my/sign-in/code", data={"code": code, "month": DOB.month, "day": DOB.day, "year": DOB.year,
                                              "csrf_token": before})
    assert r.status_code == 303 and r.headers["Location"].endswith("/my/")
    signed_in = token("/my/")  # the sign-out form in the header
    assert signed_in != before
    # The old token no longer sends a form; the new one does.
    assert client.post("/my/sign-out", data={"csrf_token": before}).status_code == 422
    assert client.post("/my/sign-out", data={"csrf_token": signed_in}).status_code == 303
    assert token("/my/sign-in") not in (before, signed_in)


def test_a_short_code_and_no_birth_date_are_both_named_at_once(app, client, world) -> None:
    """marshmallow skips the date's own check when another field fails: the page asks it apart (browser walk)."""
    assert client.post("/my/sign-in", data={"contact": "margaret@example.com"}).status_code == 303
    r = client.post("/my/sign-in/code", data={"code": "12ab", "month": "", "day": "", "year": ""})
    page = " ".join(r.get_data(as_text=True).split())
    assert r.status_code == 422
    assert "Enter the 6 digits of the code we sent you." in page
    assert "Enter your date of birth: month, day and year." in page
    assert 'value="12ab"' in page  # what was typed is kept
    # A date whose own field fails is named once, by that field, not again as a missing date.
    r = client.post("/my/sign-in/code", data={"code": "12ab", "month": "zz", "day": "12", "year": "1968"})
    page = " ".join(r.get_data(as_text=True).split())
    assert r.status_code == 422 and "Enter the month as a number from 1 to 12" in page
    assert "Enter your date of birth: month, day and year." not in page


def test_texts_stopped_say_so_and_how_to_have_them_back(app, client, world) -> None:
    """A texts-only patient who replied STOP opens their reminder choices: texts are off, so the page shows email as
    what happens now and says how to have texts back (START, or confirming the number again) — not "first add your
    mobile number", which they have. Their choice of texts is kept for START (sms/services: STOP only withdraws
    consent)."""
    from pharmacy.core.actor import Actor
    from pharmacy.sms import services as sms
    from pharmacy.sms.rules import Choice

    with app.test_request_context("/"):
        me = Actor(kind="patient", patient_id=world["patient_id"])
        sms.number_verified(me, "+12175550101", consent=True)
        sms.set_channel(me, Choice.SMS)
        db.session.commit()
        sms.handle_inbound("SM-stop-portal", "+12175550101", "STOP")
        db.session.commit()
    sign_in(app, client, "margaret@example.com", DOB)
    page = re.sub(r"\s+", " ", client.get("/my/reminders").get_data(as_text=True))
    assert "Text messages are stopped, so we email you." in page and "texts only" in page
    assert "first add your mobile number" not in page
    assert re.search(r'id="channel-sms"[^>]* checked disabled', page)  # their choice, kept for START
    assert not re.search(r'id="channel-email"[^>]* checked', page)
