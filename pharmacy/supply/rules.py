"""The supply model (pure): what a prescription authorizes, what has been dispensed, and what the patient holds.

One model, read by everything that asks about supply: the too-soon rule, reminder planning, the refill
page and its quote, the refill queue, the Today page's running-out list, renewal notices and adherence
(PDC). The prescription caches what it derives (`days_dispensed`, the latest fill, the run-out date);
those columns are written from here in the same transaction as the dispensing, never computed apart.

The rules, in the project's words (docs/domain.md, "Supply and refills"):

* A prescription authorizes `1 + refills` fills of `days_per_fill` days each. A missing refill count
  is zero, never unlimited.
* A dispensing covers some days of the authorized fill it draws from. It may be a *partial* of that
  fill (a beyond-use-date cap, short stock, the patient's wish): the rest is still owed on the same
  fill, and the next dispensing draws it first. A fill — a refill — is used up when its authorized days
  have been dispensed, not at each partial (the usual practice for partial fills of a non-controlled
  prescription). Dispensings never straddle two authorized fills.
* Run-out is the **last day covered**. Each dispensing's days are added after the supply on hand ends:
  an early fill extends the run-out, it does not restart it; a fill after a gap starts on the day the
  patient has it (the gap stays a gap).
* What the patient holds on a day is the covered span that day falls in, not "everything up to the run-out": a
  parcel on its way after a gap (or one that will arrive after the bottle in hand runs out) covers days from its
  arrival only. The model keeps the first day of the latest span (`covered_from`) and the last day covered before
  it (`prior_run_out`), so a patient out of medicine while a refill travels is shown as out, with its arrival.
* "Too soon" is about dispensing, not asking: the patient should have used about 80 % of the latest
  dispensing before the next one reaches them — i.e. hold no more than the other 20 % of it on that day.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta

from pharmacy.core.errors import ValidationFailed


class SupplyInputInvalid(ValidationFailed):
    """Numbers that cannot describe a real prescription or dispensing (a 0-day fill, negative refills)."""


def _whole(value: int, name: str, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        msg = f"{name.replace('_', ' ').capitalize()} must be a whole number, at least {minimum}."
        raise SupplyInputInvalid(msg, fields={name: msg})


@dataclass(frozen=True)
class Authorization:
    """What the prescriber wrote: fills of `days_per_fill` days, `refills` of them after the first, until expiry."""

    days_per_fill: int
    refills: int | None
    expiry_date: date

    def __post_init__(self) -> None:
        _whole(self.days_per_fill, "days_per_fill", minimum=1)
        if self.refills is not None:
            _whole(self.refills, "refills", minimum=0)

    @property
    def fills(self) -> int:
        """Fills authorized: the original and its refills (a missing refill count is zero)."""
        return 1 + (self.refills or 0)

    @property
    def days(self) -> int:
        return self.fills * self.days_per_fill


@dataclass(frozen=True)
class Dispensing:
    """One dispensing: the day the patient has it (the pickup day, or the parcel's arrival) and its days."""

    starts_on: date
    days: int

    def __post_init__(self) -> None:
        _whole(self.days, "days_supply", minimum=1)


def first_dose_day(previous_run_out: date | None, starts_on: date) -> date:
    """The first day a dispensing's own doses are taken: the day the patient has it or, when the supply on hand lasts
    past that (an early or on-time refill), the day after it runs out — the new bottle waits for the old one. Its
    BUD, its titration chart and its run-out all count from here."""
    return starts_on if previous_run_out is None else max(starts_on, previous_run_out + timedelta(days=1))


def run_out_after(previous_run_out: date | None, starts_on: date, days: int) -> date:
    """The last day covered once a dispensing of `days` starting `starts_on` joins supply ending `previous_run_out`.

    Early: its days follow the supply on hand. After a gap: it starts on its own day.
    """
    _whole(days, "days_supply", minimum=1)
    return first_dose_day(previous_run_out, starts_on) + timedelta(days=days - 1)


@dataclass(frozen=True)
class Held:
    """Supply held from before a prescription's own dispensings (a replaced prescription's, carried over): its last
    day covered, the first day of that span (None: as far back as matters) and the last day covered before it."""

    run_out: date | None = None
    covered_from: date | None = None
    prior_run_out: date | None = None


def _walked(dispensings: Sequence[Dispensing], held: Held) -> tuple[list[Dispensing], date | None, Held]:
    """What to walk, the run-out before it, and the supply held before that: the held supply's latest span joins the
    walk as if it were a dispensing when its first day is known — a parcel of it may still be on its way when a later
    dispensing reaches the patient (a bottle at the counter, a replacement's first fill), and the patient takes what
    they receive first. When it is not known (covered as far back as matters) the dispensings follow it."""
    ordered = sorted(dispensings, key=lambda d: d.starts_on)
    if held.run_out is None or held.covered_from is None:
        return ordered, held.run_out, held
    span = Dispensing(starts_on=held.covered_from, days=(held.run_out - held.covered_from).days + 1)
    walk = sorted([span, *ordered], key=lambda d: d.starts_on)
    return walk, held.prior_run_out, Held(held.prior_run_out)


def dose_starts(dispensings: Sequence[Dispensing], carried: Held = Held()) -> list[date]:
    """The first day of each dispensing's own doses, in the order given, as the walk places them (a bottle taken
    before a parcel still on its way starts the day it is received; the parcel follows it)."""
    walk, run_out, _held = _walked(dispensings, carried)
    starts: dict[int, date] = {}
    for d in walk:
        first = d.starts_on if run_out is None else max(d.starts_on, run_out + timedelta(days=1))
        run_out = first + timedelta(days=d.days - 1)
        starts[id(d)] = first
    return [starts[id(d)] for d in dispensings]


def latest_span(spans: Sequence[tuple[date, date]], held: Held = Held()) -> tuple[date | None, date | None]:
    """(first day of the latest covered span, last day covered before that span) once `spans` (from
    covered_spans, in order) follow the supply `held` from before. A span that carries straight on from the held
    supply keeps its start; a gap starts a new one. (None, None) with nothing dispensed or held."""
    run_out, covered_from, prior = held.run_out, held.covered_from, held.prior_run_out
    for first, last in spans:
        if run_out is None or first > run_out + timedelta(days=1):
            covered_from, prior = first, run_out
        run_out = last
    return covered_from, prior


def covered_spans(dispensings: Sequence[Dispensing], *, carried_run_out: date | None = None) -> list[tuple[date, date]]:
    """The days the patient held medicine, as (first, last) spans, in order; overlaps shifted forward, gaps kept.

    Dispensings are taken in the order the patient received them. `carried_run_out` is supply held from
    before (a replaced prescription's last day covered): the first dispensing follows it.
    """
    spans: list[tuple[date, date]] = []
    run_out = carried_run_out
    for d in sorted(dispensings, key=lambda x: x.starts_on):
        first = d.starts_on if run_out is None else max(d.starts_on, run_out + timedelta(days=1))
        run_out = first + timedelta(days=d.days - 1)
        if spans and first == spans[-1][1] + timedelta(days=1):
            spans[-1] = (spans[-1][0], run_out)
        else:
            spans.append((first, run_out))
    return spans


def days_covered_between(spans: Sequence[tuple[date, date]], start: date, end: date) -> int:
    """Days of [start, end] (inclusive) inside the spans: the numerator of PDC."""
    total = 0
    for first, last in spans:
        overlap = (min(last, end) - max(first, start)).days + 1
        if overlap > 0:
            total += overlap
    return total


# Carriers deliver Monday to Saturday; a parcel due on a Sunday arrives on Monday.
# Carrier holidays are deliberately not modelled: the date is an estimate shown to the
# patient, and the safety buffer absorbs a day's slip.
CARRIER_DELIVERY_WEEKDAYS: frozenset[int] = frozenset(range(6))


def arrival_date(ready_on: date, shipping_days: int) -> date:
    """The day a fill that leaves (or is ready) on `ready_on` reaches the patient: when their supply starts.

    0 shipping days means pick-up: the patient has it the day it is ready. Otherwise the
    parcel leaves the day it is ready and takes `shipping_days` calendar days, moved to the
    next day carriers deliver (Monday–Saturday).
    """
    _whole(shipping_days, "shipping_days", minimum=0)
    if shipping_days == 0:
        return ready_on
    day = ready_on + timedelta(days=shipping_days)
    while day.weekday() not in CARRIER_DELIVERY_WEEKDAYS:
        day += timedelta(days=1)
    return day


def earliest_leaving_day(earliest_start: date, shipping_days: int) -> date:
    """The first day a fill may be dispensed (leave the pharmacy) so that it reaches the patient no earlier than
    `earliest_start`: too soon is judged on the day the patient has it, so a parcel may leave its shipping days
    before (earlier still when the arrival would fall on a Sunday and be delivered on the Monday)."""
    day = earliest_start - timedelta(days=shipping_days)
    while arrival_date(day - timedelta(days=1), shipping_days) >= earliest_start:
        day -= timedelta(days=1)
    return day


def too_soon_allowance(days: int, too_soon_percent: int) -> int:
    """Days of the latest dispensing a patient may still hold when the next one reaches them.

    80 % of a 30-day supply must be used (24 days, rounded up — never earlier than the percentage
    says), so 6 days may remain on hand.
    """
    _whole(days, "days_supply", minimum=1)
    if isinstance(too_soon_percent, bool) or not isinstance(too_soon_percent, int) or not 0 <= too_soon_percent <= 100:
        raise SupplyInputInvalid("Too-soon percent must be 0–100.", fields={"too_soon_percent": "Between 0 and 100."})
    used = -(-days * too_soon_percent // 100)  # ceiling, without floats
    return days - used


@dataclass(frozen=True)
class Supply:
    """Everything the pages, the queue, reminders and adherence ask about one prescription's supply."""

    authorization: Authorization
    days_dispensed: int
    dispensings: int
    run_out: date | None  # last day covered; None before the first dispensing (and no carried supply)
    last_days: int | None  # days of the latest dispensing (the too-soon rule's basis)
    too_soon_percent: int
    # The first day of the covered span that ends at run_out (None: unknown, or covered as far back as matters) and
    # the last day covered before that span (None: no earlier supply). A day before covered_from is not covered by
    # that span: the parcel is still on its way.
    covered_from: date | None = None
    prior_run_out: date | None = None

    # ---- what is authorized and what is left ------------------------------------------------------

    @property
    def days_remaining(self) -> int:
        """Days the prescription still allows (owed on the current fill, plus the fills not started)."""
        return max(self.authorization.days - self.days_dispensed, 0)

    @property
    def fills_completed(self) -> int:
        """Authorized fills whose days have all been dispensed."""
        return min(self.days_dispensed // self.authorization.days_per_fill, self.authorization.fills)

    @property
    def current_fill(self) -> int | None:
        """The authorized fill the next dispensing draws from (0 = the original); None when all are used."""
        return None if self.days_remaining == 0 else self.fills_completed

    @property
    def days_into_current_fill(self) -> int:
        """Days already dispensed of the current fill (0 when the next dispensing starts a fresh fill)."""
        return 0 if self.current_fill is None else self.days_dispensed - self.fills_completed * self.authorization.days_per_fill

    @property
    def partial(self) -> bool:
        """The current fill has been partly dispensed: its rest is owed."""
        return self.days_into_current_fill > 0

    @property
    def days_owed(self) -> int:
        """Days the next dispensing may cover: the rest of the current fill (a whole fill when none is started)."""
        if self.current_fill is None:
            return 0
        return self.authorization.days_per_fill - self.days_into_current_fill

    @property
    def refills_left(self) -> int:
        """Refills not yet used up. The original fill is not a refill; a refill counts as used once completed."""
        completed_refills = max(self.fills_completed - 1, 0)
        return max((self.authorization.refills or 0) - completed_refills, 0)

    # ---- dates --------------------------------------------------------------------------------------

    def arriving_on(self, day: date) -> date | None:
        """The day the supply on its way reaches the patient, when on `day` it has not yet (a parcel in transit that
        starts a new covered span: after a gap, or after the bottle in hand runs out); else None."""
        if self.run_out is None or self.covered_from is None or day >= self.covered_from:
            return None
        return self.covered_from

    def held_until(self, day: date) -> date | None:
        """The last day covered by the medicine the patient has in hand on `day` (None when they have none)."""
        if self.run_out is None or day > self.run_out:
            return None
        if self.arriving_on(day) is None:
            return self.run_out
        return self.prior_run_out if self.prior_run_out is not None and day <= self.prior_run_out else None

    def first_dose_day(self, starts_on: date) -> date:
        """The first day of a new dispensing's own doses, reaching the patient on `starts_on`: after the medicine they
        then hold — and before a parcel still on its way, which they take after it (it arrives later)."""
        if self.run_out is None:
            return starts_on
        if self.arriving_on(starts_on) is None:
            return first_dose_day(self.run_out, starts_on)
        until = self.held_until(starts_on)
        return starts_on if until is None else until + timedelta(days=1)

    def days_on_hand(self, day: date) -> int:
        """Days of medicine the patient holds on `day`, that day's dose included (0 once run out, and 0 while the
        refill that follows a gap is still on its way: days in transit are not days held)."""
        until = self.held_until(day)
        return 0 if until is None else (until - day).days + 1

    def gap_ahead(self, day: date) -> int:
        """Days without medicine, from `day` on, before the supply on its way arrives (0: none; 0 too before a first
        supply arrives — a patient who never had it is not left without)."""
        arriving = self.arriving_on(day)
        if arriving is None or self.prior_run_out is None:
            return 0
        until = self.held_until(day)
        return (arriving - max(day, until + timedelta(days=1) if until is not None else day)).days

    def ran_out(self, day: date) -> bool:
        """Out of medicine on `day`: a dispensing happened and its supply ended before that day (also while the next
        one is still on its way)."""
        return self.out_since(day) is not None

    def out_since(self, day: date) -> date | None:
        """The first day without medicine when the patient is out on `day`, else None (also None before a first
        supply arrives: never having had it is not running out)."""
        if self.run_out is None:
            return None
        if day > self.run_out:
            return self.run_out + timedelta(days=1)
        if self.arriving_on(day) is not None and self.prior_run_out is not None and day > self.prior_run_out:
            return self.prior_run_out + timedelta(days=1)
        return None

    @property
    def earliest_next_start(self) -> date | None:
        """The first day the next dispensing may reach the patient without a pharmacist's override."""
        if self.run_out is None or self.last_days is None:
            return None
        allowance = too_soon_allowance(self.last_days, self.too_soon_percent)
        return self.run_out + timedelta(days=1 - allowance)

    def is_too_soon(self, starts_on: date) -> bool:
        earliest = self.earliest_next_start
        return earliest is not None and starts_on < earliest

    def expired(self, day: date) -> bool:
        """A prescription may be filled on its expiry date, not after."""
        return day > self.authorization.expiry_date

    def stop_reason(self, day: date) -> str | None:
        """Why no further dispensing is allowed on `day`: "expired", "used_up", or None (it may be filled)."""
        if self.expired(day):
            return "expired"
        if self.days_remaining == 0:
            return "used_up"
        return None

    def expires_before_run_out(self) -> bool:
        """The prescription expires while the patient still has supply: a renewal is worth asking for early."""
        return self.run_out is not None and self.authorization.expiry_date < self.run_out

    def progress_text(self, this_days: int | None = None) -> str:
        """"14 of 60 days; 46 days still owed on this fill" — what a partial means, for the order, label and page.

        With `this_days`, it describes a dispensing of that many days made now from the current fill.
        """
        per_fill = self.authorization.days_per_fill
        before = self.days_into_current_fill
        if this_days is None:
            done, owed = before, self.days_owed
        else:
            done, owed = before + this_days, self.days_owed - this_days
        text = f"{done} of {_days(per_fill)}"
        if owed > 0:
            text += f"; {_days(owed)} still owed on this fill"
        return text


def fill_refusal(current: Supply, *, status: str, day: date, order_in_progress: bool, rx_number: str) -> str | None:
    """Why staff cannot start the next fill of a prescription today, in their words (None: they can).

    The same checks everywhere a fill starts (the prescription page's button, the API, approving a request):
    not active, a fill already being made, expired (a prescription may be filled on its expiry date, not
    after), nothing left (every authorized day dispensed).
    """
    if status != "active":
        return f"Prescription {rx_number} is {status.replace('_', ' ')}; no fill can be made."
    if order_in_progress:
        return "A fill of this prescription is already in progress."
    stop = current.stop_reason(day)
    if stop == "expired":
        expiry = current.authorization.expiry_date
        return (f"Prescription {rx_number} expired on {expiry:%b} {expiry.day}, {expiry.year}; "
                "a renewal is needed.")
    if stop == "used_up":
        return f"No refills remain on {rx_number}; ask the prescriber for a renewal."
    return None


def fill_note(current: Supply, days: int, *, capped_by_bud: date | None = None) -> str | None:
    """Why a dispensing covers fewer days than a whole fill, and what is still owed — for the order, label and record.

    None for an ordinary whole fill. `current` is the supply before this dispensing.
    """
    progress = current.progress_text(days)
    if capped_by_bud is not None:
        bud = f"{capped_by_bud:%b} {capped_by_bud.day}, {capped_by_bud.year}"
        return f"Capped at {_days(days)} by the beyond-use date ({bud}): {progress}."
    if current.partial or days < current.days_owed:
        return f"Partial fill: {progress}."
    return None


def supply(authorization: Authorization, dispensings: Sequence[Dispensing], *, too_soon_percent: int = 80,
           carried: Held = Held()) -> Supply:
    """The supply of one prescription from its dispensings (any order; the patient's receipt order counts), after
    the supply `carried` from a prescription it replaced."""
    ordered = sorted(dispensings, key=lambda d: d.starts_on)
    walk, before, held = _walked(ordered, carried)
    spans = covered_spans(walk, carried_run_out=before)
    run_out = spans[-1][1] if spans else carried.run_out
    covered_from, prior = latest_span(spans, held) if spans else (carried.covered_from, carried.prior_run_out)
    days = sum(d.days for d in ordered)
    return Supply(authorization=authorization, days_dispensed=days, dispensings=len(ordered), run_out=run_out,
                  last_days=ordered[-1].days if ordered else None, too_soon_percent=too_soon_percent,
                  covered_from=covered_from, prior_run_out=prior)


def supply_from_cache(authorization: Authorization, *, days_dispensed: int, dispensings: int, run_out: date | None,
                      last_days: int | None, too_soon_percent: int = 80, covered_from: date | None = None,
                      prior_run_out: date | None = None) -> Supply:
    """The same model from the columns a prescription caches (for lists: no walk through every dispensing)."""
    _whole(days_dispensed, "days_dispensed", minimum=0)
    return Supply(authorization=authorization, days_dispensed=days_dispensed, dispensings=dispensings,
                  run_out=run_out, last_days=last_days, too_soon_percent=too_soon_percent,
                  covered_from=covered_from, prior_run_out=prior_run_out)


def after_dispensing(current: Supply, dispensing: Dispensing) -> Supply:
    """The supply once `dispensing` is added (the newest: it reaches the patient after every earlier one)."""
    if dispensing.days > current.days_owed:
        raise SupplyInputInvalid(
            f"This fill can cover at most {_days(current.days_owed)} (what is still owed on the prescription).",
            fields={"days_supply": f"At most {current.days_owed}."})
    walk, before, held = _walked([dispensing], Held(current.run_out, current.covered_from, current.prior_run_out))
    spans = covered_spans(walk, carried_run_out=before)
    run_out = spans[-1][1]
    covered_from, prior = latest_span(spans, held)
    return Supply(
        authorization=current.authorization, days_dispensed=current.days_dispensed + dispensing.days,
        dispensings=current.dispensings + 1, run_out=run_out,
        last_days=dispensing.days, too_soon_percent=current.too_soon_percent,
        covered_from=covered_from, prior_run_out=prior,
    )


def _days(n: int) -> str:
    return f"{n} day" if n == 1 else f"{n} days"
