"""When a patient should ask for the next refill: the refill page's facts plus the order-by date.

Days left and the run-out come from refills.services.summary (the one supply model), so whatever that model
becomes, the portal, the calendar and auto-refill say the same thing as the refill page. The order-by date is the
refill rules' timeline from that run-out: ready by run-out − shipping − buffer (an open day), less the lead time.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from pharmacy.core.context import business_calendar, settings
from pharmacy.prescriptions.models import Prescription
from pharmacy.refills import rules as refill_rules
from pharmacy.refills import services as refills
from pharmacy.refills.services import RefillSummary


@dataclass(frozen=True)
class NextRefill:
    summary: RefillSummary
    run_out: date | None
    days_left: int | None
    ready_by: date | None
    order_by: date | None


def next_refill(rx: Prescription) -> NextRefill:
    s = refills.summary(rx)
    ready_by = order_by = None
    if s.run_out is not None:
        cfg, cal = settings(), business_calendar()
        # s.delivery: how the next fill will travel (refill_rules.next_fill_delivery), as every other order-by.
        line = refill_rules.timeline(s.run_out,
                                     shipping_days=refill_rules.shipping_days_for(s.delivery, s.patient.shipping_days),
                                     buffer_days=cfg.safety_buffer_days,
                                     lead_time_business_days=s.lead_time_days, calendar=cal)
        ready_by, order_by = line.ready_by, line.order_by
    return NextRefill(summary=s, run_out=s.run_out, days_left=s.days_left, ready_by=ready_by, order_by=order_by)
