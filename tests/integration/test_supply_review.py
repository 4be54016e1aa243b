"""Review of the supply model through the public services: histories of partial, early, late, re-made and replaced
fills, and the caches (prescription and open request) and reminders that must agree with a recomputation."""
from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from pharmacy.compounding import services as orders
from pharmacy.compounding.models import Order
from pharmacy.compounding.rules import DeliveryMethod
from pharmacy.core.context import today
from pharmacy.core.errors import Conflict
from pharmacy.extensions import db
from pharmacy.prescriptions.models import Prescription
from pharmacy.reminders import bulk_planning, rendering
from pharmacy.reminders.models import OutboxMessage
from pharmacy.reminders.rules import MessageKind, OutboxState
from pharmacy.supply import reads
from pharmacy.supply import services as supply
from pharmacy.workflows import orders as order_flow
from pharmacy.workflows import prescription_changes as changes
from tests import factories


def _fill(w: dict[str, Any], rx_id: int, **dispense: Any) -> Order:
    order = order_flow.start_fill(w["technician"], rx_id)
    factories.run_order_to(w, order.id, "ready")
    order_flow.dispense(w["pharmacist"], order.id, **dispense)
    return db.session.get(Order, order.id)


def _pending(rx_id: int) -> list[OutboxMessage]:
    db.session.flush()
    db.session.expire_all()  # planning writes the outbox with UPDATE statements
    return list(db.session.execute(sa.select(OutboxMessage).where(
        OutboxMessage.prescription_id == rx_id, OutboxMessage.state == OutboxState.PENDING,
        OutboxMessage.kind.in_([MessageKind.REMINDER_EARLY, MessageKind.REMINDER_ORDER_BY,
                                MessageKind.REMINDER_OVERDUE, MessageKind.RENEWAL_NEEDED]))).scalars())


def _in_step(rx: Prescription) -> None:
    db.session.expire_all()
    rx = db.session.get(Prescription, rx.id)
    again = reads.recomputed_supply(rx)
    assert rx.latest_run_out_date == again.run_out
    assert rx.days_dispensed == again.days_dispensed
    assert supply.open_requests_out_of_step() == 0


def _renew(w: dict[str, Any], rx_id: int, **kw: Any) -> Prescription:
    return changes.replace(w["pharmacist"], rx_id, factories.replacement_data(w, **kw))


def test_a_renewal_carrying_supply_keeps_the_refill_reminders(app_ctx: Flask, staff: dict, clock: Any) -> None:
    """Finding 1: a replacement holds the old supply (its run-out), but nothing reminded the patient to order from it:
    the old prescription's reminders stopped and the new one had no dispensed order to plan from."""
    w = factories.world(staff)
    first = _fill(w, w["rx"].id)
    before = sorted((m.kind, m.due_at) for m in _pending(w["rx"].id))
    assert before
    clock.advance(timedelta(days=5))
    new = _renew(w, w["rx"].id)
    assert new.latest_run_out_date == first.run_out_date == today() + timedelta(days=24)
    _in_step(new)
    assert _pending(w["rx"].id) == []  # the replaced prescription's stopped
    carried = _pending(new.id)
    # The same supply, so the same dates; the rows belong to the new prescription.
    assert sorted((m.kind, m.due_at) for m in carried) == before
    assert {(m.prescription_id, m.order_id) for m in carried} == {(new.id, first.id)}
    order_by = next(m for m in carried if m.kind == MessageKind.REMINDER_ORDER_BY)
    email = rendering.render(order_by)
    assert rendering.Batch.load([order_by.id]).context(order_by.id)["run_out"] in email.text
    # A full re-plan agrees with what the replacement planned.
    report = bulk_planning.replan_all(commit=False)
    assert (report.added, report.moved, report.cancelled) == (0, 0, 0)

    # Ordered from the new prescription: the carried reminders stop; cancelled again, they come back.
    order = order_flow.start_fill(w["technician"], new.id)
    assert _pending(new.id) == []
    order_flow.cancel(w["pharmacist"], order.id, "Patient will call back")
    assert sorted((m.kind, m.due_at) for m in _pending(new.id)) == before
    # Dispensed: the new fill stacks after the carried run-out, and the reminders follow it alone.
    clock.advance(timedelta(days=19))  # 6 days left of the old supply: not too soon
    second = _fill(w, new.id)
    assert second.run_out_date == first.run_out_date + timedelta(days=30)
    _in_step(new)
    assert {m.order_id for m in _pending(new.id)} == {second.id}


def test_two_replacements_in_a_row_without_a_fill_keep_the_reminders(app_ctx: Flask, staff: dict, clock: Any) -> None:
    """A renewal (B) changed again before its first fill (C): C holds A's supply and is reminded
    from A's last order. The planner looked back one prescription only, so C joined nothing and went silent."""
    w = factories.world(staff)
    first = _fill(w, w["rx"].id)
    before = sorted((m.kind, m.due_at) for m in _pending(w["rx"].id))
    clock.advance(timedelta(days=3))
    b = _renew(w, w["rx"].id)
    clock.advance(timedelta(days=2))
    c = _renew(w, b.id, refills_authorized=11)  # the prescriber corrects the refills
    assert c.latest_run_out_date == first.run_out_date and c.supply_source_id == w["rx"].id
    assert _pending(b.id) == []
    carried = _pending(c.id)
    assert sorted((m.kind, m.due_at) for m in carried) == before
    assert {(m.prescription_id, m.order_id) for m in carried} == {(c.id, first.id)}
    report = bulk_planning.replan_all(commit=False)  # the full re-plan finds the same rows
    assert (report.added, report.moved, report.cancelled) == (0, 0, 0)
    # C's own first fill takes over, after the carried run-out.
    clock.advance(timedelta(days=19))
    own = _fill(w, c.id)
    assert own.run_out_date == first.run_out_date + timedelta(days=30)
    assert {m.order_id for m in _pending(c.id)} == {own.id}


# ---- histories that already add up (kept: each would fail if the model broke) ------------------------------------


def test_a_fill_after_a_gap_starts_on_its_own_day(app_ctx: Flask, staff: dict, clock: Any) -> None:
    w = factories.world(staff)
    _fill(w, w["rx"].id)
    clock.advance(timedelta(days=45))  # 15 days without medicine
    late = _fill(w, w["rx"].id)
    rx = db.session.get(Prescription, w["rx"].id)
    assert late.supply_starts_on == today()
    assert rx.latest_run_out_date == late.run_out_date == today() + timedelta(days=29)  # the gap is not carried
    _in_step(rx)


def test_two_fills_on_one_day_stack_and_the_cache_matches_a_recomputation(app_ctx: Flask, staff: dict) -> None:
    w = factories.world(staff, refills_authorized=2)
    first = _fill(w, w["rx"].id)
    second = _fill(w, w["rx"].id, too_soon_reason="Leaving the country for two months")
    rx = db.session.get(Prescription, w["rx"].id)
    assert first.supply_starts_on == second.supply_starts_on == today()
    assert rx.latest_run_out_date == second.run_out_date == today() + timedelta(days=59)
    assert (rx.days_dispensed, reads.supply_of(rx).refills_left) == (60, 1)
    # The too-soon basis is the latest dispensing: 6 of its 30 days may remain when the next one arrives.
    assert reads.supply_of(rx).earliest_next_start == today() + timedelta(days=54)
    _in_step(rx)


def test_a_remade_batch_is_one_dispensing(app_ctx: Flask, staff: dict) -> None:
    w = factories.world(staff)
    order = order_flow.start_fill(w["technician"], w["rx"].id)
    factories.run_order_to(w, order.id, "checked")
    orders.send_back(w["pharmacist2"], order.id, "Capsule weights out of range")
    factories.run_order_to(w, order.id, "dispensed")
    rx = db.session.get(Prescription, w["rx"].id)
    assert (rx.days_dispensed, rx.latest_run_out_date) == (30, today() + timedelta(days=29))
    _in_step(rx)


def test_a_late_evening_dispensing_on_a_dst_day_counts_the_local_day(app_ctx: Flask, staff: dict,
                                                                       clock: Any) -> None:
    """Sunday 7 March 2027, 23:30 in Chicago (CST, UTC-6) is already Monday in UTC; clocks spring forward that
    night. The pickup belongs to the pharmacy's Sunday."""
    w = factories.world(staff)
    order = order_flow.start_fill(w["technician"], w["rx"].id)
    factories.run_order_to(w, order.id, "ready")
    clock.set(datetime(2027, 3, 8, 5, 30, tzinfo=UTC))
    assert today() == date(2027, 3, 7)
    order_flow.dispense(w["pharmacist"], order.id)
    rx = db.session.get(Prescription, w["rx"].id)
    assert (order.dispensed_on, order.supply_starts_on) == (date(2027, 3, 7), date(2027, 3, 7))
    assert rx.latest_run_out_date == date(2027, 4, 5)
    _in_step(rx)


def test_a_shipped_orders_earliest_dispense_date_is_the_day_it_may_leave(app_ctx: Flask, staff: dict,
                                                                          clock: Any) -> None:
    """Finding 2: too soon is judged on the day the parcel reaches the patient, but the order's "earliest dispense"
    date (the order page's "too soon today", the approval's "may be dispensed from") was that arrival day, so a parcel
    that may leave on Monday was shown as too soon until Thursday."""
    w = factories.world(staff, patient={"delivery_preference": DeliveryMethod.SHIP, "shipping_days": 3})
    first = _fill(w, w["rx"].id, carrier="USPS", tracking_number="9400 1")
    assert (first.supply_starts_on, first.run_out_date) == (date(2026, 11, 26), date(2026, 12, 25))
    rx = db.session.get(Prescription, w["rx"].id)
    assert reads.supply_of(rx).earliest_next_start == date(2026, 12, 20)  # a Sunday: delivered on Monday the 21st
    clock.advance(timedelta(days=14))
    order = order_flow.start_fill(w["technician"], rx.id)
    assert order.earliest_dispense_date == date(2026, 12, 17)  # Thursday + 3 days → Sunday → Monday the 21st
    factories.run_order_to(w, order.id, "ready")
    clock.set(datetime(2026, 12, 16, 15, 0, tzinfo=UTC))  # the day before: it would arrive on Saturday the 19th
    with pytest.raises(Conflict, match="Too soon"):
        order_flow.dispense(w["technician"], order.id, carrier="USPS", tracking_number="9400 2")
    clock.set(datetime(2026, 12, 17, 15, 0, tzinfo=UTC))
    done = order_flow.dispense(w["technician"], order.id, carrier="USPS", tracking_number="9400 2").order
    assert done.supply_starts_on == date(2026, 12, 21)
    assert done.run_out_date == date(2026, 12, 25) + timedelta(days=30)
    _in_step(rx)
