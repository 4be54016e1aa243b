"""Request-independent access to the app's settings and clock (services call these, not os.environ)."""
from __future__ import annotations

from datetime import date, datetime

from flask import current_app

from pharmacy.config import Settings
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
