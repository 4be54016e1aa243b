"""Second fresh-eyes review of the supply model: odd but real histories built through the public services with an
injected clock, checking that the days add up everywhere a pharmacist or patient reads them. Each test fails on the
code it was written against, for the product reason in its docstring."""
from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

from flask import Flask

from pharmacy.compounding import queries
from pharmacy.compounding.models import Order
from pharmacy.compounding.rules import UspCategory
from pharmacy.core.context import today
from pharmacy.extensions import db
from pharmacy.prescriptions.models import Prescription
from pharmacy.prescriptions.rules import Form
from pharmacy.supply import reads
from pharmacy.workflows import orders as order_flow
from tests import factories


def _world(staff: dict, f: Any = None, *, patient: dict | None = None, **rx: Any) -> dict[str, Any]:
    """factories.world, with the prescription made for formula `f` (default: 4.5 mg capsules)."""
    ph = factories.actor(staff["pharmacist"])
    f = f or factories.formula()
    doc = factories.prescriber()
    p = factories.patient(ph, **(patient or {}))
    made = factories.prescription(ph, p.id, f.id, doc.id, **rx)
    db.session.flush()
    return {"formula": f, "prescriber": doc, "patient": p, "rx": made, "pharmacist": ph,
            "pharmacist2": factories.actor(staff["pharmacist2"]), "technician": factories.actor(staff["technician"])}


def _fill(w: dict[str, Any], rx_id: int, **dispense: Any) -> Order:
    order = order_flow.start_fill(w["technician"], rx_id)
    factories.run_order_to(w, order.id, "ready")
    order_flow.dispense(w["pharmacist"], order.id, **dispense)
    return db.session.get(Order, order.id)


def test_an_on_time_refill_of_a_14_day_liquid_is_not_credited_past_its_bud(app_ctx: Flask, staff: dict,
                                                                           clock: Any) -> None:
    """A 14-day aqueous sublingual liquid (BUD 14 days). The refill is handed over on the first day too soon allows
    (2 days of the old bottle left), made that morning. Its days follow the old bottle (early fills stack), so the
    patient is told they have medicine until the day *after* the new bottle's beyond-use date (2 days past the last
    day the BUD allows), and the reminders are timed from that date: the patient uses an out-of-date preparation. A
    fill never outlasts its BUD (docs/domain.md; compounding/rules.days_until_bud: "its run-out date ... is at most
    the BUD"), so the days
    credited must be counted from the day the fill's own doses begin (the old run-out + 1), not from hand-over:
    12 days, with 2 still owed.

    Cause: compounding/rules.plan_fill and compounding/dispensing._credit_days cap with
    days_until_bud(bud, starts_on), ignoring that the days start after the supply on hand."""
    f = factories.formula("LDN-SL-AQ", form=Form.SUBLINGUAL_LIQUID, strength="1",
                          category=UspCategory.AQUEOUS_UNPRESERVED, prices=(("21", 14, 3500),))
    w = _world(staff, f, dose_mg=Decimal("1.5"), days_supply=14)
    rx_id = w["rx"].id
    first = _fill(w, rx_id)
    assert first.run_out_date == today() + timedelta(days=13)
    rx = db.session.get(Prescription, rx_id)
    earliest = reads.supply_of(rx).earliest_next_start
    assert earliest == today() + timedelta(days=12)  # 2 of 14 days may remain
    clock.advance(timedelta(days=12))
    second = _fill(w, rx_id)  # not too soon: no override needed
    assert second.bud == today() + timedelta(days=14)
    rx = db.session.get(Prescription, rx_id)
    assert rx.latest_run_out_date < second.bud, (
        f"the liquid's BUD is {second.bud}, but the patient is told they have medicine until {rx.latest_run_out_date}")


def test_a_titration_chart_of_an_on_time_refill_starts_when_its_doses_start(app_ctx: Flask, staff: dict,
                                                                             clock: Any) -> None:
    """Titration 1.5 mg for 14 days, then 3 mg for 14 days, then 4.5 mg; 14-day fills of 1.5 mg capsules. The first
    label's chart says 1.5 mg through day 14 and 3 mg from day 15. The refill is handed over on day 13 (the first day
    too soon allows, 2 days of 1 capsule left). Its days follow the supply on hand and continue the plan at 3 mg,
    yet its label dates the 3 mg step from the hand-over day: the two labels in the patient's hands disagree on
    the day to step up, and following the new one means taking 2 capsules while 1.5 mg capsules remain for days
    the plan gives to 1.5 mg. Right: the new chart starts on the first day its doses are taken (the old run-out + 1),
    as the supply model counts them.

    Cause: compounding/queries.fill_chart dates the schedule from `_starts_on` (the day the patient has it),
    not from max(that day, the previous run-out + 1)."""
    f = factories.formula("LDN-CAP-1.5", strength="1.5")
    w = _world(staff, f, dose_mg=Decimal("4.5"), days_supply=14,
               titration=[{"dose_mg": Decimal("1.5"), "days": 14}, {"dose_mg": Decimal("3"), "days": 14}])
    rx_id = w["rx"].id
    day1 = today()
    first = _fill(w, rx_id)
    chart1 = queries.order_view(w["pharmacist"], first.id).chart
    assert chart1[0][2] == "1.5 mg" and chart1[1][2] == "3 mg"
    clock.advance(timedelta(days=12))
    second = _fill(w, rx_id)
    rx = db.session.get(Prescription, rx_id)
    assert rx.latest_run_out_date == day1 + timedelta(days=27)  # stacked: the second fill covers days 15–28
    chart2 = queries.order_view(w["pharmacist"], second.id).chart
    assert chart2[0][2] == "3 mg"
    assert chart2[0][0] == chart1[1][0], (
        f"first label: 3 mg on {chart1[1][0]}; second label: 3 mg on {chart2[0][0]}")

