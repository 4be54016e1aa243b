"""Review of the money side (prices, payments, refunds, receipts, running totals): defects a cashier, a patient or an
auditor would hit. Each test says what a person sees today and what is right."""
from __future__ import annotations

import io
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from pypdf import PdfReader

from pharmacy.billing import pricing, receipts, reports, services, totals
from pharmacy.billing.models import PriceEntry
from pharmacy.compounding import services as orders
from pharmacy.compounding.models import Order
from pharmacy.core.clock import FixedClock
from pharmacy.extensions import db
from pharmacy.workflows import orders as order_flow
from tests import factories

CHICAGO = ZoneInfo("America/Chicago")


def pdf_text(body: bytes) -> str:
    reader = PdfReader(io.BytesIO(body))
    return re.sub(r"\s+", " ", " ".join(page.extract_text() or "" for page in reader.pages))


def order_at(w: dict[str, Any], state: str, **kw: Any) -> Order:
    order = order_flow.start_fill(w["pharmacist"], w["rx"].id, **kw)
    if state != "requested":
        factories.run_order_to(w, order.id, state)
    db.session.flush()
    return db.session.get(Order, order.id)


def pay(w: dict[str, Any], cents: int, *, order: Order | None = None) -> services.PaymentResult:
    return services.record_payment(w["technician"], patient_id=w["patient"].id, amount_cents=cents, method="card",
                                   order_id=order.id if order else None)


def refund(w: dict[str, Any], cents: int, *, order: Order | None = None) -> services.PaymentResult:
    return services.record_refund(w["technician"], patient_id=w["patient"].id, amount_cents=cents, method="card",
                                  order_id=order.id if order else None)


# ---------------------------------------------------------------------------------------------
# Prices: the order keeps the price it was quoted
# ---------------------------------------------------------------------------------------------


def test_price_change_before_compounding_does_not_reprice_the_order(world: dict[str, Any], clock: FixedClock) -> None:
    """The patient is quoted $55.00 and the order is created at $55.00; the admin then raises the list price to
    $59.99 before the bench plans the batch. Today planning the batch (same quantity) silently rewrites the order
    to $59.99 — while price_entry_id still points at the $55.00 entry — so the patient is charged more than quoted.
    Right: docs/domain.md "An order keeps a snapshot of its quote, so a later price change never rewrites it"; only a
    changed quantity may move the price."""
    w = world
    order = order_at(w, "requested")
    quoted, entry = order.price_cents, order.price_entry_id
    assert quoted == 5500
    clock.advance(timedelta(hours=1))
    pricing.set_price(w["admin"], formula_id=w["formula"].id, quantity=Decimal(30), days_supply=30, price_cents=5999)
    factories.run_order_to(w, order.id, "ready")
    db.session.refresh(order)
    assert order.quantity == Decimal(30)
    assert (order.price_cents, order.price_entry_id) == (quoted, entry)
    assert services.patient_ledger(w["patient"].id).charged_cents == quoted


def test_retiring_a_price_does_not_stop_an_order_already_priced(world: dict[str, Any], clock: FixedClock) -> None:
    """An admin takes the formula's entries off the price list (e.g. to re-enter them) while an order, already
    priced, waits for compounding. Today choosing the lots fails with "This formula has no price on the price list
    yet." and the bench cannot make a fill the patient was already quoted and charged for. Right: the order keeps its
    snapshot price; the batch can be planned (the price list matters only for new quotes)."""
    w = world
    order = order_at(w, "verified")
    clock.advance(timedelta(hours=1))
    for entry in db.session.execute(sa.select(PriceEntry).where(PriceEntry.formula_id == w["formula"].id,
                                                                PriceEntry.retired_at.is_(None))).scalars().all():
        pricing.retire_price(w["admin"], entry.id)
    factories.run_order_to(w, order.id, "compounding")
    db.session.refresh(order)
    assert order.price_cents == 5500


# ---------------------------------------------------------------------------------------------
# Receipts
# ---------------------------------------------------------------------------------------------


def test_receipt_account_balance_is_as_of_the_payment_not_as_of_printing(world: dict[str, Any],
                                                                         clock: FixedClock) -> None:
    """A patient prepays $55.00 while the fill is being compounded; the receipt printed then says "Account balance
    $55.00 credit". The fill is released the next day and the same receipt, printed again for an HSA claim, now says
    "nothing owed ($0.00)": a receipt's figures change after it was issued, because with_balances counts every order
    *created* before the payment in its *current* state. Right (its own docstring): charges of fills made ready by the
    time the payment was received — a receipt never changes once issued."""
    w = world
    order = order_at(w, "compounding")
    paid = pay(w, 5500, order=order)
    first = receipts.receipt_facts(w["technician"], paid.payment.id)[2]
    assert first.account_balance_cents == -5500
    clock.advance(timedelta(days=1))
    factories.run_order_to(w, order.id, "ready")
    again = receipts.receipt_facts(w["technician"], paid.payment.id)[2]
    assert again.account_balance_cents == first.account_balance_cents


def test_receipt_of_a_refunded_payment_says_it_was_refunded(world: dict[str, Any]) -> None:
    """A patient pays $55.00 for a fill, the pharmacy later refunds the $55.00 in full. The payment's receipt,
    printed afterwards (staff or portal), still reads "Amount paid $55.00" with nothing saying the money came back —
    a receipt the patient can file with an HSA/FSA for money they no longer spent. Right: a payment's receipt shows
    the refunds made against it (or at least marks it refunded)."""
    w = world
    order = order_at(w, "dispensed")
    paid = pay(w, 5500, order=order)
    refund(w, 5500, order=order)
    text = pdf_text(receipts.receipt_pdf(w["technician"], paid.payment.id)[1])
    assert "Amount paid $55.00" in text
    assert "refund" in text.lower()


# ---------------------------------------------------------------------------------------------
# Running totals after odd sequences
# ---------------------------------------------------------------------------------------------


def test_totals_agree_after_a_mixed_sequence(world: dict[str, Any], clock: FixedClock) -> None:
    """Guard. Prepayment, a ready order held and resumed, a pickup order shipped at hand-over (fee added), a payment
    at 23:30 on the last evening of October, a return, a refund of the returned fill, a price change: the kept totals
    equal their recomputation (`flask reports verify`), the outstanding report agrees with the patient's ledger, and
    October's revenue holds the late-evening payment."""
    w = world
    clock.set(datetime(2026, 10, 30, 15, 0, tzinfo=UTC))
    order = order_at(w, "compounding")
    pay(w, 2000, order=order)
    factories.run_order_to(w, order.id, "ready")
    orders.hold_order(w["pharmacist"], order.id, "patient travelling")
    orders.resume_order(w["pharmacist"], order.id)
    clock.set(datetime(2026, 10, 31, 23, 30, tzinfo=CHICAGO))
    order_flow.dispense(w["technician"], order.id, method="ship", carrier="USPS", tracking_number="9400100000000000000000")
    pay(w, 3000, order=order)
    clock.set(datetime(2026, 11, 2, 15, 0, tzinfo=UTC))
    order_flow.return_fill(w["pharmacist"], order.id, "lost_in_transit")
    refund(w, 1500, order=order)
    pricing.set_price(w["admin"], formula_id=w["formula"].id, quantity=Decimal(30), days_supply=30, price_cents=5999)
    clock.set(datetime(2026, 11, 23, 15, 0, tzinfo=UTC))
    db.session.flush()
    assert totals.verify() == []
    ledger = services.patient_ledger(w["patient"].id)
    assert (ledger.charged_cents, ledger.paid_cents, ledger.refunded_cents) == (0, 5000, 1500)
    owed = {r.patient_id: r.owed_cents for r in reports.outstanding_balances(w["pharmacist"]).rows}
    assert owed.get(w["patient"].id, 0) == ledger.owed_cents == 0
    revenue = {m.month: (m.paid_cents, m.refunded_cents) for m in reports.revenue_by_month(w["pharmacist"], 2)}
    assert revenue == {"2026-10": (5000, 0), "2026-11": (0, 1500)}


def test_receipt_of_a_cancelled_fill_does_not_say_its_price_is_still_owed(world: dict[str, Any]) -> None:
    """A patient prepays $20.00 on a fill; the prescriber changes the dose, the fill is cancelled and the $20.00 is
    refunded on it. The refund receipt says "Fill total $55.00 · Still owed on this fill $55.00 owed" next to
    "Account balance nothing owed": a cancelled fill is never charged (docs/domain.md "Money"), so nothing is owed on
    it. Right: a cancelled (or returned) fill's receipt shows nothing owed on it (its total as not charged)."""
    w = world
    order = order_at(w, "verified")
    pay(w, 2000, order=order)
    order_flow.cancel(w["pharmacist"], order.id, "prescriber changed the dose")
    back = refund(w, 2000, order=order)
    line = receipts.receipt_facts(w["technician"], back.payment.id)[2]
    assert line.account_balance_cents == 0
    assert line.fill_remaining_cents == 0
    text = pdf_text(receipts.receipt_pdf(w["technician"], back.payment.id)[1])
    assert "$55.00 owed" not in text
