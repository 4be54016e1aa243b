"""Giving a supply's auto-refill turn back when the fill it led to is returned (compounding/returns.py).

Auto-refill asks once per supply: one Cycle per (enrolment, latest dispensed fill). When the next fill is returned
(lost in the post, say), the fill before it is the latest again and its turn was already taken — by the request
that led to the returned fill, or as "in progress" while it was made — so auto-refill would wait for good while
the patient has run out. A turn the patient chose to skip stays skipped.
"""
from __future__ import annotations

import sqlalchemy as sa

from pharmacy.autorefill.models import Cycle, Enrolment
from pharmacy.compounding.models import Order
from pharmacy.compounding.rules import OrderState
from pharmacy.extensions import db


def reopen_turn(rx_id: int) -> int:
    """Delete the non-skipped turn of the prescription's latest dispensed fill; how many were deleted."""
    latest = (sa.select(Order.id).where(Order.prescription_id == rx_id, Order.state == OrderState.DISPENSED)
              .order_by(Order.fill_number.desc()).limit(1).scalar_subquery())
    enrolments = sa.select(Enrolment.id).where(Enrolment.prescription_id == rx_id)
    result = db.session.execute(
        sa.delete(Cycle).where(Cycle.enrolment_id.in_(enrolments), Cycle.fill_order_id == latest,
                               Cycle.outcome != "skipped")
        .execution_options(synchronize_session=False))
    return int(result.rowcount or 0)
