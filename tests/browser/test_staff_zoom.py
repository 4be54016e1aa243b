"""Staff pages at 200 % zoom (issue 17): a pharmacist who zooms a 1280 px screen to 200 % lays pages out in 640 CSS
px. Each page must then reflow — no sideways scrolling of the page itself (a wide table may scroll inside its own
box, WCAG 1.4.10's exception for data tables) — with every control still on screen, and pass axe-core. Walked
against the demo seeds as a pharmacist; screenshots in artifacts/screenshots/zoom200-*.png (look at them).
"""
from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from pharmacy.compounding.models import Order
from pharmacy.extensions import db
from pharmacy.patients.models import Patient
from pharmacy.prescriptions.models import Prescription
from tests.browser.conftest import DEFERRED_BLOCKS_ARRIVED, shot, sign_in
from tests.browser.portal_checks import ZOOMED, axe_violations, sideways_scroll
from tests.conftest import PASSWORD
from tests.demo_seeds import load_demo_seeds

pytestmark = pytest.mark.browser
ZOOM_200 = ZOOMED[0]

# Controls that end up off the right edge (a button pushed out of view by a wide row) cannot be reached by a
# keyboard user who zoomed, even when the page itself does not scroll (overflow hidden somewhere).
_OFF_SCREEN_JS = """
() => {
  const width = document.documentElement.clientWidth;
  const bad = [];
  for (const el of document.querySelectorAll('a[href], button, input:not([type=hidden]), select, textarea')) {
    if (el.closest('[hidden]')) continue;
    let inBox = false;  // inside a table's own scrolling box (reachable by scrolling it; focus scrolls it too)
    for (let a = el.parentElement; a; a = a.parentElement) {
      const scrolls = ['auto', 'scroll'].includes(getComputedStyle(a).overflowX);
      if (scrolls && a.scrollWidth > a.clientWidth + 1) { inBox = true; break; }
    }
    if (inBox) continue;
    const box = el.getBoundingClientRect();
    if (box.width === 0 && box.height === 0) continue;
    if (box.right <= 0) continue;  // the skip link, off-screen until focused
    if (box.right > width + 1) bad.push(`${el.tagName.toLowerCase()} "${(el.innerText || el.name || '').trim().slice(0, 30)}"`);
  }
  return bad;
}
"""


@pytest.fixture
def pages(live_app: Any, staff: dict) -> list[tuple[str, str]]:
    with live_app.test_request_context("/"):
        load_demo_seeds()
        patient_id = db.session.execute(sa.select(Patient.id).where(Patient.last_name == "Whitaker")).scalar_one()
        rx_id = db.session.execute(sa.select(Prescription.id).where(Prescription.patient_id == patient_id)
                                   .order_by(Prescription.id)).scalars().first()
        order_id = db.session.execute(sa.select(Order.id).order_by(Order.id.desc())).scalars().first()
    return [("today", "/"), ("patient", f"/patients/{patient_id}"), ("prescription", f"/prescriptions/{rx_id}"),
            ("orders", "/orders"), ("order", f"/orders/{order_id}"), ("refills", "/refills"),
            ("patients", "/patients/"), ("search", "/search?q=whitaker"), ("production", "/production"),
            ("inventory", "/inventory"), ("reports", "/billing/reports"), ("costs", f"/billing/patients/{patient_id}/costs"),
            ("adherence", "/billing/adherence"), ("outbox", "/outbox"), ("eprescriptions", "/eprescriptions"),
            ("new-prescription", f"/prescriptions/new?patient_id={patient_id}")]


def test_staff_pages_reflow_at_200_percent_zoom(live_server: Any, page: Any, staff: dict,
                                                pages: list[tuple[str, str]]) -> None:
    sign_in(page, live_server.url, staff["pharmacist"].email, PASSWORD)
    page.set_viewport_size(ZOOM_200)
    problems: list[str] = []
    for name, path in pages:
        response = page.goto(live_server.url + path)
        assert response is not None and response.status == 200, (path, response and response.status)
        page.wait_for_function(DEFERRED_BLOCKS_ARRIVED)  # Today's production block arrives after the page
        shot(page, f"zoom200-{name}")
        over = sideways_scroll(page)
        if over:
            problems.append(f"{path}: the page scrolls sideways at 640 px ({over[0]} px of content)")
        problems += [f"{path}: off screen: {c}" for c in page.evaluate(_OFF_SCREEN_JS)]
        problems += [f"{path}: axe: {v}" for v in axe_violations(page)]
    assert not problems, "\n".join(problems)
