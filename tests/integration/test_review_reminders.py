"""Review of reminders, texts, refill links and auto-refill: each test is a defect a patient would hit."""
from __future__ import annotations

from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from flask import Flask

from pharmacy.core.actor import Actor
from pharmacy.extensions import db
from pharmacy.reminders import delivery, transports
from pharmacy.reminders.models import OutboxMessage
from pharmacy.reminders.rules import MessageKind, OutboxState
from pharmacy.sms import delivery as sms_delivery
from pharmacy.sms import services as sms
from pharmacy.sms import transports as sms_transports
from pharmacy.sms.rules import Choice
from tests.reminder_helpers import dispensed, fresh, reminder_rows

NUMBER = "+12175550101"


def _both_channels(patient_id: int) -> None:
    me = Actor(kind="patient", patient_id=patient_id)
    sms.number_verified(me, NUMBER, consent=True)
    sms.set_channel(me, Choice.BOTH)
    db.session.commit()


def test_patient_who_chose_email_and_text_gets_the_email_too(app_ctx: Flask, clock: Any, staff: dict) -> None:
    """A patient who chose "email and text" gets the text of a refill reminder, but the email of the same reminder is
    cancelled as "superseded by a later reminder" whenever the text job (which runs beside the email job every 30 s)
    wrote the text row before the email was sent — e.g. the mail server was down for a minute. The text row is a
    row of the same kind about the same fill with a later due time, and the wanted-check's `superseded` looks at
    every channel. Correct: a text never supersedes an email (only a later reminder in the same channel does); the
    email goes out."""
    w, order = dispensed(staff)
    _both_channels(w["patient"].id)
    first = reminder_rows(order.id)[0]
    assert first.kind == MessageKind.REMINDER_EARLY
    clock.set(first.due_at + timedelta(seconds=5))

    sms_delivery.deliver_due(transport=sms_transports.OutboxOnlySms())  # the text job ran first this tick
    texts = db.session.execute(sa.select(OutboxMessage).where(OutboxMessage.channel == "sms")).scalars().all()
    assert [t.state for t in texts] == [OutboxState.SENT]

    clock.advance(timedelta(seconds=25))
    delivery.deliver_due(transport=transports.OutboxOnlyTransport())
    email = fresh(first.id)
    assert email.state == OutboxState.SENT, (email.state, email.cancelled_reason)


def test_auto_refill_survives_the_prescription_being_renewed(app: Flask, staff: dict, clock: Any) -> None:
    """A patient on auto-refill whose prescription is renewed (replaced by a new one — the very thing auto-refill's
    own "no refills left" path asks the prescriber for) silently stops getting automatic refills: the next daily run
    finds the old prescription "replaced", ends the enrolment ("the prescription is no longer active") and asks for
    nothing on the new prescription, and nobody tells the patient. The new prescription's refill is then only asked
    for if the patient notices. Correct: the enrolment follows the replacement (as the waiting request and renewal
    do, workflows/prescription_changes._take_over), and on the supply's order-by date an automatic request is made
    on the new prescription."""
    from pharmacy.autorefill import services as autorefill
    from pharmacy.prescriptions.models import Prescription
    from pharmacy.refills.models import RefillRequest
    from pharmacy.refills.rules import RequestSource
    from pharmacy.workflows.next_refill import next_refill
    from tests import factories

    with app.test_request_context("/"):
        _w, new_id = factories.renewed_with_autorefill(staff, clock)
        order_by = next_refill(db.session.get(Prescription, new_id)).order_by
        assert order_by is not None
        day = clock.now()
        while day.date() <= order_by + timedelta(days=1):
            autorefill.run_due()
            db.session.commit()
            clock.advance(timedelta(days=1))
            day = clock.now()
        autos = db.session.execute(sa.select(RefillRequest).where(
            RefillRequest.prescription_id == new_id, RefillRequest.source == RequestSource.AUTO)).scalars().all()
        assert autorefill.live_enrolment(new_id) is not None, "auto-refill ended when the prescription was renewed"
        assert len(autos) == 1


def test_reminder_order_by_date_matches_the_portal_for_a_patient_who_ships(app: Flask, staff: dict, clock: Any) -> None:
    """A patient who has their refills shipped (delivery preference "ship", 2 shipping days) collected this fill in
    person. The reminders are timed from the *collected* fill's delivery method (no shipping days), so the
    order-by reminder comes — and the email says "order by …" — two days later than the order-by date the portal, the
    calendar and auto-refill show (workflows/next_refill: the patient's delivery preference). A patient who orders on
    the day the reminder names gets a parcel on the day after their last dose: the whole safety buffer gone, and
    any carrier slip means missed doses. Correct: one order-by date, the one for how the next fill will travel."""
    from pharmacy.compounding.rules import DeliveryMethod
    from pharmacy.prescriptions.models import Prescription
    from pharmacy.workflows import orders as order_flow
    from pharmacy.workflows.next_refill import next_refill
    from tests import factories

    with app.test_request_context("/"):
        w = factories.world(staff, patient={"delivery_preference": DeliveryMethod.SHIP, "shipping_days": 2})
        order = order_flow.start_fill(w["pharmacist"], w["rx"].id, delivery=DeliveryMethod.PICKUP)
        factories.run_order_to(w, order.id, "dispensed")
        db.session.commit()
        portal_order_by = next_refill(db.session.get(Prescription, w["rx"].id)).order_by
        tz = app.extensions["pharmacy.settings"].timezone
        [reminder] = [r for r in reminder_rows(order.id) if r.kind == MessageKind.REMINDER_ORDER_BY]
        assert reminder.due_at.astimezone(tz).date() == portal_order_by


def test_start_after_stop_gives_a_texts_only_patient_their_texts_back(app_ctx: Flask, clock: Any, staff: dict) -> None:
    """A patient who takes reminders by text only replies STOP (by mistake, or to pause), then START. Twilio tells
    them they are subscribed again, and the pharmacy records consent again — but STOP had also switched their
    channel from "text" to "email" and START does not switch it back, so every later reminder goes by email only
    (the text is cancelled as "patient chose email"): the patient who chose texts, perhaps because they do not read
    email, hears nothing where they expect it. Correct: START restores the choice STOP changed, so the next reminder
    is a text again (domain.md: "STOP … takes it back at once …; START gives it back")."""
    w, order = dispensed(staff)
    me = Actor(kind="patient", patient_id=w["patient"].id)
    sms.number_verified(me, NUMBER, consent=True)
    sms.set_channel(me, Choice.SMS)
    db.session.commit()
    sms.handle_inbound("SM-stop", NUMBER, "STOP")
    db.session.commit()
    clock.advance(timedelta(minutes=5))
    sms.handle_inbound("SM-start", NUMBER, "START")
    db.session.commit()

    first = reminder_rows(order.id)[0]
    clock.set(first.due_at + timedelta(seconds=5))
    sms_transport = sms_transports.OutboxOnlySms()
    sms_delivery.deliver_due(transport=sms_transport)
    delivery.deliver_due(transport=transports.OutboxOnlyTransport())
    sms_delivery.deliver_due(transport=sms_transport)
    texts = db.session.execute(sa.select(OutboxMessage).where(OutboxMessage.channel == "sms")).scalars().all()
    assert [(t.state, t.cancelled_reason) for t in texts] == [(OutboxState.SENT, None)]
