"""Compounding rules (pure): USP <795> beyond-use dates and the order workflow."""
from __future__ import annotations

from enum import StrEnum


class UspCategory(StrEnum):
    """DOMAIN.md "Compounding standards (USP <795>…)": the four default-BUD categories."""

    AQUEOUS_UNPRESERVED = "aqueous_unpreserved"
    AQUEOUS_PRESERVED = "aqueous_preserved"
    NONAQUEOUS_ORAL_LIQUID = "nonaqueous_oral_liquid"
    OTHER_NONAQUEOUS = "other_nonaqueous"


class OrderState(StrEnum):
    REQUESTED = "requested"
    VERIFIED = "verified"
    COMPOUNDING = "compounding"
    CHECKED = "checked"
    READY = "ready"
    DISPENSED = "dispensed"
    ON_HOLD = "on_hold"
    CANCELLED = "cancelled"


class DeliveryMethod(StrEnum):
    PICKUP = "pickup"
    SHIP = "ship"
