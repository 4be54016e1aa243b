"""The day a fill may leave the pharmacy, from the day the too-soon rule lets it reach the patient."""
from __future__ import annotations

from datetime import date, timedelta

from hypothesis import given
from hypothesis import strategies as st

from pharmacy.supply.rules import arrival_date, earliest_leaving_day


def test_a_pickup_leaves_on_the_day_the_patient_may_have_it() -> None:
    assert earliest_leaving_day(date(2026, 12, 17), 0) == date(2026, 12, 17)


def test_a_parcel_leaves_its_shipping_days_before() -> None:
    # Thursday 17 December 2026: a 3-day parcel may leave on Monday the 14th (it arrives on the 17th).
    assert earliest_leaving_day(date(2026, 12, 17), 3) == date(2026, 12, 14)


def test_a_monday_start_may_leave_for_a_sunday_arrival_delivered_on_monday() -> None:
    # Monday 21 December 2026: leaving Thursday the 17th with 3 days would be Sunday → delivered Monday.
    assert earliest_leaving_day(date(2026, 12, 21), 3) == date(2026, 12, 17)
    assert arrival_date(date(2026, 12, 17), 3) == date(2026, 12, 21)


@given(st.dates(min_value=date(2020, 1, 1), max_value=date(2035, 1, 1)), st.integers(min_value=0, max_value=14))
def test_the_earliest_leaving_day_is_the_first_that_is_not_too_soon(start: date, shipping: int) -> None:
    day = earliest_leaving_day(start, shipping)
    assert arrival_date(day, shipping) >= start
    assert arrival_date(day - timedelta(days=1), shipping) < start
