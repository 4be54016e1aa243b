"""Review of auto-refill, texts, renewals and reminders: each test is a defect a patient, a pharmacist or a
prescriber would hit (see each docstring)."""
from __future__ import annotations

from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from flask import Flask

from pharmacy.autorefill import services as autorefill
from pharmacy.core.actor import Actor
from pharmacy.extensions import db
from pharmacy.prescriptions.models import Prescription
from pharmacy.refills.models import RefillRequest, RenewalRequest
from pharmacy.refills.rules import RenewalState, RequestSource
from pharmacy.workflows import orders as order_flow
from pharmacy.workflows import renewals as renewal_flow
from pharmacy.workflows.next_refill import next_refill
from tests import factories
from tests.reminder_helpers import auto_refill_asked, morning


def test_skipping_an_automatic_refill_does_not_withdraw_the_renewal_sent_to_the_prescriber(
        app: Flask, staff: dict, clock: Any) -> None:
    """A patient on auto-refill whose prescription expires before the supply runs out: the pharmacist has already
    sent the renewal request to the prescriber (domain.md "Renewal is needed ... when the prescription expires before
    the run-out"). On the order-by date the automatic refill is asked for (the prescription has not expired yet) and
    the patient, who still has medicine, presses "skip". Skipping cancels the refill request — and, with it, the
    renewal request already sent to the prescriber (autorefill/services.skip_next → refills.close_open_requests
    cancels every open renewal of the prescription). The prescriber's link now says "closed", and re-planning the
    reminders opens a fresh renewal task "to send", so the pharmacist sends the prescriber the same request twice.
    Skipping one refill says nothing about the prescription: the renewal sent stays sent (and no second task opens)."""
    with app.test_request_context("/"):
        w = factories.world(staff, written_date=clock.now().date() - timedelta(days=340))
        rx_id = w["rx"].id
        first = order_flow.start_fill(w["pharmacist"], rx_id)
        factories.run_order_to(w, first.id, "dispensed")
        db.session.commit()
        renewal = db.session.execute(sa.select(RenewalRequest).where(
            RenewalRequest.prescription_id == rx_id)).scalar_one()  # "expires before the supply runs out"
        renewal_flow.send_renewal(w["pharmacist"], renewal.id)
        me = Actor(kind="patient", patient_id=w["patient"].id)
        autorefill.enrol(me, rx_id)
        db.session.commit()
        sent_id = renewal.id

        order_by = next_refill(db.session.get(Prescription, rx_id)).order_by
        assert order_by is not None and order_by < db.session.get(Prescription, rx_id).expiry_date
        clock.set(morning(order_by))
        autorefill.run_due()
        db.session.commit()
        auto = db.session.execute(sa.select(RefillRequest).where(
            RefillRequest.prescription_id == rx_id, RefillRequest.source == RequestSource.AUTO)).scalar_one()
        assert auto.state.value == "open"

        clock.advance(timedelta(hours=2))
        autorefill.skip_next(me, rx_id)
        db.session.commit()

        db.session.expire_all()
        renewals = db.session.execute(sa.select(RenewalRequest).where(
            RenewalRequest.prescription_id == rx_id).order_by(RenewalRequest.id)).scalars().all()
        assert [(r.id, r.state) for r in renewals] == [(sent_id, RenewalState.SENT)], \
            [(r.id, r.state.value) for r in renewals]


def test_the_automatic_refill_text_is_not_sent_after_the_patient_skipped_it(
        app: Flask, staff: dict, clock: Any) -> None:
    """A patient on auto-refill who chose email *and* text. At 7:00 on the order-by date the automatic refill is
    asked for; the email "we have started your automatic refill … Not needed? Skip it" goes at once, and its text
    waits for 9:00 (texts only 9:00–20:00, domain.md "Never at night"). At 8:00 the patient reads the email and
    skips: the request is cancelled ("Your automatic refill is cancelled"). At 9:00 the text still goes out: "we
    started your automatic refill. Not needed? Skip it: …" — telling the patient the opposite of what just
    happened, about a request that no longer exists (sms/delivery.unwanted → reminders/rules.unwanted_reason lets
    every notice but reminders through without looking at its request). A notice about a refill request must not
    go once that request was cancelled; the patient gets no such text."""
    from pharmacy.reminders import delivery, transports
    from pharmacy.sms import delivery as sms_delivery
    from pharmacy.sms import services as sms
    from pharmacy.sms import transports as sms_transports
    from pharmacy.sms.rules import Choice

    with app.test_request_context("/"):
        w = factories.world(staff)
        rx_id = w["rx"].id
        first = order_flow.start_fill(w["pharmacist"], rx_id)
        factories.run_order_to(w, first.id, "dispensed")
        me = Actor(kind="patient", patient_id=w["patient"].id)
        sms.number_verified(me, "+12175550101", consent=True)
        sms.set_channel(me, Choice.BOTH)
        autorefill.enrol(me, rx_id)
        db.session.commit()
        order_by = next_refill(db.session.get(Prescription, rx_id)).order_by
        assert order_by is not None

        clock.set(morning(order_by, 7))
        report = autorefill.run_due()
        db.session.commit()
        assert report.requested == 1
        delivery.deliver_due(transport=transports.OutboxOnlyTransport())  # the email goes at once
        texts = sms_transports.OutboxOnlySms()
        clock.advance(timedelta(minutes=1))
        sms_delivery.deliver_due(transport=texts)  # its text is written, to go at 9:00
        assert texts.sent == []

        clock.set(morning(order_by, 8))
        said = autorefill.skip_next(me, rx_id)
        db.session.commit()
        assert "cancelled" in said

        clock.set(morning(order_by, 9) + timedelta(minutes=1))
        sms_delivery.deliver_due(transport=texts)
        assert [body for _to, body in texts.sent if "automatic refill" in body] == [], texts.sent


def test_a_renewal_that_cancels_the_automatic_refill_being_made_asks_again_on_the_new_prescription(
        app: Flask, staff: dict, clock: Any) -> None:
    """A patient on auto-refill: on the order-by date the refill is asked for automatically and the pharmacist
    approves it (an order is being made). The same day a renewal (or a dose change) arrives from the prescriber; the
    pharmacist enters it as a replacement. Replacing cancels the old prescription's unfinished order and moves the
    enrolment to the new prescription (domain.md "a renewal or dose change does not end it: the enrolment moves …
    the new prescription's refill is asked for on the order-by date of the supply it carried"). But that supply's
    turn is still marked "requested" (its request led to the order just cancelled), so the daily run waits for ever:
    nothing is asked for on the new prescription, and the patient, who was told "we have started your automatic
    refill", runs out. A turn whose order was cancelled must be given back (as a returned fill's is:
    autorefill/turns.reopen_turn): the next run asks for the new prescription's fill."""
    from pharmacy.compounding.models import Order
    from pharmacy.workflows import prescription_changes
    from pharmacy.workflows import refill_requests as refill_flow

    with app.test_request_context("/"):
        w, auto = auto_refill_asked(staff, clock)
        rx_id = w["rx"].id
        made = refill_flow.approve(w["pharmacist"], auto.id)
        db.session.commit()

        clock.advance(timedelta(hours=3))
        new = prescription_changes.replace(w["pharmacist"], rx_id, factories.replacement_data(w))
        db.session.commit()
        new_id = new.id
        assert db.session.get(Order, made.id).state.value == "cancelled"
        assert autorefill.live_enrolment(new_id) is not None

        for _ in range(3):
            clock.advance(timedelta(days=1))
            autorefill.run_due()
            db.session.commit()
        asked = db.session.execute(sa.select(RefillRequest).where(
            RefillRequest.prescription_id == new_id)).scalars().all()
        orders = db.session.execute(sa.select(Order).where(Order.prescription_id == new_id)).scalars().all()
        assert asked or orders, "nothing asked for or ordered on the new prescription after the renewal"
