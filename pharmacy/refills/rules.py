"""Refill rules (pure): run-out, ready-by and order-by dates, too-soon dispensing, eligibility."""
from __future__ import annotations

from enum import StrEnum


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


class RenewalState(StrEnum):
    NEEDED = "needed"  # a task: the pharmacist should contact the prescriber
    SENT = "sent"  # the renewal request went to the prescriber
    RECEIVED = "received"
    CANCELLED = "cancelled"
