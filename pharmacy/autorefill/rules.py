"""Auto-refill rules (pure): on which day, and what to do, for one enrolled prescription's current supply.

DOMAIN.md "Refill timing": a refill may be asked for early, but is made only while refills remain and the
prescription has not expired; with none left the pharmacy asks the prescriber for a renewal and tells the patient.
Auto-refill asks on the patient's behalf on the order-by date of the current supply — never before it ("too soon"
for a request is before the supply's order-by date), and at most once per supply (one dispensed fill, one turn).
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from enum import StrEnum


class Action(StrEnum):
    WAIT = "wait"  # not this supply's order-by date yet, or already done for this supply
    REQUEST = "request"  # ask for the refill
    RENEWAL = "renewal"  # no refills left or expired: ask (it becomes a renewal request) and tell the patient
    COVERED = "covered"  # a refill is already asked for or being made: nothing to add
    END = "end"  # the prescription is no longer active: the enrolment ends


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str


def decide(*, today: date, order_by: date | None, turn_taken: bool, eligibility_code: str,
           needs_renewal: bool) -> Decision:
    """What auto-refill does today for one prescription (eligibility codes: refills.rules.refill_eligibility)."""
    if eligibility_code == "inactive":
        return Decision(Action.END, "the prescription is no longer active")
    if order_by is None:
        return Decision(Action.WAIT, "no fill dispensed yet: the first fill is arranged with the pharmacy")
    if turn_taken:
        return Decision(Action.WAIT, "this supply's refill was already handled")
    if today < order_by:
        return Decision(Action.WAIT, f"too soon: the order-by date is {order_by.isoformat()}")
    if eligibility_code in ("in_progress", "already_requested"):
        return Decision(Action.COVERED, "a refill is already asked for or being made")
    if needs_renewal:
        return Decision(Action.RENEWAL, "no refills left or the prescription expired")
    if eligibility_code == "ok":
        return Decision(Action.REQUEST, "order-by date reached")
    return Decision(Action.WAIT, eligibility_code)
