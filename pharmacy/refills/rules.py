"""Refill rules (pure): run-out, ready-by and order-by dates, too-soon dispensing, eligibility."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from enum import StrEnum

from pharmacy.compounding.rules import DeliveryMethod
from pharmacy.core.calendar import BusinessCalendar
from pharmacy.core.errors import ValidationFailed
from pharmacy.supply.rules import CARRIER_DELIVERY_WEEKDAYS, Supply, arrival_date, earliest_leaving_day

__all__ = ["CARRIER_DELIVERY_WEEKDAYS", "arrival_date"]  # re-exported: when a parcel arrives is a supply fact


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
    """The last day a single fill covers: a 30-day fill the patient has on 1 March covers 1–30 March.

    # docs/domain.md "Refill timing": run-out date = the last day the patient's supply covers. How fills
    stack (an early fill extends the run-out, a late one starts on its own day) is the supply model's:
    supply/rules.run_out_after.
    """
    _require_int(days_supply, "days_supply", minimum=1, what="Days supply")
    return dispensed_on + timedelta(days=days_supply - 1)


def ready_by_date(run_out: date, *, shipping_days: int, buffer_days: int, calendar: BusinessCalendar) -> date:
    """The last day the next fill may be finished, for supply whose last covered day is `run_out`.

    # docs/domain.md "Refill timing": ready before run-out − shipping days − a safety buffer. Counted back
    from the first day without medicine (run_out + 1): with a 2-day buffer a pickup patient whose last
    dose is on the 30th has it ready by the 29th. Shipping and buffer are calendar days (parcels and
    patients do not stop at weekends); the result then moves back to the previous open day, because a
    fill can only be finished on a day the pharmacy is working.
    """
    _require_int(shipping_days, "shipping_days", minimum=0, what="Shipping days")
    _require_int(buffer_days, "buffer_days", minimum=0, what="Safety buffer days")
    return calendar.previous_open_day(run_out + timedelta(days=1 - shipping_days - buffer_days))


def order_by_date(ready_by: date, *, lead_time_business_days: int, calendar: BusinessCalendar) -> date:
    """The last day a refill request still lets the pharmacy finish by `ready_by`.

    # docs/domain.md "Refill timing": order-by = ready-by − lead time, counted in business days
    (weekends and pharmacy holidays do not count). Compounding starts on the request day,
    so a request on the order-by date is ready exactly on the ready-by date
    (`ready_date(order_by_date(r)) == r` for an open r).
    """
    _require_int(lead_time_business_days, "lead_time_business_days", minimum=0, what="Lead time")
    return calendar.subtract_business_days(ready_by, lead_time_business_days)


@dataclass(frozen=True)
class RefillTimeline:
    """The three dates a supply implies; each one is what a reminder or a page shows the patient."""

    run_out: date  # last day covered
    ready_by: date
    order_by: date


def timeline(
    run_out: date,
    *,
    shipping_days: int,
    buffer_days: int,
    lead_time_business_days: int,
    calendar: BusinessCalendar,
) -> RefillTimeline:
    """Ready-by and order-by for supply that runs out (last day covered) on `run_out`, computed together."""
    ready_by = ready_by_date(run_out, shipping_days=shipping_days, buffer_days=buffer_days, calendar=calendar)
    order_by = order_by_date(ready_by, lead_time_business_days=lead_time_business_days, calendar=calendar)
    return RefillTimeline(run_out=run_out, ready_by=ready_by, order_by=order_by)


def next_fill_delivery(open_request: DeliveryMethod | str | None, preference: DeliveryMethod | str) -> DeliveryMethod:
    """How the next fill will travel — the one answer for every date that depends on it (the order-by date of the
    reminders, the portal, the calendar, auto-refill, the patient page, the production plan): the method of the
    refill request waiting on the prescription when there is one (the patient chose it when asking), else the
    patient's delivery preference.

    Never the delivery method of the last fill: a patient who has their refills shipped but collected this one in
    person would otherwise be told to order by a day that leaves no time for the parcel (their shipping days
    swallowing the safety buffer). The SQL form, for reads that group many prescriptions, is
    supply/reads.next_fill_delivery_sql.
    """
    return DeliveryMethod(open_request) if open_request else DeliveryMethod(preference)


def shipping_days_for(method: DeliveryMethod | str, shipping_days: int) -> int:
    """The days in the post a fill travelling by `method` takes: the patient's shipping days, or none for pick-up."""
    return int(shipping_days or 0) if DeliveryMethod(method) == DeliveryMethod.SHIP else 0


# ---------------------------------------------------------------------------------------
# When will a request made today be ready / arrive?
# ---------------------------------------------------------------------------------------

def ready_date(
    request_day: date, *, lead_time_business_days: int, calendar: BusinessCalendar, shipping_days: int = 0
) -> date:
    """The day an order requested on `request_day` will be ready (to hand over or to ship).

    # docs/domain.md "Refill timing": compounding takes a lead time in business days.
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


def promised_dates(ready_on: date, earliest_start: date | None, *, shipping_days: int,
                   calendar: BusinessCalendar) -> tuple[date, date | None]:
    """The day a fill is ready for pick-up (or leaves, when `shipping_days` > 0) and the day it arrives, as the
    patient is told: the lead time's ready day, moved to the first open day the too-soon rule lets it out — the
    patient may have it from `earliest_start`, a parcel may leave its shipping days before that. The lead time's
    day alone promised an early asker a day the pharmacy would then refuse without a pharmacist's override."""
    out = ready_on
    allowed = first_dispense_day(earliest_start, shipping_days=shipping_days)
    if allowed is not None and allowed > ready_on:
        out = calendar.next_open_day(allowed)
    return out, (arrival_date(out, shipping_days) if shipping_days else None)


def first_dispense_day(earliest_start: date | None, *, shipping_days: int) -> date | None:
    """Too soon's first day to dispense a fill: the day the patient may have it (`earliest_start`) when it is picked
    up, or the day a parcel may leave so as to reach them no earlier (orders store the same:
    compounding/services.create_order)."""
    if earliest_start is None or shipping_days == 0:
        return earliest_start
    return earliest_leaving_day(earliest_start, shipping_days)


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

    # docs/domain.md "Refill timing": a missing refill count means zero, never unlimited.
    """
    authorized = 0 if refills_authorized is None else refills_authorized
    _require_int(authorized, "refills_authorized", minimum=0, what="Refills authorized")
    _require_int(refills_used, "refills_used", minimum=0, what="Refills used")
    return max(0, authorized - refills_used)


def refill_eligibility(
    *,
    status: str,
    supply: Supply,
    today: date,
    order_in_progress: bool,
    open_request: bool,
) -> Eligibility:
    """Whether a refill may be requested today, checked in the order that tells the patient most.

    # docs/domain.md "Refill timing": a refill is possible only while the prescription is
    unexpired and days remain on it (a missing refill count means zero; the rest of a partial fill is
    still owed and may be asked for); with none left the pharmacy asks the prescriber for a renewal and
    tells the patient; a refill already in progress is shown as such and cannot be requested twice.

    Order: a prescription that is not active (on hold, discontinued, replaced — or any
    status this rule does not know, failing safe) comes first, because nothing else matters
    and only the pharmacy can explain it; then work already under way (an order being made,
    a request already open), so a patient is never told to wait for a renewal of a fill that
    is already coming; then expiry; then what is left. A prescription may be filled on
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
    stop = supply.stop_reason(today)
    if stop == "expired":
        expiry = supply.authorization.expiry_date
        return Eligibility(
            False,
            "expired",
            f"This prescription expired on {long_date(expiry)}; we will ask your prescriber for a renewal.",
            True,
        )
    if stop == "used_up":
        return Eligibility(False, "no_refills", "No refills remain; we will ask your prescriber for a renewal.", True)
    return Eligibility(True, "ok", "You can request this refill.", False)


def staff_reason(code: str, message: str, *, rx_number: str, status: str, expiry_date: date) -> str:
    """Why a request cannot become an order, in the pharmacist's words (the patient's are in `refill_eligibility`)."""
    if code == "expired":
        return f"Prescription {rx_number} expired on {long_date(expiry_date)}: ask the prescriber for a renewal instead."
    if code == "no_refills":
        return f"No refills remain on {rx_number}: ask the prescriber for a renewal instead."
    if code == "in_progress":
        return (f"A fill of {rx_number} is already in progress: decline this request saying so, "
                "or cancel that order first.")
    if code == "inactive":
        return f"Prescription {rx_number} is {status.replace('_', ' ')}; no fill can be made."
    return message


def renewal_reason(current: Supply, today: date) -> str:
    """Which of the two reasons a renewal is needed — said plainly, not "one or the other"."""
    if current.days_remaining == 0:
        return "no refills left"
    if current.expired(today):
        return f"expired on {long_date(current.authorization.expiry_date)}"
    if current.expires_before_run_out():
        return f"expires on {long_date(current.authorization.expiry_date)}, before the supply runs out"
    return "renewal requested"
