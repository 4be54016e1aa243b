"""Compounding rules: USP <795> BUDs, BUD-capped fills, the order workflow, QC and lot numbers."""
from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal as D
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pharmacy.compounding import rules as c
from pharmacy.compounding.rules import ExpiredIngredientError, FillPlan, OrderState, UspCategory
from pharmacy.core.errors import Forbidden, InvalidTransition, ValidationFailed
from pharmacy.core.roles import Permission
from pharmacy.prescriptions.rules import Form, TitrationStep, quantity_for_days
from pharmacy.supply.rules import Authorization, Dispensing, Supply, supply

S = OrderState
CAP, SL, CREAM = Form.CAPSULE, Form.SUBLINGUAL_LIQUID, Form.TRANSDERMAL_CREAM
DAY = date(2026, 11, 23)


def test_enum_values_are_stable() -> None:
    assert [u.value for u in UspCategory] == ["aqueous_unpreserved", "aqueous_preserved", "nonaqueous_oral_liquid",
                                              "other_nonaqueous"]
    assert [s.value for s in S] == ["requested", "verified", "compounding", "checked", "ready", "dispensed",
                                    "on_hold", "cancelled"]
    assert [d.value for d in c.DeliveryMethod] == ["pickup", "ship"]


# ---------------------------------------------------------------- BUD (USP <795> 2023)
def test_bud_days_are_the_2023_defaults() -> None:
    assert c.BUD_DAYS == {UspCategory.AQUEOUS_UNPRESERVED: 14, UspCategory.AQUEOUS_PRESERVED: 35,
                          UspCategory.NONAQUEOUS_ORAL_LIQUID: 90, UspCategory.OTHER_NONAQUEOUS: 180}
    assert set(c.STORAGE_TEXT) == set(UspCategory)
    assert "refrigerator" in c.STORAGE_TEXT[UspCategory.AQUEOUS_UNPRESERVED]
    assert "room temperature" not in c.STORAGE_TEXT[UspCategory.AQUEOUS_UNPRESERVED]
    assert all("room temperature" in c.STORAGE_TEXT[u] for u in UspCategory if u is not UspCategory.AQUEOUS_UNPRESERVED)


@pytest.mark.parametrize(("category", "bud"), [
    (UspCategory.AQUEOUS_UNPRESERVED, date(2026, 12, 7)), (UspCategory.AQUEOUS_PRESERVED, date(2026, 12, 28)),
    (UspCategory.NONAQUEOUS_ORAL_LIQUID, date(2027, 2, 21)), (UspCategory.OTHER_NONAQUEOUS, date(2027, 5, 22))])
def test_beyond_use_date(category, bud) -> None:
    assert c.beyond_use_date(category, DAY, [date(2030, 1, 1)]) == bud
    assert c.beyond_use_date(category, DAY, []) == bud


def test_bud_never_passes_the_earliest_ingredient_expiry() -> None:
    expiries = [date(2027, 6, 1), date(2027, 1, 10), date(2028, 1, 1)]
    assert c.beyond_use_date(UspCategory.OTHER_NONAQUEOUS, DAY, expiries) == date(2027, 1, 10)
    # An ingredient expiring on the compounding day is still usable that day (BUD = that day).
    assert c.beyond_use_date(UspCategory.OTHER_NONAQUEOUS, DAY, [DAY]) == DAY


def test_expired_ingredient_is_refused() -> None:
    with pytest.raises(ExpiredIngredientError) as err:
        c.beyond_use_date(UspCategory.OTHER_NONAQUEOUS, DAY, [date(2027, 1, 1), date(2026, 11, 22)])
    assert "2026-11-22" in err.value.message
    assert isinstance(err.value, ValidationFailed)
    assert "ingredient_lots" in err.value.fields


@given(st.sampled_from(list(UspCategory)), st.dates(min_value=date(2020, 1, 1), max_value=date(2035, 1, 1)),
       st.lists(st.integers(min_value=0, max_value=400), max_size=5))
def test_bud_property(category, day, offsets) -> None:
    expiries = [day + timedelta(days=o) for o in offsets]
    bud = c.beyond_use_date(category, day, expiries)
    assert day <= bud <= day + timedelta(days=c.BUD_DAYS[category])
    assert all(bud <= e for e in expiries)
    assert bud == min([day + timedelta(days=c.BUD_DAYS[category]), *expiries])


def test_category_must_fit_the_form() -> None:
    c.check_category_for_form(CAP, UspCategory.OTHER_NONAQUEOUS)
    c.check_category_for_form(SL, UspCategory.AQUEOUS_UNPRESERVED)
    c.check_category_for_form(CREAM, UspCategory.OTHER_NONAQUEOUS)
    for form, category in [(CAP, UspCategory.AQUEOUS_PRESERVED), (SL, UspCategory.OTHER_NONAQUEOUS),
                           (CREAM, UspCategory.NONAQUEOUS_ORAL_LIQUID)]:
        with pytest.raises(ValidationFailed) as err:
            c.check_category_for_form(form, category)
        assert "usp_category" in err.value.fields


def test_days_until_bud() -> None:
    assert c.days_until_bud(date(2026, 12, 7), DAY) == 14
    assert c.days_until_bud(date(2026, 12, 7), date(2026, 12, 1)) == 6
    assert c.days_until_bud(date(2026, 12, 7), date(2026, 12, 9)) == 0


# ---------------------------------------------------------------- capping a fill at its BUD
def test_fill_within_bud_is_not_capped() -> None:
    plan = c.cap_to_bud(CAP, D("1.5"), D("4.5"), quantity=D(90), days_supply=30, bud_days=180)
    assert plan == FillPlan(D(90), 30, False, None)
    plan = c.cap_to_bud(SL, D("1"), D("1.5"), quantity=D(21), days_supply=14, bud_days=14)
    assert plan == FillPlan(D(21), 14, False, None)


def test_aqueous_fill_is_capped_at_fourteen_days() -> None:
    plan = c.cap_to_bud(SL, D("1"), D("1.5"), quantity=D(45), days_supply=30, bud_days=14)
    assert plan.quantity == D(21)
    assert plan.days_supply == 14
    assert plan.capped
    assert plan.note is None  # what the cap means for the fill is plan_fill's to say (below)


def _supply(days_per_fill: int, dispensed: list[int], refills: int = 2) -> Supply:
    auth = Authorization(days_per_fill=days_per_fill, refills=refills, expiry_date=date(2028, 1, 1))
    start = date(2026, 9, 1)
    return supply(auth, [Dispensing(start + timedelta(days=sum(dispensed[:i])), d) for i, d in enumerate(dispensed)])


def test_plan_fill_caps_an_aqueous_fill_and_says_what_is_owed() -> None:
    day = date(2026, 12, 1)
    plan = c.plan_fill(_supply(30, []), form=SL, strength_mg=D("1"), dose_mg=D("1.5"), steps=(),
                       category=UspCategory.AQUEOUS_UNPRESERVED, compounded_on=day, starts_on=day)
    assert (plan.quantity, plan.days_supply, plan.capped, plan.bud) == (D(21), 14, True, date(2026, 12, 15))
    assert plan.note == ("Capped at 14 days by the beyond-use date (Dec 15, 2026): 14 of 30 days; 16 days still owed "
                         "on this fill.")
    assert plan.authorized_fill == 0


def test_plan_fill_offers_the_rest_of_a_partial_fill() -> None:
    """After 14 + 14 of a 60-day liquid fill, the next plan is the next 14 days of the same fill; the last 4 days
    finish it; then the first refill starts with a whole (capped) fill."""
    day = date(2026, 12, 1)
    kw = {"form": SL, "strength_mg": D("1"), "dose_mg": D("1.5"), "steps": (),
          "category": UspCategory.AQUEOUS_UNPRESERVED, "compounded_on": day, "starts_on": day}
    third = c.plan_fill(_supply(60, [14, 14]), **kw)
    assert (third.days_supply, third.authorized_fill) == (14, 0)
    assert third.note.endswith("42 of 60 days; 18 days still owed on this fill.")
    last = c.plan_fill(_supply(60, [14, 14, 14, 14]), **kw)
    assert (last.days_supply, last.capped, last.authorized_fill) == (4, False, 0)
    assert last.note == "Partial fill: 60 of 60 days."
    refill = c.plan_fill(_supply(60, [14, 14, 14, 14, 4]), **kw)
    assert (refill.days_supply, refill.authorized_fill) == (14, 1)


def test_plan_fill_ships_with_room_for_the_journey_and_refuses_a_used_up_prescription() -> None:
    day = date(2026, 12, 1)
    kw = {"form": SL, "strength_mg": D("1"), "dose_mg": D("1.5"), "steps": (),
          "category": UspCategory.AQUEOUS_UNPRESERVED, "compounded_on": day}
    assert c.plan_fill(_supply(30, []), starts_on=day + timedelta(days=3), **kw).days_supply == 11
    with pytest.raises(ValidationFailed):
        c.plan_fill(_supply(30, [30, 30, 30]), starts_on=day, **kw)


def test_capping_follows_the_titration_plan() -> None:
    steps = [TitrationStep(D("1.5"), 7), TitrationStep(D("3"), 7)]
    plan = c.cap_to_bud(CAP, D("1.5"), D("4.5"), quantity=D(69), days_supply=30, bud_days=10, steps=steps)
    assert (plan.quantity, plan.days_supply) == (D(7 + 6), 10)
    plan = c.cap_to_bud(CAP, D("1.5"), D("4.5"), quantity=D(69), days_supply=30, bud_days=29, steps=steps)
    assert (plan.days_supply, plan.capped) == (29, True)


@pytest.mark.parametrize(("kw", "field"), [
    ({"quantity": D(90), "days_supply": 30, "bud_days": 0}, "days_supply"),
    ({"quantity": D(90), "days_supply": 0, "bud_days": 10}, "days_supply"),
    ({"quantity": D(0), "days_supply": 30, "bud_days": 10}, "quantity")])
def test_cap_to_bud_refuses_nonsense(kw, field) -> None:
    with pytest.raises(ValidationFailed) as err:
        c.cap_to_bud(CAP, D("1.5"), D("4.5"), **kw)
    assert field in err.value.fields


@settings(max_examples=200)
@given(st.sampled_from(["0.5", "1.5", "4.5"]).map(D), st.integers(min_value=1, max_value=6),
       st.integers(min_value=1, max_value=366), st.integers(min_value=1, max_value=200))
def test_cap_never_exceeds_bud(strength, per_dose, days, bud_days) -> None:
    dose = strength * per_dose
    qty = quantity_for_days(CAP, strength, dose, days)
    plan = c.cap_to_bud(CAP, strength, dose, quantity=qty, days_supply=days, bud_days=bud_days)
    assert plan.days_supply <= bud_days
    assert plan.days_supply == min(days, bud_days)
    assert plan.quantity <= qty
    assert plan.quantity == quantity_for_days(CAP, strength, dose, plan.days_supply)
    assert plan.capped == (days > bud_days)


# ---------------------------------------------------------------- workflow
HAPPY = [S.REQUESTED, S.VERIFIED, S.COMPOUNDING, S.CHECKED, S.READY, S.DISPENSED]


def test_happy_path() -> None:
    for a, b in pairwise(HAPPY):
        c.check_transition(a, b)


def test_transition_table_shape() -> None:
    assert set(c.TRANSITIONS) == set(S)
    assert c.TRANSITIONS[S.DISPENSED] == frozenset()
    assert c.TRANSITIONS[S.CANCELLED] == frozenset()
    for state in (S.REQUESTED, S.VERIFIED, S.COMPOUNDING, S.CHECKED, S.READY):
        assert S.ON_HOLD in c.TRANSITIONS[state]
        assert S.CANCELLED in c.TRANSITIONS[state]
    assert S.CANCELLED in c.TRANSITIONS[S.ON_HOLD]
    assert S.COMPOUNDING in c.TRANSITIONS[S.CHECKED]  # a failed final check goes back to be re-made


def test_skipping_steps_explains_what_is_missing() -> None:
    with pytest.raises(InvalidTransition) as err:
        c.check_transition(S.COMPOUNDING, S.DISPENSED)
    assert err.value.message == ("An order that is compounding cannot be dispensed; it must be checked and made "
                                 "ready first.")
    with pytest.raises(InvalidTransition, match="it must be verified first"):
        c.check_transition(S.REQUESTED, S.COMPOUNDING)
    with pytest.raises(InvalidTransition, match="it must be verified, compounded, checked and made ready first"):
        c.check_transition(S.REQUESTED, S.DISPENSED)


def test_final_and_backward_moves() -> None:
    with pytest.raises(InvalidTransition, match="dispensed orders are final"):
        c.check_transition(S.DISPENSED, S.CANCELLED)
    with pytest.raises(InvalidTransition, match="cancelled orders are final"):
        c.check_transition(S.CANCELLED, S.REQUESTED)
    with pytest.raises(InvalidTransition, match="forward only"):
        c.check_transition(S.READY, S.VERIFIED)
    with pytest.raises(InvalidTransition, match="failed final check"):
        c.check_transition(S.READY, S.COMPOUNDING)
    with pytest.raises(InvalidTransition, match="already ready"):
        c.check_transition(S.READY, S.READY)
    with pytest.raises(InvalidTransition) as err:
        c.check_transition(S.DISPENSED, S.CANCELLED)
    assert err.value.status == 409


def test_hold_resumes_where_it_was_held() -> None:
    c.check_transition(S.COMPOUNDING, S.ON_HOLD)
    c.check_transition(S.ON_HOLD, S.COMPOUNDING, held_from=S.COMPOUNDING)
    c.check_transition(S.ON_HOLD, S.CANCELLED, held_from=S.READY)
    c.check_transition(S.ON_HOLD, S.CANCELLED)
    with pytest.raises(InvalidTransition, match="put on hold while verified; it resumes there, not at ready"):
        c.check_transition(S.ON_HOLD, S.READY, held_from=S.VERIFIED)
    with pytest.raises(InvalidTransition, match="not known"):
        c.check_transition(S.ON_HOLD, S.VERIFIED)
    with pytest.raises(InvalidTransition):
        c.check_transition(S.ON_HOLD, S.DISPENSED, held_from=S.DISPENSED)


@given(st.sampled_from(list(S)), st.sampled_from(list(S)), st.one_of(st.none(), st.sampled_from(list(S))))
def test_every_pair_is_allowed_or_refused(current, target, held_from) -> None:
    if current is S.ON_HOLD and target is not S.CANCELLED:
        expected = target == held_from and held_from in c.OPEN
    else:
        expected = target in c.TRANSITIONS[current]
    try:
        c.check_transition(current, target, held_from=held_from)
    except InvalidTransition as exc:
        assert not expected
        assert exc.message.endswith(".")
        assert "_" not in exc.message  # words, not enum values
    else:
        assert expected
        assert current not in c.FINAL
        assert target != current


@pytest.mark.parametrize(("state", "held_from", "steps"), [
    (S.REQUESTED, None, [S.VERIFIED, S.ON_HOLD, S.CANCELLED]),
    (S.VERIFIED, None, [S.COMPOUNDING, S.ON_HOLD, S.CANCELLED]),
    (S.COMPOUNDING, None, [S.CHECKED, S.ON_HOLD, S.CANCELLED]),
    (S.CHECKED, None, [S.READY, S.COMPOUNDING, S.ON_HOLD, S.CANCELLED]),
    (S.READY, None, [S.DISPENSED, S.ON_HOLD, S.CANCELLED]),
    (S.ON_HOLD, S.CHECKED, [S.CHECKED, S.CANCELLED]),
    (S.ON_HOLD, None, [S.CANCELLED]),
    (S.DISPENSED, None, []),
    (S.CANCELLED, None, [])])
def test_next_steps(state, held_from, steps) -> None:
    assert c.next_steps(state, held_from) == steps
    for target in steps:
        c.check_transition(state, target, held_from=held_from)


def test_permissions_exist_in_the_role_matrix() -> None:
    assert c.PERMISSION_FOR == {
        S.VERIFIED: "verify_order", S.COMPOUNDING: "compound", S.CHECKED: "check_order", S.READY: "check_order",
        S.DISPENSED: "dispense", S.ON_HOLD: "hold_order", S.CANCELLED: "cancel_order"}
    values = {p.value for p in Permission}
    assert set(c.PERMISSION_FOR.values()) <= values
    assert c.permission_for(S.ON_HOLD, S.VERIFIED) == "hold_order"
    assert c.permission_for(S.ON_HOLD, S.REQUESTED) == "hold_order"
    assert c.permission_for(S.ON_HOLD, S.CANCELLED) == "cancel_order"
    assert c.permission_for(S.CHECKED, S.COMPOUNDING) == "check_order"
    assert c.permission_for(S.VERIFIED, S.COMPOUNDING) == "compound"
    assert c.permission_for(S.READY, S.DISPENSED) == "dispense"


# ---------------------------------------------------------------- QC and the record
@pytest.mark.parametrize(("expected", "made", "pct"), [
    ("100", "100", "100.0"), ("100", "95", "95.0"), ("30", "29", "96.7"), ("3", "2", "66.7"),
    ("200", "210.1", "105.1"), ("1000", "949.5", "95.0"), ("1000", "949.4", "94.9"), ("1000", "948.5", "94.9"),
    ("8", "0", "0.0")])
def test_yield_percent(expected, made, pct) -> None:
    got = c.yield_percent(D(expected), D(made))
    assert got == D(pct)
    assert str(got) == pct


def test_yield_percent_refuses_nonsense() -> None:
    with pytest.raises(ValidationFailed):
        c.yield_percent(D(0), D(10))
    with pytest.raises(ValidationFailed):
        c.yield_percent(D(10), D(-1))


@pytest.mark.parametrize(("pct", "ok"), [("95", True), ("105", True), ("100", True), ("94.9", False),
                                         ("105.1", False), ("0", False)])
def test_qc_passes(pct, ok) -> None:
    assert c.qc_passes(D(pct)) is ok


@given(st.decimals(min_value=D("0.001"), max_value=D("100000"), places=3),
       st.decimals(min_value=D("0"), max_value=D("100000"), places=3))
def test_yield_is_one_decimal_and_close(expected, made) -> None:
    pct = c.yield_percent(expected, made)
    assert pct.as_tuple().exponent == -1
    assert abs(pct - made * 100 / expected) <= D("0.05")


def test_checker_must_differ() -> None:
    c.checker_must_differ(1, 2)
    c.checker_must_differ(None, 2)
    with pytest.raises(Forbidden) as err:
        c.checker_must_differ(7, 7)
    assert err.value.message == "The final check must be done by a pharmacist other than the one who compounded."
    assert err.value.status == 403


def test_lot_number() -> None:
    assert c.lot_number(DAY, 7) == "L261123-007"
    assert c.lot_number(date(2027, 1, 2), 1) == "L270102-001"
    assert c.lot_number(date(2027, 1, 2), 999) == "L270102-999"
    assert c.lot_number(date(2027, 1, 2), 1000) == "L270102-1000"
    for bad in (0, -1, 10000, True):
        with pytest.raises(ValueError, match="1–9999"):
            c.lot_number(DAY, bad)
