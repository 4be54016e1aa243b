"""Request-independent access to the app's settings and clock (services call these, not os.environ)."""
from __future__ import annotations

from datetime import date, datetime

from flask import current_app

from pharmacy.config import Settings
from pharmacy.core.calendar import BusinessCalendar
from pharmacy.core.clock import Clock, local_date


def settings() -> Settings:
    return current_app.extensions["pharmacy.settings"]


def clock() -> Clock:
    return current_app.extensions["pharmacy.clock"]


def now() -> datetime:
    return clock().now()


def today() -> date:
    """Today at the pharmacy (its time zone), which is what every date rule means by "today"."""
    return local_date(now(), settings().timezone)


def business_calendar():  # -> BusinessCalendar (imported lazily: calendar.py is pure and optional at import)
    """The pharmacy's open days (weekdays, holidays of its country, extra closed dates), built once per app."""

    cached = current_app.extensions.get("pharmacy.calendar")
    if cached is None:
        cfg = settings()
        cached = BusinessCalendar(
            weekdays=cfg.business_weekdays, closed=cfg.closed_dates,
            holiday_country=cfg.holiday_country, holiday_subdivision=cfg.holiday_subdivision,
        )
        current_app.extensions["pharmacy.calendar"] = cached
    return cached
