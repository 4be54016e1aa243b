"""The label and the compounding record as PDFs: their text (read back with pypdf) and one rendering.

docs/domain.md "Label safety (ISMP)" and "Compounding standards (USP <795>)".
"""
from __future__ import annotations

import io
import re
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from flask import Flask
from pypdf import PdfReader

from pharmacy.compounding import labels
from pharmacy.compounding import services as orders
from pharmacy.compounding.rules import DeliveryMethod, UspCategory
from pharmacy.core.context import today
from pharmacy.core.errors import Conflict, Forbidden
from pharmacy.extensions import db
from pharmacy.prescriptions.rules import OPIOID_LABEL_WARNING, Form
from pharmacy.workflows import orders as order_flow
from tests import factories
from tests.pages import pdf_text


def made(w: dict[str, Any], target: str = "checked") -> Any:
    order = order_flow.start_fill(w["technician"], w["rx"].id)
    factories.run_order_to(w, order.id, target)
    db.session.flush()
    return order


def test_the_label_carries_everything_a_patient_and_the_pharmacy_need(app_ctx: Flask, staff: dict) -> None:
    w = factories.world(staff, refills_authorized=5)
    order = made(w, "dispensed")
    text = pdf_text(labels.label_pdf(w["technician"], order.id))
    lines = [line.strip() for line in text.splitlines()]
    for expected in [
        "Riverside Compounding Pharmacy",
        "100 River Street, Springfield, IL 62701 · (217) 555-0100",
        "Rx RX000001 · Original fill", "Filled Nov 23, 2026",
        "Margaret Ellison",
        "Naltrexone 4.5 mg capsules",
        "Take 1 capsule (4.5 mg) by mouth at bedtime.",
        "Quantity: 30 capsules (30 days)",
        "Refills left: 5",
        "Prescriber: Dr. Elena Marquez, MD",
        "Lot: L261123-001",
        "Discard after: May 22, 2027 (beyond-use date)",
        "Compounded preparation", "Keep out of reach of children.", "Pharmacist: Peter Pharmacist",
        "Storage: Room temperature",
        OPIOID_LABEL_WARNING,
    ]:
        # Each on a line of its own, except the directions, which are printed large and may wrap.
        assert expected in lines or (expected.startswith("Take ") and expected in " ".join(lines)), (expected, lines)
    # ISMP: no trailing zeros, no naked decimal point, no "cc", "HS" or "qhs".
    assert not re.search(r"\d\.0\b|(?<![\d])\.\d|\bcc\b|\bqhs\b|\bHS\b", text)


def test_refills_left_counts_down_with_each_fill(app_ctx: Flask, staff: dict) -> None:
    w = factories.world(staff, refills_authorized=2)
    first = made(w, "dispensed")
    second = made(w, "checked")
    assert "Refills left: 2" in pdf_text(labels.label_pdf(w["technician"], first.id))
    text = pdf_text(labels.label_pdf(w["technician"], second.id))
    assert "Refills left: 1" in text and "Rx RX000001" in text


def test_a_titration_label_has_a_dated_chart(app_ctx: Flask, staff: dict) -> None:
    f = factories.formula("LDN-CAP-1.5", strength="1.5")
    w = factories.world(staff)
    rx = factories.second_prescription(w["pharmacist"], w["patient"].id, f.id, w["prescriber"].id, dose_mg=Decimal("4.5"),
                                titration=[{"dose_mg": Decimal("1.5"), "days": 14}, {"dose_mg": Decimal("3"), "days": 14}],
                                days_supply=42)
    w = {**w, "rx": rx, "formula": f}
    order = made(w)
    text = " ".join(pdf_text(labels.label_pdf(w["technician"], order.id)).split())
    assert "Follow the dated chart: take 1 capsule (1.5 mg) by mouth at bedtime, increasing as shown, up to 3" in text
    assert "Titration chart: follow the dates" in text
    rows = re.findall(r"(\w{3} \d+ – \w{3} \d+, \d{4}|From \w{3} \d+, \d{4}) (\d+ capsules?) ([\d.]+ mg)", text)
    assert rows == [("Nov 23 – Dec 6, 2026", "1 capsule", "1.5 mg"), ("Dec 7 – Dec 20, 2026", "2 capsules", "3 mg"),
                    ("From Dec 21, 2026", "3 capsules", "4.5 mg")]  # starting the day it is handed over
    assert "Quantity: 84 capsules (42 days)" in text


def test_an_aqueous_label_says_refrigerate_in_millilitres_and_notes_the_cap(app_ctx: Flask, staff: dict) -> None:
    f = factories.formula("LDN-SL-AQ", form=Form.SUBLINGUAL_LIQUID, strength="1",
                          category=UspCategory.AQUEOUS_UNPRESERVED, prices=(("45", 30, 6000),))
    w = factories.world(staff)
    rx = factories.second_prescription(w["pharmacist"], w["patient"].id, f.id, w["prescriber"].id, dose_mg=Decimal("0.5"),
                                days_supply=30)
    w = {**w, "rx": rx, "formula": f}
    order = made(w)
    text = " ".join(pdf_text(labels.label_pdf(w["technician"], order.id)).split())
    assert "Naltrexone 1 mg/mL sublingual liquid" in text
    assert "Place 0.5 mL (0.5 mg) under the tongue at bedtime. Hold for 1 minute, then swallow." in text
    assert "Quantity: 7 mL (14 days)" in text
    assert "Storage: Store in the refrigerator (2–8 °C / 36–46 °F)." in text
    bud = (today() + timedelta(days=14)).strftime('%b %-d, %Y')
    assert f"Capped at 14 days by the beyond-use date ({bud}): 14 of 30 days; 16 days still owed on this fill." in text
    assert "Rx RX000002 · Original fill (partial)" in text
    assert f"Discard after: {(today() + timedelta(days=14)).strftime('%b %-d, %Y')} (beyond-use date)" in text


def test_markup_in_names_is_printed_as_typed(app_ctx: Flask, staff: dict) -> None:
    w = factories.world(staff, patient={"first_name": "<b>Ann & Co</b>", "last_name": "O'Hara"})
    order = made(w)
    assert "<b>Ann & Co</b> O'Hara" in pdf_text(labels.label_pdf(w["technician"], order.id))


def test_no_label_before_compounding_and_none_for_an_admin(app_ctx: Flask, staff: dict) -> None:
    w = factories.world(staff)
    order = order_flow.start_fill(w["technician"], w["rx"].id)
    with pytest.raises(Conflict, match="lot number and the beyond-use date"):
        labels.label_pdf(w["technician"], order.id)
    with pytest.raises(Conflict, match="no compounding record yet"):
        labels.record_pdf(w["technician"], order.id)
    factories.run_order_to(w, order.id, "compounding")
    with pytest.raises(Forbidden):
        labels.label_pdf(w["admin"], order.id)


def test_the_compounding_record_has_the_usp_795_fields(app_ctx: Flask, staff: dict) -> None:
    w = factories.world(staff, patient={"delivery_preference": DeliveryMethod.PICKUP})
    order = made(w, "ready")
    db.session.get(orders.Order, order.id).deviations = None
    text = " ".join(pdf_text(labels.record_pdf(w["pharmacist"], order.id)).split())
    for expected in [
        "Compounding record · batch L261123-001",
        "Formula Naltrexone 4.5 mg capsules (LDN-CAP-4.5)",
        "USP <795> category Other non-aqueous (capsules, non-aqueous topicals)",
        "Date compounded Nov 23, 2026 9:00 AM",
        "Rx number / fill RX000001 / Original fill",
        "Batch lot number L261123-001",
        "Total quantity made 30 capsules",
        "Beyond-use date May 22, 2027 (USP <795> (2023) default BUD; 180 days, or the earliest ingredient expiry)",
        "Storage Room temperature",
        "Naltrexone hydrochloride USP Medisca NAL-1 Dec 28, 2027 1 mg",  # the unit of the master formula
        "Microcrystalline cellulose NF Medisca MIC-1 Dec 28, 2027 1 g",
        "Quality check 100% yield (95–105% passes): passed",
        "Deviations None recorded",
        "Compounded Tom Technician Nov 23, 2026 9:00 AM",
        "Checked Peter Pharmacist Nov 23, 2026 9:00 AM",
        "Released Peter Pharmacist Nov 23, 2026 9:00 AM",
        "Method and equipment (master formulation record) Mix and fill.",
    ]:
        assert expected in text, expected


def test_a_number_never_wraps_away_from_its_unit(app_ctx: Flask, staff: dict) -> None:
    f = factories.formula("LDN-CAP-1.5", strength="1.5")
    w = factories.world(staff)
    rx = factories.second_prescription(w["pharmacist"], w["patient"].id, f.id, w["prescriber"].id, dose_mg=Decimal("4.5"),
                                titration=[{"dose_mg": Decimal("1.5"), "days": 14}], days_supply=30)
    order = made({**w, "rx": rx, "formula": f})
    raw = "\n".join(p.extract_text() for p in PdfReader(io.BytesIO(labels.label_pdf(w["technician"], order.id))).pages)
    assert not re.search(r"\d\s*\n\s*(mg|mL|capsules?)\b", raw)
    assert "(1.5 mg) by mouth at bedtime" in raw.replace("\u00a0", " ")


def test_the_label_renders(app_ctx: Flask, staff: dict, tmp_path: Any) -> None:
    """Rasterise the label once (pypdfium2, when installed) and check it has ink where the text is."""
    pdfium = pytest.importorskip("pypdfium2")
    w = factories.world(staff)
    order = made(w)
    document = pdfium.PdfDocument(labels.label_pdf(w["technician"], order.id))
    try:
        page = document[0]
        width, height = page.get_size()
        assert (round(width), round(height)) == (288, 432)  # 4 × 6 inches
        image = page.render(scale=2).to_pil().convert("L")
        image.save(tmp_path / "label.png")
        dark = sum(image.histogram()[:128])  # pixels darker than mid-grey
        assert 0.02 < dark / (image.width * image.height) < 0.5
        page.close()
    finally:
        document.close()
