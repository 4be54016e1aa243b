"""Third fresh-eyes review of the supply model, after "days in transit are not days held" (migration 0020): odd but
real histories built through the public services with the injected clock, each checked against a day-by-day count
of what the patient holds. Each test fails on the code it was written against, for the reason in its docstring."""
from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import sqlalchemy as sa
from flask import Flask

from pharmacy.compounding.models import Order
from pharmacy.core.context import business_calendar, settings, today
from pharmacy.core.errors import Conflict
from pharmacy.extensions import db
from pharmacy.prescriptions.models import Prescription
from pharmacy.refills import queue as refill_queue
from pharmacy.refills import rules as refill_rules
from pharmacy.refills.rules import RequestSource
from pharmacy.reminders.models import OutboxMessage
from pharmacy.reminders.rules import MessageKind, OutboxState
from pharmacy.supply import reads
from pharmacy.workflows import orders as order_flow
from pharmacy.workflows import prescription_changes
from pharmacy.workflows import refill_requests as refill_flow
from tests import factories

BRIDGE = "The parcel is late; a bottle at the counter so the patient is not without"



def _rx(rx_id: int) -> Prescription:
    db.session.flush()
    db.session.expire_all()
    return db.session.get(Prescription, rx_id)


def _out_with_a_parcel_on_its_way(staff: dict, clock: Any) -> tuple[dict[str, Any], Order]:
    """A shipping patient (4 days on the road): a 30-day fill handed over on Mon Nov 23 (last dose Tue Dec 22); out of
    medicine from Dec 23; the refill shipped on Mon Dec 28 arrives on Fri Jan 1. The clock is then on Tue Dec 29."""
    w = factories.world(staff, patient={"shipping_days": 4, "delivery_preference": "ship"})
    factories.fill_now(w, w["rx"].id)
    assert _rx(w["rx"].id).latest_run_out_date == date(2026, 12, 22)
    clock.advance(timedelta(days=35))
    parcel = factories.fill_now(w, w["rx"].id, ship=True)
    assert (parcel.dispensed_on, parcel.supply_starts_on) == (date(2026, 12, 28), date(2027, 1, 1))
    clock.advance(timedelta(days=1))
    return w, parcel


def test_a_new_dose_handed_over_while_the_old_refill_travels_is_medicine_in_hand(app_ctx: Flask, staff: dict,
                                                                                 clock: Any) -> None:
    """The patient has been out of medicine since Dec 23; the refill shipped on Dec 28 arrives on Jan 1. On Dec 29 the
    prescriber changes the dose (a replacement carrying the supply) and the pharmacist hands the new strength over at
    the counter (a too-soon override, since the parcel still counts). The patient holds 30 days in hand from Dec 29,
    and the old-dose parcel adds its 30 days when it arrives on Jan 1, while that bottle lasts: covered Dec 29 – Feb
    26, 60 days on hand, not out of medicine.

    What the pharmacist and the patient are told instead: "out of medicine since Dec 23", 0 days on hand, the refill
    on its way arrives Jan 1 — for a patient who has just walked out with a month's supply — and the supply is said to
    last to Mar 1: the three days the parcel spends in transit are counted as held, the very thing the "days in
    transit are not days held" decision (docs/domain.md, Supply and refills) forbids, so the reminders are planned
    three days late. On one prescription the same history (a pickup overtaking a parcel) is counted right: the model
    takes dispensings "in the order the patient received them".

    Cause: supply/rules.supply and covered_spans put the carried supply (Held) before every dispensing of the
    replacement (`carried_run_out`), even when the carried span starts later (covered_from: a parcel still on its
    way) than the replacement's first dispensing reaches the patient."""
    w, _parcel = _out_with_a_parcel_on_its_way(staff, clock)
    day = today()
    new = prescription_changes.replace(w["pharmacist"], w["rx"].id, factories.replacement_data(w))
    pickup = factories.fill_now(w, new.id, too_soon_reason=BRIDGE)
    assert pickup.supply_starts_on == day == date(2026, 12, 29)

    current = reads.supply_of(_rx(new.id))
    held = (current.out_since(day), current.days_on_hand(day), current.arriving_on(day), current.run_out)
    assert held == (None, 60, None, date(2027, 2, 26)), (
        f"just handed a month of the new dose at the counter, the patient is shown as (out since, days on hand, "
        f"arriving on, run-out) = {held}")


def test_the_reminders_after_a_new_dose_handed_over_during_a_parcels_journey_follow_the_days_held(
        app_ctx: Flask, staff: dict, clock: Any) -> None:
    """The history above (out since Dec 23, the old-dose refill arriving Jan 1, the new dose handed over at the counter
    on Dec 29): the patient's medicine lasts to Feb 26, so the order-by reminder is due on the order-by date counted
    back from Feb 26 (refills/rules.timeline): Feb 17. It is planned from Mar 1 — three days in transit counted as
    held — for Feb 22: the patient is reminded five days late (a weekend falls between) and runs short
    (docs/domain.md, Reminders: the order-by date comes from the run-out; Supply and refills: days in transit are not
    days held).

    Cause: as above, supply/rules.supply stacks the replacement's first dispensing after the carried supply, even
    when that supply is a parcel still on its way; reminders/planning reads the cached run-out."""
    w, _parcel = _out_with_a_parcel_on_its_way(staff, clock)
    new = prescription_changes.replace(w["pharmacist"], w["rx"].id, factories.replacement_data(w))
    factories.fill_now(w, new.id, too_soon_reason=BRIDGE)
    patient = w["patient"]
    expected = refill_rules.timeline(
        date(2027, 2, 26), shipping_days=refill_rules.shipping_days_for(patient.delivery_preference,
                                                                        patient.shipping_days),
        buffer_days=settings().safety_buffer_days, lead_time_business_days=w["formula"].lead_time_business_days,
        calendar=business_calendar()).order_by
    db.session.flush()
    due = db.session.execute(sa.select(OutboxMessage.due_at).where(
        OutboxMessage.prescription_id == new.id, OutboxMessage.kind == MessageKind.REMINDER_ORDER_BY,
        OutboxMessage.state == OutboxState.PENDING)).scalar_one()
    planned = due.astimezone(settings().timezone).date()
    assert planned == expected, f"order-by reminder planned for {planned}; the medicine held lasts to Feb 26 " \
                                f"(order by {expected})"


def test_returning_the_old_prescriptions_lost_parcel_does_not_tell_the_pharmacist_a_supplied_patient_is_out(
        app_ctx: Flask, staff: dict, clock: Any) -> None:
    """A 30-day fill handed over Nov 23; the refill shipped on Dec 17 (arriving Dec 19); a renewal on Dec 20 carries
    that supply (to Jan 21), and the renewal's first fill is handed over at the counter on Jan 16. Then the carrier
    confirms the December parcel was lost, and the pharmacist returns it (docs/domain.md, Returned fills: the
    replacement carrying it loses the returned days too). The supply is recomputed right — the patient holds the
    renewal's bottle, 30 days from Jan 16 — but the pharmacist is told "The patient has had no medicine since Dec 23,
    2026. The refill it used is available again: start a new fill to replace it." A pharmacist who believes it makes a
    fill for a patient who holds a month of medicine, on a prescription that is closed (replaced). Right: what the
    patient holds now — the renewal's supply, "medicine until Feb 14, 2027".

    Cause: workflows/orders.return_fill words its message from the returned prescription's own supply (the `held`
    that supply/services.refresh_with_successors returns), not from the supply of the prescription that replaced it
    and now holds the patient's medicine."""
    w = factories.world(staff, patient={"shipping_days": 2})
    rx_id = w["rx"].id
    factories.fill_now(w, rx_id)
    clock.advance(timedelta(days=24))
    lost = factories.fill_now(w, rx_id, ship=True)
    clock.advance(timedelta(days=3))
    renewal = prescription_changes.replace(w["pharmacist"], rx_id, factories.replacement_data(w))
    clock.advance(timedelta(days=27))
    assert today() == date(2027, 1, 16)
    factories.fill_now(w, renewal.id)
    outcome = order_flow.return_fill(w["pharmacist"], lost.id, "lost_in_transit")
    current = reads.supply_of(_rx(renewal.id))
    assert (current.days_on_hand(today()), current.run_out) == (30, date(2027, 2, 14))  # the model is right
    assert "no medicine since" not in (outcome.message or ""), outcome.message
    assert "Feb 14, 2027" in (outcome.message or ""), outcome.message


def test_a_lost_parcel_overtaken_by_a_bridging_pickup_can_be_returned(app_ctx: Flask, staff: dict,
                                                                      clock: Any) -> None:
    """Out of medicine since Dec 23, the refill shipped on Dec 28 (due Jan 1) is late, so on Dec 29 the pharmacist
    hands over a bottle at the counter (a too-soon override). The supply model counts the two in the order the patient
    receives them: the bottle from Dec 29, the parcel's days after it (to Feb 26). Then the carrier confirms the
    parcel lost. Returning it is refused — "Only the latest fill of RX… can be returned: order … was dispensed after
    this one" — so the patient stays counted as holding 60 days while holding 30, the next reminder comes a month late
    and two refills are used for one month: exactly what returns exist to prevent (docs/domain.md, Returned fills).
    The rule's own reason ("a later fill was counted on top of it") does not hold here: nothing was counted on top of
    the parcel; it was counted on top of the bottle. Right: the fill last in the supply's order (the last received)
    may be returned; the bottle's days then stand alone (Dec 29 – Jan 27).

    Cause: compounding/returns.later_dispensed_fill (and rules.return_refusal) compare fill numbers (dispensing
    order), not the order the supply model counts fills in (supply_starts_on, the day the patient has each)."""
    w, parcel = _out_with_a_parcel_on_its_way(staff, clock)
    rx_id = w["rx"].id
    factories.fill_now(w, rx_id, too_soon_reason=BRIDGE)
    assert _rx(rx_id).latest_run_out_date == date(2027, 2, 26)  # the bottle first, the parcel's days after it
    try:
        order_flow.return_fill(w["pharmacist"], parcel.id, "lost_in_transit")
    except Conflict as refused:
        raise AssertionError(f"the lost parcel cannot be returned: {refused}") from None
    assert _rx(rx_id).latest_run_out_date == date(2027, 1, 27)


def test_a_patient_out_of_medicine_while_a_parcel_travels_is_told_apart_in_the_refill_queue(
        app_ctx: Flask, staff: dict, clock: Any) -> None:
    """Two requests in the refill queue. Olive holds medicine to Jan 11 and asked on Dec 13. Margaret has been out of
    medicine since Dec 23 (her refill was shipped on Dec 28 and arrives Jan 1) and asked on Dec 29. The reviewer's
    finding: her row said "out of medicine since Dec 23, 2026 (7 days)" and nothing more, listed below a patient who
    holds two weeks of medicine — a pharmacist reading it would think she is waiting on this request.

    Decided (docs/domain.md, Supply and refills): the queue orders requests by the supply the patient will hold,
    the refill already on its way included — her request is for the fill after that parcel (too soon until it is
    used), and what helps her now is already travelling — so she stays below; her row says she is out *and* when the
    refill on its way arrives, so the pharmacist can tell her (or bridge her) without opening her record."""
    w = factories.world(staff, patient={"shipping_days": 4, "delivery_preference": "ship"})
    ph = w["pharmacist"]
    factories.fill_now(w, w["rx"].id)  # Nov 23: Margaret's last dose is on Dec 22
    clock.advance(timedelta(days=20))  # Dec 13: Olive's fill (to Jan 11) and her request
    olive = factories.patient(ph, first_name="Olive", last_name="Other", email="olive@example.com")
    olive_rx = factories.prescription(ph, olive.id, w["formula"].id, w["prescriber"].id)
    factories.fill_now(w, olive_rx.id)
    refill_flow.request(w["technician"], olive_rx.id, source=RequestSource.STAFF)
    clock.advance(timedelta(days=15))  # Dec 28: Margaret's refill is shipped (arrives Jan 1)
    factories.fill_now(w, w["rx"].id, ship=True)
    clock.advance(timedelta(days=1))  # Dec 29: Margaret asks
    refill_flow.request(w["technician"], w["rx"].id, source=RequestSource.STAFF)
    shown = [(i.patient.first_name, i.out_since, i.days_out) for i in refill_queue.queue(ph)]
    assert shown[1] == ("Margaret", date(2026, 12, 23), 7), shown  # the queue itself says she is out
    assert refill_queue.queue(ph)[1].arriving_on == date(2027, 1, 1)  # ... and when the refill on its way arrives
