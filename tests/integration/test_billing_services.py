"""Billing services and reports against a real database (SQLite here, PostgreSQL in the second pass).

Every amount is checked to the cent, with prices that do not divide evenly.
"""
from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from flask import Flask

from pharmacy.billing import adherence, pricing, reports, services
from pharmacy.billing.models import AdherenceSnapshot, AdherenceSummary, Fee, Payment, PriceEntry
from pharmacy.billing.rules import AmountInvalid, RefundTooLarge
from pharmacy.compounding import services as orders
from pharmacy.compounding.models import Order
from pharmacy.compounding.rules import DeliveryMethod, OrderState
from pharmacy.core.clock import FixedClock
from pharmacy.core.context import now, today
from pharmacy.core.errors import Forbidden, ValidationFailed
from pharmacy.extensions import db
from pharmacy.workflows import orders as order_flow
from tests import factories
from tests.conftest import T0

CHICAGO = ZoneInfo("America/Chicago")


def order_at(world: dict[str, Any], state: str, rx: Any = None) -> Order:
    """The next fill of the prescription, walked through the real workflow to `state`."""
    order = order_flow.start_fill(world["pharmacist"], (rx or world["rx"]).id)
    if state != "requested":
        factories.run_order_to(world, order.id, state)
    db.session.flush()
    return order


def pay(world: dict[str, Any], cents: int, *, order: Order | None = None, method: str = "card", patient_id: int | None = None,
        who: str = "technician") -> services.PaymentResult:
    return services.record_payment(world[who], patient_id=patient_id or world["patient"].id, amount_cents=cents, method=method,
                                   order_id=order.id if order else None)


def refund(world: dict[str, Any], cents: int, *, order: Order | None = None) -> services.PaymentResult:
    return services.record_refund(world["technician"], patient_id=world["patient"].id, amount_cents=cents, method="cash",
                                  order_id=order.id if order else None)


def payments_count() -> int:
    return db.session.execute(sa.select(sa.func.count()).select_from(Payment)).scalar_one()


def dispensed_fill(world: dict[str, Any], days_ago: int, days_supply: int, *, patient: Any = None, rx: Any = None,
                   price_cents: int = 5500) -> Order:
    """A past dispensed fill inserted as history (as an import would bring it), for adherence windows."""
    rx = rx or world["rx"]
    patient = patient or world["patient"]
    fill = db.session.execute(sa.select(sa.func.coalesce(sa.func.max(Order.fill_number), -1))
                              .where(Order.prescription_id == rx.id)).scalar_one() + 1
    t = now() - timedelta(days=days_ago)
    order = Order(prescription_id=rx.id, patient_id=patient.id, fill_number=fill, state=OrderState.DISPENSED,
                  state_changed_at=t, quantity=Decimal(days_supply), days_supply=days_supply,
                  delivery_method=DeliveryMethod.PICKUP, dispensed_at=t, dispensed_on=today() - timedelta(days=days_ago),
                  run_out_date=today() - timedelta(days=days_ago - days_supply), price_cents=price_cents,
                  created_at=t, updated_at=t)
    db.session.add(order)
    db.session.flush()
    return order


# ---------------------------------------------------------------------------------------------
# Price list
# ---------------------------------------------------------------------------------------------


def test_price_list_shows_monthly_equivalent_and_flags_out_of_band(world: dict[str, Any]) -> None:
    row = pricing.set_price(world["admin"], formula_id=world["formula"].id, quantity=Decimal(90), days_supply=90,
                             price_cents=12900, accept_out_of_band=True)
    assert row.monthly_equivalent_cents == 4300  # $129 for 90 days = $43.00 a month: below $45
    assert row.band == "below" and row.out_of_band
    listing = pricing.price_list(world["technician"])
    by_qty = {r.quantity: r for r in listing.rows}
    assert by_qty[Decimal(30)].monthly_equivalent_cents == 5500 and by_qty[Decimal(30)].band == "within"
    assert by_qty[Decimal(90)].price_cents == 12900
    assert [r.id for r in reports.out_of_band(world["admin"])] == [row.id]
    assert listing.shipping_cents == 895


def test_out_of_band_price_is_refused_until_confirmed(world: dict[str, Any]) -> None:
    before = db.session.execute(sa.select(sa.func.count()).select_from(PriceEntry)).scalar_one()
    with pytest.raises(pricing.PriceOutOfBand) as exc:
        pricing.set_price(world["admin"], formula_id=world["formula"].id, quantity=Decimal(30), days_supply=30,
                           price_cents=12500)
    assert exc.value.status == 422 and "accept_out_of_band" in exc.value.fields
    assert "$125.00 a month is above" in exc.value.message
    assert db.session.execute(sa.select(sa.func.count()).select_from(PriceEntry)).scalar_one() == before
    row = pricing.set_price(world["admin"], formula_id=world["formula"].id, quantity=Decimal(30), days_supply=30,
                             price_cents=12500, accept_out_of_band=True)
    assert row.band == "above"


def test_price_change_keeps_history_and_never_rewrites_past_orders(world: dict[str, Any], clock: FixedClock) -> None:
    first = order_at(world, "dispensed")
    assert first.price_cents == 5500
    old_entry = first.price_entry_id
    clock.advance(timedelta(days=1))
    row = pricing.set_price(world["admin"], formula_id=world["formula"].id, quantity=Decimal(30), days_supply=30,
                             price_cents=5999)
    pricing.set_shipping_fee(world["admin"], 995)
    db.session.refresh(first)
    assert first.price_cents == 5500 and first.price_entry_id == old_entry  # the snapshot stands
    retired = db.session.get(PriceEntry, old_entry)
    assert retired.retired_at == now() and retired.price_cents == 5500  # retired, not rewritten
    history = pricing.price_list(world["admin"], include_retired=True).rows
    assert [(r.price_cents, r.retired_at is None) for r in history if r.quantity == Decimal(30)] == [(5999, True),
                                                                                                   (5500, False)]
    second = order_flow.start_fill(world["pharmacist"], world["rx"].id, delivery=DeliveryMethod.SHIP)
    assert (second.price_cents, second.shipping_cents, second.price_entry_id) == (5999, 995, row.id)
    fees = db.session.execute(sa.select(Fee.amount_cents, Fee.retired_at.is_(None)).order_by(Fee.id)).all()
    assert [tuple(f) for f in fees] == [(895, False), (995, True)]


def test_saving_the_same_price_twice_adds_nothing(world: dict[str, Any]) -> None:
    count = db.session.execute(sa.select(sa.func.count()).select_from(PriceEntry)).scalar_one()
    row = pricing.set_price(world["admin"], formula_id=world["formula"].id, quantity=Decimal(30), days_supply=30,
                             price_cents=5500)
    assert row.retired_at is None
    assert db.session.execute(sa.select(sa.func.count()).select_from(PriceEntry)).scalar_one() == count


def test_only_admins_change_prices(world: dict[str, Any]) -> None:
    for who in ("technician", "pharmacist"):
        with pytest.raises(Forbidden):
            pricing.set_price(world[who], formula_id=world["formula"].id, quantity=Decimal(30), days_supply=30, price_cents=5000)
        with pytest.raises(Forbidden):
            pricing.set_shipping_fee(world[who], 100)


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"days_supply": 0}, "days_supply"), ({"quantity": Decimal(0)}, "quantity"), ({"price_cents": -1}, "price"),
    ({"formula_id": 999_999}, "formula_id"), ({"quantity": Decimal("1.0001")}, "quantity"),
])
def test_bad_price_input_is_a_field_message(world: dict[str, Any], kwargs: dict[str, Any], field: str) -> None:
    values = {"formula_id": world["formula"].id, "quantity": Decimal(30), "days_supply": 30, "price_cents": 5000, **kwargs}
    with pytest.raises(ValidationFailed) as exc:
        pricing.set_price(world["admin"], **values)
    assert field in exc.value.fields


def test_quotes_exact_prorated_and_shipped(world: dict[str, Any]) -> None:
    exact = pricing.quote_for(world["technician"], formula_id=world["formula"].id, quantity=Decimal(90),
                              delivery=DeliveryMethod.PICKUP)
    assert (exact.price_cents, exact.shipping_cents, exact.prorated, exact.days_supply) == (15500, 0, False, 90)
    assert exact.monthly_equivalent_cents == 5167  # 15500 × 30 / 90 = 5166.67
    # 45 capsules: nearest entry is 30 @ $55.00 → $1.8333… a capsule → $82.50; 45 days at that rate.
    odd = pricing.quote_for(world["technician"], formula_id=world["formula"].id, quantity=Decimal(45),
                            delivery=DeliveryMethod.SHIP)
    assert (odd.price_cents, odd.shipping_cents, odd.total_cents, odd.prorated) == (8250, 895, 9145, True)
    assert (odd.days_supply, odd.monthly_equivalent_cents) == (45, 5500)
    with pytest.raises(ValidationFailed):
        pricing.quote_for(world["technician"], formula_id=999_999, quantity=Decimal(30), delivery=DeliveryMethod.PICKUP)


# ---------------------------------------------------------------------------------------------
# Payments, refunds, balances
# ---------------------------------------------------------------------------------------------


def test_three_payments_of_33_33_settle_99_99_exactly(world: dict[str, Any]) -> None:
    pricing.set_price(world["admin"], formula_id=world["formula"].id, quantity=Decimal(30), days_supply=30, price_cents=9999)
    order = order_at(world, "ready")
    assert order.total_cents == 9999
    first = pay(world, 3333, order=order, method="cash")
    assert (first.order_balance.balance_cents, first.balance.owed_cents) == (6666, 6666)
    pay(world, 3333, order=order, method="check")
    last = pay(world, 3333, order=order, method="hsa_fsa")
    assert last.order_balance == last.balance
    assert (last.balance.charged_cents, last.balance.paid_cents, last.balance.balance_cents) == (9999, 9999, 0)
    assert last.balance.credit_cents == 0 and last.balance.owed_cents == 0
    assert last.receipt_number == f"R2026-{last.payment.id:06d}"


def test_overpayment_becomes_credit_not_an_error(world: dict[str, Any]) -> None:
    order = order_at(world, "dispensed")
    result = pay(world, 6001, order=order)
    assert (result.balance.owed_cents, result.balance.credit_cents, result.balance.balance_cents) == (0, 501, -501)
    summary = services.patient_cost_summary(world["technician"], world["patient"].id)
    assert (summary.balance_cents, summary.credit_cents) == (0, 501)


def test_orders_are_charged_once_ready_and_never_when_cancelled(world: dict[str, Any]) -> None:
    order = order_at(world, "compounding")
    prepaid = pay(world, 5500, order=order)
    assert (prepaid.balance.charged_cents, prepaid.balance.credit_cents) == (0, 5500)  # a prepayment: credit for now
    orders.check_order(world["pharmacist2"], order.id)
    order_flow.release(world["pharmacist2"], order.id)
    ledger = services.patient_ledger(world["patient"].id)
    assert (ledger.charged_cents, ledger.balance_cents) == (5500, 0)
    orders.hold_order(world["pharmacist"], order.id, "patient travelling")
    assert services.patient_ledger(world["patient"].id).charged_cents == 5500  # a ready order on hold is still made
    order_flow.cancel(world["pharmacist"], order.id, "patient stopped LDN")
    ledger = services.patient_ledger(world["patient"].id)
    assert (ledger.charged_cents, ledger.credit_cents) == (0, 5500)


def test_payment_on_a_cancelled_order_is_refused_but_a_refund_is_not(world: dict[str, Any]) -> None:
    order = order_at(world, "verified")
    pay(world, 2000, order=order)
    order_flow.cancel(world["pharmacist"], order.id, "prescriber changed the dose")
    count = payments_count()
    with pytest.raises(services.PaymentRefused) as exc:
        pay(world, 1000, order=order)
    assert exc.value.status == 422 and "cancelled" in exc.value.fields["order_id"][0]
    assert payments_count() == count
    back = refund(world, 2000, order=order)
    assert back.order_balance.net_paid_cents == 0 and back.balance.balance_cents == 0


def test_refund_never_more_than_paid(world: dict[str, Any]) -> None:
    order = order_at(world, "dispensed")
    pay(world, 3000, order=order)
    count = payments_count()
    with pytest.raises(RefundTooLarge) as exc:
        refund(world, 3001, order=order)
    assert exc.value.status == 422 and "$30.00" in exc.value.fields["amount"][0]
    assert payments_count() == count
    refund(world, 1000, order=order)
    with pytest.raises(RefundTooLarge):
        refund(world, 2001, order=order)  # net paid is now $20.00
    refund(world, 2000)  # on the account: the patient's net paid is $20.00
    with pytest.raises(RefundTooLarge):
        refund(world, 1, order=order)  # the order still shows $20.00 paid net, but the patient has nothing left
    ledger = services.patient_ledger(world["patient"].id)
    assert (ledger.paid_cents, ledger.refunded_cents, ledger.owed_cents) == (3000, 3000, 5500)


@pytest.mark.parametrize(("cents", "method", "field"), [(0, "cash", "amount"), (-500, "cash", "amount"),
                                                        (10_000_001, "cash", "amount"), (100, "bitcoin", "method")])
def test_bad_payment_input_records_nothing(world: dict[str, Any], cents: int, method: str, field: str) -> None:
    with pytest.raises(ValidationFailed) as exc:
        pay(world, cents, method=method)
    assert exc.value.status == 422 and field in exc.value.fields
    assert payments_count() == 0


def test_someone_elses_order_and_roles(world: dict[str, Any]) -> None:
    other = factories.patient(world["pharmacist"], first_name="Otto", last_name="Other", email="otto@example.com")
    order = order_at(world, "ready")
    with pytest.raises(services.PaymentRefused):
        pay(world, 100, order=order, patient_id=other.id)
    with pytest.raises(Forbidden):
        pay(world, 100, who="admin")
    with pytest.raises(AmountInvalid):
        refund(world, 0)
    assert payments_count() == 0


def test_every_payment_and_refund_is_audited_without_amounts(world: dict[str, Any]) -> None:
    from pharmacy.core.models import AuditEvent

    order = order_at(world, "ready")
    p = pay(world, 5500, order=order)
    r = refund(world, 500, order=order)
    events = db.session.execute(sa.select(AuditEvent).where(AuditEvent.entity_type == "payment")
                                .order_by(AuditEvent.id)).scalars().all()
    assert [(e.action, e.entity_id, e.patient_id) for e in events] == [
        ("payment.record", p.payment.id, world["patient"].id), ("refund.record", r.payment.id, world["patient"].id)]
    assert all("5500" not in str(e.details) and "500" not in str(e.details) for e in events)


# ---------------------------------------------------------------------------------------------
# A patient's costs
# ---------------------------------------------------------------------------------------------


def test_patient_costs_regimen_spend_and_fill_history(world: dict[str, Any], clock: FixedClock) -> None:
    # A second active prescription, shipped: 1 mg/mL sublingual liquid, 4.5 mL a day, aqueous (14-day BUD).
    from pharmacy.compounding.rules import UspCategory
    from pharmacy.prescriptions.rules import Form

    liquid = factories.formula("LDN-SL-1", form=Form.SUBLINGUAL_LIQUID, strength="1",
                               category=UspCategory.AQUEOUS_UNPRESERVED, prices=(("135", 30, 7900),))
    rx2 = factories.prescription(world["pharmacist"], world["patient"].id, liquid.id, world["prescriber"].id, days_supply=30)
    first = order_at(world, "dispensed")
    pay(world, 5500, order=first)
    refund(world, 1000, order=first)
    clock.set(datetime(2025, 12, 31, 20, 0, tzinfo=UTC))  # last year: not in this year's spend
    pay(world, 777)
    clock.set(T0)
    summary = services.patient_cost_summary(world["technician"], world["patient"].id)
    costs = services.patient_costs(world["technician"], world["patient"].id)
    # Capsules: 30 for 30 days at $55.00. Liquid: capped to 14 days by the BUD → 63 mL pro-rated from
    # 135 mL @ $79.00 = $36.87 → × 30 / 14 = $79.01. Pickup, so no shipping.
    lines = {line.rx_number: line for line in costs.regimen}
    assert lines[world["rx"].rx_number].monthly_equivalent_cents == 5500
    liquid_line = lines[rx2.rx_number]
    assert (liquid_line.days_supply, liquid_line.quantity_text, liquid_line.total_cents) == (14, "63 mL", 3687)
    assert liquid_line.monthly_equivalent_cents == 7901
    assert summary.monthly_equivalent_cents == 5500 + 7901
    assert summary.spent_this_year_cents == 4500  # 5500 − 1000; the 7.77 was in 2025
    ledger = costs.ledger
    assert (ledger.charged_cents, ledger.paid_cents, ledger.refunded_cents, ledger.balance_cents) == (5500, 6277, 1000, 223)
    assert (summary.balance_cents, summary.credit_cents) == (223, 0)
    fill = costs.fills[0]
    assert (fill.order_id, fill.price_cents, fill.paid_cents, fill.refunded_cents, fill.balance_cents) == (
        first.id, 5500, 5500, 1000, 1000)
    assert fill.fill_date == today() and fill.charged
    assert costs.statement_years == [2026, 2025]
    assert [p.kind for p in costs.payments] == ["refund", "payment", "payment"]


def test_patient_costs_need_clinical_and_billing_access(world: dict[str, Any]) -> None:
    with pytest.raises(Forbidden):
        services.patient_costs(world["admin"], world["patient"].id)
    from pharmacy.core.errors import NotFound

    with pytest.raises(NotFound):
        services.patient_costs(world["technician"], 2_147_483_648)


# ---------------------------------------------------------------------------------------------
# Reports
# ---------------------------------------------------------------------------------------------


def _pay_at(world: dict[str, Any], clock: FixedClock, at: datetime, cents: int, kind: str = "payment") -> None:
    clock.set(at)
    (pay if kind == "payment" else refund)(world, cents)
    clock.set(T0)


def test_revenue_by_month_uses_the_pharmacys_months(world: dict[str, Any], clock: FixedClock) -> None:
    # 1 November 2026 is the day daylight saving ends in Chicago: the month starts at 05:00 UTC.
    _pay_at(world, clock, datetime(2026, 10, 31, 23, 30, tzinfo=CHICAGO), 1001)  # 04:30 UTC on 1 Nov: still October
    _pay_at(world, clock, datetime(2026, 11, 1, 4, 59, 59, tzinfo=UTC), 2002)  # 23:59:59 CDT on 31 Oct: October
    _pay_at(world, clock, datetime(2026, 11, 1, 5, 0, tzinfo=UTC), 4004)  # 00:00 CDT on 1 Nov: November
    _pay_at(world, clock, datetime(2026, 9, 30, 23, 59, tzinfo=CHICAGO), 333)  # September
    _pay_at(world, clock, datetime(2026, 11, 20, 12, 0, tzinfo=CHICAGO), 1500, kind="refund")
    _pay_at(world, clock, datetime(2025, 11, 30, 23, 0, tzinfo=CHICAGO), 9999)  # 13 months ago: outside 12 months
    months = reports.revenue_by_month(world["admin"], 12)
    assert [m.month for m in months][:2] == ["2025-12", "2026-01"] and months[-1].month == "2026-11"
    by = {m.month: m for m in months}
    assert (by["2026-09"].net_cents, by["2026-10"].net_cents) == (333, 3003)
    assert (by["2026-11"].paid_cents, by["2026-11"].refunded_cents, by["2026-11"].net_cents) == (4004, 1500, 2504)
    assert sum(m.net_cents for m in months) == 333 + 3003 + 2504
    assert reports.revenue_by_month(world["admin"], 13)[0].paid_cents == 9999


def test_outstanding_fills_by_form_and_average_cost(world: dict[str, Any]) -> None:
    p2 = factories.patient(world["pharmacist"], first_name="Walter", last_name="Whitaker", email="world@example.com",
                           phone="(217) 555-0199")
    rx2 = factories.prescription(world["pharmacist"], p2.id, world["formula"].id, world["prescriber"].id,
                                 days_supply=90)
    a = order_at(world, "dispensed")  # $55.00
    b = order_at({**world, "patient": p2}, "dispensed", rx=rx2)  # 90 capsules: $155.00
    pay(world, 2000, order=a)
    pay(world, 5000, order=b, patient_id=p2.id)
    pay(world, 1, patient_id=p2.id)
    out = reports.outstanding_balances(world["pharmacist"])
    assert [(o.name, o.phone, o.charged_cents, o.net_paid_cents, o.owed_cents) for o in out.rows] == [
        ("Whitaker, Walter", "(217) 555-0199", 15500, 5001, 10499),
        ("Ellison, Margaret", "(217) 555-0101", 5500, 2000, 3500)]
    assert (out.patients, out.total_owed_cents) == (2, 13999)
    # Admins run the money, not the pharmacy's clinical side: the same report without names or phones.
    admin = reports.outstanding_balances(world["admin"])
    assert [(o.name, o.phone, o.owed_cents) for o in admin.rows] == [
        (f"Patient #{p2.id}", None, 10499), (f"Patient #{world['patient'].id}", None, 3500)]
    forms = {f.form: f for f in reports.fills_by_form(world["admin"])}
    assert (forms["capsule"].fills, forms["capsule"].patients, forms["capsule"].price_cents) == (2, 2, 21000)
    assert forms["capsule"].monthly_equivalent_cents == 5250  # 21000 × 30 / 120
    assert forms["sublingual_liquid"].fills == 0
    avg = reports.average_monthly_cost(world["admin"])
    # Margaret $55.00 for 30 days = $55.00; Walter $155.00 for 90 days = $51.67: mean $53.335 → $53.34.
    assert (avg.patients, avg.average_cents) == (2, 5334)
    assert [r.monthly_equivalent_cents for r in avg.highest] == [5500, 5167]
    assert [r.name for r in avg.highest] == [f"Patient #{world['patient'].id}", f"Patient #{p2.id}"]
    assert [r.name for r in reports.average_monthly_cost(world["pharmacist"]).highest] == [
        "Ellison, Margaret", "Whitaker, Walter"]


def test_adherence_shifts_overlapping_fills_and_lists_who_to_call(world: dict[str, Any]) -> None:
    # Margaret: 30 days at day −59, an early refill at day −40 (shifted to start at day −29), nothing since:
    # covered days −59 … 0 = all 60 of a 60-day window → 100%. Without the shift it would be 49/60.
    dispensed_fill(world, 59, 30)
    dispensed_fill(world, 40, 30)
    # Walter: one 30-day fill at day −59 and nothing since: 30/60 = 50% → to call.
    p2 = factories.patient(world["pharmacist"], first_name="Walter", last_name="Whitaker", email="world@example.com",
                           phone="(217) 555-0199")
    rx2 = factories.prescription(world["pharmacist"], p2.id, world["formula"].id, world["prescriber"].id)
    dispensed_fill(world, 59, 30, patient=p2, rx=rx2)
    # Nina started 10 days ago: her window starts at her first fill, so she is at 100%.
    p3 = factories.patient(world["pharmacist"], first_name="Nina", last_name="New", email="n@example.com")
    rx3 = factories.prescription(world["pharmacist"], p3.id, world["formula"].id, world["prescriber"].id)
    dispensed_fill(world, 9, 30, patient=p3, rx=rx3)
    report = adherence.adherence(world["pharmacist"], window_days=60)
    assert (report.measured, report.below_count) == (3, 1)
    assert [(r.name, r.percent, str(r.pdc), r.phone) for r in report.rows] == [("Whitaker, Walter", 50, "0.5000",
                                                                                "(217) 555-0199")]
    assert report.rows[0].last_fill_on == today() - timedelta(days=59)
    assert report.distribution == [0, 0, 0, 0, 0, 1, 0, 0, 0, 2]
    assert not report.snapshot  # a window of its own: computed on request
    # The call list (and the default window) come from the snapshot: empty until it is first computed.
    assert adherence.adherence_below_threshold(world["pharmacist"], 10) == []
    adherence.refresh_adherence()
    assert [r.name for r in adherence.adherence_below_threshold(world["pharmacist"], 10)] == ["Whitaker, Walter"]
    admin_view = adherence.adherence(world["admin"], window_days=60)
    assert admin_view.rows == [] and admin_view.below_count == 1 and not admin_view.show_names


def test_adherence_takes_a_bounded_number_of_queries(world: dict[str, Any], app: Flask) -> None:
    def queries_for(n_patients: int) -> int:
        for i in range(n_patients):
            p = factories.patient(world["pharmacist"], first_name=f"P{i}", last_name=f"Q{n_patients}-{i}",
                                  email=f"p{n_patients}-{i}@example.com")
            rx = factories.prescription(world["pharmacist"], p.id, world["formula"].id, world["prescriber"].id)
            dispensed_fill(world, 50, 30, patient=p, rx=rx)
            dispensed_fill(world, 15, 30, patient=p, rx=rx)
        db.session.flush()
        count = 0

        def counter(*args: Any) -> None:
            nonlocal count
            count += 1

        sa.event.listen(db.engine, "before_cursor_execute", counter)
        try:
            adherence.adherence(world["pharmacist"], window_days=90)
        finally:
            sa.event.remove(db.engine, "before_cursor_execute", counter)
        return count

    assert queries_for(3) == queries_for(25)


def test_csv_exports(world: dict[str, Any]) -> None:
    order = order_at(world, "dispensed")
    pay(world, 1234, order=order)
    pricing.set_price(world["admin"], formula_id=world["formula"].id, quantity=Decimal(90), days_supply=90, price_cents=12900,
                       accept_out_of_band=True)
    name, chunks = reports.export_csv(world["pharmacist"], "outstanding")
    text = "".join(chunks)
    assert name == "outstanding-2026-11-23.csv"
    assert text.splitlines() == ["patient_id,patient,phone,charged,net_paid,owed",
                                 f'{world["patient"].id},"Ellison, Margaret",(217) 555-0101,55.00,12.34,42.66']
    revenue = "".join(reports.export_csv(world["admin"], "revenue", months=2)[1]).splitlines()
    assert revenue == ["month,paid,refunded,net", "2026-10,0.00,0.00,0.00", "2026-11,12.34,0.00,12.34"]
    band = "".join(reports.export_csv(world["admin"], "out-of-band")[1]).splitlines()
    assert band[1].endswith(",90 capsules,90,129.00,43.00,below")
    with pytest.raises(Forbidden):
        reports.export_csv(world["admin"], "adherence")
    with pytest.raises(Forbidden):
        reports.export_csv(world["technician"], "revenue")


def test_csv_cells_cannot_become_formulas(world: dict[str, Any]) -> None:
    p = factories.patient(world["pharmacist"], first_name="=HYPERLINK(1)", last_name="+Evil", email="e@example.com")
    rx = factories.prescription(world["pharmacist"], p.id, world["formula"].id, world["prescriber"].id)
    order_at({**world, "patient": p}, "dispensed", rx=rx)
    text = "".join(reports.export_csv(world["pharmacist"], "outstanding")[1])
    assert "\"'+Evil, =HYPERLINK(1)\"" in text


def test_month_starts_wrap_years() -> None:
    assert reports.month_starts(date(2026, 2, 10), 3) == [date(2025, 12, 1), date(2026, 1, 1), date(2026, 2, 1),
                                                         date(2026, 3, 1)]


# ---------------------------------------------------------------------------------------------
# The adherence snapshot
# ---------------------------------------------------------------------------------------------


def _adherence_world(world: dict[str, Any]) -> dict[str, Any]:
    """Patients of every shape the PDC has to get right, with the default 180-day window."""
    people: dict[str, Any] = {}

    def person(key: str, first: str, *fills: tuple[int, int], status: str | None = None) -> None:
        p = factories.patient(world["pharmacist"], first_name=first, last_name=f"Adh{key}", email=f"{key}@example.com",
                              phone=f"(217) 555-{len(people):04d}")
        rx = factories.prescription(world["pharmacist"], p.id, world["formula"].id, world["prescriber"].id)
        for days_ago, days in fills:
            dispensed_fill(world, days_ago, days, patient=p, rx=rx)
        if status is not None:
            db.session.execute(sa.text("UPDATE prescriptions SET status = :s WHERE id = :i"), {"s": status, "i": rx.id})
        people[key] = p

    person("steady", "Stella", *((d, 30) for d in (170, 140, 110, 80, 50, 20)))  # 100 %
    person("early", "Eddie", (175, 30), (160, 30), (100, 30), (40, 30))  # early refills shift forward
    person("gap", "Gina", (179, 30), (60, 30))  # 60 of 180 days
    person("carry", "Carl", (300, 90), (200, 120), (15, 30))  # supply from before the window carries into it
    person("new", "Nina", (12, 30))  # the window starts at her first fill
    person("transit", "Tom", (90, 30), (-2, 30))  # a fill still in transit does not count yet
    person("boundary", "Bea", (179, 143))  # 143 of 180 days: 79.44 % (below), 0.7944
    person("stopped", "Stan", (30, 30), status="discontinued")  # no active prescription: not measured
    db.session.flush()
    return people


def _report_tuple(r: adherence.AdherenceReport) -> tuple[Any, ...]:
    return (r.window_days, r.window_start, r.window_end, r.threshold_percent, r.measured, r.below_count,
            r.distribution, r.rows)


def test_adherence_snapshot_gives_exactly_the_report_computed_on_request(world: dict[str, Any], clock: FixedClock) -> None:
    _adherence_world(world)
    live = adherence._adherence_live(180, 500, with_names=True)
    assert live.measured == 7 and live.below_count >= 2  # Margaret (no fill) is not measured; Stan is stopped

    before = adherence.adherence(world["pharmacist"])
    assert before.snapshot and before.computed_at is None and before.measured == 0  # never refreshed yet

    done = adherence.refresh_adherence(batch_size=2)  # several batches, each its own commit
    assert (done.measured, done.window_days, done.computed_at) == (live.measured, 180, now())
    snap = adherence.adherence(world["pharmacist"])
    assert snap.snapshot and snap.computed_at == now()
    assert _report_tuple(snap) == _report_tuple(live)  # every figure, every row, in the same order
    # Tom: 30 of the 91 days since his first fill (the one in transit does not count yet); Gina: 60 of 180.
    assert [(r.name, r.percent, str(r.pdc)) for r in snap.rows][:2] == [("Adhtransit, Tom", 33, "0.3297"),
                                                                        ("Adhgap, Gina", 33, "0.3333")]
    assert ("Adhboundary, Bea", 79, "0.7944") in [(r.name, r.percent, str(r.pdc)) for r in snap.rows]
    assert adherence.adherence_below_threshold(world["pharmacist"], 500) == snap.rows
    # The same window asked for explicitly is the snapshot too; any other is computed on request.
    assert adherence.adherence(world["pharmacist"], window_days=180).snapshot
    assert not adherence.adherence(world["pharmacist"], window_days=90).snapshot
    # The batch size changes nothing.
    rows = db.session.execute(sa.select(AdherenceSnapshot).order_by(AdherenceSnapshot.patient_id)).scalars().all()
    first = [(r.patient_id, r.pdc_milli, r.percent, r.covered_days, r.days_in_window, r.window_start, r.last_fill_on,
              r.last_days_supply, r.last_formula_id) for r in rows]
    adherence.refresh_adherence(batch_size=1000)
    db.session.expire_all()
    rows = db.session.execute(sa.select(AdherenceSnapshot).order_by(AdherenceSnapshot.patient_id)).scalars().all()
    assert [(r.patient_id, r.pdc_milli, r.percent, r.covered_days, r.days_in_window, r.window_start, r.last_fill_on,
             r.last_days_supply, r.last_formula_id) for r in rows] == first
    # An admin sees the figures, not the names.
    admin = adherence.adherence(world["admin"])
    assert admin.rows == [] and admin.below_count == snap.below_count and not admin.show_names


def test_adherence_refresh_follows_the_data_and_drops_who_is_no_longer_measured(world: dict[str, Any],
                                                                             clock: FixedClock) -> None:
    people = _adherence_world(world)
    adherence.refresh_adherence(batch_size=3)
    gina = people["gap"].id
    assert gina in {r.patient_id for r in adherence.adherence_below_threshold(world["pharmacist"], 50)}
    # Gina's prescription is stopped; Margaret gets a first fill; a day later the snapshot is refreshed.
    db.session.execute(sa.text("UPDATE prescriptions SET status = 'discontinued' WHERE patient_id = :p"), {"p": gina})
    dispensed_fill(world, 100, 30)
    clock.advance(timedelta(days=1))
    adherence.refresh_adherence(batch_size=3)
    measured = set(db.session.execute(sa.select(AdherenceSnapshot.patient_id)).scalars())
    assert gina not in measured and world["patient"].id in measured
    assert _report_tuple(adherence.adherence(world["pharmacist"])) == _report_tuple(
        adherence._adherence_live(180, 100, with_names=True))
    assert adherence.adherence(world["pharmacist"]).window_end == today()


def test_the_snapshot_integer_sql_is_the_rules_arithmetic(world: dict[str, Any]) -> None:
    """pdc_milli, the 4-place PDC and the threshold test, in SQL, against rules.pdc/is_adherent, edge cases included."""
    from pharmacy.billing import rules

    pairs = [(c, t) for t in (1, 7, 97, 143, 180, 297, 365, 730) for c in range(0, t + 1, max(1, t // 40))]
    pairs += [(98, 297), (143, 180), (144, 180), (4, 5), (79, 100), (80, 100), (2, 3)]
    values = sa.union_all(*[sa.select(sa.literal(c, sa.Integer).label("c"), sa.literal(t, sa.Integer).label("t"))
                            for c, t in pairs]).subquery("v")
    e4 = (20000 * values.c.c + values.c.t) // (2 * values.c.t)
    milli = (2000 * values.c.c + values.c.t) // (2 * values.c.t)
    got = db.session.execute(sa.select(values.c.c, values.c.t, e4, milli)).all()
    for c, t, pdc_e4, pdc_milli in got:
        exact = rules.pdc([(date(2026, 1, 1), c)], date(2026, 1, 1), date(2026, 1, 1) + timedelta(days=t - 1)) \
            if c else Decimal("0.0000")
        assert Decimal(pdc_e4) / 10000 == exact, (c, t)
        assert pdc_milli == (2000 * c + t) // (2 * t)
        for threshold in (33, 50, 80, 100):
            assert (pdc_e4 < 100 * threshold) == (not rules.is_adherent(exact, threshold)), (c, t, threshold)


def test_the_snapshot_distribution_is_exact_at_every_band_edge(world: dict[str, Any]) -> None:
    """The page counts bands from pdc_milli (the index) and reads the rows at an edge whole: PDCs just either side of
    every band's start and of the threshold land where the rules put them (band = percent // 10, below = not
    rules.is_adherent)."""
    from pharmacy.billing import rules
    from pharmacy.core.context import settings
    from pharmacy.patients.models import Patient

    _adherence_world(world)
    adherence.refresh_adherence()
    threshold = settings().pdc_threshold_percent
    edges = {m + d for m in (*adherence.BAND_EDGES, 10 * threshold) for d in (-1, 0, 1)}
    pairs = [(c, t) for t in (7, 180, 199, 200, 201, 363, 730) for c in range(t + 1)
             if (2000 * c + t) // (2 * t) in edges] + [(0, 180), (180, 180), (90, 180)]
    patients = Patient.__table__
    template = db.session.execute(sa.select(patients).limit(1)).mappings().one()
    db.session.execute(sa.insert(patients), [{**{k: v for k, v in template.items() if k != "id"},
                                              "last_name": f"Edge{i}"} for i in range(len(pairs))])
    ids = list(db.session.execute(sa.select(patients.c.id).where(patients.c.last_name.like("Edge%"))
                                  .order_by(patients.c.id)).scalars())
    base = db.session.execute(sa.select(AdherenceSnapshot).limit(1)).scalar_one()
    db.session.execute(sa.delete(AdherenceSnapshot))
    db.session.execute(sa.insert(AdherenceSnapshot), [
        {"patient_id": pid, "pdc_milli": (2000 * c + t) // (2 * t), "percent": rules.div_half_up(100 * c, t),
         "covered_days": c, "days_in_window": t, "window_start": base.window_start, "window_end": base.window_end,
         "period_days": base.period_days, "last_fill_on": base.last_fill_on, "last_days_supply": 30,
         "last_formula_id": base.last_formula_id, "computed_at": base.computed_at}
        for pid, (c, t) in zip(ids, pairs, strict=True)])
    expected = [0] * 10
    for c, t in pairs:
        expected[min(rules.div_half_up(100 * c, t) // 10, 9)] += 1
    below = sum(1 for c, t in pairs if not rules.is_adherent((Decimal(c) / Decimal(t)).quantize(Decimal("0.0001"),
                                                                                               rounding="ROUND_HALF_UP"),
                                                             threshold))
    # Rows written behind the refresh's back: its stored distribution is dropped so the page counts these rows.
    db.session.execute(sa.delete(AdherenceSummary))
    report = adherence.adherence(world["pharmacist"])
    assert report.snapshot and report.measured == len(pairs) > 40
    assert report.distribution == expected and report.below_count == below
    assert report.computed_at == base.computed_at and report.window_end == base.window_end
    # The refresh stores the distribution with the same counting: the page then reads it, with the same figures.
    adherence._write_summary()
    assert db.session.execute(sa.select(AdherenceSummary.bands)).scalar_one() == expected
    assert _report_tuple(adherence.adherence(world["pharmacist"])) == _report_tuple(report)


def test_the_page_reads_the_stored_distribution_only_while_it_is_the_snapshots(world: dict[str, Any], app: Flask,
                                                                             clock: FixedClock) -> None:
    """The refresh stores the distribution with its last batch; the page reads it instead of counting the snapshot
    (one short read, not a scan of the index) — but counts when the stored one does not match: a refresh under way
    (the low patient ids already rewritten), or another threshold."""
    from pharmacy.core.context import settings

    _adherence_world(world)
    adherence.refresh_adherence(batch_size=2)
    live = adherence._adherence_live(180, 500, with_names=True)
    stored = db.session.execute(sa.select(AdherenceSummary)).scalar_one()
    assert (stored.bands, stored.below, stored.computed_at) == (live.distribution, live.below_count, now())

    def report_and_statements() -> tuple[adherence.AdherenceReport, list[str]]:
        seen: list[str] = []

        def listener(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            seen.append(statement)

        sa.event.listen(db.engine, "before_cursor_execute", listener)
        try:
            return adherence.adherence(world["pharmacist"]), seen
        finally:
            sa.event.remove(db.engine, "before_cursor_execute", listener)

    report, seen = report_and_statements()
    assert _report_tuple(report) == _report_tuple(live)
    assert not any("GROUP BY" in s for s in seen)  # the stored distribution, not a count of the snapshot

    # A refresh half done: the lowest patient's row is newer than the stored distribution. Counted afresh.
    lowest, percent = db.session.execute(sa.select(AdherenceSnapshot.patient_id, AdherenceSnapshot.percent)
                                         .order_by(AdherenceSnapshot.patient_id).limit(1)).one()
    assert percent >= 10  # moves from its band to band 0 below
    clock.advance(timedelta(hours=1))
    db.session.execute(sa.update(AdherenceSnapshot).where(AdherenceSnapshot.patient_id == lowest)
                       .values(computed_at=now(), covered_days=0, pdc_milli=0, percent=0))
    report, seen = report_and_statements()
    assert any("GROUP BY" in s for s in seen)
    assert report.distribution[0] == live.distribution[0] + 1 and report.measured == live.measured

    # Another threshold: counted for it.
    adherence.refresh_adherence()
    app.extensions["pharmacy.settings"] = replace(settings(), pdc_threshold_percent=50)
    report, seen = report_and_statements()
    assert any("GROUP BY" in s for s in seen) and report.threshold_percent == 50
    assert report.below_count == adherence._adherence_live(180, 500, with_names=True).below_count


def test_the_snapshot_is_read_in_a_fixed_number_of_statements(world: dict[str, Any], app: Flask) -> None:
    def statements(n_patients: int) -> tuple[int, int]:
        for i in range(n_patients):
            p = factories.patient(world["pharmacist"], first_name=f"S{i}", last_name=f"Snap{n_patients}-{i}",
                                  email=f"s{n_patients}-{i}@example.com")
            rx = factories.prescription(world["pharmacist"], p.id, world["formula"].id, world["prescriber"].id)
            dispensed_fill(world, 150, 30, patient=p, rx=rx)
        adherence.refresh_adherence()
        seen: list[str] = []

        def listener(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            seen.append(statement)

        sa.event.listen(db.engine, "before_cursor_execute", listener)
        try:
            assert len(adherence.adherence_below_threshold(world["pharmacist"], 8)) == min(8, n_patients)
            call_list = len(seen)
            adherence.adherence(world["pharmacist"])
        finally:
            sa.event.remove(db.engine, "before_cursor_execute", listener)
        return call_list, len(seen) - call_list

    small = statements(3)
    assert small[0] == 1  # the dashboard's call list: one indexed read
    assert statements(20) == small


def test_average_cost_and_fills_by_form_in_sql_match_the_rules(world: dict[str, Any]) -> None:
    from pharmacy.billing import rules

    expected = []
    for i, (price, days) in enumerate([(5500, 30), (15500, 90), (9999, 45), (1, 7), (12345, 61)]):
        p = factories.patient(world["pharmacist"], first_name=f"C{i}", last_name=f"Cost{i}", email=f"c{i}@example.com")
        rx = factories.prescription(world["pharmacist"], p.id, world["formula"].id, world["prescriber"].id)
        dispensed_fill(world, 40, days, patient=p, rx=rx, price_cents=price)
        dispensed_fill(world, 5, days, patient=p, rx=rx, price_cents=price + i)
        expected.append(rules.monthly_equivalent_cents(2 * price + i, 2 * days))
    dispensed_fill(world, 400, 30, price_cents=99999)  # before the 12 months: not counted anywhere
    avg = reports.average_monthly_cost(world["admin"])
    assert avg.patients == 5
    assert avg.average_cents == (2 * sum(expected) + 5) // 10
    assert [r.monthly_equivalent_cents for r in avg.highest] == sorted(expected, reverse=True)
    forms = {f.form: f for f in reports.fills_by_form(world["admin"])}
    assert (forms["capsule"].fills, forms["capsule"].patients) == (10, 5)
    assert forms["capsule"].price_cents == sum(2 * p + i for i, (p, _) in enumerate(
        [(5500, 30), (15500, 90), (9999, 45), (1, 7), (12345, 61)]))
