"""The intake queue in a real browser: an e-prescription arriving from the intermediary shows on Today; a faxed PDF
is uploaded and shown page by page beside the intake form; the pharmacist finds the patient, fills the form and
accepts it into a screened prescription. Every page is checked with axe-core (no violations) and photographed
into artifacts/screenshots/."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import expect

from pharmacy.core.actor import Actor
from pharmacy.core.roles import Role
from pharmacy.extensions import db
from tests import factories
from tests.browser.conftest import shot, sign_in
from tests.conftest import PASSWORD
from tests.documents_support import prescription_pdf
from tests.erx_support import OKAFOR_NPI, fixture, ncpdp_token, post_xml

pytestmark = pytest.mark.browser
AXE = Axe()


def accessible(page: Any, name: str) -> None:
    """axe-core on the page as it is now (once loaded, its stylesheet applied): no violations (the report is printed
    when there are)."""
    page.wait_for_load_state("load")
    results = AXE.run(page)
    assert results.violations_count == 0, f"{name}: {results.generate_report()}"


def _reference_data(app: Any) -> None:
    with app.test_request_context("/"):
        ph = Actor(kind="staff", role=Role.PHARMACIST)
        factories.formula()
        factories.formula("LDN-CAP-1.5", strength="1.5")
        factories.prescriber(npi=OKAFOR_NPI, first_name="Adaeze", last_name="Okafor")
        factories.prescriber()
        factories.patient(ph)
        factories.patient(ph, first_name="Thao", last_name="Nguyen", email="thao@example.com", postal_code="61602")
        db.session.commit()


def test_intake_queue_with_a_faxed_pdf_beside_the_form(live_server, live_app, page, staff, tmp_path: Path) -> None:
    base = live_server.url
    _reference_data(live_app)
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)

    # An e-prescription arrives through the intermediary while nobody is looking.
    token = ncpdp_token(live_app)
    status, _answer = post_xml(f"{base}/ncpdp/script", fixture("new_rx_capsules.xml"), token)
    assert status == 200

    sign_in(page, base, staff["pharmacist"].email, PASSWORD)
    today = page.locator("#eprescriptions").inner_text()
    assert "1 e-prescription waiting" in today and "Ellison, Margaret" in today and "Okafor" in today
    shot(page, "erx-1-today")
    accessible(page, "today")

    page.get_by_role("link", name="Arrived").click()
    page.wait_for_url(f"{base}/eprescriptions")
    shot(page, "erx-2-queue")
    accessible(page, "queue")
    page.get_by_role("link", name=re.compile("Review")).first.click()
    page.wait_for_url(re.compile(r".*/eprescriptions/\d+$"))
    body = page.locator("main").inner_text()
    assert "As written" in body and "Fillers must not be slow-release." in body and "matched" in body
    shot(page, "erx-3-e-prescription-review")
    accessible(page, "e-prescription review")

    # A fax: uploaded, then shown page by page beside the form.
    pdf = tmp_path / "fax-from-lakeside.pdf"
    pdf.write_bytes(prescription_pdf(pages=2))
    page.goto(f"{base}/documents/upload")
    accessible(page, "upload")
    page.set_input_files("#f-file", str(pdf))
    page.get_by_role("button", name="Upload and open").click()
    page.wait_for_url(re.compile(r".*/eprescriptions/\d+$"))
    images = page.locator(".pages img")
    assert images.count() == 2
    for i in range(2):
        images.nth(i).scroll_into_view_if_needed()
        page.wait_for_function("img => img.complete && img.naturalWidth > 500", arg=images.nth(i).element_handle())
    form_box = page.locator("form[aria-labelledby=accept-h]").bounding_box()
    page_box = images.first.bounding_box()
    assert page_box["x"] + page_box["width"] <= form_box["x"] + 1, "the fax is beside the form, not above it"
    page.evaluate("window.scrollTo(0, 0)")
    shot(page, "erx-4-fax-beside-form")
    accessible(page, "fax review")

    # The pharmacist finds the patient, reads the fax and types the prescription in.
    page.get_by_label(re.compile("Find the patient")).fill("ellison")
    page.get_by_role("button", name="Search").click()
    page.get_by_role("button", name="Choose Margaret Ellison").click()
    # The review's address again, the patient now named where the page before asked for one.
    expect(page.locator("#patient-h + p")).to_contain_text("Margaret Ellison", use_inner_text=True)
    option = page.locator("#f-prescriber_id option", has_text="Okafor").get_attribute("value")
    page.select_option("#f-prescriber_id", value=option)
    formula = page.locator("#f-formula_id option", has_text="4.5").first.get_attribute("value")
    page.select_option("#f-formula_id", value=formula)
    page.fill("#f-dose_mg", "4.5")
    page.fill("#f-quantity", "30")
    page.fill("#f-days_supply", "30")
    page.fill("#f-refills_authorized", "5")
    page.fill("#f-written_date", "2026-11-20")
    shot(page, "erx-5-fax-form-filled")
    page.get_by_role("button", name="Accept and screen").click()
    page.wait_for_url(re.compile(r".*/prescriptions/\d+$"))
    body = page.locator("main").inner_text()
    assert "Accepted as RX" in body and "Margaret Ellison" in body
    assert "Source documents" in body and "fax-from-lakeside.pdf" in body
    shot(page, "erx-6-accepted-prescription")
    accessible(page, "prescription")
    assert errors == []
