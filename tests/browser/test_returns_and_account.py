"""In chromium: a pharmacist returns a lost parcel and starts its replacement; a technician changes their own
password. Screenshots of each state (with SCREENSHOTS=1) and axe-core on each."""
from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from pharmacy.compounding.models import Order
from pharmacy.compounding.rules import OrderState
from pharmacy.extensions import db
from pharmacy.workflows import orders as order_flow
from tests import factories
from tests.browser.conftest import shot, shown, sign_in
from tests.browser.portal_checks import axe_violations
from tests.conftest import PASSWORD

pytestmark = pytest.mark.browser


def _shipped_then_lost(app: Any, staff: dict, clock: Any) -> dict[str, int]:
    """A patient's first fill picked up, the second shipped 25 days later (the parcel that will be lost)."""
    with app.test_request_context("/"):
        w = factories.world(staff, patient={"first_name": "Dolores", "last_name": "Parcel", "shipping_days": 2})
        first = order_flow.start_fill(w["technician"], w["rx"].id)
        factories.run_order_to(w, first.id, "dispensed")
        clock.advance(timedelta(days=25))
        second = order_flow.start_fill(w["technician"], w["rx"].id)
        factories.run_order_to(w, second.id, "ready")
        order_flow.dispense(w["pharmacist"], second.id, method="ship", carrier="USPS",
                            tracking_number="9400100000000000000099")
        db.session.commit()
        return {"rx": w["rx"].id, "first": first.id, "lost": second.id}


def test_a_lost_parcel_is_returned_and_replaced_from_the_order_page(live_server, live_app, page, staff,
                                                                    clock) -> None:
    base = live_server.url
    ids = _shipped_then_lost(live_app, staff, clock)
    clock.advance(timedelta(days=8))  # it never came
    problems: list[str] = []
    sign_in(page, base, staff["pharmacist"].email, PASSWORD)
    page.goto(f"{base}/orders/{ids['lost']}")
    page.get_by_text("Return this fill (lost in the post, damaged, dispensed in error)").click()
    page.get_by_label("Why").select_option(label="Lost in the post")
    page.get_by_label("Note (optional)").fill("USPS claim 4411-22")
    shot(page, "return-form")
    problems += axe_violations(page)
    page.once("dialog", lambda d: d.accept())  # "Return order N? It will no longer count as dispensed."
    page.get_by_role("button", name="Return this fill").click()
    text = " ".join(shown(page, "returned.", "start a new fill to replace it").split())
    assert "Lost in the post — USPS claim 4411-22." in text and "Return this fill" not in text
    assert page.locator("h1 .badge").inner_text() == "returned"
    shot(page, "return-done")
    problems += axe_violations(page)

    page.get_by_role("link", name=re.compile(r"^RX\d+$")).last.click()  # "start the replacement … from RX…"
    page.wait_for_url(re.compile(r".*/prescriptions/\d+$"))
    fills = " ".join(page.locator("section[aria-labelledby=fills-h]").inner_text().split())
    assert "returned" in fills
    page.get_by_role("button", name="Start a fill").click()
    page.wait_for_url(re.compile(r".*/orders/\d+$"))
    shot(page, "return-replacement")
    problems += axe_violations(page)
    with live_app.app_context():
        replacement = db.session.execute(sa.select(Order).where(Order.prescription_id == ids["rx"])
                                         .order_by(Order.id.desc()).limit(1)).scalar_one()
        lost = db.session.get(Order, ids["lost"])
        # The same refill again (the returned one no longer counts), and nothing too soon about it.
        assert (replacement.state, replacement.authorized_fill) == (OrderState.REQUESTED, lost.authorized_fill)
        assert replacement.earliest_dispense_date is None or replacement.earliest_dispense_date <= clock.now().date()
    assert not problems, problems


def test_a_technician_changes_their_own_password(live_server, page, staff) -> None:
    base = live_server.url
    tech = staff["technician"]
    new = "four unrelated words here"
    sign_in(page, base, tech.email, PASSWORD)
    page.locator("header .who a").click()
    page.wait_for_url(f"{base}/account")
    problems = axe_violations(page)
    page.get_by_label("Current password").fill("not my password")
    page.get_by_label("New password", exact=True).fill("short")
    page.get_by_label("New password again").fill("other")
    page.get_by_role("button", name="Change password").click()
    text = shown(page, "That is not your current password.", "Use at least 12 characters.",
                 "The two new passwords are not the same.")
    assert tech.email in text
    shot(page, "account-errors")
    problems += axe_violations(page)
    page.get_by_label("Current password").fill(PASSWORD)
    page.get_by_label("New password", exact=True).fill(new)
    page.get_by_label("New password again").fill(new)
    page.get_by_role("button", name="Change password").click()
    shown(page, "Your password is changed")
    shot(page, "account-changed")
    page.goto(f"{base}/patients/")  # still signed in here
    assert page.url == f"{base}/patients/"
    page.get_by_role("button", name="Sign out").click()
    sign_in(page, base, tech.email, new)
    assert not problems, problems
