"""The patient portal in a real browser on a 390 px phone, against a real server on loopback.

The journey a patient takes: sign in with a code (read from the email the pharmacy sent), see the titration
calendar, download the .ics (parsed back with icalendar), ask for a refill, report a side effect that the
pharmacist then sees on Today (signed in as staff in another browser context), confirm a mobile number with a
texted code, switch reminders to texts, pause them. Every page and state on the way passes axe-core at WCAG 2.2 AA
on the phone and on desktop, has targets of 44 px or more and reflows at 200 % zoom (tests/browser/portal_checks.py);
screenshots go to artifacts/screenshots/portal-*.png.
"""
from __future__ import annotations

import re
from datetime import date, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import pytest
import sqlalchemy as sa
from icalendar import Calendar
from playwright.sync_api import expect

from pharmacy.autorefill import services as autorefill
from pharmacy.extensions import db
from pharmacy.patients.models import SideEffectEntry
from pharmacy.refills.models import RefillRequest
from pharmacy.sms import delivery as sms_delivery
from pharmacy.sms.models import ContactPreference
from pharmacy.sms.transports import OutboxOnlySms
from tests import factories
from tests.browser.conftest import shot, shown, sign_in
from tests.browser.portal_checks import PHONE, check_page
from tests.conftest import PASSWORD
from tests.portal_helpers import delivered_code, delivered_messages, titrating_world

pytestmark = pytest.mark.browser

DOB = date(1968, 4, 12)
MOBILE = "(217) 555-0101"


@pytest.fixture
def world(live_app: Any, staff: dict) -> dict[str, Any]:
    """Margaret: a 1.5 → 3 → 4.5 mg titration, her first fill dispensed today, one payment on file."""
    from pharmacy.billing import services as billing

    with live_app.test_request_context("/"):
        w = titrating_world(staff)
        billing.record_payment(factories.actor(staff["technician"]), patient_id=w["patient"].id, amount_cents=4500,
                               method="card")
        db.session.commit()
        return {"patient_id": w["patient"].id, "rx_id": w["rx"].id}


@pytest.fixture
def phone(browser: Any) -> Any:
    context = browser.new_context(viewport=PHONE, device_scale_factor=2, is_mobile=True, has_touch=True,
                                  accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(15_000)
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.console_errors = errors
    yield page
    context.close()


def _texted_code(app: Any) -> str:
    """Deliver the waiting texts through the outbox-only transport and read the code, as the phone would."""
    transport = OutboxOnlySms()
    with app.app_context():
        sms_delivery.deliver_due(transport=transport)
        db.session.remove()
    codes = [c for _to, body in transport.sent for c in re.findall(r"\b(\d{6})\b", body)]
    assert codes, transport.sent
    return codes[-1]


def _main(page: Any) -> str:
    return page.locator("main").inner_text()


def _nav(page: Any, name: str) -> None:
    link = page.get_by_role("navigation", name="Your account").get_by_role("link", name=name, exact=True)
    target = urljoin(page.url, link.get_attribute("href"))
    assert target != page.url.split("#")[0], f"already on {target}: nothing to wait for"
    link.click()
    page.wait_for_url(target)  # wait_for_load_state() would return at once: the page shown now has loaded


def _sign_in_with_code(page: Any, base: str, app: Any) -> None:
    page.goto(f"{base}/my/")
    page.wait_for_url("**/my/sign-in")
    check_page(page, "sign-in")
    page.get_by_role("button", name="Send me a code").click()  # nothing typed: the error state
    expect(page.locator("#contact-error")).to_be_visible()  # the refused form is back (same address): check that one
    check_page(page, "sign-in-error")
    page.get_by_label("Your email address or mobile number").fill("margaret@example.com")
    page.get_by_role("button", name="Send me a code").click()
    page.wait_for_url("**/my/sign-in/code")
    check_page(page, "code")
    code = delivered_code(app)
    wrong = "000000" if code != "000000" else "111111"
    page.get_by_label("The 6-digit code").fill(wrong)
    page.get_by_label("Month").fill(str(DOB.month))
    page.get_by_label("Day", exact=True).fill(str(DOB.day))
    page.get_by_label("Year").fill(str(DOB.year))
    page.get_by_role("button", name="Sign in").click()
    shown(page, "tries left")  # the same address again, with the refusal
    check_page(page, "code-error")
    page.get_by_label("The 6-digit code").fill(code)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{base}/my/")


def test_a_patient_on_a_phone_signs_in_plans_refills_reports_and_chooses_texts(
        live_server, live_app, browser, phone, world, staff, clock) -> None:
    base, page = live_server.url, phone
    _sign_in_with_code(page, base, live_app)

    # My LDN: the dose, the days left, when to ask, the dated titration chart.
    body = _main(page)
    assert "Hello Margaret" in body and "Ask for your next refill by" in body and "your last dose is on" in body
    chart = page.get_by_role("table", name="Your dated dose chart: follow the dates").inner_text()
    assert "1.5 mg" in chart and "3 mg" in chart and "4.5 mg" in chart
    check_page(page, "home")

    # The calendar: the coming dose changes listed, then the .ics downloaded and read back.
    _nav(page, "Calendar")
    listed = _main(page)
    assert "your dose changes to 3 mg a day" in listed and "your medicine runs out" in listed
    check_page(page, "calendar")
    with page.expect_download() as info:
        page.get_by_role("link", name="Download the calendar file").click()
    download = info.value
    assert download.suggested_filename == "pharmacy-calendar.ics"
    cal = Calendar.from_ical(Path(download.path()).read_bytes())
    events = sorted((e.decoded("dtstart"), str(e.get("summary")), str(e.get("description"))) for e in cal.walk("VEVENT"))
    titles = [title for _day, title, _text in events]
    assert {"Order your refill", "Medicine runs out"} <= set(titles), events
    assert "Dose change starts" in titles, events
    assert not any("LDN" in t or "altrexone" in t for t in titles)  # no drug name unless the patient opts in
    assert all(isinstance(d, date) and d >= date(2026, 11, 23) for d, _t, _x in events)
    # The private subscription address: shown once, then only that one exists.
    page.get_by_role("button", name="Make my private address").click()
    shown(page, "Your new calendar address is ready")  # the calendar's address again, now with the new one
    feed_url = page.locator(".feed code").inner_text()
    assert re.fullmatch(rf"{re.escape(base)}/calendar/[\w-]+\.ics", feed_url)
    check_page(page, "calendar-feed")

    # A refill, three weeks on: pick-up, one button, then the page says it is asked for.
    clock.advance(timedelta(days=21))
    page.goto(f"{base}/my/")  # the session was idle for 21 days: signed out, and told so
    page.wait_for_url("**/my/sign-in")
    assert "signed out after a while" in _main(page)
    check_page(page, "signed-out-idle")
    page.get_by_label("Your email address or mobile number").fill("margaret@example.com")
    page.get_by_role("button", name="Send me a code").click()
    page.wait_for_url("**/my/sign-in/code")
    page.get_by_label("The 6-digit code").fill(delivered_code(live_app))
    page.get_by_label("Month").fill("4")
    page.get_by_label("Day", exact=True).fill("12")
    page.get_by_label("Year").fill("1968")
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{base}/my/")
    page.get_by_role("link", name="Refill this medicine").click()
    page.wait_for_url(re.compile(r".*/my/refill/\d+$"))
    assert "Get your next refill" in _main(page), _main(page)[:800]
    check_page(page, "refill")
    page.get_by_label(re.compile("I will pick it up")).check()
    page.get_by_role("button", name="Yes, make my refill").click()
    # The same address as the page before: wait for its words, not for the address.
    shown(page, "We got your refill request", "You have asked for this refill")
    check_page(page, "refill-requested")
    with live_app.app_context():
        req = db.session.execute(sa.select(RefillRequest)).scalar_one()
        assert req.source.value == "portal" and req.patient_id == world["patient_id"]
        db.session.remove()

    # Orders and payments (a receipt to download).
    _nav(page, "Orders")
    assert "Naltrexone" in _main(page)
    check_page(page, "orders")
    _nav(page, "Payments")
    assert "$45.00" in _main(page)
    check_page(page, "money")
    with page.expect_download() as info:
        page.get_by_role("link", name=re.compile(r"Receipt .* \(PDF\)")).first.click()
    assert Path(info.value.path()).read_bytes().startswith(b"%PDF")

    # Delivery: a mistake first (a state that is not two letters), then a good address.
    _nav(page, "Delivery")
    check_page(page, "delivery")
    page.get_by_label("Ship it to my address").check()
    page.get_by_label("State (2 letters)").fill("Illinois")
    page.get_by_role("button", name="Save").click()
    expect(page.locator("#f-state-error")).to_be_visible()  # the refused form is back: check that one
    check_page(page, "delivery-error")
    page.get_by_label("State (2 letters)").fill("IL")
    page.get_by_role("button", name="Save").click()
    shown(page, "Your delivery choice is saved")

    # A side effect: trouble sleeping, for weeks now.
    _nav(page, "Side effects")
    check_page(page, "side-effects")
    page.get_by_role("button", name="Send to the pharmacist").click()  # nothing chosen: the error state
    expect(page.locator("#effect-error")).to_be_visible()  # the refused form is back: check that one
    check_page(page, "side-effects-error")
    page.get_by_label("Trouble sleeping").check()
    page.get_by_label(re.compile("lasted more than two weeks")).check()
    page.get_by_label(re.compile("Anything else")).fill("Awake at 3 am most nights")
    page.get_by_role("button", name="Send to the pharmacist").click()
    shown(page, "The pharmacist will look at your report")
    check_page(page, "side-effects-sent")
    with live_app.app_context():
        entry = db.session.execute(sa.select(SideEffectEntry)).scalar_one()
        assert entry.source == "patient" and entry.patient_id == world["patient_id"]
        db.session.remove()

    # ... which the pharmacist sees on Today, in a second browser (desktop), and marks reviewed.
    staff_context = browser.new_context(viewport={"width": 1280, "height": 900})
    desk = staff_context.new_page()
    sign_in(desk, base, staff["pharmacist"].email, PASSWORD)
    reports = desk.locator("#patient-reports")
    assert "Ellison, Margaret" in reports.inner_text() and "Awake at 3 am" in reports.inner_text()
    assert "Suggested" in reports.inner_text()
    reports.scroll_into_view_if_needed()
    shot(desk, "portal-staff-today-side-effect")
    reports.get_by_role("button", name="Mark reviewed").click()
    desk.wait_for_url(re.compile(r".*/#patient-reports$"))  # Today again (wait_for_load_state() returns at once)
    assert desk.locator("#patient-reports").count() == 0
    staff_context.close()

    # Reminders: texts need a confirmed number first; the code comes by text.
    _nav(page, "Reminders")
    assert page.get_by_label("By text message", exact=True).is_disabled()
    check_page(page, "reminders")
    page.get_by_label("Your mobile number").fill(MOBILE)
    page.get_by_role("button", name="Text me a code").click()
    shown(page, "We sent a code by text")  # the reminders' address again (waiting for the address returns at once)
    check_page(page, "reminders-code-sent")
    texted = _texted_code(live_app)
    page.get_by_label(re.compile("The code we texted")).fill(texted)
    page.get_by_role("button", name="Confirm my number").click()  # consent not ticked: refused, said why
    shown(page, re.compile("Tick the box|only text you if you agree"))
    check_page(page, "reminders-consent-missing")
    # The code was not used up by the refusal: the same code again, with consent.
    page.get_by_label(re.compile("The code we texted")).fill(texted)
    page.get_by_label(re.compile("Yes, text me refill reminders")).check()
    page.get_by_role("button", name="Confirm my number").click()
    shown(page, "Your mobile number is confirmed")
    check_page(page, "reminders-number-confirmed")

    # Switch to texts, and pause until mid-January.
    page.get_by_label("By text message", exact=True).check()
    page.get_by_role("button", name="Save my choices").click()
    shown(page, "Your reminder choices are saved")
    assert page.get_by_label("By text message", exact=True).is_checked()
    check_page(page, "reminders-texts")
    until = date(2027, 1, 15)
    page.get_by_label(re.compile("Pause reminders until")).fill(until.isoformat())
    page.get_by_role("button", name="Save my choices").click()
    # The page before said "saved" too: the new one is known by the pause it shows (an attribute, where the date
    # typed above is only the box's value).
    expect(page.locator("#paused_until")).to_have_attribute("value", until.isoformat())
    shown(page, "Your reminder choices are saved")
    with live_app.app_context():
        pref = db.session.get(ContactPreference, world["patient_id"])
        assert pref.channel == "sms" and pref.paused_until == until and pref.sms_consent
        assert pref.sms_number == "+12175550101"
        db.session.remove()
    _nav(page, "My LDN")
    assert "paused until Friday, January 15, 2027" in _main(page)
    check_page(page, "home-paused")

    # The idle warning (shown 2 minutes before the sign-out) passes too.
    page.evaluate("() => { document.getElementById('idle-warning').hidden = false; }")
    check_page(page, "idle-warning")
    page.get_by_role("button", name="Stay signed in").click()
    page.wait_for_function("() => document.getElementById('idle-warning').hidden")

    # A page for a prescription that is not hers: the plain problem page.
    page.goto(f"{base}/my/refill/{world['rx_id'] + 1000}")
    assert "Something needs your attention" in _main(page)
    check_page(page, "problem")

    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url("**/my/sign-in")
    assert "You are signed out" in _main(page)
    # The error states answered 4xx on purpose; anything else in the console is a fault.
    assert [e for e in page.console_errors if not re.match(r"Failed to load resource: .* status of 4\d\d", e)] == []



def test_the_page_checks_catch_what_they_are_for(browser) -> None:
    """The checks above can fail: an unlabelled field (axe), a 20 px button (targets) and a 1000 px wide block
    (sideways scrolling at 200 % zoom) are each reported."""
    context = browser.new_context(viewport=PHONE)
    page = context.new_page()
    page.set_content('<!doctype html><html lang="en"><head><title>Bad</title></head><body><main>'
                     '<h1>Bad page</h1><input type="text"><button style="width:20px;height:20px">x</button>'
                     '<div style="width:1000px">wide</div></main></body></html>')
    with pytest.raises(AssertionError) as failed:
        check_page(page, "selftest-bad-page")
    report = str(failed.value)
    assert "axe: label" in report, report
    assert 'target: button "x" is 20×20' in report, report
    assert "640 px wide: scrolls sideways" in report and "320 px wide: scrolls sideways" in report, report
    context.close()


def _delivered_emails(app: Any) -> list[str]:
    """Deliver the due emails through the outbox-only transport; their plain-text bodies."""
    return [m.get_body(preferencelist=("plain",)).get_content() for m in delivered_messages(app)]


def test_auto_refill_on_a_phone_then_skipped_from_its_email(live_server, live_app, browser, phone, world,
                                                            clock) -> None:
    """Turn automatic refills on in the portal; on the order-by day the scheduler asks and emails a one-click skip
    link, which works without signing in (a fresh browser) and cancels the request."""
    base, page = live_server.url, phone
    _sign_in_with_code(page, base, live_app)
    page.goto(f"{base}/my/refill/{world['rx_id']}")
    page.get_by_role("button", name="Turn automatic refills on").click()
    shown(page, "Automatic refills are on for this medicine")
    check_page(page, "auto-refill-on")

    clock.advance(timedelta(days=24))  # Thursday, December 17: the order-by date, 9 am in Chicago
    with live_app.app_context():
        report = autorefill.run_due()
        db.session.remove()
    assert report.requested == 1, report.line()
    links = [u for body in _delivered_emails(live_app) for u in re.findall(r"http\S+/my/auto-refill/skip/\S+", body)]
    assert len(links) == 1, links

    stranger = browser.new_context(viewport=PHONE, device_scale_factor=2, is_mobile=True, has_touch=True)
    tab = stranger.new_page()
    tab.goto(links[0])
    assert "Skip your automatic refill?" in _main(tab)
    check_page(tab, "auto-refill-skip-link")
    tab.get_by_role("button", name="Skip this refill").click()
    shown(tab, "Your automatic refill is cancelled")
    check_page(tab, "auto-refill-skipped")
    tab.goto(links[0][:-4] + "abcd")  # a damaged link: a plain page, no details
    assert "This link does not work" in _main(tab)
    check_page(tab, "auto-refill-skip-bad-link")
    stranger.close()
    with live_app.app_context():
        req = db.session.execute(sa.select(RefillRequest)).scalar_one()
        assert req.source.value == "auto" and req.state.value != "open"
        db.session.remove()


def test_the_pharmacy_enrols_auto_refill_and_reads_a_text_in_the_outbox(live_server, live_app, page, world,
                                                                        staff) -> None:
    """Staff side, desktop: the auto-refill block on the patient page (with the patient's consent in words), and a
    text in the outbox shown as a text with its code masked."""
    base = live_server.url
    with live_app.test_request_context("/"):
        from pharmacy.core.actor import Actor
        from pharmacy.portal import services as portal

        portal.start_number_check(Actor(kind="patient", patient_id=world["patient_id"]), MOBILE)
        db.session.commit()
    sign_in(page, base, staff["pharmacist"].email, PASSWORD)
    page.goto(f"{base}/patients/{world['patient_id']}")
    block = page.locator(f"#auto-refill-{world['rx_id']}")
    assert "Auto-refill: off" in block.inner_text()
    block.get_by_label("How the patient agreed").fill("by phone, Nov 23, spoke to Margaret")
    block.get_by_role("button", name="Start auto-refill").click()
    page.wait_for_url(re.compile(rf".*/patients/{world['patient_id']}#auto-refill-{world['rx_id']}$"))
    block = page.locator(f"#auto-refill-{world['rx_id']}")
    assert "Auto-refill: on" in block.inner_text() and "spoke to Margaret" in block.inner_text()
    block.scroll_into_view_if_needed()
    shot(page, "portal-staff-patient-auto-refill")

    page.goto(f"{base}/outbox")
    row = page.locator("tr[data-outbox-id]", has=page.locator("[data-channel=sms]")).first
    row.get_by_role("link", name=re.compile("preview")).click()
    page.wait_for_url(re.compile(r".*/outbox/\d+$"))
    assert page.locator("h1").inner_text().startswith("Text #")
    words = page.locator("#text-version").inner_text()
    assert "••••••" in words and not re.search(r"\d{6}", words)
    shot(page, "portal-staff-outbox-text")
