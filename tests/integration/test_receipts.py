"""Receipts and yearly statements: the PDF's own text (read back with pypdf) carries what a claim needs."""
from __future__ import annotations

import io
import re
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from pypdf import PdfReader

from pharmacy.billing import receipts, services
from pharmacy.core.clock import FixedClock
from pharmacy.core.errors import Forbidden, NotFound, ValidationFailed
from pharmacy.extensions import db
from pharmacy.workflows import orders as order_flow
from tests import factories
from tests.conftest import T0

CHICAGO = ZoneInfo("America/Chicago")


def pdf_text(body: bytes) -> str:
    assert body.startswith(b"%PDF-")
    reader = PdfReader(io.BytesIO(body))
    return re.sub(r"\s+", " ", " ".join(page.extract_text() or "" for page in reader.pages))


@pytest.fixture
def w(world: dict[str, Any]) -> dict[str, Any]:
    """The shared world (tests/conftest.py) with its first fill dispensed."""
    w = world
    order = order_flow.start_fill(w["pharmacist"], w["rx"].id)
    factories.run_order_to(w, order.id, "dispensed")
    w["order"] = order
    db.session.flush()
    return w


def test_receipt_carries_what_a_claim_needs(w: dict[str, Any]) -> None:
    paid = services.record_payment(w["technician"], patient_id=w["patient"].id, amount_cents=5500, method="hsa_fsa",
                                   order_id=w["order"].id, reference="HSA 4421")
    name, body = receipts.receipt_pdf(w["technician"], paid.payment.id)
    text = pdf_text(body)
    assert name == f"receipt-{paid.receipt_number}.pdf"
    for expected in [
        f"Receipt {paid.receipt_number}",
        "Riverside Compounding Pharmacy", "Pharmacy NPI 1234567893",  # pharmacy name and NPI
        "Margaret Ellison", "Date of birth Apr 12, 1968", "14 Oak Lane", "Springfield, IL 62704",  # patient
        "Dr. Elena Marquez, MD, NPI 1234567893",  # prescriber and NPI
        "ICD-10 G35", "Multiple sclerosis",  # diagnosis
        "Naltrexone 4.5 mg capsules", "Compounded medication", "Capsule", "30 capsules",  # drug, form, quantity
        "Days supply 30", "Fill date Nov 23, 2026", "Payment date Nov 23, 2026", f"Rx number {w['rx'].rx_number}",
        "HSA/FSA card", "HSA 4421", "Amount paid $55.00",
    ]:
        assert expected in text, expected
    from pharmacy.core.context import settings

    assert settings().pharmacy_address.split(",")[0] in text  # the pharmacy's address


def test_refund_receipt_and_payment_on_account(w: dict[str, Any]) -> None:
    on_account = services.record_payment(w["technician"], patient_id=w["patient"].id, amount_cents=1999, method="cash")
    back = services.record_refund(w["technician"], patient_id=w["patient"].id, amount_cents=1999, method="cash")
    text = pdf_text(receipts.receipt_pdf(w["pharmacist"], on_account.payment.id)[1])
    assert "Payment on account" in text and "Amount paid $19.99" in text
    text = pdf_text(receipts.receipt_pdf(w["pharmacist"], back.payment.id)[1])
    assert f"Refund {back.receipt_number}" in text and "Amount refunded $19.99" in text


def test_yearly_statement_sums_the_local_year(w: dict[str, Any], clock: FixedClock) -> None:
    pid = w["patient"].id

    def pay_at(at: datetime, cents: int, *, refund: bool = False) -> None:
        clock.set(at)
        record = services.record_refund if refund else services.record_payment
        record(w["technician"], patient_id=pid, amount_cents=cents, method="card",
               order_id=None if refund else w["order"].id)

    pay_at(datetime(2025, 12, 31, 23, 30, tzinfo=CHICAGO), 1111)  # 2026 in UTC, 2025 at the pharmacy
    pay_at(datetime(2026, 1, 1, 0, 15, tzinfo=CHICAGO), 3333)
    pay_at(datetime(2026, 6, 15, 12, 0, tzinfo=CHICAGO), 3333)
    pay_at(datetime(2026, 12, 31, 23, 30, tzinfo=CHICAGO), 3334)  # already 2027 in UTC
    pay_at(datetime(2026, 7, 1, 9, 0, tzinfo=CHICAGO), 500, refund=True)
    pay_at(datetime(2027, 1, 1, 6, 30, tzinfo=UTC), 7)  # 00:30 on 1 January 2027 at the pharmacy
    clock.set(T0)
    statement = receipts.statement_facts(w["technician"], pid, 2026)
    assert [line.amount_cents for line in statement.lines] == [3333, 3333, 500, 3334]
    assert (statement.paid_cents, statement.refunded_cents, statement.net_cents) == (10000, 500, 9500)
    name, body = receipts.statement_pdf(w["technician"], pid, 2026)
    text = pdf_text(body)
    assert name == f"statement-2026-patient-{pid}.pdf"
    for expected in ["Statement 2026", "Pharmacy NPI 1234567893", "Margaret Ellison", "Date of birth Apr 12, 1968",
                     "Compounded medication", "G35", "Naltrexone 4.5 mg capsules", "Total paid in 2026 $100.00",
                     "Total refunded in 2026 $5.00", "Net amount paid in 2026 $95.00", "-$5.00 (refund)", "$33.34",
                     "Dec 31, 2026", "1234567893"]:
        assert expected in text, expected
    assert "$11.11" not in text and "$0.07" not in text
    assert receipts.statement_facts(w["technician"], pid, 2025).net_cents == 1111
    assert receipts.statement_facts(w["technician"], pid, 2027).net_cents == 7


def test_receipts_need_clinical_and_billing_access(w: dict[str, Any]) -> None:
    paid = services.record_payment(w["technician"], patient_id=w["patient"].id, amount_cents=100, method="cash")
    with pytest.raises(Forbidden):
        receipts.receipt_pdf(w["admin"], paid.payment.id)
    with pytest.raises(NotFound):
        receipts.receipt_pdf(w["technician"], 999_999)
    with pytest.raises(ValidationFailed):
        receipts.statement_pdf(w["technician"], w["patient"].id, 1999)
    with pytest.raises(NotFound):
        receipts.statement_pdf(w["technician"], 999_999, 2026)
