"""Defects found walking the demo instance in a real browser (QA walk), each pinned by the state that showed it.

1. The refill link's "You have run out" box broke its one sentence into five lines (every <strong> in an alert was a
   block): the date, the number of days and the phone number each on a line of their own.
2. After asking for a refill, My LDN still said "Ask for your next refill by …" with a "Refill this medicine" button,
   as if nothing had been asked.
3. The compounding record's ingredient table stuck out of its card on a 1280 px desktop (the page scrolled sideways).
4. The portal's code box answered a short code with "Use 6 to 12 characters." for a 6-digit code.
5. A technician on a checked order read "Record compounding: a pharmacist's step." (technicians record compounding;
   the pharmacist's step there is sending the batch back to be re-made).
"""
from __future__ import annotations

import re
from datetime import date, timedelta
from typing import Any

import pytest
from playwright.sync_api import expect

from pharmacy.extensions import db
from pharmacy.workflows import orders as order_flow
from tests import factories
from tests.browser.conftest import portal_sign_in, shown, sign_in
from tests.browser.portal_checks import PHONE, axe_violations
from tests.conftest import PASSWORD
from tests.portal_helpers import titrating_world

pytestmark = pytest.mark.browser

DOB = date(1968, 4, 12)  # tests/factories.patient's default (Margaret Ellison)


def _refill_link(app: Any, patient_id: int, rx_id: int) -> str:
    from pharmacy.core import links

    with app.test_request_context("/"):
        return "/r/" + links.make_token(links.REFILL, patient_id, rx_id)


def _confirm_dob(page: Any, dob: date) -> None:
    page.fill("#dob-month", str(dob.month))
    page.fill("#dob-day", str(dob.day))
    page.fill("#dob-year", str(dob.year))
    page.get_by_role("button", name="Continue").click()
    page.wait_for_url(re.compile(r".*/refill$"))


def _serious(page: Any) -> list[str]:
    return [v for v in axe_violations(page) if "(serious)" in v or "(critical)" in v]


def test_out_of_medicine_box_reads_as_one_sentence(live_server, live_app, browser, staff, clock) -> None:
    with live_app.test_request_context("/"):
        w = factories.world(staff)
        first = order_flow.start_fill(w["pharmacist"], w["rx"].id)
        factories.run_order_to(w, first.id, "dispensed")
        db.session.commit()
        ids = (w["patient"].id, w["rx"].id)
    clock.advance(timedelta(days=33))  # three days after the 30-day supply ran out
    context = browser.new_context(viewport=PHONE)
    page = context.new_page()
    try:
        page.goto(live_server.url + _refill_link(live_app, *ids))
        _confirm_dob(page, DOB)
        box = page.locator(".out-of-medicine")
        expect(box).to_contain_text("You have run out of this medicine")
        displays = box.locator("p strong").evaluate_all("els => els.map(e => getComputedStyle(e).display)")
        assert displays and set(displays) == {"inline"}, f"the sentence is broken into lines: {displays}"
        assert _serious(page) == []
    finally:
        context.close()


def _portal_sign_in(page: Any, base: str, app: Any) -> None:
    portal_sign_in(page, base, app, "margaret@example.com", DOB)


def test_my_ldn_says_the_refill_was_asked_for(live_server, live_app, browser, staff, clock) -> None:
    with live_app.test_request_context("/"):
        w = titrating_world(staff)
        db.session.commit()
        rx_id = w["rx"].id
    clock.advance(timedelta(days=10))
    context = browser.new_context(viewport=PHONE)
    page = context.new_page()
    try:
        base = live_server.url
        _portal_sign_in(page, base, live_app)
        assert "Ask for your next refill by" in page.locator("main").inner_text()
        page.goto(f"{base}/my/refill/{rx_id}")
        page.locator("main form button[type=submit]").first.click()
        shown(page, "You have asked for this refill")
        page.goto(f"{base}/my/")
        body = page.locator("main").inner_text()
        assert "You asked for a refill on" in body, body
        assert "Ask for your next refill by" not in body, body
        assert page.get_by_role("link", name="Refill this medicine").count() == 0
        assert _serious(page) == []
    finally:
        context.close()


def test_compounding_record_fits_its_card_on_desktop(live_server, live_app, page, staff) -> None:
    with live_app.test_request_context("/"):
        _w, order_id = factories.world_with_order(staff, "verified")
        db.session.commit()
    page.set_viewport_size({"width": 1280, "height": 800})
    sign_in(page, live_server.url, staff["technician"].email, PASSWORD)
    page.goto(f"{live_server.url}/orders/{order_id}")
    page.get_by_role("button", name="Plan the batch").click()
    shown(page, "Batch planned")
    scroll, client = page.evaluate("() => [document.documentElement.scrollWidth, document.documentElement.clientWidth]")
    assert scroll <= client + 1, f"the page scrolls sideways: {scroll} > {client}"
    assert _serious(page) == []


def test_portal_code_box_speaks_of_a_6_digit_code(live_server, live_app, browser, staff) -> None:
    with live_app.test_request_context("/"):
        titrating_world(staff)
        db.session.commit()
    context = browser.new_context(viewport=PHONE)
    page = context.new_page()
    try:
        page.goto(f"{live_server.url}/my/sign-in")
        page.get_by_label("Your email address or mobile number").fill("margaret@example.com")
        page.get_by_role("button", name="Send me a code").click()
        page.wait_for_url("**/my/sign-in/code")
        page.get_by_label("The 6-digit code").fill("12ab")
        page.get_by_role("button", name="Sign in").click()
        error = page.locator("#code-error")
        expect(error).to_be_visible()
        assert "6 digits" in error.inner_text() or "6-digit" in error.inner_text(), error.inner_text()
        assert "characters" not in error.inner_text()
        assert page.get_by_label("The 6-digit code").input_value() == "12ab"  # what was typed is kept
        assert _serious(page) == []
    finally:
        context.close()


def test_technician_on_a_checked_order_is_not_told_compounding_is_a_pharmacists_step(
        live_server, live_app, page, staff) -> None:
    with live_app.test_request_context("/"):
        _w, order_id = factories.world_with_order(staff, "checked")
        db.session.commit()
    sign_in(page, live_server.url, staff["technician"].email, PASSWORD)
    page.goto(f"{live_server.url}/orders/{order_id}")
    step = page.locator("section", has=page.get_by_role("heading", name="Next step")).inner_text()
    assert "Release: a pharmacist's step." in step
    assert "Record compounding: a pharmacist's step" not in step, step
    assert _serious(page) == []
