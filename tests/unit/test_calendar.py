"""The business calendar: weekends, US holidays (observed days too), year ends, and counting rules."""
from __future__ import annotations

from datetime import date, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pharmacy.core.calendar import BusinessCalendar

US = BusinessCalendar.default()
MON_FRI = BusinessCalendar(weekdays=frozenset(range(5)))
dates = st.dates(min_value=date(2020, 1, 1), max_value=date(2035, 12, 31))
small_n = st.integers(min_value=0, max_value=40)
calendars = st.sampled_from(
    [
        US,
        MON_FRI,
        BusinessCalendar(weekdays=frozenset(range(6)), holiday_country="US", holiday_subdivision="MN"),
        BusinessCalendar(weekdays=frozenset({1, 3}), closed=frozenset({date(2026, 12, 29)})),
    ]
)


# -- is_open -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("day", "expected"),
    [
        (date(2026, 11, 23), True),  # Monday
        (date(2026, 11, 21), False),  # Saturday
        (date(2026, 11, 22), False),  # Sunday
        (date(2026, 11, 26), False),  # Thanksgiving Day (Thursday)
        (date(2026, 11, 27), True),  # the Friday after is not a federal holiday
        (date(2026, 12, 25), False),  # Christmas Day (Friday)
        (date(2026, 12, 24), True),
        (date(2026, 12, 31), True),
        (date(2027, 1, 1), False),  # New Year's Day (Friday)
        (date(2026, 7, 3), False),  # Independence Day observed (4 July 2026 is a Saturday)
        (date(2027, 7, 5), False),  # Independence Day observed (4 July 2027 is a Sunday)
        (date(2027, 12, 24), False),  # Christmas observed (25 Dec 2027 is a Saturday)
        (date(2027, 12, 31), False),  # New Year's Day 2028 observed in the previous year
        (date(2026, 1, 19), False),  # Martin Luther King Jr. Day
        (date(2026, 6, 19), False),  # Juneteenth
    ],
)
def test_us_default_calendar(day: date, expected: bool) -> None:
    assert US.is_open(day) is expected


def test_without_holidays_only_weekdays_count() -> None:
    assert MON_FRI.is_open(date(2026, 11, 26))  # Thanksgiving, but no holiday country
    assert not MON_FRI.is_open(date(2026, 11, 28))


def test_closed_days_and_custom_weekdays() -> None:
    cal = BusinessCalendar(weekdays=frozenset({0, 1, 2, 3, 4, 5}), closed=frozenset({date(2026, 11, 24)}))
    assert cal.is_open(date(2026, 11, 21))  # Saturday is a working day here
    assert not cal.is_open(date(2026, 11, 22))  # Sunday is not
    assert not cal.is_open(date(2026, 11, 24))  # a pharmacy closure on a Tuesday


def test_subdivision_holidays_are_added() -> None:
    # Massachusetts observes Patriots' Day (third Monday of April: 20 April 2026); the US does not.
    ma = BusinessCalendar(weekdays=frozenset(range(5)), holiday_country="US", holiday_subdivision="MA")
    assert not ma.is_open(date(2026, 4, 20))
    assert US.is_open(date(2026, 4, 20))


def test_holiday_name() -> None:
    assert US.holiday_name(date(2026, 11, 26)) == "Thanksgiving Day"
    assert US.holiday_name(date(2026, 11, 27)) is None
    assert MON_FRI.holiday_name(date(2026, 12, 25)) is None


def test_default_is_mon_to_fri_us() -> None:
    assert BusinessCalendar.default() == BusinessCalendar(weekdays=frozenset({0, 1, 2, 3, 4}), holiday_country="US")
    assert BusinessCalendar.default() != MON_FRI


def test_iterables_are_frozen_and_calendar_hashable() -> None:
    cal = BusinessCalendar(weekdays={0, 1}, closed={date(2026, 1, 5)})  # type: ignore[arg-type]
    assert isinstance(cal.weekdays, frozenset)
    assert isinstance(cal.closed, frozenset)
    assert hash(cal) == hash(BusinessCalendar(weekdays=frozenset({0, 1}), closed=frozenset({date(2026, 1, 5)})))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"weekdays": frozenset()},
        {"weekdays": frozenset({7})},
        {"weekdays": frozenset({-1})},
        {"weekdays": frozenset({0}), "holiday_subdivision": "MN"},
        {"weekdays": frozenset({0}), "holiday_country": "XX"},
        {"weekdays": frozenset({0}), "holiday_country": "US", "holiday_subdivision": "ZZ"},
    ],
)
def test_invalid_calendars_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        BusinessCalendar(**kwargs)  # type: ignore[arg-type]


def test_a_calendar_that_never_opens_fails_loudly() -> None:
    start = date(2026, 1, 1)
    all_closed = frozenset(start + timedelta(days=i) for i in range(-1200, 1200))
    cal = BusinessCalendar(weekdays=frozenset({0}), closed=all_closed)
    with pytest.raises(ValueError, match="never open"):
        cal.next_open_day(start)


# -- next / previous open day --------------------------------------------------------


@pytest.mark.parametrize(
    ("day", "previous", "following"),
    [
        (date(2026, 11, 23), date(2026, 11, 23), date(2026, 11, 23)),  # open: unchanged
        (date(2026, 11, 21), date(2026, 11, 20), date(2026, 11, 23)),  # Saturday
        (date(2026, 11, 26), date(2026, 11, 25), date(2026, 11, 27)),  # Thanksgiving
        (date(2026, 12, 26), date(2026, 12, 24), date(2026, 12, 28)),  # Saturday after Christmas
        (date(2027, 1, 1), date(2026, 12, 31), date(2027, 1, 4)),  # New Year's Day across the year end
        (date(2027, 12, 26), date(2027, 12, 23), date(2027, 12, 27)),  # observed Christmas Friday 24th
        (date(2028, 1, 1), date(2027, 12, 30), date(2028, 1, 3)),  # Saturday; 31 Dec 2027 observed
    ],
)
def test_previous_and_next_open_day(day: date, previous: date, following: date) -> None:
    assert US.previous_open_day(day) == previous
    assert US.next_open_day(day) == following


# -- add / subtract -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "n", "expected"),
    [
        (date(2026, 11, 23), 0, date(2026, 11, 23)),
        (date(2026, 11, 21), 0, date(2026, 11, 21)),  # n=0 leaves even a closed day unchanged
        (date(2026, 11, 23), 1, date(2026, 11, 24)),
        (date(2026, 11, 20), 1, date(2026, 11, 23)),  # Friday + 1 = Monday
        (date(2026, 11, 21), 1, date(2026, 11, 23)),  # Saturday + 1 = Monday
        (date(2026, 11, 25), 1, date(2026, 11, 27)),  # skips Thanksgiving
        (date(2026, 11, 24), 3, date(2026, 11, 30)),  # Wed, Fri, Mon
        (date(2026, 12, 23), 2, date(2026, 12, 28)),  # Thu 24, (Fri 25 closed), Mon 28
        (date(2026, 12, 30), 2, date(2027, 1, 4)),  # Thu 31, (Fri 1 Jan closed), Mon 4
        (date(2027, 12, 22), 3, date(2027, 12, 28)),  # Thu 23, (Fri 24 observed Christmas), Mon 27, Tue 28
        (date(2027, 12, 29), 2, date(2028, 1, 3)),  # Thu 30, (Fri 31 observed New Year), Mon 3 Jan
    ],
)
def test_add_business_days(start: date, n: int, expected: date) -> None:
    assert US.add_business_days(start, n) == expected


@pytest.mark.parametrize(
    ("start", "n", "expected"),
    [
        (date(2026, 11, 27), 0, date(2026, 11, 27)),
        (date(2026, 11, 27), 1, date(2026, 11, 25)),  # skips Thanksgiving
        (date(2026, 11, 30), 1, date(2026, 11, 27)),  # Monday − 1 = Friday
        (date(2026, 11, 29), 1, date(2026, 11, 27)),  # Sunday − 1 = Friday (Sunday itself never counts)
        (date(2026, 11, 30), 3, date(2026, 11, 24)),  # Fri 27, Wed 25, Tue 24
        (date(2027, 1, 4), 1, date(2026, 12, 31)),  # across the year end, skipping 1 Jan
        (date(2027, 1, 4), 5, date(2026, 12, 24)),  # 31, 30, 29, 28 Dec, (25 closed), 24 Dec
        (date(2026, 3, 2), 1, date(2026, 2, 27)),  # across a month end
    ],
)
def test_subtract_business_days(start: date, n: int, expected: date) -> None:
    assert US.subtract_business_days(start, n) == expected


def test_negative_or_non_int_counts_are_refused() -> None:
    with pytest.raises(ValueError):
        US.add_business_days(date(2026, 1, 5), -1)
    with pytest.raises(ValueError):
        US.subtract_business_days(date(2026, 1, 5), -2)
    with pytest.raises(TypeError):
        US.add_business_days(date(2026, 1, 5), 1.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        US.add_business_days(date(2026, 1, 5), True)


# -- business_days_between -----------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        (date(2026, 11, 23), date(2026, 11, 23), 0),
        (date(2026, 11, 23), date(2026, 11, 24), 1),  # [Mon, Tue): Monday
        (date(2026, 11, 23), date(2026, 11, 30), 4),  # Mon–Fri minus Thanksgiving
        (date(2026, 11, 21), date(2026, 11, 23), 0),  # a weekend has no working days
        (date(2026, 12, 1), date(2027, 1, 1), 22),  # December 2026: 23 weekdays − Christmas
        (date(2026, 11, 30), date(2026, 11, 23), -4),
    ],
)
def test_business_days_between(a: date, b: date, expected: int) -> None:
    assert US.business_days_between(a, b) == expected


# -- properties ------------------------------------------------------------------------


@given(cal=calendars, d=dates, n=st.integers(min_value=1, max_value=40))
def test_add_and_subtract_land_on_open_days(cal: BusinessCalendar, d: date, n: int) -> None:
    forward = cal.add_business_days(d, n)
    backward = cal.subtract_business_days(d, n)
    assert cal.is_open(forward)
    assert cal.is_open(backward)
    assert backward < d < forward


@given(cal=calendars, d=dates, n=small_n)
def test_subtract_undoes_add_from_an_open_day(cal: BusinessCalendar, d: date, n: int) -> None:
    start = cal.next_open_day(d)
    assert cal.subtract_business_days(cal.add_business_days(start, n), n) == start
    assert cal.add_business_days(cal.subtract_business_days(start, n), n) == start


@given(cal=calendars, d=dates, n=small_n)
def test_subtract_after_add_from_a_closed_day_is_the_previous_open_day(cal: BusinessCalendar, d: date, n: int) -> None:
    result = cal.subtract_business_days(cal.add_business_days(d, n), n)
    if n == 0 or cal.is_open(d):
        assert result == d
    else:
        assert result == cal.previous_open_day(d)


@given(cal=calendars, d=dates, n=small_n)
def test_between_counts_what_add_and_subtract_step(cal: BusinessCalendar, d: date, n: int) -> None:
    start = cal.next_open_day(d)
    assert cal.business_days_between(start, cal.add_business_days(start, n)) == n
    assert cal.business_days_between(cal.subtract_business_days(d, n), d) == n


@given(cal=calendars, d=dates, n=small_n, m=small_n)
def test_add_composes(cal: BusinessCalendar, d: date, n: int, m: int) -> None:
    start = cal.next_open_day(d)
    assert cal.add_business_days(cal.add_business_days(start, n), m) == cal.add_business_days(start, n + m)


@given(cal=calendars, a=dates, b=dates)
def test_between_is_antisymmetric_and_bounded(cal: BusinessCalendar, a: date, b: date) -> None:
    between = cal.business_days_between(a, b)
    assert between == -cal.business_days_between(b, a)
    assert abs(between) <= abs((b - a).days)


@given(cal=calendars, d=dates)
def test_open_day_neighbours(cal: BusinessCalendar, d: date) -> None:
    previous, following = cal.previous_open_day(d), cal.next_open_day(d)
    assert cal.is_open(previous) and cal.is_open(following)
    assert previous <= d <= following
    # Nothing open is skipped in between.
    if previous < d:
        assert cal.business_days_between(previous + timedelta(days=1), d + timedelta(days=1)) == 0
    if following > d:
        assert cal.business_days_between(d, following) == 0
    assert (previous == d) == cal.is_open(d) == (following == d)
