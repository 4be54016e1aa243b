"""The eight findings of "Supply that adds up", each through the services (and the HTTP pages where a patient
or pharmacist reads the answer). Each test failed on the code before the supply model.
"""
from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from pharmacy.billing import services as billing
from pharmacy.compounding import labels
from pharmacy.compounding import services as orders
from pharmacy.compounding.models import IngredientLot, Order
from pharmacy.compounding.rules import DeliveryMethod, OrderState, UspCategory
from pharmacy.core.context import today
from pharmacy.core.errors import ValidationFailed
from pharmacy.dashboard.services import running_out
from pharmacy.extensions import db
from pharmacy.prescriptions import services as prescriptions
from pharmacy.prescriptions.models import Prescription
from pharmacy.prescriptions.rules import Form
from pharmacy.refills import queue as refill_queue
from pharmacy.refills import services as refills
from pharmacy.refills.models import RefillRequest
from pharmacy.refills.rules import RequestSource
from pharmacy.reminders.models import OutboxMessage
from pharmacy.reminders.rules import MessageKind, OutboxState
from pharmacy.supply import reads
from pharmacy.workflows import orders as order_flow
from pharmacy.workflows import refill_requests as refill_flow
from tests import factories
from tests.conftest import T0
from tests.pages import confirm_birth_date, pdf_text
from tests.pages import page_text as text


def _lot_ids(formula: Any, *, naltrexone: IngredientLot | None = None) -> list[dict[str, int]]:
    """One lot per ingredient: the given naltrexone lot, or the longest-dated one; the longest-dated others."""
    out = []
    for ing in formula.ingredients:
        if naltrexone is not None and ing.name == naltrexone.ingredient_name:
            out.append({"ingredient_lot_id": naltrexone.id})
            continue
        lot = db.session.execute(sa.select(IngredientLot).where(IngredientLot.ingredient_name == ing.name)
                                 .order_by(IngredientLot.expiry_date.desc())).scalars().first()
        out.append({"ingredient_lot_id": lot.id})
    return out


def _make(w: dict[str, Any], order_id: int, lots: list[dict[str, int]], *, to: str = "dispensed",
          **dispense: Any) -> Order:
    """Verify, plan with these lots, make exactly the planned quantity, check, release and (by default) dispense."""
    order = db.session.get(Order, order_id)
    if order.state == OrderState.REQUESTED:
        orders.verify_order(w["pharmacist"], order_id)
    orders.plan_batch(w["technician"], order_id, lots=lots)
    measured = [{**x, "quantity_used": "1"} for x in lots]
    orders.compound_order(w["technician"], order_id, lots=measured, quantity_made=order.quantity)
    orders.check_order(w["pharmacist2"], order_id)
    if to == "checked":
        return order
    order_flow.release(w["pharmacist2"], order_id)
    if to == "dispensed":
        order_flow.dispense(w["technician"], order_id, **dispense)
    return db.session.get(Order, order_id)


def _short_naltrexone(days: int) -> IngredientLot:
    return factories.lot("Naltrexone hydrochloride USP", f"NAL-SHORT-{days}", expiry=today() + timedelta(days=days))


# ---- 1 and 2: a BUD cap is decided before the work, and its rest is owed on the same fill -------------------------


def test_a_bud_capped_fill_keeps_its_rest_owed_and_uses_no_refill(app_ctx: Flask, staff: dict, clock: Any) -> None:
    w = factories.world(staff, days_supply=60, refills_authorized=3)
    order = order_flow.start_fill(w["technician"], w["rx"].id)
    assert (order.days_supply, order.quantity) == (60, 60)
    short = _short_naltrexone(14)
    orders.verify_order(w["pharmacist"], order.id)
    orders.plan_batch(w["technician"], order.id, lots=_lot_ids(w["formula"], naltrexone=short))
    # Decided when the lots are chosen: the bench makes 14 capsules, not 60.
    assert (order.days_supply, order.quantity, order.bud) == (14, 14, today() + timedelta(days=14))
    assert order.cap_note.endswith("14 of 60 days; 46 days still owed on this fill.")
    _make(w, order.id, _lot_ids(w["formula"], naltrexone=short))
    assert order.qc_passed is True and order.qc_yield_pct == Decimal("100.0")  # no re-make for a 985.7 % yield
    rx = db.session.get(Prescription, w["rx"].id)
    held = reads.supply_of(rx)
    assert (held.days_dispensed, held.days_owed, held.refills_left, held.current_fill) == (14, 46, 3, 0)

    clock.advance(timedelta(days=12))
    req = refill_flow.request(w["technician"], rx.id, source=RequestSource.STAFF).request
    summary = refills.summary(rx)
    assert (summary.fill_days, summary.quantity_text, summary.refills_left) == (46, "46 capsules", 3)
    assert summary.fill_progress == "14 of 60 days; 46 days still owed on this fill"
    second = refill_flow.approve(w["pharmacist"], req.id)
    assert (second.authorized_fill, second.days_supply, second.quantity) == (0, 46, 46)  # the rest, not a refill
    _make(w, second.id, _lot_ids(w["formula"]))
    held = reads.supply_of(db.session.get(Prescription, rx.id))
    assert (held.days_dispensed, held.fills_completed, held.refills_left, held.days_owed) == (60, 1, 3, 60)
    third = order_flow.start_fill(w["pharmacist"], rx.id)
    assert (third.authorized_fill, third.days_supply) == (1, 60)  # now the first refill
    view = prescriptions.prescription_view(w["pharmacist"], rx.id)
    assert (view.refills_left, view.refills_used) == (3, 0)


def test_recording_a_batch_with_lots_that_change_the_quantity_is_refused(app_ctx: Flask, staff: dict) -> None:
    w = factories.world(staff, days_supply=60)
    order = order_flow.start_fill(w["technician"], w["rx"].id)
    orders.verify_order(w["pharmacist"], order.id)
    lots = [{**x, "quantity_used": "1"} for x in _lot_ids(w["formula"], naltrexone=_short_naltrexone(14))]
    with pytest.raises(ValidationFailed) as caught:
        orders.compound_order(w["technician"], order.id, lots=lots, quantity_made=Decimal(138))
    assert "14 capsules for 14 days, not 60 capsules" in caught.value.fields["lots"][0]
    assert db.session.get(Order, order.id).state == OrderState.VERIFIED


# ---- 3: a re-make with a fresh lot lifts a stale cap -------------------------------------------------------------


def test_a_remake_with_a_fresh_lot_recomputes_the_cap_and_the_label(app_ctx: Flask, staff: dict) -> None:
    w = factories.world(staff, days_supply=60)
    order = order_flow.start_fill(w["technician"], w["rx"].id)
    _make(w, order.id, _lot_ids(w["formula"], naltrexone=_short_naltrexone(14)), to="checked")
    assert order.days_supply == 14
    orders.send_back(w["pharmacist2"], order.id, "Re-make with the new naltrexone lot")
    orders.plan_batch(w["technician"], order.id, lots=_lot_ids(w["formula"]))  # the longest-dated lots
    assert (order.days_supply, order.quantity, order.cap_note) == (60, 60, None)
    assert order.price_cents == db.session.get(Order, order.id).price_cents
    orders.compound_order(w["technician"], order.id, quantity_made=Decimal(60),
                          lots=[{**x, "quantity_used": "1"} for x in _lot_ids(w["formula"])])
    orders.check_order(w["pharmacist2"], order.id)
    text = pdf_text(labels.label_pdf(w["technician"], order.id))
    assert "Capped" not in text and "60 capsules" in text


# ---- 4: the delivery chosen at hand-over sets the fee and the dates ----------------------------------------------


def test_switching_to_shipping_at_dispense_charges_the_fee_and_keeps_the_dates_apart(app_ctx: Flask,
                                                                                     staff: dict) -> None:
    w = factories.world(staff, patient={"delivery_preference": DeliveryMethod.PICKUP, "shipping_days": 3})
    order = order_flow.start_fill(w["technician"], w["rx"].id)
    assert (order.delivery_method, order.shipping_cents) == (DeliveryMethod.PICKUP, 0)
    before = billing.patient_ledger(w["patient"].id).owed_cents
    _make(w, order.id, _lot_ids(w["formula"]), to="ready")
    outcome = order_flow.dispense(w["technician"], order.id, method=DeliveryMethod.SHIP, carrier="USPS",
                                  tracking_number="9400 1000 0000 0000 0000 01")
    assert outcome.message == "Shipping fee of $8.95 added to the patient's balance."
    order = outcome.order
    assert (order.delivery_method, order.shipping_cents) == (DeliveryMethod.SHIP, 895)
    assert billing.patient_ledger(w["patient"].id).owed_cents == before + 5500 + 895
    # Left today (a Monday); 3 days in the post → Thursday, when the supply starts.
    assert (order.dispensed_on, order.supply_starts_on) == (today(), today() + timedelta(days=3))
    assert order.run_out_date == today() + timedelta(days=3 + 29)


# ---- 5: an early fill moves the run-out and the reminders ----------------------------------------------------------


def test_an_early_fill_extends_the_run_out_and_moves_the_reminders(app_ctx: Flask, staff: dict, clock: Any) -> None:
    w = factories.world(staff)
    first = order_flow.start_fill(w["technician"], w["rx"].id)
    _make(w, first.id, _lot_ids(w["formula"]))
    assert db.session.get(Prescription, w["rx"].id).latest_run_out_date == today() + timedelta(days=29)
    clock.advance(timedelta(days=10))
    second = order_flow.start_fill(w["technician"], w["rx"].id)
    _make(w, second.id, _lot_ids(w["formula"]), to="ready")
    with pytest.raises(Exception, match="Too soon"):
        order_flow.dispense(w["technician"], second.id)
    order_flow.dispense(w["pharmacist"], second.id, too_soon_reason="Travelling abroad for six weeks")
    rx = db.session.get(Prescription, w["rx"].id)
    first_day = T0.date()
    assert rx.latest_run_out_date == first_day + timedelta(days=59)  # 60 days held, not 30 from today
    pending = db.session.execute(sa.select(OutboxMessage).where(
        OutboxMessage.prescription_id == rx.id, OutboxMessage.kind == MessageKind.REMINDER_ORDER_BY,
        OutboxMessage.state == OutboxState.PENDING)).scalars().all()
    assert len(pending) == 1 and pending[0].order_id == second.id
    assert pending[0].due_at.date() > first_day + timedelta(days=50)  # planned from the new run-out


# ---- 6: an expired prescription is refused at intake ---------------------------------------------------------------


def test_intake_refuses_an_expired_or_future_prescription_and_warns_on_one_expiring_soon(app_ctx: Flask,
                                                                                         staff: dict) -> None:
    w = factories.world(staff)
    with pytest.raises(ValidationFailed) as caught:
        factories.prescription(w["pharmacist"], w["patient"].id, w["formula"].id, w["prescriber"].id,
                               written_date=date(2025, 10, 1))
    assert "expired on Oct 1, 2026" in caught.value.fields["written_date"][0]
    with pytest.raises(ValidationFailed) as caught:
        factories.prescription(w["pharmacist"], w["patient"].id, w["formula"].id, w["prescriber"].id,
                               written_date=today() + timedelta(days=1))
    assert "future" in caught.value.fields["written_date"][0]
    soon = factories.prescription(w["pharmacist"], w["patient"].id, w["formula"].id, w["prescriber"].id,
                                  written_date=today() - timedelta(days=350))
    codes = {a.code: a.severity.value for a in reads.alerts_for(soon.id)}
    assert codes.get("expires_before_supply_ends") == "warning"


# ---- 7: the quote is the order ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("ship", [False, True])
def test_the_refill_quote_equals_the_order_approving_creates(app_ctx: Flask, staff: dict, ship: bool) -> None:
    f = factories.formula("LDN-SL-AQ", form=Form.SUBLINGUAL_LIQUID, strength="1",
                          category=UspCategory.AQUEOUS_UNPRESERVED, prices=(("45", 30, 6000), ("21", 14, 3500)))
    patient = {"delivery_preference": DeliveryMethod.SHIP if ship else DeliveryMethod.PICKUP, "shipping_days": 3}
    w = factories.world(staff, patient=patient)
    rx = factories.prescription(w["pharmacist"], w["patient"].id, f.id, w["prescriber"].id, dose_mg=Decimal("1.5"),
                                days_supply=30)
    s = refills.summary(rx)
    req = refill_flow.request(w["technician"], rx.id, source=RequestSource.STAFF).request
    order = refill_flow.approve(w["pharmacist"], req.id)
    assert (order.days_supply, order.price_cents, order.shipping_cents) == (s.fill_days, s.price_cents,
                                                                           s.shipping_cents)
    assert order.days_supply == (11 if ship else 14)  # a parcel's BUD must last the journey


# ---- 8: an overdue patient is told plainly, and put first -----------------------------------------------------------


def test_a_patient_who_has_run_out_is_told_so_and_listed_first(app: Flask, app_ctx: Flask, staff: dict,
                                                               clock: Any) -> None:
    w = factories.world(staff)
    first = order_flow.start_fill(w["technician"], w["rx"].id)
    _make(w, first.id, _lot_ids(w["formula"]))
    other = factories.world(staff, patient={"first_name": "Otto", "last_name": "Other", "email": "o@example.com"})
    later = order_flow.start_fill(other["technician"], other["rx"].id)
    clock.advance(timedelta(days=20))
    _make(other, later.id, _lot_ids(other["formula"]))
    clock.set(T0 + timedelta(days=34))  # Margaret's last covered day was day 29; Otto's is day 49
    # Today's call list: those already out of medicine first, saying since when.
    rows = running_out(today(), days=30)
    assert [(r.patient.first_name, r.out_since, r.days_out) for r in rows] == [
        ("Margaret", T0.date() + timedelta(days=30), 5), ("Otto", None, 0)]
    refill_flow.request(w["technician"], other["rx"].id, source=RequestSource.STAFF)
    refill_flow.request(w["technician"], w["rx"].id, source=RequestSource.STAFF)
    s = refills.summary(db.session.get(Prescription, w["rx"].id))
    assert s.out_since == T0.date() + timedelta(days=30) and s.days_out == 5
    queue = refill_queue.queue(w["pharmacist"])
    assert [item.patient.first_name for item in queue] == ["Margaret", "Otto"]  # out first, though asked last
    assert queue[0].out_since == s.out_since and queue[1].out_since is None
    # The order is the database's, so every page keeps it: one a page, Margaret is still first.
    assert [[i.patient.first_name for i in refill_queue.queue(w["pharmacist"], page=n, per_page=1)]
            for n in (1, 2, 3)] == [["Margaret"], ["Otto"], []]


def test_the_queue_puts_the_longest_out_first_then_everyone_else_by_when_they_asked(app: Flask, app_ctx: Flask,
                                                                                   staff: dict, clock: Any) -> None:
    """Two patients out of medicine (the longer out first, though both asked after the others), then a patient who
    still holds medicine and one whose prescription was never filled, in the order they asked — on each page."""
    def patient(first: str) -> dict[str, Any]:
        return factories.world(staff, patient={"first_name": first, "last_name": "Queue",
                                               "email": f"{first.lower()}@example.com"})

    def filled(w: dict[str, Any]) -> None:
        _make(w, order_flow.start_fill(w["technician"], w["rx"].id).id, _lot_ids(w["formula"]))

    margaret, lena, hal, nora = patient("Margaret"), patient("Lena"), patient("Hal"), patient("Nora")
    filled(margaret)  # day 0: out from day 30
    clock.advance(timedelta(days=5))
    filled(lena)  # day 5: out from day 35
    clock.set(T0 + timedelta(days=30))
    filled(hal)  # day 30: holds medicine to day 59
    clock.set(T0 + timedelta(days=40))
    for w in (hal, nora, lena, margaret):  # Hal asks first, Margaret last
        refill_flow.request(w["technician"], w["rx"].id, source=RequestSource.STAFF)
        clock.advance(timedelta(minutes=5))
    expected, pharmacist = ["Margaret", "Lena", "Hal", "Nora"], factories.actor(staff["pharmacist"])
    assert [item.patient.first_name for item in refill_queue.queue(pharmacist)] == expected
    assert [name for n in (1, 2, 3, 4) for name in
            (i.patient.first_name for i in refill_queue.queue(pharmacist, page=n, per_page=1))] == expected


def test_a_fill_made_at_the_counter_moves_an_open_request_down_the_queue(app: Flask, app_ctx: Flask, staff: dict,
                                                                          clock: Any) -> None:
    """Margaret, out of medicine, asked after Hal and is listed first; then a technician fills her prescription at
    the counter and it is dispensed while her request is still open. She holds medicine again, so her request goes
    back among those who do, by when she asked — the queue orders by the run-out her request carries, which must
    follow her prescription's."""
    def patient(first: str) -> dict[str, Any]:
        return factories.world(staff, patient={"first_name": first, "last_name": "Counter",
                                               "email": f"{first.lower()}@example.com"})

    margaret, hal = patient("Margaret"), patient("Hal")
    _make(margaret, order_flow.start_fill(margaret["technician"], margaret["rx"].id).id, _lot_ids(margaret["formula"]))
    clock.set(T0 + timedelta(days=30))
    _make(hal, order_flow.start_fill(hal["technician"], hal["rx"].id).id, _lot_ids(hal["formula"]))
    clock.set(T0 + timedelta(days=40))
    refill_flow.request(hal["technician"], hal["rx"].id, source=RequestSource.STAFF)
    clock.advance(timedelta(minutes=5))
    req = refill_flow.request(margaret["technician"], margaret["rx"].id, source=RequestSource.STAFF).request
    pharmacist = factories.actor(staff["pharmacist"])
    assert [i.patient.first_name for i in refill_queue.queue(pharmacist)] == ["Margaret", "Hal"]  # she is out

    _make(margaret, order_flow.start_fill(margaret["technician"], margaret["rx"].id).id, _lot_ids(margaret["formula"]))
    rx = db.session.get(Prescription, margaret["rx"].id)
    assert rx.latest_run_out_date == today() + timedelta(days=29)
    assert db.session.get(RefillRequest, req.id).run_out_date == rx.latest_run_out_date
    queue = refill_queue.queue(pharmacist)
    assert [i.patient.first_name for i in queue] == ["Hal", "Margaret"] and queue[1].out_since is None


def test_a_run_out_copy_out_of_step_is_found_and_put_right(app: Flask, staff: dict, clock: Any) -> None:
    """`flask refills verify` and `flask doctor` find an open request whose run-out copy is not its prescription's
    (written around the services, here by plain SQL) — it would be listed out of order — and `--fix` copies it
    again, audited; a decided request's copy is not looked at."""
    from pharmacy.ops import doctor

    with app.test_request_context("/"):
        w = factories.world(staff)
        _make(w, order_flow.start_fill(w["technician"], w["rx"].id).id, _lot_ids(w["formula"]))
        req = refill_flow.request(w["technician"], w["rx"].id, source=RequestSource.STAFF).request
        request_id, rx_id = req.id, w["rx"].id
        db.session.commit()
    runner = app.test_cli_runner()
    ok = runner.invoke(args=["refills", "verify"])
    assert ok.exit_code == 0 and "the queue's order is right" in ok.output
    with app.app_context():
        db.session.execute(sa.text("UPDATE refill_requests SET run_out_date = '2020-01-01' WHERE id = :r"),
                           {"r": request_id})
        db.session.commit()
        found = [r for r in doctor.run() if r.name == "Refill queue order"]
        assert [(r.status, r.message.split(" ")[0]) for r in found] == [(doctor.WARN, "1")]
        db.session.rollback()
    bad = runner.invoke(args=["refills", "verify"])
    assert bad.exit_code == 1 and "MISMATCH: 1 open refill request(s)" in bad.output
    fixed = runner.invoke(args=["refills", "verify", "--fix"])
    assert fixed.exit_code == 0 and "onto 1 open request(s)" in fixed.output
    assert runner.invoke(args=["refills", "verify"]).exit_code == 0
    with app.app_context():
        assert (db.session.get(RefillRequest, request_id).run_out_date
                == db.session.get(Prescription, rx_id).latest_run_out_date)
        assert db.session.execute(sa.text(
            "SELECT count(*) FROM audit_events WHERE action = 'refills.resync_run_out'")).scalar_one() == 1


def test_the_refill_page_and_the_queue_say_out_of_medicine_in_words(app: Flask, client: Any, staff: dict,
                                                                     clock: Any) -> None:
    from pharmacy.core import links
    from tests.conftest import login

    with app.test_request_context("/"):
        w = factories.world(staff)
        first = order_flow.start_fill(w["technician"], w["rx"].id)
        _make(w, first.id, _lot_ids(w["formula"]))
        ids = (w["patient"].id, w["rx"].id)
        db.session.commit()
    clock.set(T0 + timedelta(days=34))  # last day covered: day 29 (Tue 22 Dec 2026)
    with app.test_request_context("/"):
        token = links.make_token(links.REFILL, *ids)  # a fresh reminder's link
    confirm_birth_date(client, token, date(1968, 4, 12))
    page = text(client.get(f"/r/{token}/refill"))
    assert "You have run out of this medicine" in page
    assert "Your last dose was on Tuesday, December 22, 2026 (5 days without it)" in page
    assert "call us today at (217) 555-0100" in page
    assert "runs out on" not in page and "your last dose is on" not in page  # never the past told as the future
    assert client.post(f"/r/{token}/refill", data={"delivery": "pickup"}).status_code in (302, 303)
    login(client, staff["pharmacist"])
    queue = text(client.get("/refills"))
    assert "out of medicine since Dec 23, 2026 (5 days)" in queue
