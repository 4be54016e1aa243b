"""What the generator remembers of one patient while it writes their history: the prescriptions of the chain, their
fills, the patient's few facts that decide what comes next; and the pure conversions it repeats a million times,
cached (a few dozen distinct inputs over a million fills)."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from functools import cache

from pharmacy.bench.catalog import FormulaFacts
from pharmacy.compounding.rules import DeliveryMethod
from pharmacy.prescriptions import rules as rx_rules
from pharmacy.prescriptions.rules import DosingTime, Form, RxStatus
from pharmacy.supply import rules as supply_rules


@dataclass
class Rx:
    id: int
    number: str
    formula: FormulaFacts
    dose: Decimal
    steps: tuple[rx_rules.TitrationStep, ...]
    days_supply: int
    refills: int
    written: date
    expiry: date
    prescriber_id: int
    quantity: Decimal
    maintenance_quantity: Decimal
    status: RxStatus = RxStatus.ACTIVE
    status_reason: str | None = None
    replaces_id: int | None = None
    fills: list[Fill] = field(default_factory=list)
    supply: supply_rules.Supply | None = None  # the supply model, walked fill by fill (as supply/services does)

    def held(self, too_soon_percent: int, carried: supply_rules.Supply | None = None) -> supply_rules.Supply:
        """The supply so far; `carried` (the first time): what the prescription this one replaced left the patient."""
        if self.supply is None:
            auth = supply_rules.Authorization(days_per_fill=self.days_supply, refills=self.refills,
                                              expiry_date=self.expiry)
            self.supply = supply_rules.supply_from_cache(
                auth, days_dispensed=0, dispensings=0, run_out=carried.run_out if carried else None,
                last_days=None, too_soon_percent=too_soon_percent,
                covered_from=carried.covered_from if carried else None,
                prior_run_out=carried.prior_run_out if carried else None)
        return self.supply


@dataclass
class Fill:
    order_id: int
    number: int
    handed_on: date  # the day it was handed over or shipped (the order's dispensed_on)
    dispensed_on: date  # the supply's first day (handed_on + shipping days when shipped: supply_starts_on)
    days_supply: int
    method: DeliveryMethod
    total_cents: int



@dataclass(frozen=True)
class PatientFacts:
    id: int
    ships: bool
    shipping_days: int
    opted_in: bool
    has_email: bool
    liver: bool
    interferon: bool



@cache
def milli(value: Decimal) -> int:
    return int(value * 1000)


@cache
def used_milli(amount: Decimal, quantity: Decimal, per: Decimal) -> int:
    return int(amount * quantity / per * 1000)


@cache
def steps_of(raw: tuple[tuple[str, int], ...]) -> tuple[rx_rules.TitrationStep, ...]:
    return tuple(rx_rules.TitrationStep(Decimal(d), n) for d, n in raw)


@cache
def quantity_for(form: Form, strength: Decimal, dose: Decimal, days: int,
              steps: tuple[rx_rules.TitrationStep, ...]) -> Decimal:
    return rx_rules.quantity_for_days(form, strength, dose, days, steps)


@cache
def directions_for(form: Form, strength: Decimal, dose: Decimal, steps: tuple[rx_rules.TitrationStep, ...]) -> str:
    return rx_rules.directions(form, strength, dose, DosingTime.BEDTIME, steps)


_QUOTES: dict[tuple[int, Decimal, DeliveryMethod, bool], tuple[int, int, int]] = {}
