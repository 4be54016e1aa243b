"""Refill timing (docs/domain.md "Refill timing: request early, dispense on time"): dates, too-soon, eligibility."""
from __future__ import annotations

from datetime import date, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pharmacy.core.calendar import BusinessCalendar
from pharmacy.core.errors import ValidationFailed
from pharmacy.refills.rules import (
    Eligibility,
    RefillInputInvalid,
    RefillRequestState,
    RefillTimeline,
    RenewalState,
    RequestSource,
    arrival_date,
    delivery_date,
    long_date,
    order_by_date,
    ready_by_date,
    ready_date,
    refill_eligibility,
    refills_left,
    run_out_date,
    timeline,
)
from pharmacy.supply.rules import Authorization, Dispensing, SupplyInputInvalid, supply, supply_from_cache

US = BusinessCalendar.default()
dates = st.dates(min_value=date(2020, 1, 1), max_value=date(2035, 12, 31))


def test_enums_are_unchanged() -> None:
    assert [s.value for s in RefillRequestState] == ["open", "approved", "declined", "awaiting_renewal", "cancelled"]
    assert [s.value for s in RequestSource] == ["link", "api", "staff", "portal", "sms", "auto"]  # 0010 widened its CHECK
    assert [s.value for s in RenewalState] == ["needed", "sent", "received", "cancelled"]


# -- run-out --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dispensed", "days", "expected"),
    [
        (date(2026, 3, 1), 30, date(2026, 3, 30)),  # covers 1–30 March: the last day covered
        (date(2026, 1, 31), 30, date(2026, 3, 1)),  # across a short February
        (date(2028, 2, 1), 29, date(2028, 2, 29)),  # leap year
        (date(2026, 12, 15), 30, date(2027, 1, 13)),  # across the year end
        (date(2026, 5, 1), 1, date(2026, 5, 1)),  # one day: that day
    ],
)
def test_run_out_date(dispensed: date, days: int, expected: date) -> None:
    assert run_out_date(dispensed, days) == expected


@pytest.mark.parametrize("days", [0, -1])
def test_run_out_needs_a_real_supply(days: int) -> None:
    with pytest.raises(RefillInputInvalid) as info:
        run_out_date(date(2026, 3, 1), days)
    assert info.value.fields == {"days_supply": ["Days supply must be at least 1."]}
    assert isinstance(info.value, ValidationFailed)


def test_run_out_refuses_fractional_days() -> None:
    with pytest.raises(RefillInputInvalid):
        run_out_date(date(2026, 3, 1), 30.0)  # type: ignore[arg-type]


# -- ready-by and order-by ------------------------------------------------------------


@pytest.mark.parametrize(
    ("run_out", "shipping", "buffer", "expected"),
    [
        (date(2026, 12, 1), 2, 2, date(2026, 11, 27)),  # Sat 28 → Fri 27 (Thanksgiving was the 26th)
        (date(2026, 11, 29), 2, 2, date(2026, 11, 25)),  # Thu 26 is Thanksgiving → Wed 25
        (date(2026, 12, 27), 1, 2, date(2026, 12, 24)),  # Fri 25 Christmas → Thu 24
        (date(2027, 1, 2), 0, 2, date(2026, 12, 31)),  # Fri 1 Jan closed → Thu 31 Dec (year end)
        (date(2026, 12, 8), 0, 0, date(2026, 12, 9)),  # an open day stays
        (date(2026, 3, 2), 2, 1, date(2026, 2, 27)),  # Sat 28 Feb → Fri 27 Feb (month end)
    ],
)
def test_ready_by_date(run_out: date, shipping: int, buffer: int, expected: date) -> None:
    assert ready_by_date(run_out, shipping_days=shipping, buffer_days=buffer, calendar=US) == expected


@pytest.mark.parametrize(("shipping", "buffer", "field"), [(-1, 2, "shipping_days"), (2, -1, "buffer_days")])
def test_ready_by_refuses_negative_days(shipping: int, buffer: int, field: str) -> None:
    with pytest.raises(RefillInputInvalid) as info:
        ready_by_date(date(2026, 12, 2), shipping_days=shipping, buffer_days=buffer, calendar=US)
    assert list(info.value.fields) == [field]


@pytest.mark.parametrize(
    ("ready_by", "lead", "expected"),
    [
        (date(2026, 11, 27), 3, date(2026, 11, 23)),  # Wed 25, Tue 24, Mon 23 (Thanksgiving skipped)
        (date(2026, 11, 30), 1, date(2026, 11, 27)),  # Monday − 1 = Friday
        (date(2026, 12, 28), 2, date(2026, 12, 23)),  # Thu 24, Wed 23 (Christmas skipped)
        (date(2027, 1, 5), 3, date(2026, 12, 30)),  # Mon 4, Thu 31, Wed 30 (1 Jan skipped, year end)
        (date(2026, 12, 9), 0, date(2026, 12, 9)),
    ],
)
def test_order_by_date(ready_by: date, lead: int, expected: date) -> None:
    assert order_by_date(ready_by, lead_time_business_days=lead, calendar=US) == expected


def test_timeline_over_thanksgiving() -> None:
    # Had on Mon 2 Nov 2026, 30 days: last day covered Tue 1 Dec, first without Wed 2 Dec; − 2 shipping
    # − 2 buffer = Sat 28 Nov → ready by Fri 27; 3 business days before (Thanksgiving does not count) → Mon 23.
    assert timeline(
        run_out_date(date(2026, 11, 2), 30), shipping_days=2, buffer_days=2, lead_time_business_days=3, calendar=US
    ) == RefillTimeline(
        run_out=date(2026, 12, 1),
        ready_by=date(2026, 11, 27),
        order_by=date(2026, 11, 23),
    )


def test_timeline_over_christmas_and_new_year() -> None:
    # Had on 6 Dec 2026, 30 days → last day covered Mon 4 Jan 2027; first without Tue 5; − 1 − 2 = Sat 2 Jan
    # → ready Thu 31 Dec (1 Jan closed); 4 business days before: Wed 30, Tue 29, Mon 28, Thu 24 (Christmas skipped).
    result = timeline(run_out_date(date(2026, 12, 6), 30), shipping_days=1, buffer_days=2, lead_time_business_days=4,
                      calendar=US)
    assert result.run_out == date(2027, 1, 4)
    assert result.ready_by == date(2026, 12, 31)
    assert result.order_by == date(2026, 12, 24)


def test_timeline_with_a_six_day_pharmacy() -> None:
    cal = BusinessCalendar(weekdays=frozenset(range(6)))  # open Saturdays, no holidays
    result = timeline(run_out_date(date(2026, 11, 2), 30), shipping_days=2, buffer_days=2, lead_time_business_days=3,
                      calendar=cal)
    assert result.ready_by == date(2026, 11, 28)  # Saturday is a working day here
    assert result.order_by == date(2026, 11, 25)  # Fri 27, Thu 26, Wed 25


@given(
    dispensed=dates,
    days=st.integers(min_value=1, max_value=180),
    shipping=st.integers(min_value=0, max_value=14),
    buffer=st.integers(min_value=0, max_value=14),
    lead=st.integers(min_value=0, max_value=15),
)
def test_timeline_properties(dispensed: date, days: int, shipping: int, buffer: int, lead: int) -> None:
    t = timeline(run_out_date(dispensed, days), shipping_days=shipping, buffer_days=buffer,
                 lead_time_business_days=lead, calendar=US)
    assert t.run_out == dispensed + timedelta(days=days - 1)  # the last day covered
    first_without = t.run_out + timedelta(days=1)
    assert US.is_open(t.ready_by) and US.is_open(t.order_by)
    assert t.order_by <= t.ready_by <= first_without - timedelta(days=shipping + buffer)
    assert US.business_days_between(t.order_by, t.ready_by) == lead
    # A request on the order-by date is ready on the ready-by date; it arrives before run-out.
    assert ready_date(t.order_by, lead_time_business_days=lead, calendar=US) == t.ready_by
    arrival = delivery_date(t.order_by, lead_time_business_days=lead, calendar=US, shipping_days=shipping)
    assert arrival <= first_without - timedelta(days=buffer) + timedelta(days=1)  # a Sunday slips at most one day
    # A request on the next open day is late.
    late = US.add_business_days(t.order_by, 1)
    assert ready_date(late, lead_time_business_days=lead, calendar=US) > t.ready_by


# -- too soon (the supply model's rule, through a single dispensing) ----------------------------


def earliest_dispense_date(previous: date, days: int, percent: int) -> date:
    """The first day the next fill may reach a patient who had one `days`-day fill on `previous`."""
    auth = Authorization(days_per_fill=max(days, 1), refills=1, expiry_date=date(2040, 1, 1))
    earliest = supply(auth, [Dispensing(previous, days)], too_soon_percent=percent).earliest_next_start
    assert earliest is not None
    return earliest


def is_too_soon(day: date, previous: date, days: int, percent: int) -> bool:
    auth = Authorization(days_per_fill=days, refills=1, expiry_date=date(2040, 1, 1))
    return supply(auth, [Dispensing(previous, days)], too_soon_percent=percent).is_too_soon(day)


@pytest.mark.parametrize(
    ("days", "percent", "expected_offset"),
    [
        (30, 80, 24),
        (28, 80, 23),  # 22.4 rounds up: never earlier than the percentage says
        (90, 75, 68),  # 67.5 → 68
        (45, 80, 36),
        (30, 100, 30),
        (30, 0, 0),
        (1, 80, 1),
    ],
)
def test_earliest_dispense_date(days: int, percent: int, expected_offset: int) -> None:
    start = date(2026, 11, 2)
    assert earliest_dispense_date(start, days, percent) == start + timedelta(days=expected_offset)


def test_is_too_soon_boundaries() -> None:
    previous = date(2026, 11, 2)  # 30 days at 80% → earliest 26 Nov (Thanksgiving: a calendar rule, not this one)
    assert is_too_soon(date(2026, 11, 25), previous, 30, 80) is True
    assert is_too_soon(date(2026, 11, 26), previous, 30, 80) is False
    assert is_too_soon(date(2026, 12, 20), previous, 30, 80) is False


@pytest.mark.parametrize(
    ("days", "percent", "field"),
    [(0, 80, "days_supply"), (30, 101, "too_soon_percent"), (30, -1, "too_soon_percent")],
)
def test_too_soon_refuses_bad_inputs(days: int, percent: int, field: str) -> None:
    with pytest.raises(SupplyInputInvalid) as info:
        earliest_dispense_date(date(2026, 11, 2), days, percent)
    assert list(info.value.fields) == [field]


@given(
    previous=dates,
    days=st.integers(min_value=1, max_value=365),
    percent=st.integers(min_value=0, max_value=100),
)
def test_earliest_dispense_is_the_integer_ceiling(previous: date, days: int, percent: int) -> None:
    earliest = earliest_dispense_date(previous, days, percent)
    used = (earliest - previous).days
    assert used * 100 >= days * percent  # at least the percentage is used…
    assert (used - 1) * 100 < days * percent or used == 0  # …and not a day more
    assert 0 <= used <= days
    assert not is_too_soon(earliest, previous, days, percent)
    if used > 0:
        assert is_too_soon(earliest - timedelta(days=1), previous, days, percent)


# -- ready and delivery dates ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_day", "lead", "expected"),
    [
        (date(2026, 11, 23), 2, date(2026, 11, 25)),  # Monday: work starts the same day
        (date(2026, 11, 24), 2, date(2026, 11, 27)),  # Tue + 2 skips Thanksgiving
        (date(2026, 11, 21), 2, date(2026, 11, 25)),  # Saturday: work starts Monday
        (date(2026, 11, 26), 1, date(2026, 11, 30)),  # Thanksgiving: starts Fri 27, ready Mon 30
        (date(2026, 12, 31), 1, date(2027, 1, 4)),  # year end
        (date(2026, 11, 22), 0, date(2026, 11, 23)),  # no lead time: ready on the next open day
        (date(2026, 11, 23), 0, date(2026, 11, 23)),
    ],
)
def test_ready_date(request_day: date, lead: int, expected: date) -> None:
    assert ready_date(request_day, lead_time_business_days=lead, calendar=US) == expected
    # shipping days never move the ready date
    assert ready_date(request_day, lead_time_business_days=lead, calendar=US, shipping_days=3) == expected


@pytest.mark.parametrize(
    ("ready", "shipping", "expected"),
    [
        (date(2026, 11, 25), 0, date(2026, 11, 25)),  # pick-up
        (date(2026, 11, 25), 2, date(2026, 11, 27)),  # carriers deliver on Thanksgiving Friday
        (date(2026, 11, 25), 3, date(2026, 11, 28)),  # Saturday delivery
        (date(2026, 11, 25), 4, date(2026, 11, 30)),  # Sunday → Monday
        (date(2026, 12, 30), 3, date(2027, 1, 2)),  # year end, Saturday
    ],
)
def test_arrival_date(ready: date, shipping: int, expected: date) -> None:
    assert arrival_date(ready, shipping) == expected


def test_delivery_date_is_ready_date_plus_shipping() -> None:
    # Requested Fri 20 Nov 2026, 3 business days: Mon 23, Tue 24, Wed 25 → ready Wed 25; 4 days → Sun → Mon 30.
    assert delivery_date(date(2026, 11, 20), lead_time_business_days=3, calendar=US, shipping_days=4) == date(
        2026, 11, 30
    )
    assert delivery_date(date(2026, 11, 20), lead_time_business_days=3, calendar=US) == date(2026, 11, 25)


def test_ready_and_delivery_refuse_negative_inputs() -> None:
    with pytest.raises(RefillInputInvalid):
        ready_date(date(2026, 11, 20), lead_time_business_days=-1, calendar=US)
    with pytest.raises(ValidationFailed):
        delivery_date(date(2026, 11, 20), lead_time_business_days=1, calendar=US, shipping_days=-1)


@given(ready=dates, shipping=st.integers(min_value=1, max_value=14))
def test_arrival_is_never_a_sunday_and_at_most_a_day_late(ready: date, shipping: int) -> None:
    arrival = arrival_date(ready, shipping)
    assert arrival.weekday() != 6
    assert 0 <= (arrival - ready).days - shipping <= 1


# -- refills left and eligibility -------------------------------------------------------------


@pytest.mark.parametrize(
    ("authorized", "used", "expected"),
    [(None, 0, 0), (0, 0, 0), (3, 0, 3), (3, 2, 1), (3, 3, 0), (2, 5, 0)],
)
def test_refills_left(authorized: int | None, used: int, expected: int) -> None:
    assert refills_left(authorized, used) == expected


def test_refills_left_refuses_negative_counts() -> None:
    with pytest.raises(RefillInputInvalid):
        refills_left(-1, 0)
    with pytest.raises(RefillInputInvalid):
        refills_left(3, -1)


TODAY = date(2026, 11, 23)
BASE = {
    "status": "active",
    "refills_authorized": 3,
    "refills_used": 1,
    "expiry_date": date(2027, 6, 1),
    "today": TODAY,
    "order_in_progress": False,
    "open_request": False,
}


def eligibility(**changes: object) -> Eligibility:
    """The rule for a 30-day prescription of which the original and `refills_used` refills were dispensed."""
    params = {**BASE, **changes}
    authorized, used = params.pop("refills_authorized"), params.pop("refills_used")
    auth = Authorization(days_per_fill=30, refills=authorized, expiry_date=params.pop("expiry_date"))  # type: ignore[arg-type]
    days = min(30 * (1 + used), auth.days)  # type: ignore[operator]
    current = supply_from_cache(auth, days_dispensed=days, dispensings=1, run_out=None, last_days=30)
    return refill_eligibility(supply=current, **params)  # type: ignore[arg-type]


def test_the_rest_of_a_partial_fill_may_be_asked_for_with_no_refills_left() -> None:
    """A 60-day fill dispensed as 14 days (BUD): 46 days are still owed on it, so it is not "no refills"."""
    auth = Authorization(days_per_fill=60, refills=0, expiry_date=date(2027, 6, 1))
    current = supply(auth, [Dispensing(date(2026, 11, 9), 14)])
    assert current.refills_left == 0 and current.days_owed == 46
    result = refill_eligibility(status="active", supply=current, today=TODAY, order_in_progress=False,
                                open_request=False)
    assert result.ok is True


def test_eligible() -> None:
    assert eligibility() == Eligibility(True, "ok", "You can request this refill.", False)


@pytest.mark.parametrize("status", ["on_hold", "discontinued", "replaced", "something_new"])
def test_inactive_prescriptions_are_not_renewable_by_the_patient(status: str) -> None:
    result = eligibility(status=status, refills_authorized=0, order_in_progress=True)
    assert result == Eligibility(
        False, "inactive", "This prescription is not active; please call the pharmacy.", needs_renewal=False
    )


def test_in_progress_wins_over_everything_but_inactive() -> None:
    result = eligibility(
        order_in_progress=True, open_request=True, refills_authorized=None, expiry_date=date(2026, 1, 1)
    )
    assert (result.ok, result.code, result.needs_renewal) == (False, "in_progress", False)
    assert result.message == "A refill is already being prepared."


def test_already_requested() -> None:
    result = eligibility(open_request=True, refills_authorized=0)
    assert (result.ok, result.code, result.needs_renewal) == (False, "already_requested", False)


def test_expired_needs_renewal() -> None:
    result = eligibility(expiry_date=date(2026, 11, 22))
    assert (result.ok, result.code, result.needs_renewal) == (False, "expired", True)
    assert result.message == (
        "This prescription expired on November 22, 2026; we will ask your prescriber for a renewal."
    )


def test_may_be_filled_on_its_expiry_date() -> None:
    assert eligibility(expiry_date=TODAY).ok is True


@pytest.mark.parametrize(("authorized", "used"), [(None, 0), (0, 0), (2, 2), (1, 4)])
def test_no_refills_left_needs_renewal(authorized: int | None, used: int) -> None:
    # A missing refill count means zero, never unlimited.
    result = eligibility(refills_authorized=authorized, refills_used=used)
    assert result == Eligibility(
        False, "no_refills", "No refills remain; we will ask your prescriber for a renewal.", needs_renewal=True
    )


def test_expiry_is_reported_before_the_refill_count() -> None:
    assert eligibility(expiry_date=date(2026, 1, 1), refills_authorized=0).code == "expired"


def test_status_enum_values_are_accepted() -> None:
    from enum import StrEnum

    class Status(StrEnum):
        ACTIVE = "active"
        ON_HOLD = "on_hold"

    assert eligibility(status=Status.ACTIVE).ok is True
    assert eligibility(status=Status.ON_HOLD).code == "inactive"


@given(
    status=st.sampled_from(["active", "on_hold", "discontinued", "replaced"]),
    authorized=st.none() | st.integers(min_value=0, max_value=12),
    used=st.integers(min_value=0, max_value=15),
    expiry_offset=st.integers(min_value=-400, max_value=400),
    in_progress=st.booleans(),
    requested=st.booleans(),
)
def test_eligibility_properties(
    status: str, authorized: int | None, used: int, expiry_offset: int, in_progress: bool, requested: bool
) -> None:
    result = eligibility(
        status=status,
        refills_authorized=authorized,
        refills_used=used,
        expiry_date=TODAY + timedelta(days=expiry_offset),
        order_in_progress=in_progress,
        open_request=requested,
    )
    should_be_ok = (
        status == "active"
        and not in_progress
        and not requested
        and expiry_offset >= 0
        and refills_left(authorized, used) > 0
    )
    assert result.ok is should_be_ok
    assert (result.code == "ok") is result.ok
    assert result.needs_renewal is (result.code in {"expired", "no_refills"})
    assert result.message


def test_long_date() -> None:
    assert long_date(date(2027, 1, 4)) == "January 4, 2027"
