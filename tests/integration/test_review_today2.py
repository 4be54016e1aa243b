"""Fresh-eyes review of today's changes (the supply's latest span, `flask supply verify`, returns, auto-refill skips,
SMS opt-out, production counts, API). Each test fails on the code it was written against, for the reason in its
docstring."""
from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from flask import Flask

from pharmacy.compounding import queries
from pharmacy.compounding.models import IngredientLot, Order
from pharmacy.compounding.rules import DeliveryMethod
from pharmacy.core.context import today
from pharmacy.extensions import db
from pharmacy.prescriptions.models import Prescription
from pharmacy.workflows import orders as order_flow
from tests import factories

SHIP = {"method": "ship", "carrier": "USPS", "tracking_number": "9400100000000000000001"}


def _rx(rx_id: int) -> Prescription:
    db.session.flush()
    db.session.expire_all()
    return db.session.get(Prescription, rx_id)


def _fill(w: dict[str, Any], rx_id: int, *, ship: bool = False, too_soon_reason: str | None = None,
          without_lot: int | None = None) -> Order:
    """A fill of `rx_id` started, made and dispensed today: handed over at the counter, or shipped (made from every
    usable lot but `without_lot`)."""
    order = order_flow.start_fill(w["technician"], rx_id)
    usable = db.session.execute(sa.select(IngredientLot).where(IngredientLot.ingredient_name.in_(
        [i.name for i in w["formula"].ingredients]), IngredientLot.expiry_date >= today(),
        IngredientLot.id != (without_lot or 0))).scalars().all()
    factories.run_order_to(w, order.id, "ready",
                           lots=[{"ingredient_lot_id": x.id, "quantity_used": "1", "unit": "g"} for x in usable])
    details: dict[str, Any] = dict(SHIP) if ship else {"method": "pickup"}
    if too_soon_reason:
        details["too_soon_reason"] = too_soon_reason
    order_flow.dispense(w["pharmacist"], order.id, **details)
    return db.session.get(Order, order.id)


def test_a_bridge_label_chart_keeps_its_first_dose_day_once_handed_over(app_ctx: Flask, staff: dict,
                                                                        clock: Any) -> None:
    """A titrating patient (1.5 mg for 90 days, then 3 mg) who ships (4 days on the road): 30-day fills. Out of
    medicine since Dec 23, the refill shipped on Dec 28 arrives on Jan 1; on Dec 29 the pharmacist hands a 30-day
    bottle over at the counter (a bridge, too-soon override). The model takes the bottle first: its doses run Dec 29 –
    Jan 27 and the parcel's follow (supply/rules._walked, Supply.first_dose_day). The order page showed the chart
    from Dec 29 while the bottle was ready.

    What the pharmacist sees once it is handed over: the same order's chart (and label, compounding record) now starts
    on Jan 28 — a month after the patient began taking it — so its step-up date is a month late and disagrees with
    the label printed at the counter. Right: a dispensed fill's chart starts on the first day of its own doses, the
    hand-over day here, as it did before dispensing.

    Cause: compounding/queries._first_dose_day derives a dispensed fill's first day as run_out_date − days + 1, but
    order.run_out_date (written at dispensing, and again by supply/services._fills_follow) is the whole supply's last
    day once the fill joined it, which for a bottle taken before a parcel includes the parcel's days. Fix: keep the
    fill's first dose day (or its own span) when it is dispensed, or walk the dispensings to find it."""
    f = factories.formula("LDN-CAP-1.5", strength="1.5")
    ph = factories.actor(staff["pharmacist"])
    p = factories.patient(ph, shipping_days=4, delivery_preference="ship")
    rx = factories.prescription(ph, p.id, f.id, factories.prescriber().id, dose_mg=Decimal("3"), days_supply=30,
                                titration=[{"dose_mg": Decimal("1.5"), "days": 90}])
    db.session.flush()
    w = {"formula": f, "patient": p, "rx": rx, "pharmacist": ph,
         "pharmacist2": factories.actor(staff["pharmacist2"]), "technician": factories.actor(staff["technician"])}
    _fill(w, rx.id)
    clock.advance(timedelta(days=35))
    parcel = _fill(w, rx.id, ship=True)
    clock.advance(timedelta(days=1))
    assert parcel.supply_starts_on > today() > _rx(rx.id).prior_run_out_date  # out of medicine, the parcel travels

    bottle = order_flow.start_fill(w["technician"], rx.id, delivery=DeliveryMethod.PICKUP)
    factories.run_order_to(w, bottle.id, "ready")
    ready_chart = queries.order_view(w["pharmacist"], bottle.id).chart
    assert ready_chart[0][2] == "1.5 mg" and ready_chart[0][0].startswith("Dec 29")  # doses from the hand-over
    order_flow.dispense(w["pharmacist"], bottle.id, method="pickup",
                        too_soon_reason="The parcel is late; a bottle at the counter so the patient is not without")
    dispensed_chart = queries.order_view(w["pharmacist"], bottle.id).chart

    assert dispensed_chart[0][0] == ready_chart[0][0], (
        f"ready: doses from {ready_chart[0][0]}; handed over: doses from {dispensed_chart[0][0]}")
