"""Refill rules (pure): run-out, ready-by and order-by dates, too-soon dispensing, eligibility."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from enum import StrEnum

from pharmacy.core.calendar import BusinessCalendar
from pharmacy.core.errors import ValidationFailed


class RefillRequestState(StrEnum):
    OPEN = "open"
    APPROVED = "approved"
    DECLINED = "declined"
    AWAITING_RENEWAL = "awaiting_renewal"
    CANCELLED = "cancelled"


class RequestSource(StrEnum):
    LINK = "link"
    API = "api"
    STAFF = "staff"
    PORTAL = "portal"  # the patient, signed in to the portal
    SMS = "sms"  # the patient texted REFILL from their verified number
    AUTO = "auto"  # auto-refill, on the order-by date, for a patient who enrolled


class RenewalState(StrEnum):
    NEEDED = "needed"  # a task: the pharmacist should contact the prescriber
    SENT = "sent"  # the renewal request went to the prescriber
    RECEIVED = "received"
    CANCELLED = "cancelled"


# ---------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------


class RefillInputInvalid(ValidationFailed):
    """A refill-timing input that cannot describe a real fill (e.g. a 0-day supply)."""


def _require_int(value: int, name: str, *, minimum: int, what: str, maximum: int | None = None) -> None:
    """Refuse bools/floats and out-of-range values with a message a pharmacist can act on."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise RefillInputInvalid(f"{what} must be a whole number.", fields={name: f"{what} must be a whole number."})
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"at least {minimum}" if maximum is None else f"between {minimum} and {maximum}"
        raise RefillInputInvalid(f"{what} must be {bound}.", fields={name: f"{what} must be {bound}."})


# ---------------------------------------------------------------------------------------
# Timeline: run-out → ready-by → order-by
# ---------------------------------------------------------------------------------------


def run_out_date(dispensed_on: date, days_supply: int) -> date:
    """The first day without medication.

    # DOMAIN.md "Refill timing": run-out date = date dispensed (or delivered) + days supply.
    A 30-day fill dispensed on 1 March covers 1–30 March, so it runs out on 31 March.
    """
    _require_int(days_supply, "days_supply", minimum=1, what="Days supply")
    return dispensed_on + timedelta(days=days_supply)


def ready_by_date(run_out: date, *, shipping_days: int, buffer_days: int, calendar: BusinessCalendar) -> date:
    """The last day the next fill may be finished.

    # DOMAIN.md "Refill timing": ready before run-out − shipping days − a safety buffer.
    Shipping and buffer are calendar days (parcels and patients do not stop at weekends);
    the result then moves back to the previous open day, because a fill can only be
    finished on a day the pharmacy is working.
    """
    _require_int(shipping_days, "shipping_days", minimum=0, what="Shipping days")
    _require_int(buffer_days, "buffer_days", minimum=0, what="Safety buffer days")
    return calendar.previous_open_day(run_out - timedelta(days=shipping_days + buffer_days))


def order_by_date(ready_by: date, *, lead_time_business_days: int, calendar: BusinessCalendar) -> date:
    """The last day a refill request still lets the pharmacy finish by `ready_by`.

    # DOMAIN.md "Refill timing": order-by = ready-by − lead time, counted in business days
    (weekends and pharmacy holidays do not count). Compounding starts on the request day,
    so a request on the order-by date is ready exactly on the ready-by date
    (`ready_date(order_by_date(r)) == r` for an open r).
    """
    _require_int(lead_time_business_days, "lead_time_business_days", minimum=0, what="Lead time")
    return calendar.subtract_business_days(ready_by, lead_time_business_days)


@dataclass(frozen=True)
class RefillTimeline:
    """The four dates a fill implies; each one is what a reminder or a page shows the patient."""

    dispensed_on: date
    run_out: date
    ready_by: date
    order_by: date


def timeline(
    dispensed_on: date,
    days_supply: int,
    *,
    shipping_days: int,
    buffer_days: int,
    lead_time_business_days: int,
    calendar: BusinessCalendar,
) -> RefillTimeline:
    """Run-out, ready-by and order-by for one fill, in one call so they are never computed apart."""
    run_out = run_out_date(dispensed_on, days_supply)
    ready_by = ready_by_date(run_out, shipping_days=shipping_days, buffer_days=buffer_days, calendar=calendar)
    order_by = order_by_date(ready_by, lead_time_business_days=lead_time_business_days, calendar=calendar)
    return RefillTimeline(dispensed_on=dispensed_on, run_out=run_out, ready_by=ready_by, order_by=order_by)


# ---------------------------------------------------------------------------------------
# "Too soon" applies to dispensing, not to asking
# ---------------------------------------------------------------------------------------


def earliest_dispense_date(previous_dispensed_on: date, previous_days_supply: int, too_soon_percent: int) -> date:
    """The first day the next fill may be dispensed.

    # DOMAIN.md "Refill timing": a fill is not dispensed before about 80% (75–80%) of the
    previous supply has been used. Days used are rounded *up* (integer ceiling, no floats):
    80% of a 45-day supply is 36 days, of a 28-day supply 22.4 → 23 days, so the rule never
    lets a fill out earlier than the percentage says.
    """
    _require_int(previous_days_supply, "days_supply", minimum=1, what="Days supply")
    _require_int(too_soon_percent, "too_soon_percent", minimum=0, maximum=100, what="Too-soon percent")
    days_used = -(-previous_days_supply * too_soon_percent // 100)  # ceil without floats
    return previous_dispensed_on + timedelta(days=days_used)


def is_too_soon(
    dispense_on: date, previous_dispensed_on: date, previous_days_supply: int, too_soon_percent: int
) -> bool:
    """True when dispensing on `dispense_on` would be before the earliest dispense date.

    A pharmacist may still override with a reason (DOMAIN.md); that decision lives in the
    service, this rule only says whether an override is needed.
    """
    return dispense_on < earliest_dispense_date(previous_dispensed_on, previous_days_supply, too_soon_percent)


# ---------------------------------------------------------------------------------------
# When will a request made today be ready / arrive?
# ---------------------------------------------------------------------------------------

# Carriers deliver Monday to Saturday; a parcel due on a Sunday arrives on Monday.
# Carrier holidays are deliberately not modelled: the date is an estimate shown to the
# patient, and the safety buffer absorbs a day's slip.
CARRIER_DELIVERY_WEEKDAYS: frozenset[int] = frozenset(range(6))


def ready_date(
    request_day: date, *, lead_time_business_days: int, calendar: BusinessCalendar, shipping_days: int = 0
) -> date:
    """The day an order requested on `request_day` will be ready (to hand over or to ship).

    # DOMAIN.md "Refill timing": compounding takes a lead time in business days.
    Compounding starts on the request day when the pharmacy is open, else on the next open
    day; the order is ready `lead_time_business_days` open days after that start.
    `shipping_days` does not move the ready date: it is accepted (and validated) so that
    `ready_date` and `delivery_date` take the same keywords — use `delivery_date` for the
    day the parcel arrives.
    """
    _require_int(lead_time_business_days, "lead_time_business_days", minimum=0, what="Lead time")
    _require_int(shipping_days, "shipping_days", minimum=0, what="Shipping days")
    start = calendar.next_open_day(request_day)
    return calendar.add_business_days(start, lead_time_business_days)


def arrival_date(ready_on: date, shipping_days: int) -> date:
    """The day a fill ready on `ready_on` reaches the patient.

    0 shipping days means pick-up: the patient has it the day it is ready. Otherwise the
    parcel leaves the day it is ready and takes `shipping_days` calendar days, moved to the
    next day carriers deliver (Monday–Saturday).
    """
    _require_int(shipping_days, "shipping_days", minimum=0, what="Shipping days")
    if shipping_days == 0:
        return ready_on
    day = ready_on + timedelta(days=shipping_days)
    while day.weekday() not in CARRIER_DELIVERY_WEEKDAYS:
        day += timedelta(days=1)
    return day


def delivery_date(
    request_day: date, *, lead_time_business_days: int, calendar: BusinessCalendar, shipping_days: int = 0
) -> date:
    """The day an order requested on `request_day` reaches the patient: ready date + shipping."""
    ready = ready_date(request_day, lead_time_business_days=lead_time_business_days, calendar=calendar)
    return arrival_date(ready, shipping_days)


# ---------------------------------------------------------------------------------------
# May the patient ask for a refill of this prescription?
# ---------------------------------------------------------------------------------------

ACTIVE_STATUS = "active"

_MONTHS = (
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
)


def long_date(d: date) -> str:
    """"December 2, 2026": how a patient reads a date (fixed English, never the server's locale)."""
    return f"{_MONTHS[d.month - 1]} {d.day}, {d.year}"


@dataclass(frozen=True)
class Eligibility:
    """The answer shown to a patient who asks for a refill.

    `code` is stable (pages and the JSON API branch on it); `message` is the sentence the
    patient reads; `needs_renewal` says the pharmacy should ask the prescriber for a renewal
    (the patient cannot fix it, but the pharmacy can).
    """

    ok: bool
    code: str
    message: str
    needs_renewal: bool


def refills_left(refills_authorized: int | None, refills_used: int) -> int:
    """Refills still allowed; never negative.

    # DOMAIN.md "Refill timing": a missing refill count means zero, never unlimited.
    """
    authorized = 0 if refills_authorized is None else refills_authorized
    _require_int(authorized, "refills_authorized", minimum=0, what="Refills authorized")
    _require_int(refills_used, "refills_used", minimum=0, what="Refills used")
    return max(0, authorized - refills_used)


def refill_eligibility(
    *,
    status: str,
    refills_authorized: int | None,
    refills_used: int,
    expiry_date: date,
    today: date,
    order_in_progress: bool,
    open_request: bool,
) -> Eligibility:
    """Whether a refill may be requested today, checked in the order that tells the patient most.

    # DOMAIN.md "Refill timing": a refill is possible only while the prescription is
    unexpired and refills remain (a missing count means zero); with none left the pharmacy
    asks the prescriber for a renewal and tells the patient; a refill already in progress is
    shown as such and cannot be requested twice.

    Order: a prescription that is not active (on hold, discontinued, replaced — or any
    status this rule does not know, failing safe) comes first, because nothing else matters
    and only the pharmacy can explain it; then work already under way (an order being made,
    a request already open), so a patient is never told to wait for a renewal of a fill that
    is already coming; then expiry; then the refill count. A prescription may be filled on
    its expiry date, not after.
    """
    if str(status) != ACTIVE_STATUS:
        return Eligibility(False, "inactive", "This prescription is not active; please call the pharmacy.", False)
    if order_in_progress:
        return Eligibility(False, "in_progress", "A refill is already being prepared.", False)
    if open_request:
        return Eligibility(
            False, "already_requested", "You have already asked for this refill; the pharmacy is on it.", False
        )
    if expiry_date < today:
        return Eligibility(
            False,
            "expired",
            f"This prescription expired on {long_date(expiry_date)}; we will ask your prescriber for a renewal.",
            True,
        )
    if refills_left(refills_authorized, refills_used) == 0:
        return Eligibility(False, "no_refills", "No refills remain; we will ask your prescriber for a renewal.", True)
    return Eligibility(True, "ok", "You can request this refill.", False)
