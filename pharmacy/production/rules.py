"""Production plan arithmetic (pure): which bench day a fill belongs to, how many units it is, what it needs of
each ingredient, and how a day over the bench's capacity can be levelled onto lighter earlier days.

docs/domain.md "Inventory, production and batches". Every figure here is an estimate for planning; the order
itself (compounding/rules.plan_fill, with the lots chosen) decides what is finally made.
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from enum import StrEnum

from pharmacy.compounding.rules import BUD_DAYS, UspCategory
from pharmacy.core.calendar import BusinessCalendar
from pharmacy.prescriptions.rules import Form, TitrationStep, quantity_for_days, remaining_steps
from pharmacy.refills.rules import timeline

HORIZON_BUSINESS_DAYS = 14
# Work is suggested for an earlier day only when the preparation keeps long enough: moving a 14-day aqueous
# liquid forward eats into the patient's days before its BUD; capsules (180 days) lose nothing that matters.
MOVABLE_MIN_BUD_DAYS = 90


class Source(StrEnum):
    ORDER = "order"  # an order already started (requested or verified): its quantity is known
    REQUEST = "request"  # a refill request waiting for the pharmacist's decision
    AUTO = "auto"  # an auto-refill enrolment: the request will come on the order-by date
    EXPECTED = "expected"  # the supply model says the patient will need it: they have been reminded
    RENEWAL = "renewal"  # waiting on the prescriber's renewal


SOURCE_LABELS = {Source.ORDER: "orders", Source.REQUEST: "requests waiting", Source.AUTO: "auto-refills",
                 Source.EXPECTED: "expected refills", Source.RENEWAL: "renewals pending"}


def business_days(start: date, count: int, calendar: BusinessCalendar) -> list[date]:
    """The first `count` open days from `start` (itself when open): the plan's days."""
    first = calendar.next_open_day(start)
    days = [first]
    while len(days) < count:
        days.append(calendar.add_business_days(days[-1], 1))
    return days


@dataclass(frozen=True)
class BenchDay:
    day: date  # the open day the work belongs to
    late: bool  # its latest day has passed already: it is due today


def bench_day(run_out: date | None, *, today: date, shipping_days: int, buffer_days: int, lead_time: int,
              calendar: BusinessCalendar) -> BenchDay:
    """The last open day compounding can start and still be ready on time: the order-by date of the supply that
    runs out on `run_out` (refills/rules.timeline: ready-by = run-out + 1 − shipping − buffer, back to an open
    day; order-by = ready-by − lead time in business days). Nothing on hand, or already past: today."""
    start = calendar.next_open_day(today)
    if run_out is None:
        return BenchDay(start, False)
    due = timeline(run_out, shipping_days=shipping_days, buffer_days=buffer_days, lead_time_business_days=lead_time,
                   calendar=calendar).order_by
    if due < start:
        return BenchDay(start, due < today)
    return BenchDay(calendar.previous_open_day(due), False)


def fill_days(days_supply: int, *, category: UspCategory, shipping_days: int) -> int:
    """Days one dispensing covers: the prescription's days, capped by the BUD counted from the patient's door
    (docs/domain.md: for liquids and creams the BUD, not the prescription, sets the cycle)."""
    usable = BUD_DAYS[UspCategory(category)] - max(shipping_days, 0)
    return max(1, min(days_supply, usable))


def units_for_fill(form: Form, strength_mg: Decimal, dose_mg: Decimal, days: int,
                   steps: Sequence[TitrationStep] = (), days_dispensed: int = 0) -> Decimal:
    """Capsules or mL for the next `days` of a prescription: the titration steps still ahead after the days already
    dispensed, then the maintenance dose (prescriptions/rules.quantity_for_days, the prescription's own walk)."""
    return quantity_for_days(form, strength_mg, dose_mg, days, remaining_steps(steps, days_dispensed))


def per_count(per: str) -> Decimal:
    """"100 capsules" → 100: the batch size a master formula's amounts are written for (100 when unreadable)."""
    match = re.match(r"\s*(\d+(?:\.\d+)?)", per or "")
    return Decimal(match.group(1)) if match and Decimal(match.group(1)) > 0 else Decimal(100)


@dataclass(frozen=True)
class IngredientLine:
    name: str
    amount: Decimal  # per `per` units made
    unit: str
    per: str


def ingredients_for(lines: Sequence[IngredientLine], units: Decimal) -> dict[str, tuple[Decimal, str]]:
    """Each ingredient's amount for `units` capsules (or mL of liquid or cream), scaled from the master formula:
    a capsule formula is written per 100 capsules, a liquid or cream per 100 mL (its unit: capsules or mL)."""
    out: dict[str, tuple[Decimal, str]] = {}
    for line in lines:
        amount = line.amount * units / per_count(line.per)
        have = out.get(line.name)
        out[line.name] = ((have[0] if have else Decimal(0)) + amount, line.unit)
    return out


# ---- bench capacity -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Move:
    """A suggestion: make `count` preparations due on `from_day` on the lighter `to_day` instead."""

    from_day: date
    to_day: date
    count: int


@dataclass
class Levelling:
    moves: list[Move] = field(default_factory=list)
    over: dict[date, int] = field(default_factory=dict)  # what no earlier day can take: more bench time needed
    load_after: dict[date, int] = field(default_factory=dict)


def level(days: Sequence[date], load: Mapping[date, int], movable: Mapping[date, int], capacity: int) -> Levelling:
    """Suggest moving the overflow of each day over `capacity` to earlier days with room — the nearest earlier
    day first (so what moves keeps as much of its BUD as it can), never to a later day (it would be late), and
    only work that keeps (`movable`). What cannot move is reported as over capacity."""
    if capacity < 1:
        raise ValueError("capacity must be at least 1")
    after = {d: int(load.get(d, 0)) for d in days}
    out = Levelling(load_after=after)
    for i, d in enumerate(days):
        excess = after[d] - capacity
        if excess <= 0:
            continue
        can_move = min(excess, int(movable.get(d, 0)))
        for earlier in reversed(days[:i]):
            if can_move <= 0:
                break
            room = capacity - after[earlier]
            if room <= 0:
                continue
            n = min(room, can_move)
            after[earlier] += n
            after[d] -= n
            can_move -= n
            out.moves.append(Move(d, earlier, n))
        if after[d] > capacity:
            out.over[d] = after[d] - capacity
    return out


def movable_category(category: UspCategory) -> bool:
    return BUD_DAYS[UspCategory(category)] >= MOVABLE_MIN_BUD_DAYS
