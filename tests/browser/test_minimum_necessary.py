"""What an admin sees of an email, and what a prescriber sees behind a renewal link, in a real browser (with axe-core).

Screenshots go to artifacts/screenshots/: the admin's view of a renewal email (delivery facts only), the prescriber's
NPI question, and the request shown once the NPI is confirmed.
"""
from __future__ import annotations

import re
from typing import Any

import pytest
import sqlalchemy as sa
from axe_playwright_python.sync_playwright import Axe

from pharmacy.extensions import db
from pharmacy.reminders import rendering
from pharmacy.reminders.models import OutboxMessage
from pharmacy.workflows import orders as order_flow
from pharmacy.workflows import renewals as renewal_flow
from tests import factories
from tests.browser.conftest import shot, shown, sign_in
from tests.conftest import PASSWORD

pytestmark = pytest.mark.browser


def _renewal(app: Any, staff: dict) -> dict[str, Any]:
    with app.test_request_context("/"):
        w = factories.world(staff, refills_authorized=0)
        order = order_flow.start_fill(w["pharmacist"], w["rx"].id)
        factories.run_order_to(w, order.id, "dispensed")
        renewal = renewal_flow.ask_prescriber(w["pharmacist"], prescription_id=w["rx"].id)
        row = db.session.execute(sa.select(OutboxMessage).where(OutboxMessage.renewal_id == renewal.id)).scalar_one()
        email = rendering.render(row)
        db.session.commit()
        return {"message_id": row.id, "text": email.text}


def _no_violations(page: Any) -> None:
    results = Axe().run(page)
    assert results.violations_count == 0, results.generate_report()


def test_an_admin_sees_how_an_email_went_not_what_it_says(live_server: Any, page: Any, staff: dict) -> None:
    d = _renewal(live_server.app, staff)
    sign_in(page, live_server.url, staff["admin"].email, PASSWORD)
    page.goto(f"{live_server.url}/outbox/{d['message_id']}")
    body = page.locator("main").inner_text() if page.locator("main").count() else page.inner_text("body")
    assert "shown to pharmacists only" in body and "e•••@neuro.example" in body
    assert "Ellison" not in body and "renewal-request" not in body
    shot(page, "outbox-message-as-admin")
    _no_violations(page)


def test_a_prescriber_confirms_the_npi_and_reads_the_request(live_server: Any, page: Any, staff: dict) -> None:
    d = _renewal(live_server.app, staff)
    path = re.search(r"https?://[^/\s]+(/renewal-request/\S+)", d["text"]).group(1)  # type: ignore[union-attr]
    page.goto(live_server.url + path)
    assert "Ellison" not in page.inner_text("body")
    shot(page, "prescriber-renewal-npi")
    _no_violations(page)
    page.get_by_label("Your NPI (10 digits)").fill("1234567893")
    page.get_by_role("button", name="Show the request").click()
    # The NPI page has the same heading ("Prescription renewal request") and address: wait for the request's words.
    shown(page, "Margaret Ellison", "Naltrexone 4.5 mg capsules", within="body")
    shot(page, "prescriber-renewal-request")
    _no_violations(page)
