"""Defects found walking, in chromium (phone 390 px and desktop 1280 px), the pages changed for "days in transit are
not days held", the production plan, batch records and the auto-refill skip link. Each test fails on the code as it
was walked, for the reason its docstring gives.

1. Out of medicine while the refill travels: after asking for the next refill the patient reads "Medicine left: None
   … 3 days without it" and, on the same page, "You have medicine until Sunday, January 31, 2027".
2. Two days of medicine left, the parcel arriving two days after they end: the portal says nothing of the days
   without medicine (the staff page says "2 days without medicine"); the refill link only says "if you will be
   without medicine before then".
3. The order page of an order made in a batch says "Made 29.666 capsules" and "133.333 mg" of naltrexone.
4. The auto-refill skip link, once the refill it announced is being made, still offers "Skip this refill", then
   answers "already been made or cancelled" without saying which, nor how to stop it.
5. The production plan reads lots received before stock was kept ("not counted yet" on the inventory page) as
   nothing: "0 mg usable on hand", "runs short … 145.5 mg missing" at the top of the page, no lot to use first.
6. The staff patient page on a phone (and at 320 px, WCAG 1.4.10): the payment amounts wrap one character a line
   ("$ / 6 / 3 / . / 9 / 5") and the page scrolls sideways.
7. The refill queue says "Patients already out of medicine first" above a list whose red "out of medicine since …"
   row (the refill on its way) comes after a patient who holds a month of medicine.
"""
from __future__ import annotations

import re
from datetime import date
from decimal import Decimal
from typing import Any

import pytest
from playwright.sync_api import expect

from pharmacy.autorefill import services as autorefill
from pharmacy.core import links
from pharmacy.core.context import today
from pharmacy.extensions import db
from pharmacy.prescriptions.models import Prescription
from pharmacy.prescriptions.rules import Form
from pharmacy.refills.rules import RequestSource
from pharmacy.workflows import orders as order_flow
from pharmacy.workflows import refill_requests as refill_flow
from tests import factories
from tests.browser.conftest import portal_sign_in, shot, shown, sign_in
from tests.browser.portal_checks import DESKTOP, PHONE, axe_violations, sideways_scroll
from tests.conftest import PASSWORD
from tests.reminder_helpers import auto_refill_asked

pytestmark = pytest.mark.browser

DOB = date(1968, 4, 12)  # tests/factories.patient's default (Margaret Ellison)
NTX = "Naltrexone hydrochloride USP"


# ---- building the states -------------------------------------------------------------------------------------------

def _refill_shipped(app: Any, staff: dict, clock: Any, *, days_after_run_out: int) -> dict[str, Any]:
    """Margaret's first 30-day fill was shipped; the clock moves to `days_after_run_out` days after its last covered
    day (negative: before it); the refill leaves today, 4 days on the road."""
    with app.test_request_context("/"):
        d = factories.refill_shipped(staff, clock, days_after_run_out=days_after_run_out)
        token = links.make_token(links.REFILL, d["patient_id"], d["rx_id"])
        db.session.commit()
        return {**d, "token": token, "today": today()}


def _open_refill_link(page: Any, base: str, token: str) -> None:
    page.goto(f"{base}/r/{token}")
    page.get_by_label("Month").fill(str(DOB.month))
    page.get_by_label("Day").fill(str(DOB.day))
    page.get_by_label("Year").fill(str(DOB.year))
    page.get_by_role("button", name="Continue").click()
    page.wait_for_url(re.compile(r".*/refill$"))
    page.wait_for_load_state("load")


def _portal_sign_in(page: Any, base: str, app: Any) -> None:
    page.goto(f"{base}/my/")
    page.wait_for_url("**/my/sign-in")  # the portal sends a signed-out patient to its sign-in
    portal_sign_in(page, base, app, "margaret@example.com", DOB)


def _main(page: Any) -> str:
    return " ".join(page.locator("main").inner_text().split())


def _long(d: date) -> str:
    return f"{d:%A, %B} {d.day}, {d.year}"


# ---- 1. out of medicine, yet "You have medicine until …" ---------------------------------------------------------

def test_a_patient_out_of_medicine_is_not_told_they_have_medicine_until_the_run_out(
        live_server: Any, live_app: Any, page: Any, staff: dict, clock: Any) -> None:
    """What the patient saw: Margaret's last dose was Dec 26; her refill was shipped today (Dec 29) and arrives
    Jan 2. The refill link rightly says "Your refill is on its way … (3 days without it)". She asks for the next
    refill: the "Thank you: we have your request" page says "You have medicine until Sunday, January 31, 2027, so we
    time this fill to reach you shortly before then", and her portal refill page says, in one screen, "Medicine
    left: None: your last dose was on Saturday, December 26, 2026 (3 days without it)" and "You have medicine until
    Sunday, January 31, 2027". A patient who has had nothing for three days is told she has medicine for a month.

    Why wrong: docs/domain.md "days in transit are not days held": until the parcel arrives she is shown as out of
    medicine; Jan 31 is the last day covered by the refill still on its way, not medicine she has.
    Right: while she is out (or the cover is in a parcel), the reason says where the month comes from, e.g. "The
    refill on its way (arriving Saturday, January 2) lasts until Sunday, January 31, so we time this fill …" — never
    "You have medicine until" a day covered only by a parcel.
    Cause: templates/refills/_when.html and templates/portal/refill.html print "You have medicine until
    {{ day(s.run_out) }}" whenever s.timed_by_supply, without looking at s.out_since / s.on_its_way."""
    d = _refill_shipped(live_app, staff, clock, days_after_run_out=3)
    base = live_server.url
    page.set_viewport_size(PHONE)
    _open_refill_link(page, base, d["token"])
    expect(page.locator(".out-of-medicine")).to_contain_text("Your refill is on its way")
    page.get_by_role("button", name="Yes, make my refill").click()
    thanks = shown(page, "Thank you: we have your request")
    shot(page, "walk3-out-link-requested")

    _portal_sign_in(page, base, live_app)
    page.goto(f"{base}/my/refill/{d['rx_id']}")
    portal = _main(page)
    shot(page, "walk3-out-portal-refill")
    assert "None: your last dose was on" in portal  # the page itself says she is out

    problems = [f"{where}: {m.group(0)!r}" for where, text in (("refill link, after asking", thanks),
                                                                ("portal refill page", portal))
                for m in [re.search(r"You have medicine until [^.]*", " ".join(text.split()))] if m]
    assert problems == [], ("out of medicine since Dec 27 (the refill on its way arrives "
                            f"{d['arrives']}), yet told:\n" + "\n".join(problems))


# ---- 2. a few days in hand, then days without: the patient is not told -------------------------------------------

def test_the_patient_is_told_how_many_days_they_will_be_without_medicine_before_the_parcel(
        live_server: Any, live_app: Any, page: Any, staff: dict, clock: Any) -> None:
    """What the patient saw: on Dec 25 Margaret holds 2 days (to Dec 26); the refill shipped today arrives Dec 29,
    so she will have nothing on Dec 27 and 28. The staff patient page says so ("2 days on hand (to Dec 26, 2026),
    2 days without medicine before the refill on its way arrives Dec 29"). Her portal home says only "About 2 days
    in hand, to Saturday, December 26, 2026. The refill we sent should arrive on Tuesday, December 29, 2026 and
    lasts to Wednesday, January 27, 2027." — nothing about the two days without, and no number to call. The refill
    link says "if you will be without medicine before then, please call us": the pharmacy knows she will be, and
    for how long.

    Why wrong: docs/domain.md "days in transit are not days held": the patient is shown "as holding the days left of
    the old bottle and then N days without before it arrives"; missing doses of LDN matters to the patient, who can
    ask for a bridge supply if told.
    Right: both pages say she will be without medicine for 2 days (Dec 27–28) before the refill arrives, and to call.
    Cause: templates/portal/_rx_facts.html (the `held_until` branch) ignores summary.gap_ahead;
    templates/refills/_refill_facts.html uses gap_ahead only as a condition for a hedged sentence."""
    d = _refill_shipped(live_app, staff, clock, days_after_run_out=-1)
    base = live_server.url
    page.set_viewport_size(PHONE)
    _open_refill_link(page, base, d["token"])
    link = _main(page)
    shot(page, "walk3-gap-link")
    _portal_sign_in(page, base, live_app)
    portal = page.locator("main dl.facts").first.inner_text()
    shot(page, "walk3-gap-portal-home")
    assert "in hand" in link and "in hand" in portal  # the state the docstring describes

    says_gap = re.compile(r"\b2 days\b[^.]*without|without[^.]*\b2 days\b|December 27[^.]*December 28", re.I)
    problems = [f"{where}: {' '.join(text.split())[:400]!r}"
                for where, text in (("refill link", link), ("portal home", portal)) if not says_gap.search(text)]
    portal_call = page.locator("main dl.facts").first.locator("a[href^='tel:']").count()
    if not portal_call:
        problems.append("portal home: no number to call beside the days without medicine")
    assert problems == [], "2 days without medicine (Dec 27–28) before the parcel, not said:\n" + "\n".join(problems)


# ---- 3. the order page of a batch order ---------------------------------------------------------------------------

def _three_orders_in_a_checked_batch(app: Any, staff: dict) -> list[int]:
    """Three patients' 30-capsule orders made as one batch: 400 mg naltrexone weighed, 89 capsules counted, checked."""
    with app.test_request_context("/"):
        _w, ids = factories.checked_batch_of_three(staff)
        db.session.commit()
        return ids


def test_the_order_page_of_a_batch_order_shows_no_fraction_of_a_capsule(
        live_server: Any, live_app: Any, page: Any, staff: dict) -> None:
    """What the pharmacist saw: the compounding record of order 2 (made in a batch of 3) rightly says "89 capsules
    for the whole batch (this order: 30 capsules, 2 of 3)" and "400 mg" weighed. Its "Back to order 2" button opens
    the order page, where the pharmacist releases it: "Made: 29.666 capsules · yield 98.9%" and, under "Ingredient
    lots used", "133.333 mg" of naltrexone and "4.166 g" of cellulose — a fraction of a capsule nobody counted and
    amounts nobody weighed, on the page where the release decision is taken.

    Why wrong: docs/domain.md "Batches": an order made in a batch states the batch's measurements, "never the
    order's proportional share ('29.666 capsules'), which is kept for recall and stock only"; capsules are whole.
    Right: as on the record — "30 capsules (of 89 made in batch L…-001, 2 of 3) · yield 98.9%" and the lots' amounts
    weighed for the whole batch (400 mg, 12.5 g), or the shares labelled as such and never a fractional capsule.
    Cause: templates/compounding/order.html prints o.quantity_made and each OrderIngredientLot.quantity_used (the
    recall shares batches.record stores) instead of compounding/queries.batch_record's figures."""
    ids = _three_orders_in_a_checked_batch(live_app, staff)
    base = live_server.url
    sign_in(page, base, staff["pharmacist"].email, PASSWORD)
    page.goto(f"{base}/orders/{ids[1]}/record")
    assert "89 capsules for the whole batch (this order: 30 capsules, 2 of 3)" in _main(page)
    page.get_by_role("link", name="Back to order 2").click()
    page.wait_for_url(f"{base}/orders/{ids[1]}")
    text = _main(page)
    shot(page, "walk3-batch-order-page")
    fractions = re.findall(r"\d+\.\d+ capsules|\b\d+\.\d{3} (?:mg|g)\b", text)
    assert fractions == [], f"the order page of a batch order shows proportional shares: {fractions}"


# ---- 4. the skip link once the refill is being made --------------------------------------------------------------

def test_the_skip_link_of_a_refill_already_being_made_says_so_and_how_to_stop_it(
        live_server: Any, live_app: Any, browser: Any, staff: dict, clock: Any) -> None:
    """What the patient saw: the automatic refill was asked for on its order-by date and the notice carried "Skip
    it". The pharmacist approved it the same morning: the refill is being made (and will be charged). Margaret opens
    the link on her phone: "Skip your automatic refill? If you still have enough medicine, you can skip this refill.
    [Skip this refill]". She presses it and gets "Something needs your attention — The automatic refill this link
    was sent about has already been made or cancelled, so nothing was skipped. To skip a later one, use the link in
    its message or sign in to your account."

    Why wrong: the page offers a skip that cannot happen, then does not say whether the refill is coming (made) or
    not (cancelled) — the one thing she needs to know — nor how to stop the one being made (the portal's own answer
    in that case is "This refill is already being made; call the pharmacy to stop it").
    Right: the link's page says the refill it announced is already being made (no skip button), and to call the
    pharmacy to stop it; "cancelled" only when it was cancelled.
    Cause: portal/views.skip_link renders portal/skip.html without looking at the announced request's state;
    autorefill/services.skip_next raises the one ALREADY_MADE message for approved, made and cancelled alike."""
    with live_app.test_request_context("/"):
        w, req = auto_refill_asked(staff, clock)
        rx_id = w["rx"].id
        token = autorefill.skip_token(w["patient"].id, rx_id, req.id)
        refill_flow.approve(w["pharmacist"], req.id)  # the refill is being made
        db.session.commit()

    context = browser.new_context(viewport=PHONE, device_scale_factor=2, is_mobile=True, has_touch=True)
    page = context.new_page()
    try:
        page.goto(f"{live_server.url}/my/auto-refill/skip/{token}")
        first_page = _main(page)
        shot(page, "walk3-skip-link")
        assert axe_violations(page) == []
        problems = []
        button = page.get_by_role("button", name="Skip this refill")
        if button.count():
            problems.append(f"the page offers a skip that cannot happen: {first_page!r}")
            button.click()
            page.wait_for_load_state("load")
        answer = _main(page)
        shot(page, "walk3-skip-link-answer")
        if not re.search(r"being made|we are making|is on its way", answer, re.I):
            problems.append(f"does not say the refill is being made: {answer!r}")
        if "made or cancelled" in answer:
            problems.append("says 'made or cancelled': the patient cannot tell whether the refill is coming")
        if not re.search(r"call[^.]*to stop it|to stop it[^.]*call", answer, re.I):
            problems.append("does not say how to stop the refill being made (call the pharmacy)")
        assert problems == [], "\n".join(problems)
    finally:
        context.close()


# ---- 5. the production plan and lots not counted yet -------------------------------------------------------------

def test_the_production_plan_does_not_call_lots_not_counted_yet_empty(
        live_server: Any, live_app: Any, page: Any, staff: dict) -> None:
    """What the pharmacist saw: two verified orders — 30 capsules of 4.5 mg and 10.5 mL of a 1 mg/mL sublingual
    liquid (the liquid's mL to the tenth, right). The naltrexone lot NAL-1 (unexpired) sits on the shelf, received
    before stock was kept: the inventory page says "not counted yet". The production plan opens with "Act on these
    first: Naltrexone hydrochloride USP runs short on Nov 23, 2026: 145.5 mg missing over the plan" (and the same for
    both excipients), and its stock table says "Usable on hand 0 mg", "Use first: —", "short from Nov 23".

    Why wrong: docs/domain.md "Stock": a lot received before stock was kept is "not counted yet" until counted — no
    quantity is guessed, and 0 is a guess. The pharmacist is told to act on a shortage that may not exist and is not
    told the one action that settles it (count NAL-1); "Use first: —" hides the lot that is there.
    Right: the plan says the stock is unknown for these ingredients ("NAL-1 not counted yet — count it"), names the
    lot to use first, and does not report "0 mg usable" / "runs short" from lots it cannot measure.
    Cause: inventory/reads.usable_levels joins LotStock (inner join, on_hand > 0), so untracked lots vanish;
    production/services._ingredients and templates/production/plan.html have no "not counted" state."""
    with live_app.test_request_context("/"):
        w = factories.world(staff)
        liquid = factories.formula("LDN-SL-1", form=Form.SUBLINGUAL_LIQUID, strength="1", prices=(("45", 30, 7900),))
        ruth = factories.patient(w["pharmacist"], first_name="Ruth", last_name="Okafor", email="ruth@example.com")
        rx2 = factories.prescription(w["pharmacist"], ruth.id, liquid.id, w["prescriber"].id, dose_mg=Decimal("1.5"),
                                     days_supply=7)
        for rx in (w["rx"], rx2):
            order = order_flow.start_fill(w["pharmacist"], rx.id)
            order_flow.transition(w["pharmacist"], order.id, "verified")
        db.session.commit()
    base = live_server.url
    sign_in(page, base, staff["pharmacist"].email, PASSWORD)
    page.goto(f"{base}/inventory")
    assert "not counted yet" in _main(page)
    page.goto(f"{base}/production")
    plan = _main(page)
    shot(page, "walk3-production")
    assert "10.5 mL" in plan and "30 capsules" in plan  # the liquid to the tenth, the capsules whole
    row = " ".join(page.locator("table").nth(1).locator("tr", has_text=NTX).inner_text().split())
    problems = []
    if re.search(r"Naltrexone hydrochloride USP runs short", plan):
        problems.append("'Act on these first' reports a naltrexone shortage from a lot that was never counted")
    if re.search(r"\b0 mg\b", row) or "—" in row:
        problems.append(f"the stock row reads the uncounted lot as nothing: {row!r}")
    assert problems == [], "\n".join(problems)


# ---- 6. the staff patient page on a phone --------------------------------------------------------------------------

def test_the_staff_patient_page_reflows_on_a_phone(live_server: Any, live_app: Any, page: Any, staff: dict,
                                                   clock: Any) -> None:
    """What the pharmacist saw on a phone (390 px; the same at 320 px, WCAG 1.4.10's 400 % zoom): the patient page's
    "Supply and next order" box reads well ("Out of medicine since Dec 27, 2026: the refill on its way arrives
    Jan 2, 2027 (then covered to Jan 31, 2027)"), but the "Payments and balance" box beside it prints "$63.95" and
    "$0.00" one character a line, down a column 10 px wide, the "$127.90" balance badge sticks out of the card, and
    the whole page scrolls sideways (420 px of content on a 390 px screen).

    Why wrong: an amount split into characters cannot be read; reflow at 320 px is WCAG 2.2 AA (1.4.10).
    Right: on a narrow screen each fact's label sits above its value (as the patient pages' `.patient-page
    dl.facts` do), the amounts stay whole, and the page does not scroll sideways.
    Cause: static/css/app.css `dl.facts { grid-template-columns: max-content 1fr }` gives the long label
    ("Monthly cost of the current regimen") all the room; `dd { overflow-wrap: anywhere }` then breaks the amount
    at every character. No narrow-screen rule for dl.facts."""
    d = _refill_shipped(live_app, staff, clock, days_after_run_out=3)
    base = live_server.url
    sign_in(page, base, staff["pharmacist"].email, PASSWORD)
    page.goto(f"{base}/patients/{d['patient_id']}")
    expect(page.locator("#timeline li").first).to_contain_text("Out of medicine since")
    problems = []
    for size in (PHONE, {"width": 320, "height": 568}):
        page.set_viewport_size(size)
        shot(page, f"walk3-patient-page-{size['width']}")
        amount = page.locator("#costs dd").first
        lines = page.evaluate("""(el) => { const cs = getComputedStyle(el);
            return Math.round(el.getBoundingClientRect().height / parseFloat(cs.lineHeight || cs.fontSize)); }""",
                              amount.element_handle())
        if lines > 1:
            problems.append(f"{size['width']} px: {amount.inner_text()!r} takes {lines} lines")
        over = sideways_scroll(page)
        if over:
            problems.append(f"{size['width']} px: the page scrolls sideways ({over[0]} px of content)")
    page.set_viewport_size(DESKTOP)
    assert problems == [], "\n".join(problems)


# ---- 7. the refill queue's order and its note ----------------------------------------------------------------------

def test_the_refill_queue_note_matches_where_the_out_of_medicine_row_is(
        live_server: Any, live_app: Any, page: Any, staff: dict, clock: Any) -> None:
    """What the pharmacist saw: two open requests. Ruth picked up a 30-day fill today and asked for the next one;
    Margaret has been out of medicine for 3 days (her refill, shipped today, arrives Jan 2) and asked a moment
    later. The page says "Patients already out of medicine first, then the oldest request." — and lists Ruth first,
    then Margaret's row with the red "out of medicine since Dec 27, 2026 (3 days)" badge second. With fifty rows a
    page, such a red row can sit anywhere down the list, under a note that says it cannot.

    Why wrong: the note is the pharmacist's reading of the order; docs/domain.md decides that a patient out of
    medicine while the refill on its way travels is listed by the supply that refill brings — so they are not
    first, and the note must not say they are (or the row must not read as the urgent case the note promises first).
    Right: the note says who is first ("Patients out of medicine with nothing on its way first …") — or such rows
    are listed first — so the order on screen and the words above it agree.
    Cause: templates/refills/queue.html's fixed note vs refills/queue._order_of_decision (run_out_date, which is the
    parcel's cover) and the row's badge from Supply.out_since."""
    d = _refill_shipped(live_app, staff, clock, days_after_run_out=3)
    with live_app.test_request_context("/"):
        margaret_rx = db.session.get(Prescription, d["rx_id"])
        w = {**d["w"], "formula": margaret_rx.formula}
        ruth = factories.patient(w["pharmacist"], first_name="Ruth", last_name="Okafor", email="ruth@example.com")
        rx2 = factories.prescription(w["pharmacist"], ruth.id, margaret_rx.formula_id, margaret_rx.prescriber_id)
        order = order_flow.start_fill(w["pharmacist"], rx2.id)
        factories.run_order_to(w, order.id, "dispensed")
        refill_flow.request(w["technician"], rx2.id, source=RequestSource.STAFF)
        refill_flow.request(w["technician"], d["rx_id"], source=RequestSource.STAFF)
        db.session.commit()
    base = live_server.url
    sign_in(page, base, staff["pharmacist"].email, PASSWORD)
    page.goto(f"{base}/refills")
    shot(page, "walk3-queue")
    rows = page.locator("table tbody tr")
    expect(rows).to_have_count(2)
    badges = [rows.nth(i).locator(".badge.stop", has_text="out of medicine").count() > 0 for i in range(2)]
    names = [rows.nth(i).locator("td").nth(1).inner_text().split("\n")[0] for i in range(2)]
    note = page.locator("main p.muted").first.inner_text()
    assert badges == [False, True] and names[1].startswith("Ellison"), (badges, names)  # the state described
    assert "out of medicine first" not in note, (
        f"the note says {note!r}, yet the row marked out of medicine ({names[1]}) is listed after {names[0]}, who "
        "holds medicine")
