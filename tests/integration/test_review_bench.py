"""Review at the bench (fresh eyes): the production plan, the lots offered at compounding and the compounding record,
as a pharmacist or technician meets them.

Each test fails on the code as reviewed and passes once the defect named in its docstring is fixed.
"""
from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from flask import Flask

from pharmacy.compounding import labels, queries
from pharmacy.compounding import services as orders
from pharmacy.compounding.models import IngredientLot, Order
from pharmacy.core.context import today
from pharmacy.extensions import db
from pharmacy.inventory import services as inventory
from pharmacy.production import services as production
from pharmacy.production.rules import Source
from pharmacy.refills.models import RenewalRequest
from pharmacy.refills.rules import RenewalState, RequestSource
from pharmacy.workflows import inventory as inventory_flow
from pharmacy.workflows import orders as order_flow
from pharmacy.workflows import prescription_changes, refill_requests
from tests import factories
from tests.pages import pdf_text

NTX = "Naltrexone hydrochloride USP"
MCC = "Microcrystalline cellulose NF"


def _plan_lines(plan: production.Plan) -> list[tuple[Any, str, int, Decimal, dict[Source, int]]]:
    """(day, formula code, preparations, units, sources) for every line of the plan."""
    return [(d.day, ln.formula.code, ln.preparations, ln.units, dict(ln.by_source)) for d in plan.days for ln in d.lines]


def _dispensed_14_day_world(staff: dict, **rx: Any) -> dict[str, Any]:
    """One patient, a 14-day capsule prescription whose first fill was dispensed today (run-out in 13 days, so its
    next fill's order-by date falls inside the 14-business-day plan)."""
    w = factories.world(staff, days_supply=14, **rx)
    first = order_flow.start_fill(w["technician"], w["rx"].id)
    factories.run_order_to(w, first.id, "dispensed")
    return w


# ---- the production plan --------------------------------------------------------------------------------------

def test_a_fill_started_at_the_counter_while_the_patients_request_waits_is_planned_once(
        app_ctx: Flask, staff: dict) -> None:
    """The patient asked for her refill (the request waits in the queue); when she phones, the technician starts the
    fill from the prescription page. The plan for her order-by day now says "2 preparations, 28 capsules" of the
    4.5 mg capsules — the order (14 capsules) *and* the request it answers (14 capsules again) — for one patient and
    one 14-day fill. The bench makes, and the stock projection reserves, twice what is needed.

    Why wrong: the request and the order are the same fill (there is at most one fill in progress per prescription,
    docs/domain.md "May a refill be requested?"; the request cannot be approved while the order is in progress). The
    plan's own expected-refill source already skips a prescription with an order or a request (`_expected`), so one
    prescription is one piece of work.
    Correct: 1 preparation, 14 capsules on that day (the order, whose quantity is known).
    Cause: production/services._requests counts every OPEN request without excluding prescriptions that already
    have an order in progress (PLANNED_ORDER_STATES or later), while _orders counts the order too."""
    w = _dispensed_14_day_world(staff)
    refill_requests.request(w["technician"], w["rx"].id, source=RequestSource.STAFF)
    order = order_flow.start_fill(w["technician"], w["rx"].id)
    assert order.quantity == Decimal(14)

    lines = _plan_lines(production.build())
    assert sum(n for _, _, n, _, _ in lines) == 1, lines
    assert sum(u for _, _, _, u, _ in lines) == Decimal(14), lines


def test_an_expected_refill_with_a_renewal_pending_is_planned_once(app_ctx: Flask, staff: dict) -> None:
    """A patient's prescription expires in ten days, before the 14-day supply dispensed today runs out. Refills are
    left, so the next fill is expected; the renewal task is opened too ("expires on …, before the supply runs out").
    The plan lists this one patient's next fill twice on its order-by day: "2 preparations, 28 capsules" (1 expected
    refill + 1 renewal pending).

    Why wrong: it is one fill of one patient on one day — the same run-out, the same bench day. A renewal pending is a
    source of work only for a prescription whose next fill cannot be made without it; counting the same fill under
    both sources doubles the bench load and the ingredients reserved.
    Correct: 1 preparation (14 capsules) for this patient.
    Cause: production/services._expected and _renewals both select the prescription (an active one with refills
    left, unexpired on the day, with an open renewal request); _renewals should skip prescriptions already counted
    as expected (or _expected skip those with an open renewal)."""
    w = _dispensed_14_day_world(staff, written_date=today() - timedelta(days=355))
    renewals = db.session.execute(sa.select(RenewalRequest.state).where(
        RenewalRequest.prescription_id == w["rx"].id)).scalars().all()
    assert renewals == [RenewalState.NEEDED]  # opened by the reminder planning at dispensing

    lines = _plan_lines(production.build())
    assert sum(n for _, _, n, _, _ in lines) == 1, lines
    assert sum(u for _, _, _, u, _ in lines) == Decimal(14), lines


def test_a_refill_request_on_a_prescription_on_hold_is_not_planned(app_ctx: Flask, staff: dict) -> None:
    """The patient asked for a refill; the next day the prescriber puts the prescription on hold (surgery, opioids
    after it). The production plan still lists the request as work for its order-by day (1 preparation, 14
    capsules), so the bench would compound LDN for a patient who must not take it and whose fill cannot even be
    started.

    Why wrong: docs/domain.md "Putting a prescription on hold stops its reminders and new fills"; approving the
    request is refused while the prescription is on hold. The plan's expected refills already count active
    prescriptions only.
    Correct: nothing planned for this prescription while it is on hold (the same applies to its requested or verified
    orders, which cannot be verified or released while it is held).
    Cause: production/services._requests (and _orders, _renewals) do not filter Prescription.status == ACTIVE."""
    w = _dispensed_14_day_world(staff)
    refill_requests.request(w["technician"], w["rx"].id, source=RequestSource.STAFF)
    prescription_changes.hold(w["pharmacist"], w["rx"].id, "Surgery next week: opioids after it")

    assert _plan_lines(production.build()) == []


def test_the_plan_sizes_the_rest_of_a_partial_fill_by_the_days_still_owed(app_ctx: Flask, staff: dict) -> None:
    """A 60-day capsule prescription's first fill was capped at 20 days by a lot expiring in 20 days ("Capped at 20
    days by the beyond-use date …: 20 of 60 days; 40 days still owed on this fill"). Fresh lots have come in. The
    refill page quotes the next fill as 40 capsules for 40 days, but the production plan puts 60 capsules on its
    order-by day.

    Why wrong: docs/domain.md "Partial fills": the rest is still owed on the same fill and is offered next — the next
    dispensing is the 40 days owed (compounding/rules.plan_fill uses Supply.days_owed). The plan overstates the
    bench's work and the naltrexone reserved by half.
    Correct: 40 capsules (the days still owed), as the order will be.
    Cause: production/services._place → rules.fill_days(days_supply, …) starts from the prescription's days_supply,
    not from the days owed on the current fill (days_dispensed modulo days_supply)."""
    w = factories.world(staff, days_supply=60)
    db.session.execute(sa.update(IngredientLot).values(expiry_date=today() + timedelta(days=20)))
    first = order_flow.start_fill(w["technician"], w["rx"].id)
    assert (first.quantity, first.days_supply) == (Decimal(20), 20)
    factories.run_order_to(w, first.id, "dispensed")
    for ing in w["formula"].ingredients:
        factories.lot(ing.name, f"NEW-{ing.name[:3]}", expiry=today() + timedelta(days=400))

    lines = _plan_lines(production.build())
    assert [(n, src) for _, _, n, _, src in lines] == [(1, {Source.EXPECTED: 1})], lines
    assert lines[0][3] == Decimal(40), lines


# ---- lots at the bench ------------------------------------------------------------------------------------------

def test_a_lot_counted_empty_is_not_the_one_preselected_at_the_bench(app_ctx: Flask, staff: dict) -> None:
    """The technician finished the last bottle of naltrexone lot NTX-OLD and counted it: 0 g on the shelf (the
    inventory page says "empty — count it"). On the next order's compounding form that empty lot is still the one
    pre-selected for naltrexone, ahead of NTX-NEW with 10 g on the shelf. A busy technician who accepts the default
    records (and draws the ledger below zero on) a lot that is not on the shelf, and the compounding record names a
    lot the powder never came from — exactly what a recall relies on.

    Why wrong: the pre-selection is meant to be the lot the bench will actually use, first-expiry-first-out
    (docs/domain.md: "the pre-selected lot … the soonest-expiring lot that still lasts the whole fill"); a lot with
    nothing left cannot be used first. The production plan's own projection already skips lots without stock
    (inventory/reads.usable_levels: on_hand > 0).
    Correct: pre-select NTX-NEW (the soonest-expiring lot that lasts the fill *and* has stock); an empty lot may still
    be chosen by hand.
    Cause: compounding/queries.suggested_lots (fed by lots.usable_lots) looks at expiry and quarantine only, never at
    lot_stock.on_hand."""
    w = factories.world(staff)
    db.session.execute(sa.update(IngredientLot).values(expiry_date=today() - timedelta(days=1)))
    lots = {}
    for name, number, qty, days in ((NTX, "NTX-OLD", "0.2", 250), (NTX, "NTX-NEW", "10", 350),
                                    (MCC, "MCC-1", "500", 350)):
        lots[number] = inventory_flow.receive(w["technician"], {
            "ingredient_name": name, "supplier": "PCCA", "lot_number": number,
            "expiry_date": today() + timedelta(days=days), "quantity": Decimal(qty), "unit": "g"})
    inventory.record(w["technician"], lots["NTX-OLD"].id, "count", Decimal("0"), reason="last bottle finished")
    assert inventory.lot_stock(lots["NTX-OLD"].id).on_hand == 0

    order = order_flow.start_fill(w["technician"], w["rx"].id)
    orders.verify_order(w["pharmacist"], order.id)
    view = queries.order_view(w["technician"], order.id)
    assert view.suggested_lots[NTX] == lots["NTX-NEW"].id


# ---- the compounding record -----------------------------------------------------------------------------------

def test_the_compounding_record_of_a_batch_order_gives_the_batch_quantity_not_a_fraction_of_a_capsule(
        app_ctx: Flask, staff: dict) -> None:
    """Three patients' 30-capsule orders are made as one batch: 400 mg of naltrexone weighed, 89 capsules counted
    (98.9 %, passed). The compounding record printed for the second order says "Total quantity made: 29.666
    capsules" and "Quantity used: 133.333 mg" — a fraction of a capsule nobody counted and an amount nobody weighed —
    and nowhere says that 89 capsules were made from 400 mg.

    Why wrong: docs/domain.md "Batches": one compounding record with the measured amounts and the quantity made *for
    the whole batch*; USP <795> requires the record to state the total quantity compounded and the amount of each
    component actually measured. Capsules are counted in whole numbers (docs/domain.md "Dose units").
    Correct: the record of an order made in a batch gives the batch's figures (89 capsules made, 400 mg weighed) and
    this order's share of it as a whole 30 capsules; never "29.666 capsules".
    Cause: compounding/labels._record_facts / _record_ingredients print order.quantity_made and each
    OrderIngredientLot.quantity_used — the proportional shares batches.record stores for recall — as if they were the
    record's measurements; the Batch's quantity_made and measured lots are not read."""
    w, ids = factories.checked_batch_of_three(staff)
    assert db.session.get(Order, ids[1]).state.value == "checked"

    text = " ".join(pdf_text(labels.record_pdf(w["technician"], ids[1])).split())
    assert "29.666 capsules" not in text and "133.333 mg" not in text, text
    assert "89 capsules" in text and "400 mg" in text, text
