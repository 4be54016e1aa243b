"""The pharmacy's business calendar (pure): which days it is open, and counting in open days.

docs/domain.md "Refill timing": compounding takes a lead time in **business days** — weekends
and pharmacy holidays do not count. Every date rule that counts working days goes through
`BusinessCalendar`, so one definition of "open" serves the order-by date, the ready date
and the reminders alike.

Counting conventions (the same as numpy's ``busday_offset``/``busday_count``):

* ``add_business_days(d, n)`` is the n-th open day *after* d (d itself never counts);
* ``subtract_business_days(d, n)`` is the n-th open day *before* d (d itself never counts);
* ``business_days_between(a, b)`` counts the open days in ``[a, b)`` — the working days
  available from the start of day a to the start of day b.

So an order started on an open day ``a`` with a lead time of n business days is ready on
``add_business_days(a, n)``, and ``business_days_between(a, that day) == n``.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from functools import lru_cache
from types import MappingProxyType

import holidays as holidays_lib

_ONE_DAY = timedelta(days=1)
# How far a search for an open day may run before the calendar is declared unusable
# (e.g. a `closed` set that shuts the pharmacy for years): a loud error beats a hang.
_MAX_SEARCH_DAYS = 3 * 366


@lru_cache(maxsize=512)
def _holidays_in_year(country: str, subdivision: str | None, year: int) -> Mapping[date, str]:
    """The holidays (observed days included) of one country/subdivision falling in `year`.

    Cached per year because building a `holidays` object is slow and the answer never
    changes: it is library data, not state, so a per-process cache cannot go stale across
    workers. Neighbouring years are generated too and filtered to `year`, because an
    observed day can fall in the year before its holiday (New Year's Day 2028, a Saturday,
    is observed on Friday 31 December 2027).
    """
    table = holidays_lib.country_holidays(
        country, subdiv=subdivision, years=(year - 1, year, year + 1), observed=True
    )
    return MappingProxyType({d: str(name) for d, name in table.items() if d.year == year})


@dataclass(frozen=True)
class BusinessCalendar:
    """When the pharmacy is open: chosen weekdays, minus its own closures, minus public holidays.

    `weekdays` uses Python's numbering (0 = Monday … 6 = Sunday). `closed` lists extra days
    the pharmacy shuts (inventory day, a local holiday the library does not know). With a
    `holiday_country` the public holidays of the `holidays` library count as closed,
    including *observed* days (when 4 July is a Saturday, Friday 3 July is closed too),
    because that is when staff are off.
    """

    weekdays: frozenset[int]
    closed: frozenset[date] = field(default_factory=frozenset)
    holiday_country: str | None = None
    holiday_subdivision: str | None = None

    def __post_init__(self) -> None:
        # Accept any iterable (a set from a config file) but store frozensets, so the
        # calendar stays hashable and immutable.
        object.__setattr__(self, "weekdays", frozenset(self.weekdays))
        object.__setattr__(self, "closed", frozenset(self.closed))
        if not self.weekdays:
            raise ValueError("A business calendar needs at least one open weekday.")
        if any(not isinstance(w, int) or isinstance(w, bool) or not 0 <= w <= 6 for w in self.weekdays):
            raise ValueError("Weekdays are numbered 0 (Monday) to 6 (Sunday).")
        if self.holiday_subdivision and not self.holiday_country:
            raise ValueError("A holiday subdivision needs a holiday country.")
        if self.holiday_country:
            supported = holidays_lib.list_supported_countries()
            if self.holiday_country not in supported:
                raise ValueError(f"Unknown holiday country {self.holiday_country!r} (e.g. 'US').")
            if self.holiday_subdivision and self.holiday_subdivision not in supported[self.holiday_country]:
                raise ValueError(
                    f"Unknown subdivision {self.holiday_subdivision!r} of {self.holiday_country!r} (e.g. 'MN')."
                )

    @classmethod
    def default(cls) -> BusinessCalendar:
        """Monday to Friday, closed on US federal holidays (observed days included)."""
        return cls(weekdays=frozenset(range(5)), holiday_country="US")

    # -- single days ---------------------------------------------------------------

    def holiday_name(self, d: date) -> str | None:
        """The public holiday on `d` (e.g. "Thanksgiving Day"), or None: lets a page say *why* it is closed."""
        if not self.holiday_country:
            return None
        return _holidays_in_year(self.holiday_country, self.holiday_subdivision, d.year).get(d)

    def is_open(self, d: date) -> bool:
        """True when staff compound on `d`: an open weekday, not a closure, not a (observed) holiday."""
        return d.weekday() in self.weekdays and d not in self.closed and self.holiday_name(d) is None

    def next_open_day(self, d: date) -> date:
        """`d` if open, else the first open day after it."""
        return self._walk(d, _ONE_DAY)

    def previous_open_day(self, d: date) -> date:
        """`d` if open, else the latest open day before it (a ready-by date must be a working day)."""
        return self._walk(d, -_ONE_DAY)

    # -- counting ------------------------------------------------------------------

    def add_business_days(self, d: date, n: int) -> date:
        """The n-th open day after `d` (d never counts); n = 0 returns `d` unchanged, open or not."""
        return self._step(d, n, _ONE_DAY)

    def subtract_business_days(self, d: date, n: int) -> date:
        """The n-th open day before `d` (d never counts); n = 0 returns `d` unchanged, open or not."""
        return self._step(d, n, -_ONE_DAY)

    def business_days_between(self, a: date, b: date) -> int:
        """Open days in [a, b) — negative when b is before a (then minus the open days in [b, a))."""
        if b < a:
            return -self.business_days_between(b, a)
        count = 0
        day = a
        while day < b:
            if self.is_open(day):
                count += 1
            day += _ONE_DAY
        return count

    # -- internals -----------------------------------------------------------------

    def _walk(self, d: date, step: timedelta) -> date:
        day = d
        for _ in range(_MAX_SEARCH_DAYS):
            if self.is_open(day):
                return day
            day += step
        raise ValueError(f"The pharmacy is never open within {_MAX_SEARCH_DAYS} days of {d.isoformat()}.")

    def _step(self, d: date, n: int, step: timedelta) -> date:
        if isinstance(n, bool) or not isinstance(n, int):
            raise TypeError("A number of business days must be an int.")
        if n < 0:
            raise ValueError("A number of business days cannot be negative; use the opposite direction.")
        day = d
        for _ in range(n):
            day = self._walk(day + step, step)
        return day
