"""The supply model (pharmacy/supply/rules.py): random histories of dispensings — partial, early, late, re-made,
cancelled, picked up and shipped — must always add up.

Each history is driven the way the service drives it: the next dispensing is planned with
`compounding.rules.plan_fill` (the days still owed, capped to the BUD at the patient's door, sometimes cut
shorter still for short stock or the patient's wish), some plans are cancelled or re-made before they go
out, and each one reaches the patient early, on time or late. The model's answers are then compared with a
day-by-day count of what the patient held.
"""
from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pharmacy.compounding import rules as compounding_rules
from pharmacy.compounding.rules import UspCategory
from pharmacy.prescriptions.rules import Form
from pharmacy.supply import rules
from pharmacy.supply.rules import Authorization, Dispensing, supply

START = date(2026, 1, 5)
FORMS = {
    UspCategory.AQUEOUS_UNPRESERVED: (Form.SUBLINGUAL_LIQUID, Decimal("1")),
    UspCategory.AQUEOUS_PRESERVED: (Form.SUBLINGUAL_LIQUID, Decimal("1")),
    UspCategory.NONAQUEOUS_ORAL_LIQUID: (Form.SUBLINGUAL_LIQUID, Decimal("1")),
    UspCategory.OTHER_NONAQUEOUS: (Form.CAPSULE, Decimal("1.5")),
}

event = st.fixed_dictionaries({
    "kind": st.sampled_from(["dispense", "dispense", "dispense", "cancelled", "remade"]),
    "timing": st.integers(min_value=-20, max_value=25),  # days before (−) or after (+) the run-out
    "ship_days": st.sampled_from([0, 0, 1, 2, 3, 5]),
    "short": st.sampled_from([None, None, None, 1, 5, 10]),  # short stock / the patient's wish: fewer days
    "lot_days": st.sampled_from([None, None, 3, 20, 45]),  # a lot expiring this many days after compounding
})


def covered_days_by_counting(dispensings: list[Dispensing]) -> set[date]:
    """What the patient held, day by day: each day's dose taken from the oldest supply on hand."""
    held: set[date] = set()
    for d in sorted(dispensings, key=lambda x: x.starts_on):
        day = d.starts_on
        left = d.days
        while left:
            if day not in held:
                held.add(day)
                left -= 1
            day += timedelta(days=1)
    return held


def held_run_from(held: set[date], day: date) -> int:
    """Days held from `day` without a break (0 when `day` is not held)."""
    n = 0
    while day + timedelta(days=n) in held:
        n += 1
    return n


def days_between(first: date, end: date) -> list[date]:
    """Each day from `first` up to, not including, `end`."""
    return [first + timedelta(days=i) for i in range((end - first).days)]


@settings(max_examples=300)
@given(
    category=st.sampled_from(list(UspCategory)),
    per_fill=st.sampled_from([14, 28, 30, 60, 90]),
    refills=st.none() | st.integers(min_value=0, max_value=5),
    events=st.lists(event, min_size=1, max_size=14),
)
def test_random_histories_add_up(category: UspCategory, per_fill: int, refills: int | None,
                                 events: list[dict]) -> None:
    form, strength = FORMS[category]
    auth = Authorization(days_per_fill=per_fill, refills=refills, expiry_date=date(2030, 1, 1))
    current = supply(auth, [])
    done: list[Dispensing] = []
    completed_fills: list[int] = []  # the authorized fill each dispensing drew from
    day = START
    for e in events:
        if current.days_owed == 0:
            assert current.stop_reason(day) == "used_up"
            with pytest.raises(compounding_rules.ValidationFailed):
                compounding_rules.plan_fill(current, form=form, strength_mg=strength, dose_mg=strength, steps=(),
                                            category=category, compounded_on=day, starts_on=day)
            break
        if current.run_out is not None:
            day = max(day, current.run_out + timedelta(days=e["timing"]))
        starts_on = rules.arrival_date(day, e["ship_days"])
        lots = [day + timedelta(days=e["lot_days"])] if e["lot_days"] else []
        try:
            plan = compounding_rules.plan_fill(current, form=form, strength_mg=strength, dose_mg=strength, steps=(),
                                               category=category, compounded_on=day, starts_on=starts_on,
                                               lot_expiries=lots)
        except compounding_rules.ValidationFailed:
            continue  # the BUD would not last until the patient has it: the bench must use other lots
        # The plan never outlasts the BUD at the patient's door, and never exceeds what is owed.
        assert plan.days_supply <= current.days_owed
        assert starts_on + timedelta(days=plan.days_supply - 1) < plan.bud
        if e["kind"] == "cancelled":
            continue  # a cancelled order dispenses nothing: the supply is untouched
        days = plan.days_supply if e["short"] is None else max(1, min(plan.days_supply, e["short"]))
        before = current
        dispensing = Dispensing(starts_on=starts_on, days=days)
        in_order = all(starts_on >= d.starts_on for d in done)
        done.append(dispensing)
        completed_fills.append(before.current_fill)
        current = supply(auth, done)  # walked from every dispensing: what the prescription's cache is written from
        if in_order:  # the quick step agrees whenever the new fill reaches the patient after the earlier ones
            assert rules.after_dispensing(before, dispensing) == current
        # An early fill extends the run-out; a late one starts on its own day: run-out is the last day covered.
        if not in_order:
            pass  # a parcel overtaken by a later pickup: the day-by-day count below is the check
        elif before.run_out is not None and starts_on <= before.run_out:
            assert current.run_out == before.run_out + timedelta(days=days)
        else:
            assert current.run_out == starts_on + timedelta(days=days - 1)
        day += timedelta(days=1)

    held = covered_days_by_counting(done)
    # Each dispensing's own doses (rules.dose_starts: the label's chart and the BUD credit start there) begin on or
    # after the day the patient has it, and together they cover the held days exactly once.
    own: list[date] = []
    for d, first in zip(done, rules.dose_starts(done), strict=True):
        assert first >= d.starts_on
        own += [first + timedelta(days=i) for i in range(d.days)]
    assert sorted(own) == sorted(held) and len(own) == len(set(own))
    # Days dispensed never exceed what is authorized, and add up to the days held.
    assert current.days_dispensed == sum(d.days for d in done) == len(held) <= auth.days
    assert current.days_remaining == auth.days - current.days_dispensed
    # Run-out is the last day covered.
    assert current.run_out == (max(held) if held else None)
    if done:  # once every dispensing has reached the patient, days on hand are the held days still ahead
        last_start = max(d.starts_on for d in done)
        for probe in (last_start, last_start + timedelta(days=7), current.run_out, current.run_out + timedelta(days=1)):
            assert current.days_on_hand(probe) == len([d for d in held if d >= probe])
            assert current.ran_out(probe) == (probe > max(held))
        # And on every day since the span before the latest began — parcels still on their way included: days on
        # hand are the unbroken run of held days from that day, out of medicine is a day not held after one that
        # was, and the days without before a parcel arrives are the days not held in between.
        spans = rules.covered_spans(done)
        probe = spans[-2][0] if len(spans) > 1 else spans[-1][0] - timedelta(days=3)
        while probe <= current.run_out + timedelta(days=1):
            assert current.days_on_hand(probe) == held_run_from(held, probe), probe
            earlier = [d for d in held if d < probe]
            out = probe not in held and bool(earlier)
            assert current.ran_out(probe) == out, probe
            assert current.out_since(probe) == (max(earlier) + timedelta(days=1) if out else None), probe
            arriving = current.arriving_on(probe)  # the latest span's first day, while it is still ahead
            assert arriving == (spans[-1][0] if probe < spans[-1][0] else None), probe
            if arriving is not None and earlier:
                assert current.gap_ahead(probe) == len(
                    [d for d in days_between(probe, arriving) if d not in held]), probe
            probe += timedelta(days=1)
    # A refill is used when its authorized days have all been dispensed, not at each partial.
    assert current.fills_completed == current.days_dispensed // per_fill
    assert current.refills_left == (refills or 0) - max(current.fills_completed - 1, 0)
    # Dispensings never straddle two authorized fills, and draw from them in order.
    assert completed_fills == sorted(completed_fills)
    per_authorized: dict[int, int] = {}
    for fill, d in zip(completed_fills, done, strict=True):
        per_authorized[fill] = per_authorized.get(fill, 0) + d.days
    assert all(total <= per_fill for total in per_authorized.values())
    assert all(per_authorized[f] == per_fill for f in per_authorized if f < max(per_authorized, default=0))


def test_a_sixty_day_liquid_filled_as_fourteen_day_partials_uses_one_fill() -> None:
    """A 60-day, 14-day-BUD liquid, each bottle collected with two days of the last one left: one authorized fill,
    refills untouched — and each bottle's days counted from when its own doses start (after the old bottle), so no
    bottle outlasts its BUD: 14, then 12 a time (a bottle made on day d is used d+2 … d+13), the last 10."""
    auth = Authorization(days_per_fill=60, refills=3, expiry_date=date(2027, 6, 1))
    current = supply(auth, [])
    day = START
    shown = []
    for _ in range(5):
        plan = compounding_rules.plan_fill(current, form=Form.SUBLINGUAL_LIQUID, strength_mg=Decimal(1),
                                           dose_mg=Decimal("1.5"), steps=(), category=UspCategory.AQUEOUS_UNPRESERVED,
                                           compounded_on=day, starts_on=day)
        current = rules.after_dispensing(current, Dispensing(day, plan.days_supply))
        assert plan.bud is not None and current.run_out < plan.bud  # the last dose before the BUD
        shown.append((plan.days_supply, current.refills_left, current.days_owed))
        day = current.run_out - timedelta(days=1)  # the next bottle collected with two days left
    assert shown == [(14, 3, 46), (12, 3, 34), (12, 3, 22), (12, 3, 10), (10, 3, 60)]
    assert (current.fills_completed, current.current_fill, current.partial) == (1, 1, False)
    assert current.run_out == START + timedelta(days=59)  # early pickups stacked: 60 days from the first


def test_early_and_late_fills() -> None:
    auth = Authorization(days_per_fill=30, refills=2, expiry_date=date(2027, 6, 1))
    early = supply(auth, [Dispensing(date(2026, 11, 1), 30), Dispensing(date(2026, 11, 25), 30)])
    assert early.run_out == date(2026, 12, 30)  # Nov 1–30, then Dec 1–30: extended, not restarted
    late = supply(auth, [Dispensing(date(2026, 11, 1), 30), Dispensing(date(2026, 12, 10), 30)])
    assert late.run_out == date(2027, 1, 8)  # Dec 1–9 was a gap: the second fill starts on Dec 10
    assert rules.covered_spans([Dispensing(date(2026, 11, 1), 30), Dispensing(date(2026, 12, 10), 30)]) == [
        (date(2026, 11, 1), date(2026, 11, 30)), (date(2026, 12, 10), date(2027, 1, 8))]
    assert late.days_on_hand(date(2027, 1, 8)) == 1 and late.days_on_hand(date(2027, 1, 9)) == 0
    assert late.out_since(date(2027, 1, 12)) == date(2027, 1, 9)


def test_too_soon_follows_the_supply_on_hand() -> None:
    """After an early (overridden) fill, the next too-soon threshold moves with the extended run-out."""
    auth = Authorization(days_per_fill=30, refills=3, expiry_date=date(2027, 6, 1))
    one = supply(auth, [Dispensing(date(2026, 11, 1), 30)])
    assert one.earliest_next_start == date(2026, 11, 25)  # 24 of 30 days used: 6 may remain on hand
    two = rules.after_dispensing(one, Dispensing(date(2026, 11, 20), 30))  # 5 days early, with a reason
    assert two.run_out == date(2026, 12, 30)
    assert two.earliest_next_start == date(2026, 12, 25)


def test_a_missing_refill_count_is_zero_and_expiry_stops_fills() -> None:
    auth = Authorization(days_per_fill=30, refills=None, expiry_date=date(2026, 12, 1))
    fresh = supply(auth, [])
    assert (auth.fills, fresh.days_owed, fresh.refills_left) == (1, 30, 0)
    assert fresh.stop_reason(date(2026, 12, 1)) is None  # may be filled on its expiry date
    assert fresh.stop_reason(date(2026, 12, 2)) == "expired"
    used = supply(auth, [Dispensing(date(2026, 11, 1), 30)])
    assert used.stop_reason(date(2026, 11, 20)) == "used_up"


def test_progress_text_and_fill_note() -> None:
    auth = Authorization(days_per_fill=60, refills=1, expiry_date=date(2027, 6, 1))
    current = supply(auth, [Dispensing(date(2026, 11, 1), 14)])
    assert current.progress_text() == "14 of 60 days; 46 days still owed on this fill"
    assert rules.fill_note(current, 14, capped_by_bud=date(2026, 11, 29)) == (
        "Capped at 14 days by the beyond-use date (Nov 29, 2026): 28 of 60 days; 32 days still owed on this fill.")
    assert rules.fill_note(supply(auth, []), 60) is None  # a whole fill needs no note
