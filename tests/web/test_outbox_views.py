"""The outbox pages and the patient's email-preferences pages, against a real SMTP server on loopback."""
from __future__ import annotations

import base64
import hashlib
import re
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from pharmacy import create_app
from pharmacy.core import links
from pharmacy.core.models import AuditEvent
from pharmacy.extensions import db
from pharmacy.patients.models import Patient
from pharmacy.reminders import delivery
from pharmacy.reminders.rules import OutboxState
from tests.conftest import login
from tests.reminder_helpers import dispensed, first_reminders_due, fresh, reminder_rows
from tests.smtp_server import SmtpServer


@pytest.fixture
def app_config(app_config: dict, smtp: SmtpServer) -> dict:
    return {**app_config, "SMTP_URL": smtp.url}


def ids_in_page(html: str) -> list[int]:
    return [int(x) for x in re.findall(r'data-outbox-id="(\d+)"', html)]


def audit_actions(action_prefix: str) -> list[str]:
    db.session.expire_all()
    return list(db.session.execute(sa.select(AuditEvent.action).where(
        AuditEvent.action.like(f"{action_prefix}%")).order_by(AuditEvent.id)).scalars())


# ---- who may see the outbox -------------------------------------------------------------------------------------


def test_outbox_is_for_pharmacists_and_admins_only(app_ctx: Flask, client: FlaskClient, staff: dict,
                                                   clock: Any, smtp: SmtpServer) -> None:
    first_reminders_due(staff, clock, 1)
    anonymous = client.get("/outbox")
    assert anonymous.status_code == 302 and "/login" in anonymous.headers["Location"]

    login(client, staff["technician"])
    assert client.get("/outbox").status_code == 403
    assert client.get("/outbox/1").status_code == 403
    assert client.post("/outbox/1/cancel").status_code == 403
    assert "denied.manage_outbox" in audit_actions("denied.")
    client.post("/logout")

    for who in ("pharmacist", "admin"):
        login(client, staff[who])
        page = client.get("/outbox")
        assert page.status_code == 200 and "Email outbox" in page.get_data(as_text=True)
        client.post("/logout")


# ---- failed first, retry, cancel ----------------------------------------------------------------------------------


def test_a_5yz_failure_is_shown_first_and_a_retry_sends_it(app_ctx: Flask, client: FlaskClient, staff: dict,
                                                         clock: Any, smtp: SmtpServer) -> None:
    ids = first_reminders_due(staff, clock, 3)
    smtp.sink.rcpt_replies["patient1@example.com"] = "550 5.1.1 Mailbox does not exist"
    report = delivery.deliver_due()
    assert (report.sent, report.failed) == (2, 1)
    failed_id = ids[1]

    login(client, staff["pharmacist"])
    html = client.get("/outbox").get_data(as_text=True)

    listed = ids_in_page(html)
    assert listed[0] == failed_id  # what needs a pharmacist comes first
    assert set(ids) <= set(listed)
    assert re.search(r'data-state="failed">Failed <span class="badge stop">1</span>', html)
    assert re.search(r'data-state="sent">Sent <span class="badge ok">2</span>', html)
    assert "550: 5.1.1 Mailbox does not exist" in html
    only_failed = client.get("/outbox?state=failed").get_data(as_text=True)
    assert ids_in_page(only_failed) == [failed_id]

    detail = client.get(f"/outbox/{failed_id}").get_data(as_text=True)
    assert "550: 5.1.1 Mailbox does not exist" in detail
    assert f'action="/outbox/{failed_id}/retry"' in detail and 'name="csrf_token"' in detail
    assert "permanent" in detail  # the attempt log

    response = client.post(f"/outbox/{failed_id}/retry")
    assert response.status_code == 302
    row = fresh(failed_id)
    assert row.state == OutboxState.PENDING and row.attempts == 1 and row.next_attempt_at == clock.now()
    assert audit_actions("outbox.retry") == ["outbox.retry"]
    assert client.post(f"/outbox/{failed_id}/retry").status_code == 409  # only a failed email can be retried

    del smtp.sink.rcpt_replies["patient1@example.com"]  # the patient fixed their mailbox
    assert delivery.deliver_due().sent == 1
    row = fresh(failed_id)
    assert row.state == OutboxState.SENT and row.attempts == 2
    assert smtp.sink.per_message_id()[row.message_id] == 1
    assert 'data-state="failed">Failed <span class="badge stop">0</span>' in client.get("/outbox").get_data(
        as_text=True)


def test_cancelling_an_email(app_ctx: Flask, client: FlaskClient, staff: dict, clock: Any,
                             smtp: SmtpServer) -> None:
    _, order = dispensed(staff)
    first, second = reminder_rows(order.id)[:2]
    clock.set(first.due_at)
    delivery.deliver_due()  # the first one goes out
    login(client, staff["admin"])

    assert client.post(f"/outbox/{second.id}/cancel").status_code == 302
    row = fresh(second.id)
    assert row.state == OutboxState.CANCELLED and row.cancelled_reason == "cancelled by the pharmacy"
    assert client.post(f"/outbox/{first.id}/cancel").status_code == 409  # already sent: cannot be unsent
    assert fresh(first.id).state == OutboxState.SENT
    clock.set(row.due_at)
    assert delivery.deliver_due().claimed == 0
    assert audit_actions("outbox.cancel") == ["outbox.cancel"]


# ---- the preview: the email as the patient sees it, safely ----------------------------------------------------------


def test_preview_shows_text_and_a_sandboxed_html_version_under_a_strict_csp(
        app_ctx: Flask, client: FlaskClient, staff: dict, clock: Any, smtp: SmtpServer) -> None:
    _, order = dispensed(staff, patient={"first_name": "<b>Bo</b>"})
    pending = reminder_rows(order.id)[0]
    login(client, staff["pharmacist"])

    response = client.get(f"/outbox/{pending.id}")

    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert "As it will be sent" in page
    assert "Riverside Compounding Pharmacy: refill reminder" in page
    assert "December 17, 2026" in page and "$55.00" in page
    # A staff page never carries a working patient link: placeholders until the email is sent.
    assert "http://pharmacy.test/r/preview" in page and "/preferences/preview" in page
    # The HTML sits in a sandboxed iframe as an attribute value (escaped), the text in a <pre>.
    iframe = re.search(r'<iframe [^>]*sandbox=""[^>]*srcdoc="([^"]*)"', page)
    assert iframe is not None and iframe.group(1).startswith("&lt;!doctype html&gt;")
    assert "<b>Bo</b>" not in page  # the patient's data is text everywhere, never markup
    assert "&amp;lt;b&amp;gt;Bo" in iframe.group(1) and "Hello &lt;b&gt;Bo&lt;/b&gt;," in page
    assert all('src="' in tag for tag in re.findall(r"<script[^>]*>", page))  # no inline script
    # The CSP allows exactly the email's stylesheet (by hash) and still no inline script.
    csp = response.headers["Content-Security-Policy"]
    style = re.search(r"<style>(.*?)</style>", pending_html(pending.id), re.DOTALL).group(1)  # type: ignore[union-attr]
    digest = base64.b64encode(hashlib.sha256(style.encode()).digest()).decode()
    assert f"style-src 'self' 'sha256-{digest}'" in csp
    assert "script-src 'self';" in csp and "unsafe-inline" not in csp
    assert response.headers["X-Frame-Options"] == "DENY"
    assert audit_actions("outbox.view") == ["outbox.view"]


def pending_html(row_id: int) -> str:
    from pharmacy.reminders import rendering

    return rendering.render(fresh(row_id), preview=True).html


def test_a_sent_email_is_shown_as_it_was_sent(app_ctx: Flask, client: FlaskClient, staff: dict, clock: Any,
                                             smtp: SmtpServer) -> None:
    [row_id] = first_reminders_due(staff, clock, 1)
    delivery.deliver_due()
    sent_text = smtp.sink.received[0].message.get_body(("plain",)).get_content().replace("\r\n", "\n")
    refill_link = re.search(r"http://pharmacy\.test/r/\S+", sent_text).group(0)  # type: ignore[union-attr]
    # The price changes afterwards: the stored copy still shows what the patient received.
    db.session.execute(sa.text("UPDATE price_list SET price_cents = 6000"))
    db.session.commit()
    login(client, staff["pharmacist"])

    page = client.get(f"/outbox/{row_id}").get_data(as_text=True)

    assert "As sent" in page and "$55.00" in page and "$60.00" not in page
    assert refill_link in page
    assert "patient0@example.com" in page
    assert "<td>sent</td>" in page  # the attempt log


# ---- the patient's email preferences -------------------------------------------------------------------------------


def test_preferences_page_opts_out_and_back_in_revealing_nothing(app_ctx: Flask, client: FlaskClient,
                                                                 staff: dict, clock: Any,
                                                                 smtp: SmtpServer) -> None:
    w, order = dispensed(staff)
    token = links.make_token(links.PREFERENCES, w["patient"].id)
    db.session.commit()

    page = client.get(f"/preferences/{token}")

    html = page.get_data(as_text=True)
    assert page.status_code == 200 and "Riverside Compounding Pharmacy" in html
    for secret in ("Margaret", "Ellison", "patient0@example.com", "Naltrexone", "December"):
        assert secret not in html
    assert html.count('name="csrf_token"') == 1
    assert "Reminder emails are on now." in html and "Stop reminder emails" in html  # what they have, one choice
    assert "Send me reminder emails" not in html

    off = client.post(f"/preferences/{token}", data={"reminders": "off"})
    assert off.status_code == 200 and "will no longer send you refill reminder emails" in off.get_data(as_text=True)
    db.session.expire_all()
    assert db.session.get(Patient, w["patient"].id).reminders_opt_in is False
    assert {r.state for r in reminder_rows(order.id)} == {OutboxState.CANCELLED}

    again = client.get(f"/preferences/{token}").get_data(as_text=True)
    assert "Reminder emails are off now." in again and "Send me reminder emails" in again
    on = client.post(f"/preferences/{token}", data={"reminders": "on"})
    assert on.status_code == 200
    db.session.expire_all()
    assert db.session.get(Patient, w["patient"].id).reminders_opt_in is True
    assert {r.state for r in reminder_rows(order.id)} == {OutboxState.PENDING}
    assert audit_actions("reminders.") == ["reminders.opt_out", "reminders.opt_in"]
    assert client.post(f"/preferences/{token}", data={"reminders": "maybe"}).status_code == 422


def test_one_click_unsubscribe_needs_no_csrf_token_but_the_form_does(app_config: dict, staff: dict, clock: Any,
                                                                     smtp: SmtpServer) -> None:
    app = create_app({**app_config, "WTF_CSRF_ENABLED": True}, clock=clock)
    client = app.test_client()
    with app.test_request_context("/"):
        w, _ = dispensed(staff)
        token = links.make_token(links.PREFERENCES, w["patient"].id)
        patient_id = w["patient"].id
        db.session.commit()
        db.session.remove()

    # The form without its token is refused…
    assert client.post(f"/preferences/{token}", data={"reminders": "off"}).status_code == 400
    # …while a mail provider's RFC 8058 POST (no cookie, no token) works.
    one_click = app.test_client().post(f"/preferences/{token}/unsubscribe", data="List-Unsubscribe=One-Click",
                                       content_type="application/x-www-form-urlencoded")
    assert one_click.status_code == 200
    with app.app_context():
        assert db.session.get(Patient, patient_id).reminders_opt_in is False
        db.session.remove()
    # The form with the token from the page works.
    html = client.get(f"/preferences/{token}").get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)  # type: ignore[union-attr]
    assert client.post(f"/preferences/{token}", data={"reminders": "on", "csrf_token": csrf}).status_code == 200
    with app.app_context():
        assert db.session.get(Patient, patient_id).reminders_opt_in is True
        db.session.remove()
        db.engine.dispose()


def test_bad_or_expired_links_change_nothing(app_ctx: Flask, client: FlaskClient, staff: dict, clock: Any,
                                             smtp: SmtpServer) -> None:
    w, _ = dispensed(staff)
    token = links.make_token(links.PREFERENCES, w["patient"].id)
    refill_token = links.make_token(links.REFILL, w["patient"].id, w["rx"].id)
    db.session.commit()

    assert client.post(f"/preferences/{token[:-2]}xx/unsubscribe").status_code == 400
    assert client.post(f"/preferences/{refill_token}/unsubscribe").status_code == 400  # another purpose's link
    clock.advance(timedelta(days=366))
    expired = client.post(f"/preferences/{token}/unsubscribe")
    assert expired.status_code == 400 and "expired" in expired.get_data(as_text=True)
    db.session.expire_all()
    assert db.session.get(Patient, w["patient"].id).reminders_opt_in is True


def test_unsubscribe_is_rate_limited(app_ctx: Flask, client: FlaskClient, staff: dict, clock: Any,
                                     smtp: SmtpServer) -> None:
    w, _ = dispensed(staff)
    token = links.make_token(links.PREFERENCES, w["patient"].id)
    db.session.commit()
    codes = [client.post(f"/preferences/{token}/unsubscribe").status_code for _ in range(31)]
    assert codes[:30] == [200] * 30 and codes[30] == 429


# ---- the page at any size: state by state, bounded counts -------------------------------------------------------


def _fill_outbox(staff: dict, clock: Any) -> dict[OutboxState, list[int]]:
    """Rows in every state with due times out of id order; returns each state's ids in the page's order."""
    from pharmacy.reminders.models import OutboxMessage
    from pharmacy.reminders.rules import MessageKind

    w, order = dispensed(staff)
    db.session.execute(sa.delete(OutboxMessage))
    t = clock.now()
    rows = []
    for i in range(23):
        state = list(OutboxState)[i % 5]
        due = t + timedelta(hours=(7 * i) % 11)
        rows.append({"dedupe_key": f"page:{i}", "kind": MessageKind.REMINDER_EARLY, "patient_id": w["patient"].id,
                     "prescription_id": w["rx"].id, "order_id": order.id, "due_at": due, "next_attempt_at": due,
                     "state": state, "attempts": 0, "created_at": t, "message_id": f"<page.{i}@pharmacy.example>"})
    db.session.execute(sa.insert(OutboxMessage), rows)
    db.session.commit()
    by_state: dict[OutboxState, list[int]] = {}
    for state in OutboxState:
        found = db.session.execute(sa.select(OutboxMessage.id, OutboxMessage.next_attempt_at)
                                   .where(OutboxMessage.state == state)).all()
        if state in (OutboxState.PENDING, OutboxState.SENDING):  # soonest due first, then in sending order
            by_state[state] = [i for i, _ in sorted(found, key=lambda r: (r[1], r[0]))]
        else:  # newest first
            by_state[state] = sorted((i for i, _ in found), reverse=True)
    return by_state


def test_outbox_pages_go_state_by_state_and_page_without_gaps(app_ctx: Flask, client: FlaskClient, staff: dict,
                                                               clock: Any, smtp: SmtpServer) -> None:
    from pharmacy.core.actor import staff as staff_actor
    from pharmacy.reminders import services

    by_state = _fill_outbox(staff, clock)
    expected = [i for s in services.STATE_ORDER for i in by_state[s]]
    pharmacist = staff_actor(staff["pharmacist"].id, staff["pharmacist"].role)
    seen, page = [], 1
    while True:
        p = services.outbox_page(pharmacist, page=page, per_page=4)
        seen += [r.id for r in p.rows]
        if not p.has_next:
            break
        page += 1
    assert seen == expected and page == 6  # failed, sending, pending, sent, cancelled; each in its own order
    assert p.counts == {s: len(by_state[s]) for s in OutboxState} and p.total == 23 and not p.capped
    only = services.outbox_page(pharmacist, state="pending", page=2, per_page=3)
    assert [r.id for r in only.rows] == by_state[OutboxState.PENDING][3:6]
    assert services.outbox_page(pharmacist, page=99, per_page=4).rows == []

    login(client, staff["pharmacist"])
    html = client.get("/outbox?page=2").get_data(as_text=True)
    assert ids_in_page(html) == expected[50:]  # 50 a page: the second holds nothing (23 rows) …
    assert ids_in_page(client.get("/outbox").get_data(as_text=True)) == expected


def test_outbox_counts_stop_at_a_cap(app_ctx: Flask, client: FlaskClient, staff: dict, clock: Any,
                                     smtp: SmtpServer, monkeypatch: pytest.MonkeyPatch) -> None:
    from pharmacy.reminders import services

    by_state = _fill_outbox(staff, clock)
    monkeypatch.setattr(services, "COUNT_CAP", 4)
    login(client, staff["pharmacist"])
    html = client.get("/outbox").get_data(as_text=True)
    assert {s: len(ids) for s, ids in by_state.items()} == {
        OutboxState.PENDING: 5, OutboxState.SENDING: 5, OutboxState.SENT: 5, OutboxState.FAILED: 4,
        OutboxState.CANCELLED: 4}
    assert 'data-state="failed">Failed <span class="badge stop">4</span>' in html  # exactly at the cap: exact
    assert 'data-state="sent">Sent <span class="badge ok">4+</span>' in html  # over it
    assert 'All <span class="badge">20+</span>' in html and "Counts stop at 4:" in html
    # Paging still reaches every row: the cap limits the counting, never the rows.
    assert len(ids_in_page(client.get("/outbox").get_data(as_text=True))) == 23
