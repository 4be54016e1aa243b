"""Review of today's changes (51e8ba1..HEAD): each test is a defect a patient or the staff would hit."""
from __future__ import annotations

from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from flask import Flask

from pharmacy.extensions import db

# GSM 03.38 basic character set (plus the extension table's characters, which cost two septets): a text made only of
# these goes out in 160-character segments; one character outside it and the whole text is UCS-2, 70 a segment.
GSM_BASIC = set("@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§"
                "¿abcdefghijklmnopqrstuvwxyzäöñüà")
GSM_EXTENSION = set("^{}\\[~]|€")


def _segments(text: str) -> int:
    if all(c in GSM_BASIC or c in GSM_EXTENSION for c in text):
        septets = sum(2 if c in GSM_EXTENSION else 1 for c in text)
        return 1 if septets <= 160 else -(-septets // 153)
    return 1 if len(text) <= 70 else -(-len(text) // 67)


def test_shortened_pharmacy_name_does_not_turn_a_text_into_more_segments(app_ctx: Flask) -> None:
    """The automatic-refill text carries its one-click skip link (a signed token); with a pharmacy name of some
    length the text is over 320 characters, so sms/rules._fit shortens the name "so it fits two segments"
    (docs/domain.md). The shortened name ends in "…" (U+2026), which is not a GSM-7 character: the whole text then
    goes out as UCS-2, 70 characters a segment — the patient's phone gets, and the pharmacy pays for, five segments
    where the unshortened text would have been three. Correct: shorten with GSM characters only ("..." or a plain
    cut), so a text that was shortened to fit two segments is two segments."""
    from pharmacy.autorefill import services as autorefill
    from pharmacy.sms import rules

    skip_url = f"https://pharmacy.example.com/my/auto-refill/skip/{autorefill.skip_token(123456, 654321)}"
    name = "Riverside Compounding Pharmacy & Wellness Center of Springfield"
    text = rules.text_for("auto_refill_requested", pharmacy=name, phone="(217) 555-0100",
                          portal_url="https://pharmacy.example.com/my", skip_url=skip_url)
    assert skip_url in text
    assert name not in text  # it was shortened to fit
    assert _segments(text) <= 2, (len(text), _segments(text), text)


def test_returned_fill_of_a_renewal_gives_the_auto_refill_turn_back(app: Flask, staff: dict, clock: Any) -> None:
    """A patient on auto-refill whose prescription was renewed (the enrolment followed it, autorefill/turns
    .follow_replacement). On the carried supply's order-by date auto-refill asks for the renewal's first fill; that
    fill is dispensed and then returned (lost in the post). The patient again holds only the carried supply, and
    auto-refill keys that supply's turn on the old prescription's fill (supply/reads.supply_fill) — but giving the
    turn back (autorefill/turns.reopen_turn) only looks at the *new* prescription's latest dispensed fill, which no
    longer exists. The turn stays taken: auto-refill never asks again and the patient, who was told nothing, runs
    out. For a prescription that was not renewed the same return gives the turn back. Correct: reopen_turn uses the
    same supply fill as the daily run, so a new request is made."""
    from pharmacy.autorefill import services as autorefill
    from pharmacy.compounding.models import Order
    from pharmacy.prescriptions.models import Prescription
    from pharmacy.refills.models import RefillRequest
    from pharmacy.refills.rules import RequestSource
    from pharmacy.workflows import orders as order_flow
    from pharmacy.workflows import refill_requests
    from pharmacy.workflows.next_refill import next_refill
    from tests import factories

    with app.test_request_context("/"):
        w, new_id = factories.renewed_with_autorefill(staff, clock)

        def autos() -> list[RefillRequest]:
            return list(db.session.execute(sa.select(RefillRequest).where(
                RefillRequest.prescription_id == new_id, RefillRequest.source == RequestSource.AUTO)
                .order_by(RefillRequest.id)).scalars())

        def run_until_asked(count: int) -> None:
            order_by = next_refill(db.session.get(Prescription, new_id)).order_by
            assert order_by is not None
            while clock.now().date() <= order_by + timedelta(days=1) and len(autos()) < count:
                autorefill.run_due()
                db.session.commit()
                clock.advance(timedelta(days=1))

        run_until_asked(1)
        assert len(autos()) == 1
        order = refill_requests.approve(w["pharmacist"], autos()[0].id)
        factories.run_order_to(w, order.id, "dispensed")
        db.session.commit()
        order_flow.return_fill(w["pharmacist"], order.id, "lost_in_transit", "never arrived")
        db.session.commit()
        assert db.session.get(Order, order.id).returned_at is not None

        autorefill.run_due()  # the supply's order-by date has passed: a turn given back is asked for at once
        db.session.commit()
        assert len(autos()) == 2, "auto-refill never asked again after the renewal's fill was returned"


def test_one_refund_is_not_taken_off_every_earlier_receipt(app: Flask, staff: dict) -> None:
    """A patient pays for a fill in two parts ($30.00, then $25.00) and $25.00 is refunded on that fill. They paid
    $30.00 net. Each reprinted payment receipt now lists the refunds on the same fill since it (billing/receipts
    .with_balances): the *same* $25.00 refund is listed on both receipts and taken off both "Net paid" figures —
    $5.00 and $0.00, $5.00 in all — so a patient filing the receipts for an HSA/FSA claim can claim only $5.00 of the
    $30.00 they paid. Correct: a refund is taken off once (e.g. from the latest payments first), so the receipts'
    net amounts add up to what was paid net ($30.00)."""
    from pharmacy.billing import receipts
    from pharmacy.billing import services as billing
    from pharmacy.workflows import orders as order_flow
    from tests import factories

    with app.test_request_context("/"):
        w = factories.world(staff)
        order = order_flow.start_fill(w["pharmacist"], w["rx"].id)
        tech = w["technician"]
        a = billing.record_payment(tech, patient_id=w["patient"].id, amount_cents=3000, method="card",
                                   order_id=order.id).payment
        b = billing.record_payment(tech, patient_id=w["patient"].id, amount_cents=2500, method="card",
                                   order_id=order.id).payment
        billing.record_refund(tech, patient_id=w["patient"].id, amount_cents=2500, method="card", order_id=order.id)
        db.session.commit()

        nets = []
        for payment in (a, b):
            _, _, line = receipts.receipt_facts(w["pharmacist"], payment.id)
            nets.append(max(line.amount_cents - line.refunded_since_cents, 0))
        assert sum(nets) == 3000, nets
