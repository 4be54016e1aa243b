"""Defects found walking the pharmacy staff's day in chromium (review walk), against the demo seeds, at 1280 × 900 and
at the compounding bench's tablet width (820 × 1180). Each test fails on the code as it was when found.

1. At tablet width the compounding record (lots, measured quantities, expected amounts) sticks out of its card and
   the whole page scrolls sideways: the "Expected" column is off screen at the bench.
2. The same at tablet width for the renewals tab and the production plan: app.css lets a wide table scroll in its
   own box only below 760 px, so between 761 px and the table's width the page itself scrolls sideways.
3. The lot boxes (choose the lots, compounding record) cut the chosen lot's words after "PCCA · expi": the expiry,
   which sets the beyond-use date, cannot be read without opening the list — at 1280 px and at tablet width.
4. A wrong current password on the API tokens page empties the "What is it for?" box the pharmacist filled in.
"""
from __future__ import annotations

from typing import Any

import pytest

from tests.browser.conftest import shown, sign_in
from tests.browser.portal_checks import DESKTOP, axe_violations, sideways_scroll
from tests.browser.test_daily_tool import seeded  # noqa: F401  (the demo seeds, with the ids the walk needs)
from tests.conftest import PASSWORD

pytestmark = pytest.mark.browser

OUT = "/tmp/staff-walk"
TABLET = {"width": 820, "height": 1180}


def _look(page: Any, name: str) -> None:
    page.wait_for_load_state("load")
    page.screenshot(path=f"{OUT}/{name}.png", full_page=True)


# What a select box shows of its chosen option: the option's words at the box's font against the room inside it
# (the width less its padding and the arrow, about 1.25em).
_CHOSEN_LOT_FITS_JS = """() => [...document.querySelectorAll('table.lots select')].map(s => {
  const cs = getComputedStyle(s);
  const ctx = document.createElement('canvas').getContext('2d');
  ctx.font = cs.font;
  const words = s.options[s.selectedIndex].text;
  // chromium draws the arrow in about 19 px at 16 px
  const room = s.clientWidth - parseFloat(cs.paddingLeft) - parseFloat(cs.paddingRight) - parseFloat(cs.fontSize) * 1.2;
  return {words, needed: Math.ceil(ctx.measureText(words).width), room: Math.floor(room)};
})"""


def _planned_batch(page: Any, base: str, order_id: int) -> None:
    page.goto(f"{base}/orders/{order_id}")
    page.get_by_role("button", name="Plan the batch").click()
    shown(page, "Batch planned: make")


def test_compounding_record_fits_the_bench_tablet(live_server, page, staff, seeded) -> None:  # noqa: F811
    """At the compounding bench (a tablet, 820 px wide) the technician plans Carter's batch and gets the compounding
    record: its table (ingredient, lot used, quantity measured, expected) runs past the right edge of its card and of
    the screen, and the whole page scrolls sideways — the "Expected 45 mg" the technician weighs against is off
    screen. Right: the page is as wide as the screen; a table too wide for its card scrolls inside its own box (or
    the columns wrap), as it already does below 760 px (static/css/app.css, the max-width: 760px rule)."""
    base = live_server.url
    sign_in(page, base, staff["technician"].email, PASSWORD)
    page.set_viewport_size(TABLET)
    _planned_batch(page, base, seeded["carter_verified"])
    _look(page, "defect-compounding-record-tablet")
    assert axe_violations(page) == []
    over = sideways_scroll(page)
    assert over is None, f"the compounding record page is {over[0]} px wide on an {over[1]} px tablet"


@pytest.mark.parametrize("path", ["/refills/renewals", "/production"])
def test_staff_tables_do_not_push_the_page_sideways_at_tablet_width(live_server, page, staff, seeded,  # noqa: F811
                                                                    path) -> None:
    """On the bench tablet (820 px) the renewals tab (its Actions column: "Printable request", "Email to
    prescriber", "Enter the new prescription") and the production plan (its "Expected refills", "Renewals pending",
    "Bench load" columns) run past the right edge of their card and the page scrolls sideways. Right: no sideways
    scrolling of the page at 820 px: a wide data table scrolls in its own box at every width, not only below 760 px
    (static/css/app.css)."""
    base = live_server.url
    sign_in(page, base, staff["pharmacist"].email, PASSWORD)
    page.set_viewport_size(TABLET)
    page.goto(base + path)
    _look(page, "defect-tablet" + path.replace("/", "-"))
    assert axe_violations(page) == []
    over = sideways_scroll(page)
    assert over is None, f"{path} is {over[0]} px wide on an {over[1]} px tablet"


@pytest.mark.parametrize("size", [DESKTOP, TABLET], ids=["desktop", "tablet"])
def test_chosen_lot_shows_its_expiry(live_server, page, staff, seeded, size) -> None:  # noqa: F811
    """Choosing the lots for Carter's batch, the pharmacist reads "P-558201 · PCCA · expi" in the lot box (at
    1280 px; "P-558201 ·" on the bench tablet): the pre-selected lot's expiry — the date that fixes the beyond-use
    date and the quantity to make — is cut off, and the same after planning in the compounding record. Right: the
    chosen lot's number, supplier and expiry can be read without opening the list (a wider box, the lot column
    allowed to grow, or the expiry shown beside the box). Cause: static/css/app.css `table.lots select` is held to
    its cell (width/max-width 100%) in a table that gives the ingredient name most of the room."""
    base = live_server.url
    sign_in(page, base, staff["pharmacist"].email, PASSWORD)
    page.set_viewport_size(size)
    page.goto(f"{base}/orders/{seeded['carter_verified']}")
    _look(page, f"defect-lot-box-{size['width']}")
    cut = [f"{b['words']!r} needs {b['needed']} px, the box shows {b['room']} px"
           for b in page.evaluate(_CHOSEN_LOT_FITS_JS) if b["needed"] > b["room"]]
    assert cut == [], "the chosen lot is cut in its box:\n" + "\n".join(cut)


def test_token_name_is_kept_after_a_wrong_password(live_server, page, staff, seeded) -> None:  # noqa: F811
    """On "Your API tokens" the pharmacist types what the token is for ("bench scale integration"), mistypes the
    current password and presses Create token: the page says "That is not your current password." beside the
    password — and the "What is it for?" box is now empty, so it must be typed again. Right: everything but the
    password is kept after a refused form (templates/core/tokens.html's name input has no value; the view
    (pharmacy/core/admin_views.py, issue_token) should pass the posted name back)."""
    base = live_server.url
    sign_in(page, base, staff["pharmacist"].email, PASSWORD)
    page.goto(f"{base}/admin/tokens")
    page.fill("#name", "bench scale integration")
    page.fill("#current_password", "not-my-password")
    page.get_by_role("button", name="Create token").click()
    shown(page, "That is not your current password")
    _look(page, "defect-token-name-lost")
    assert page.input_value("#name") == "bench scale integration"
