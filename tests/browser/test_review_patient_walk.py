"""Defects a patient hits on the email → refill link → portal path, found walking it in a real browser (phone 390 px
and desktop 1280 px, keyboard only for the refill link). Each test fails on the code as it was walked.

1. The reminder email is wider than a phone: the copy-this-link line prints the signed URL as one unbreakable word.
2. The pharmacy's name at the top of the refill-link (and email-preferences) pages is a link to the staff sign-in.
3. "Ship it to me" on the refill-link page is a 29 px tall tap target.
4. After a wrong or missing birth date (refill link) or a wrong code (portal) the focus is left on the page's body.
5. A wrong birth date says "4 attempt(s) left." under a hint that still says "You have 5 tries on this link".
"""
from __future__ import annotations

import re
from datetime import date
from typing import Any

import pytest
import sqlalchemy as sa
from playwright.sync_api import expect

from pharmacy.extensions import db
from pharmacy.reminders.models import OutboxMessage
from pharmacy.workflows import orders as order_flow
from tests import factories
from tests.browser.portal_checks import PHONE, axe_violations, sideways_scroll
from tests.portal_helpers import delivered_code, delivered_messages

pytestmark = pytest.mark.browser

DOB = date(1968, 4, 12)  # tests/factories.patient's default (Margaret Ellison)
SHOTS = "/tmp/patient-walk"


def _dispensed_world(app: Any, staff: dict) -> tuple[int, int]:
    """Margaret, 4.5 mg capsules, her first 30-day fill picked up today (Nov 23): reminders planned for December."""
    with app.test_request_context("/"):
        w = factories.world(staff)
        first = order_flow.start_fill(w["pharmacist"], w["rx"].id)
        factories.run_order_to(w, first.id, "dispensed")
        db.session.commit()
        return w["patient"].id, w["rx"].id


def _first_reminder(app: Any, clock: Any) -> Any:
    """Move the clock to the first refill reminder's send time and deliver it; the email as the patient gets it."""
    with app.app_context():
        due = db.session.execute(
            sa.select(sa.func.min(OutboxMessage.due_at)).where(OutboxMessage.kind == "reminder_early",
                                                               OutboxMessage.state == "pending")).scalar_one()
        db.session.remove()
    clock.set(due)
    sent = delivered_messages(app)
    assert len(sent) == 1, [m["Subject"] for m in sent]
    return sent[0]


def _refill_link(message: Any) -> str:
    text = message.get_body(preferencelist=("plain",)).get_content()
    urls = re.findall(r"https?://\S+/r/\S+", text)
    assert len(urls) == 1, text
    return urls[0]


def _phone(browser: Any) -> Any:
    context = browser.new_context(viewport=PHONE, device_scale_factor=2, is_mobile=True, has_touch=True)
    page = context.new_page()
    page.set_default_timeout(15_000)
    return context, page


def _wrong_birth_date(page: Any, link: str) -> None:
    """Open the refill link and give April 21, 1968 for April 12 (a slip of the finger); the refusal is shown."""
    page.goto(link)
    page.fill("#dob-month", "4")
    page.fill("#dob-day", "21")
    page.fill("#dob-year", "1968")
    page.get_by_role("button", name="Continue").click()
    expect(page.locator("#dob-error")).to_contain_text("does not match")


def _focused(page: Any) -> str:
    return page.evaluate("() => { const e = document.activeElement;"
                         " return e ? `${e.tagName.toLowerCase()}#${e.id}` : 'none'; }")


def test_reminder_email_fits_a_phone_screen(live_server, live_app, browser, staff, clock) -> None:
    """What the patient sees: the refill reminder, opened on a 390 px phone, is about 850 px wide — the "Or copy this
    link into your browser: http://…/r/eyJwIjox…" line is one unbreakable word, so the mail app either scrolls the
    whole email sideways or shrinks it (dates, price and button) to a third of its size: hard to read with low vision.

    Right: the email fits the screen; the long link wraps inside the card (the dates, price and button stay readable).
    Cause: templates/emails/_refill_details.html prints the raw URL in `.note`; templates/emails/base.html has no
    `overflow-wrap:anywhere` / `word-break:break-all` for it."""
    _dispensed_world(live_app, staff)
    html = _first_reminder(live_app, clock).get_body(preferencelist=("html",)).get_content()
    context, page = _phone(browser)
    try:
        page.set_content(html)
        page.screenshot(path=f"{SHOTS}/review-email-phone.png", full_page=True)
        assert "Please order by" in page.locator("body").inner_text()
        assert sideways_scroll(page) is None, f"the email is {sideways_scroll(page)[0]} px wide on a 390 px phone"
        assert axe_violations(page) == []
    finally:
        context.close()


def test_pharmacy_name_on_the_refill_link_does_not_lead_to_the_staff_sign_in(
        live_server, live_app, browser, staff, clock) -> None:
    """What the patient sees: on the page the email's link opens, the pharmacy's name at the top is a link (the
    second stop of the Tab key, before the birth-date boxes). Tapping it opens the staff sign-in: "Sign in — Email —
    Password", which no patient has; the refill they came for is gone (the email-preferences page has the same header).

    Right: on patient pages the name is plain text (as in the portal, templates/portal/base.html) or leads to the
    patient portal (/my/). Cause: templates/base.html `<a class="brand" href="{{ url_for('dashboard.home') }}">`,
    used by templates/refills/link_*.html and templates/reminders/preferences.html."""
    _dispensed_world(live_app, staff)
    link = _refill_link(_first_reminder(live_app, clock))
    context, page = _phone(browser)
    try:
        page.goto(link)
        expect(page.locator("main")).to_contain_text("please enter your date of birth first")
        brand = page.locator("header a", has_text="Riverside Compounding Pharmacy")
        if brand.count() == 0:
            return  # the name is not a link: nothing to follow
        brand.click()
        page.wait_for_load_state("load")
        page.screenshot(path=f"{SHOTS}/review-brand-link-phone.png", full_page=True)
        body = page.locator("main").inner_text()
        assert page.get_by_label("Password").count() == 0, \
            f"the pharmacy's name on the refill link led a patient to {page.url}: {body[:200]!r}"
    finally:
        context.close()


def test_ship_it_to_me_is_big_enough_to_tap(live_server, live_app, browser, staff, clock) -> None:
    """What the patient sees: on the refill link's "How do you want to get it?", the "Ship it to me" choice (a 24 px
    radio and one line of words) is a 29 px tall target; the pick-up one is only taller when its words wrap. With a
    tremor, a 29 px row between two blocks of text is easy to miss (the portal's own choices are ≥ 44 px).

    Right: each delivery choice is a row at least 44 px tall that selects it when tapped anywhere.
    Cause: templates/refills/link_refill.html puts the radio in a bare `<label>` inside `.field` (not the portal's
    `.choice` row); static/css/app.css gives it no min-height/padding."""
    _dispensed_world(live_app, staff)
    link = _refill_link(_first_reminder(live_app, clock))
    context, page = _phone(browser)
    try:
        page.goto(link)
        page.fill("#dob-month", str(DOB.month))
        page.fill("#dob-day", str(DOB.day))
        page.fill("#dob-year", str(DOB.year))
        page.get_by_role("button", name="Continue").click()
        page.wait_for_url(re.compile(r".*/refill$"))
        page.screenshot(path=f"{SHOTS}/review-link-refill-phone.png", full_page=True)
        sizes = page.evaluate("""() => [...document.querySelectorAll('input[name=delivery]')].map(e => {
            const row = e.closest('label, .choice') || e; const b = row.getBoundingClientRect();
            return [e.value, Math.round(b.width), Math.round(b.height)]; })""")
        assert len(sizes) == 2, sizes
        small = [s for s in sizes if s[1] < 44 or s[2] < 44]
        assert small == [], f"delivery choices smaller than 44 px (value, width, height): {small}"
    finally:
        context.close()


def test_a_wrong_birth_date_on_the_refill_link_keeps_the_focus_at_the_form(
        live_server, live_app, browser, staff, clock) -> None:
    """What the patient sees (keyboard, screen reader or switch user): after "Continue" with no date, or a wrong
    one, the page comes back with the message, but the focus is on the page's body: the next Tab goes to "Skip to
    content", then the pharmacy's name, before reaching the month box again; a screen reader starts from the top.

    Right: as the staff forms do (static/js/app.js focuses `#form-errors`), the refused form puts the focus on the
    message (tabindex=-1) or on the month box, so the next keystroke corrects the date.
    Cause: templates/refills/link_dob.html: `#dob-error` is a role=alert div that nothing focuses."""
    _dispensed_world(live_app, staff)
    link = _refill_link(_first_reminder(live_app, clock))
    context, page = _phone(browser)
    try:
        _wrong_birth_date(page, link)
        page.wait_for_load_state("load")
        page.screenshot(path=f"{SHOTS}/review-link-dob-wrong-phone.png", full_page=True)
        focused = _focused(page)
        assert focused.startswith("input#dob-") or "error" in focused, \
            f"after a wrong birth date the focus is on {focused}"
    finally:
        context.close()


def test_a_wrong_code_in_the_portal_keeps_the_focus_at_the_form(live_server, live_app, browser, staff) -> None:
    """What the patient sees: on "Enter your code", a wrong code or birth date brings the page back with "The code or
    the date of birth does not match. 4 tries left.", the focus on the page's body; a keyboard user tabs through
    the skip link again, a screen-reader user hears the page from its heading.

    Right: the focus goes to the message or the code box (the one to correct), as static/js/app.js does for staff
    forms (`#form-errors`). Cause: templates/portal/code.html marks the box aria-invalid but moves no focus."""
    _dispensed_world(live_app, staff)
    context, page = _phone(browser)
    base = live_server.url
    try:
        page.goto(f"{base}/my/sign-in")
        page.get_by_label("Your email address or mobile number").fill("margaret@example.com")
        page.get_by_role("button", name="Send me a code").click()
        page.wait_for_url("**/my/sign-in/code")
        code = delivered_code(live_app)
        page.get_by_label("The 6-digit code").fill("000000" if code != "000000" else "111111")
        page.get_by_label("Month").fill(str(DOB.month))
        page.get_by_label("Day", exact=True).fill(str(DOB.day))
        page.get_by_label("Year").fill(str(DOB.year))
        page.get_by_role("button", name="Sign in").click()
        expect(page.locator("main")).to_contain_text("tries left")
        page.wait_for_load_state("load")
        page.screenshot(path=f"{SHOTS}/review-portal-code-wrong-phone.png", full_page=True)
        focused = _focused(page)
        assert focused.startswith("input#") or "error" in focused, f"after a wrong code the focus is on {focused}"
    finally:
        context.close()


def test_a_wrong_birth_date_says_how_many_tries_are_left_in_plain_words(
        live_server, live_app, browser, staff, clock) -> None:
    """What the patient sees after one wrong birth date on the refill link: "That does not match. 4 attempt(s) left."
    in red, and right under the boxes, unchanged, "You have 5 tries on this link." Two words for one thing, a
    programmer's "(s)", and two counts that disagree: is it 4 or 5? (The portal says "4 tries left.")

    Right: "That does not match. You have 4 tries left on this link." (1 try left when it is one), and the hint
    no longer says 5 once one is used. Cause: pharmacy/core/links.py (`{left} attempt(s) left.`) and
    templates/refills/link_dob.html (`You have {{ max_tries }} tries`)."""
    _dispensed_world(live_app, staff)
    link = _refill_link(_first_reminder(live_app, clock))
    context, page = _phone(browser)
    try:
        _wrong_birth_date(page, link)
        text = page.locator("main").inner_text()
        assert "(s)" not in text, text
        assert not ("4" in page.locator("#dob-error").inner_text() and "You have 5 tries" in text), text
    finally:
        context.close()
