"""A 60-day prescription of a liquid that keeps 14 days, filled in parts, seen by the pharmacist and the patient.

Naltrexone 1 mg/mL sublingual drops, unpreserved (USP <795>: 14 days in the refrigerator), written for 60 days
with 2 refills. No single dispensing may outlast the BUD, so the first fill goes out as 14 + 14 + 14 + 14 + 4
days. Throughout, the pharmacist's pages say which part of which fill each order is, the patient's refill page
says how many days they hold and when the last dose is, and the five parts together consume exactly one fill:
both refills are still there at the end, and the next order is the first refill.

The pharmacist starts every part in the browser (where the BUD cap is shown); making it (verify, compound,
check, release, dispense) is the services' work, walked through by the test factories as the other journeys do.
"""
from __future__ import annotations

import re
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import pytest

from pharmacy.compounding.models import Formula, Order
from pharmacy.compounding.rules import UspCategory
from pharmacy.core import links
from pharmacy.extensions import db
from pharmacy.prescriptions.rules import Form
from tests import factories
from tests.browser.conftest import shot, sign_in
from tests.conftest import PASSWORD, T0

pytestmark = pytest.mark.browser

DOB = date(1968, 4, 12)
# (day the part is dispensed, days in it, the last day covered after it) counted from the first dispensing.
# Each part may go out once 80 % of the one before is used (two days left), and a bottle's days count from when its
# own doses start, after the last one: made on day d with a 14-day BUD, it covers d+2 … d+13 — 12 days, the last 10.
PARTS = [(0, 14, 13), (12, 12, 25), (24, 12, 37), (36, 12, 49), (48, 10, 59)]


def _world(app: Any, staff: dict) -> dict[str, Any]:
    with app.test_request_context("/"):
        f = factories.formula("LDN-SL-AQ", form=Form.SUBLINGUAL_LIQUID, strength="1",
                              category=UspCategory.AQUEOUS_UNPRESERVED,
                              prices=(("60", 60, 9000), ("14", 14, 3500)))
        w = factories.world(staff, patient={"first_name": "Irene", "last_name": "Castell",
                                            "email": "irene@example.com", "date_of_birth": DOB})
        rx = factories.second_prescription(w["pharmacist"], w["patient"].id, f.id, w["prescriber"].id,
                                           dose_mg=Decimal("1.5"), days_supply=60, refills_authorized=2)
        db.session.commit()
        return {**w, "formula_id": f.id, "rx_id": rx.id, "ids": (w["patient"].id, rx.id)}


def _make(app: Any, w: dict[str, Any], order_id: int) -> None:
    with app.test_request_context("/"):
        factories.run_order_to({**w, "formula": db.session.get(Formula, w["formula_id"])}, order_id, "dispensed")
        db.session.commit()


def _patient_page(browser: Any, base: str, app: Any, ids: tuple[int, int], name: str) -> str:
    """What the patient reads after opening a fresh reminder's link on a phone (date of birth first)."""
    with app.test_request_context("/"):
        token = links.make_token(links.REFILL, *ids)
    context = browser.new_context(viewport={"width": 390, "height": 844})
    phone = context.new_page()
    phone.goto(f"{base}/r/{token}")
    phone.fill("#dob-month", str(DOB.month))
    phone.fill("#dob-day", str(DOB.day))
    phone.fill("#dob-year", str(DOB.year))
    phone.get_by_role("button", name="Continue").click()
    phone.wait_for_url(re.compile(r".*/r/[^/]+/refill$"))  # the link's main page (a wrong date would stay put)
    text = " ".join(phone.locator("main").inner_text().split())
    shot(phone, name)
    context.close()
    return text


def _long(day: date) -> str:
    return f"{day:%A}, {day:%B} {day.day}, {day.year}"


def test_a_60_day_liquid_filled_in_five_parts_consumes_one_fill(live_server, live_app, page, browser, staff,
                                                                 clock) -> None:
    base = live_server.url
    w = _world(live_app, staff)
    rx_id = w["rx_id"]
    start = T0.date()
    done_days = 0
    for number, (offset, days, last_covered) in enumerate(PARTS, start=1):
        clock.set(T0 + timedelta(days=offset))
        if number > 1:  # the morning before: what the patient holds, and when the last dose is
            before = _patient_page(browser, base, live_app, w["ids"], f"supply-part{number}-before")
            held = PARTS[number - 2][2] - offset + 1
            assert f"About {held} day{'s' if held != 1 else ''}" in before, before
            assert _long(start + timedelta(days=PARTS[number - 2][2])) in before, before
        sign_in(page, base, staff["pharmacist"].email, PASSWORD)  # days passed: yesterday's session has ended
        page.goto(f"{base}/prescriptions/{rx_id}")
        page.get_by_role("button", name="Start a fill").click()
        page.wait_for_url(re.compile(r".*/orders/\d+$"))
        order_text = " ".join(page.locator("main").inner_text().split())
        assert f"{days} days" in order_text, order_text
        assert "original fill (partial)" in order_text, order_text  # every part belongs to the first fill
        if number < len(PARTS):
            assert "beyond-use" in order_text.lower() or "BUD" in order_text, order_text  # why only 14
        shot(page, f"supply-part{number}-order")
        order_id = int(page.url.rsplit("/", 1)[1])
        _make(live_app, w, order_id)
        done_days += days

        after = _patient_page(browser, base, live_app, w["ids"], f"supply-part{number}-after")
        held = last_covered - offset + 1
        assert f"About {held} days" in after, after
        assert _long(start + timedelta(days=last_covered)) in after, after
        if done_days < 60:  # the rest of this fill is still owed, in words
            assert f"{done_days} of 60 days" in after, after
        page.goto(f"{base}/prescriptions/{rx_id}")
        rx_text = " ".join(page.locator("main").inner_text().split())
        assert "2 left" in rx_text, rx_text  # no refill is used up by a part
        fills = page.locator("section[aria-labelledby=fills-h] tbody tr td:first-child").all_inner_texts()
        assert fills == ["Original fill (partial)"] * number, fills  # a part is not a refill

    # All 60 days of the first fill are out: one fill consumed, both refills remain, the next order is refill 1.
    assert done_days == 60
    with live_app.test_request_context("/"):
        orders = db.session.query(Order).filter(Order.prescription_id == rx_id).order_by(Order.id).all()
        assert [(o.authorized_fill, o.days_supply, o.state.value) for o in orders] == [
            (0, 14, "dispensed"), (0, 12, "dispensed"), (0, 12, "dispensed"), (0, 12, "dispensed"),
            (0, 10, "dispensed")]  # authorized fill 0: the original
    end = _patient_page(browser, base, live_app, w["ids"], "supply-after-the-fill")
    assert "2 refills" in end or "Refills left 2" in end or "refills left: 2" in end.lower(), end
    shot(page, "supply-prescription-after-the-fill")
    clock.set(T0 + timedelta(days=58))  # 80 % of the 10-day part used: the first refill may start
    sign_in(page, base, staff["pharmacist"].email, PASSWORD)
    page.goto(f"{base}/prescriptions/{rx_id}")
    page.get_by_role("button", name="Start a fill").click()
    page.wait_for_url(re.compile(r".*/orders/\d+$"))
    order_text = " ".join(page.locator("main").inner_text().split())
    # Two days of the last part left: its doses start in two days, so 12 days before its BUD.
    assert "refill 1" in order_text.lower() and "12 days" in order_text, order_text
