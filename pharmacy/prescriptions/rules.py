"""Prescription rules (pure): forms and units, ISMP-safe dose text, dose checks, titration, screening.

Every rule cites the line of ../shared/DOMAIN.md it implements.
"""
from __future__ import annotations

from enum import StrEnum


class Form(StrEnum):
    """DOMAIN.md "Forms (all three are compounded)"."""

    CAPSULE = "capsule"
    SUBLINGUAL_LIQUID = "sublingual_liquid"
    TRANSDERMAL_CREAM = "transdermal_cream"


class RxStatus(StrEnum):
    ACTIVE = "active"
    ON_HOLD = "on_hold"
    DISCONTINUED = "discontinued"
    REPLACED = "replaced"


class DosingTime(StrEnum):
    """DOMAIN.md "Timing: usually at night … the prescriber may move it to the morning"."""

    BEDTIME = "bedtime"
    MORNING = "morning"


class Severity(StrEnum):
    """How an alert blocks: a hard stop, a stop a pharmacist may override, an ack, or a warning."""

    HARD_STOP = "hard_stop"
    OVERRIDABLE_STOP = "overridable_stop"
    ACKNOWLEDGE = "acknowledge"
    WARNING = "warning"
