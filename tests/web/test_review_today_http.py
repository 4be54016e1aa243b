"""Review of today's changes (51e8ba1..HEAD), over HTTP: each test is a defect a patient or the staff would hit."""
from __future__ import annotations

import re
from datetime import date, timedelta

import sqlalchemy as sa

from pharmacy.core.actor import Actor
from pharmacy.extensions import db
from tests.portal_helpers import sign_in
from tests.web.test_portal import world  # noqa: F401  (a titrating patient who signs in to the portal)

DOB = date(1968, 4, 12)
NUMBER = "+12175550101"


def test_saving_the_reminders_page_after_stop_keeps_the_texts_only_choice(app, client, world) -> None:  # noqa: F811
    """A texts-only patient replies STOP. STOP now keeps their choice of channel so that START gives their texts back
    (sms/services._opt_out; the portal even says "Reply START … to have them back (texts only, as you chose)"). But the
    portal's reminders page, while texts are stopped, pre-selects "By email" and disables the text choices, so when
    the patient saves that page for anything else — a pause while away — the form sends channel=email and their
    texts-only choice is overwritten. When they then reply START, no reminder comes by text. Correct: the page keeps
    (shows, or does not overwrite) the saved choice while texts are stopped, so START restores texts only."""
    from pharmacy.sms import services as sms
    from pharmacy.sms.models import ContactPreference
    from pharmacy.sms.rules import Choice

    with app.test_request_context("/"):
        me = Actor(kind="patient", patient_id=world["patient_id"])
        sms.number_verified(me, NUMBER, consent=True)
        sms.set_channel(me, Choice.SMS)
        db.session.commit()
        sms.handle_inbound("SM-stop", NUMBER, "STOP")
        db.session.commit()

    sign_in(app, client, "margaret@example.com", DOB)
    page = client.get("/my/reminders").get_data(as_text=True)
    assert "Text messages are stopped" in page
    checked = re.findall(r'name="channel" value="(\w+)" checked', page)
    until = (date(2026, 11, 23) + timedelta(days=10)).isoformat()
    r = client.post("/my/reminders", data={"reminders": "on", "channel": checked[0] if checked else "",
                                           "paused_until": until})
    assert r.status_code == 303, r.get_data(as_text=True)[:500]

    with app.test_request_context("/"):
        sms.handle_inbound("SM-start", NUMBER, "START")
        db.session.commit()
        pref = db.session.execute(sa.select(ContactPreference).where(
            ContactPreference.patient_id == world["patient_id"])).scalar_one()
        assert pref.sms_consent is True
        assert pref.channel == Choice.SMS.value, "the texts-only choice was overwritten by saving the page"
