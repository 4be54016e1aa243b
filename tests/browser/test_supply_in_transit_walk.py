"""A patient out of medicine while the refill travels, walked in chromium: the refill link on a phone says the refill
is on its way and when it arrives (not "about 33 days left"), passes axe, targets and reflow; the staff patient page
says out of medicine since when and when the refill arrives."""
from __future__ import annotations

from datetime import date
from typing import Any

import pytest
from playwright.sync_api import expect

from pharmacy.core import links
from pharmacy.extensions import db
from tests import factories
from tests.browser.conftest import shot, sign_in
from tests.browser.portal_checks import PHONE, check_page
from tests.conftest import PASSWORD

pytestmark = pytest.mark.browser

DOB = date(1968, 4, 12)  # tests/factories.patient's default


def _out_with_a_parcel_on_its_way(app: Any, staff: dict, clock: Any) -> dict[str, Any]:
    """Margaret's first 30-day fill shipped; she ran out 3 days ago; the refill left today, 4 days on the road."""
    with app.test_request_context("/"):
        d = factories.refill_shipped(staff, clock, days_after_run_out=3)
        token = links.make_token(links.REFILL, d["patient_id"], d["rx_id"])
        db.session.commit()
        return {"patient_id": d["patient_id"], "token": token, "arrives": d["arrives"]}


def test_the_refill_on_its_way_on_the_link_and_the_patient_page(live_server: Any, live_app: Any, page: Any,
                                                                 staff: dict, clock: Any) -> None:
    d = _out_with_a_parcel_on_its_way(live_app, staff, clock)
    arrives = f"{d['arrives']:%A, %B} {d['arrives'].day}, {d['arrives'].year}"
    page.set_viewport_size(PHONE)
    page.goto(f"{live_server.url}/r/{d['token']}")
    page.get_by_label("Month").fill(str(DOB.month))
    page.get_by_label("Day").fill(str(DOB.day))
    page.get_by_label("Year").fill(str(DOB.year))
    page.get_by_role("button", name="Continue").click()
    box = page.locator(".out-of-medicine")
    expect(box).to_contain_text("Your refill is on its way")
    expect(box).to_contain_text(arrives)
    expect(box).to_contain_text("3 days without it")
    assert "Medicine left" not in page.locator("main").inner_text()
    check_page(page, "refill-link-on-its-way")

    page.set_viewport_size({"width": 1280, "height": 900})
    sign_in(page, live_server.url, staff["pharmacist"].email, PASSWORD)
    page.goto(f"{live_server.url}/patients/{d['patient_id']}")
    line = page.locator("#timeline li").first
    expect(line).to_contain_text("Out of medicine since")
    expect(line).to_contain_text(f"the refill on its way arrives {d['arrives']:%b} {d['arrives'].day}, "
                                 f"{d['arrives'].year}")
    shot(page, "patient-page-refill-on-its-way")
