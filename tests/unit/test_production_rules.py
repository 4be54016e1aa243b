"""The production plan's arithmetic, stock rules and formula version rules (pure), with hypothesis where there is
arithmetic."""
from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pharmacy.compounding.rules import UspCategory
from pharmacy.core.calendar import BusinessCalendar
from pharmacy.core.errors import Forbidden, ValidationFailed
from pharmacy.formulas import rules as formula_rules
from pharmacy.inventory import rules as stock
from pharmacy.prescriptions.rules import Form, TitrationStep
from pharmacy.production import rules

CAL = BusinessCalendar.default()
MONDAY = date(2026, 11, 23)  # the week of Thanksgiving (Thursday 26 November is closed)

strengths = st.sampled_from([Decimal("1.5"), Decimal("3"), Decimal("4.5")])
days = st.integers(min_value=1, max_value=120)


# ---- units from doses, titration steps and days supply -----------------------------------------------------

@given(strength=strengths, multiple=st.integers(1, 3), days_=days)
def test_capsules_for_a_fixed_dose_are_days_times_capsules_per_dose(strength: Decimal, multiple: int,
                                                                    days_: int) -> None:
    assert rules.units_for_fill(Form.CAPSULE, strength, strength * multiple, days_) == days_ * multiple


@given(days_=days, done=st.integers(0, 60))
def test_titration_steps_ahead_count_first_then_the_maintenance_dose(days_: int, done: int) -> None:
    steps = (TitrationStep(Decimal("1.5"), 14), TitrationStep(Decimal("3"), 14))
    units = rules.units_for_fill(Form.CAPSULE, Decimal("1.5"), Decimal("4.5"), days_, steps, days_dispensed=done)
    # Walk the days one by one: 1 capsule a day in the first 14 days of the prescription, 2 in the next 14, then 3.
    expected = sum(1 if d < 14 else 2 if d < 28 else 3 for d in range(done, done + days_))
    assert units == expected


@given(concentration=st.sampled_from([Decimal("0.5"), Decimal("1")]), dose=st.sampled_from([Decimal("1.5"),
       Decimal("3"), Decimal("4.5")]), days_=days)
def test_liquid_and_cream_are_millilitres_of_the_dose(concentration: Decimal, dose: Decimal, days_: int) -> None:
    for form in (Form.SUBLINGUAL_LIQUID, Form.TRANSDERMAL_CREAM):
        assert rules.units_for_fill(form, concentration, dose, days_) == days_ * dose / concentration


@given(days_supply=st.integers(1, 366), shipping=st.integers(0, 30),
       category=st.sampled_from(list(UspCategory)))
def test_a_fill_never_outlasts_its_bud_at_the_patients_door(days_supply: int, shipping: int,
                                                            category: UspCategory) -> None:
    n = rules.fill_days(days_supply, category=category, shipping_days=shipping)
    assert 1 <= n <= days_supply
    assert n == days_supply or n == max(1, {"aqueous_unpreserved": 14, "aqueous_preserved": 35,
                                            "nonaqueous_oral_liquid": 90, "other_nonaqueous": 180}[category] - shipping)


# ---- ingredients from formula amounts ---------------------------------------------------------------------

CAPSULE_FORMULA = [rules.IngredientLine("Naltrexone HCl", Decimal(450), "mg", "100 capsules"),
                   rules.IngredientLine("MCC", Decimal(14), "g", "100 capsules"),
                   rules.IngredientLine("Capsule shell", Decimal(100), "each", "100 capsules")]
CREAM_FORMULA = [rules.IngredientLine("Naltrexone HCl", Decimal(50), "mg", "100 mL"),
                 rules.IngredientLine("Base", Decimal(98), "mL", "100 mL")]


@given(units=st.integers(1, 5000))
def test_ingredients_scale_linearly_from_the_master_formula(units: int) -> None:
    caps = rules.ingredients_for(CAPSULE_FORMULA, Decimal(units))
    assert caps["Naltrexone HCl"] == (Decimal("4.5") * units, "mg")  # 4.5 mg a capsule
    assert caps["Capsule shell"] == (Decimal(units), "each")  # one shell a capsule
    cream = rules.ingredients_for(CREAM_FORMULA, Decimal(units))
    assert cream["Base"] == (Decimal("0.98") * units, "mL")


def test_the_batch_size_is_read_from_per() -> None:
    assert rules.per_count("100 capsules") == 100
    assert rules.per_count("250 mL") == 250
    assert rules.per_count("a batch") == 100


# ---- the bench day ------------------------------------------------------------------------------------------

def test_the_bench_day_is_the_order_by_date() -> None:
    # Last day covered Friday 11 Dec; pickup, 2-day buffer: ready by Thursday 10 Dec (the first day without
    # medicine, the 12th, less 2); 2 business days' lead: on the bench by Tuesday 8 Dec.
    bd = rules.bench_day(date(2026, 12, 11), today=MONDAY, shipping_days=0, buffer_days=2, lead_time=2, calendar=CAL)
    assert bd == rules.BenchDay(date(2026, 12, 8), False)
    late = rules.bench_day(MONDAY, today=MONDAY, shipping_days=2, buffer_days=2, lead_time=2, calendar=CAL)
    assert late == rules.BenchDay(MONDAY, True)
    assert rules.bench_day(None, today=MONDAY, shipping_days=0, buffer_days=2, lead_time=2, calendar=CAL).day == MONDAY


@given(offset=st.integers(-10, 60), shipping=st.integers(0, 7), lead=st.integers(0, 5))
def test_the_bench_day_is_an_open_day_not_before_today(offset: int, shipping: int, lead: int) -> None:
    bd = rules.bench_day(MONDAY + timedelta(days=offset), today=MONDAY, shipping_days=shipping, buffer_days=2,
                         lead_time=lead, calendar=CAL)
    assert CAL.is_open(bd.day) and bd.day >= MONDAY


def test_the_plan_days_skip_weekends_and_holidays() -> None:
    plan = rules.business_days(MONDAY, 14, CAL)
    assert len(plan) == 14 and date(2026, 11, 26) not in plan and date(2026, 11, 28) not in plan
    assert plan[0] == MONDAY and all(CAL.is_open(d) for d in plan)


# ---- bench capacity -------------------------------------------------------------------------------------

loads = st.lists(st.integers(0, 80), min_size=1, max_size=14)


@given(load=loads, capacity=st.integers(1, 60), share=st.floats(0, 1))
def test_levelling_moves_work_only_earlier_into_room_and_keeps_every_preparation(load: list[int], capacity: int,
                                                                                 share: float) -> None:
    plan_days = rules.business_days(MONDAY, len(load), CAL)
    by_day = dict(zip(plan_days, load, strict=True))
    movable = {d: int(n * share) for d, n in by_day.items()}
    result = rules.level(plan_days, by_day, movable, capacity)
    assert sum(result.load_after.values()) == sum(load)
    for move in result.moves:
        assert move.to_day < move.from_day and move.count > 0
    moved_out = {d: sum(m.count for m in result.moves if m.from_day == d) for d in plan_days}
    for d in plan_days:
        assert moved_out[d] <= movable[d]
        if any(m.to_day == d for m in result.moves):
            assert result.load_after[d] <= capacity  # work is moved only into room
        assert result.over.get(d, 0) == max(0, result.load_after[d] - capacity)


def test_an_overload_moves_to_the_nearest_lighter_day() -> None:
    mon, tue, wed = rules.business_days(MONDAY, 3, CAL)
    result = rules.level([mon, tue, wed], {mon: 5, tue: 10, wed: 14}, {wed: 14}, 10)
    assert [(m.from_day, m.to_day, m.count) for m in result.moves] == [(wed, mon, 4)]
    result = rules.level([mon, tue, wed], {mon: 8, tue: 8, wed: 14}, {wed: 14}, 10)
    assert [(m.to_day, m.count) for m in result.moves] == [(tue, 2), (mon, 2)]
    assert rules.level([mon], {mon: 12}, {mon: 12}, 10).over == {mon: 2}


# ---- stock ---------------------------------------------------------------------------------------------------

@given(amount=st.decimals(min_value=Decimal("0.001"), max_value=Decimal(100000), places=3))
def test_units_convert_both_ways(amount: Decimal) -> None:
    assert stock.convert(stock.convert(amount, "g", "mg"), "mg", "g") == amount
    assert stock.convert(amount, "L", "mL") == amount * 1000
    with pytest.raises(stock.UnitMismatch):
        stock.convert(amount, "g", "mL")


def test_signs_of_the_ledger_and_a_count() -> None:
    assert stock.signed(stock.MoveKind.RECEIPT, Decimal(5)) == 5
    assert stock.signed(stock.MoveKind.WASTE, Decimal(5)) == -5
    assert stock.signed(stock.MoveKind.ADJUST, Decimal(-2)) == -2
    with pytest.raises(ValidationFailed):
        stock.signed(stock.MoveKind.WASTE, Decimal(-1))
    assert stock.count_difference(Decimal(10), Decimal(7)) == -3


def test_a_lot_state_says_the_most_pressing_thing() -> None:
    kw = {"day": MONDAY, "warn_days": 60}
    assert stock.lot_state(expiry=MONDAY, quarantined=True, on_hand=Decimal(1), **kw) == stock.LotState.QUARANTINED
    assert stock.lot_state(expiry=MONDAY - timedelta(1), quarantined=False, on_hand=Decimal(1), **kw) == "expired"
    assert stock.lot_state(expiry=MONDAY + timedelta(90), quarantined=False, on_hand=None, **kw) == "untracked"
    assert stock.lot_state(expiry=MONDAY + timedelta(30), quarantined=False, on_hand=Decimal(1), **kw) == "expiring"
    assert stock.lot_state(expiry=MONDAY + timedelta(90), quarantined=False, on_hand=Decimal(0), **kw) == "empty"
    assert stock.is_low(Decimal(5), Decimal(5)) and not stock.is_low(Decimal(5), None)


@given(needs=st.lists(st.integers(0, 50), min_size=1, max_size=14),
       lots=st.lists(st.tuples(st.integers(0, 20), st.integers(0, 200)), max_size=4))
def test_the_projection_uses_soonest_expiry_first_and_never_a_lot_past_expiry(needs: list[int],
                                                                             lots: list[tuple[int, int]]) -> None:
    plan_days = [MONDAY + timedelta(days=i) for i in range(len(needs))]
    levels = [stock.LotLevel(i + 1, MONDAY + timedelta(days=e), Decimal(q)) for i, (e, q) in enumerate(lots)]
    result = stock.project(list(zip(plan_days, [Decimal(n) for n in needs], strict=True)), levels)
    usable_total = sum(q for e, q in lots)
    assert result.shortfall >= max(0, sum(needs) - usable_total)
    assert result.left + result.expiring_unused + (sum(needs) - result.shortfall) == usable_total
    if result.shortfall == 0:
        assert result.short_on is None
    if levels and any(q > 0 for _, q in lots):
        assert result.first_lot == stock.first_expiry_first([x for x in levels if x.on_hand > 0])[0].lot_id


# ---- formula versions -----------------------------------------------------------------------------------------

def test_the_author_of_a_change_cannot_approve_it() -> None:
    with pytest.raises(Forbidden):
        formula_rules.approver_must_differ(7, 7)
    formula_rules.approver_must_differ(7, 8)
    formula_rules.approver_must_differ(None, 8)


def test_ingredient_lines_need_exactly_one_active_ingredient() -> None:
    good = [{"name": "Naltrexone HCl", "amount": "450", "unit": "mg", "per": "100 capsules", "active": True},
            {"name": "MCC", "amount": "14", "unit": "g", "per": "100 capsules"}, {"name": "", "amount": ""}]
    assert len(formula_rules.clean_ingredients(good)) == 2
    with pytest.raises(ValidationFailed):
        formula_rules.clean_ingredients([{**good[0], "active": False}, good[1]])
    with pytest.raises(ValidationFailed):
        formula_rules.clean_ingredients([{**good[0], "amount": "-1"}])
    before = {"method": "Mix.", "ingredients": formula_rules.clean_ingredients(good)}
    after = {"method": "Mix well.", "ingredients": formula_rules.clean_ingredients(
        [good[0], {**good[1], "amount": "13.5"}])}
    assert formula_rules.changes(before, after) == ["Method", "MCC: 14 g → 13.5 g per 100 capsules"]
