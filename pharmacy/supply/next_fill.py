"""The next dispensing of a prescription, planned and priced once: what the refill page quotes is what
approving orders (same prescription, day, delivery and lots → same days, quantity, price and note).
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

from pharmacy.billing import pricing
from pharmacy.compounding import rules as compounding_rules
from pharmacy.compounding.rules import DeliveryMethod, FillPlan
from pharmacy.core.errors import ValidationFailed
from pharmacy.prescriptions import rules as rx_rules
from pharmacy.prescriptions.models import Prescription
from pharmacy.supply import reads
from pharmacy.supply.rules import Supply, arrival_date


@dataclass(frozen=True)
class NextFill:
    supply: Supply
    plan: FillPlan
    quote: pricing.Quote | None  # None when the formula has no price yet
    delivery: DeliveryMethod
    starts_on: date  # the day the patient would have it if made today

    @property
    def price_cents(self) -> int:
        return self.quote.price_cents if self.quote else 0

    @property
    def shipping_cents(self) -> int:
        return self.quote.shipping_cents if self.quote else 0


def shipping_days_for(rx: Prescription, delivery: DeliveryMethod) -> int:
    return rx.patient.shipping_days if delivery == DeliveryMethod.SHIP else 0


def plan_from(formula: Any, *, dose_mg: Decimal, titration: Any, current: Supply, shipping_days: int, day: date,
              lot_expiries: list[date]) -> FillPlan:
    """The plan from plain values (a formula row, the prescription's dose and titration): for batch readers such
    as the reminder emails, which load many prescriptions at once and must say exactly what the page says."""
    return compounding_rules.plan_fill(
        current, form=formula.form, strength_mg=formula.strength_mg, dose_mg=dose_mg,
        steps=rx_rules.parse_titration(titration), category=formula.usp_category, compounded_on=day,
        starts_on=arrival_date(day, shipping_days), lot_expiries=lot_expiries)


def plan(rx: Prescription, current: Supply, *, delivery: DeliveryMethod, day: date,
         lot_expiries: list[date] | None = None) -> FillPlan:
    """The days and quantity of the next dispensing if compounded on `day` from lots expiring on `lot_expiries`
    (default: the longest-dated usable lots), capped to the BUD at the patient's door."""
    formula = rx.formula
    expiries = reads.projected_lot_expiries(formula.id, day) if lot_expiries is None else lot_expiries
    return plan_from(formula, dose_mg=rx.dose_mg, titration=rx.titration, current=current,
                     shipping_days=shipping_days_for(rx, delivery), day=day, lot_expiries=expiries)


def next_fill(rx: Prescription, *, delivery: DeliveryMethod, day: date) -> NextFill:
    """Plan and price the next dispensing (raises ValidationFailed when nothing can be planned)."""
    return next_fills(rx, day=day, methods=(delivery,))[delivery]


def next_fills(rx: Prescription, *, day: date,
               methods: tuple[DeliveryMethod, ...] = (DeliveryMethod.PICKUP, DeliveryMethod.SHIP),
               ) -> dict[DeliveryMethod, NextFill]:
    """The next dispensing planned and priced for each delivery method, from one read of the lots, the price list
    and the shipping fee (a shipped fill may be capped shorter: the BUD must last through the journey).
    Raises ValidationFailed when nothing can be planned (nothing left, or no lot would last)."""
    current = reads.supply_of(rx)
    expiries = reads.projected_lot_expiries(rx.formula_id, day)
    entries = pricing.current_entries(rx.formula_id)
    fee = pricing.shipping_fee_cents() if DeliveryMethod.SHIP in methods else 0
    out = {}
    for method in methods:
        fill = plan(rx, current, delivery=method, day=day, lot_expiries=expiries)
        try:
            quote = pricing.quote(rx.formula_id, fill.quantity, method, entries=entries, shipping_cents=fee)
        except ValidationFailed:
            quote = None
        out[method] = NextFill(supply=current, plan=fill, quote=quote, delivery=method,
                               starts_on=arrival_date(day, shipping_days_for(rx, method)))
    return out
