"""The pharmacist's refill queue: open requests with what is needed to decide them, the renewals awaited
and the latest decisions — a fixed number of queries whatever the length.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import sqlalchemy as sa
from sqlalchemy.orm import joinedload

from pharmacy.compounding.models import Order
from pharmacy.compounding.rules import OrderState
from pharmacy.core import audit
from pharmacy.core.actor import Actor
from pharmacy.core.context import settings
from pharmacy.core.db import first_ids
from pharmacy.core.roles import Permission
from pharmacy.extensions import db
from pharmacy.patients.models import Patient
from pharmacy.prescriptions.models import Prescription
from pharmacy.refills import rules
from pharmacy.refills.models import OPEN_REQUEST_STATES, RefillRequest, RenewalRequest
from pharmacy.refills.renewals import renewals_waiting
from pharmacy.refills.rules import RefillRequestState
from pharmacy.refills.services import _eligibility, _refills_left, rx_facts


@dataclass
class QueueItem:
    request: RefillRequest
    rx: Prescription
    patient: Patient
    eligibility: rules.Eligibility  # could this request become an order today (the request itself aside)?
    earliest_dispense: date | None  # the too-soon threshold set by the last dispensed fill
    refills_left: int = 0
    renewal: RenewalRequest | None = None


def queue(actor: Actor, *, limit: int = 100) -> list[QueueItem]:
    """Open requests, oldest first, with what the pharmacist needs to decide.

    A fixed number of queries whatever the length: requests with their prescriptions, patients
    and formulas; fill facts grouped by prescription; the latest dispensed fills; the renewals.
    """
    audit.require(actor, Permission.VIEW_CLINICAL, what="see refill requests")
    first = first_ids(RefillRequest.id, RefillRequest.state.in_(OPEN_REQUEST_STATES),
                      (RefillRequest.requested_at, RefillRequest.id), limit)
    reqs = db.session.execute(
        sa.select(RefillRequest).join(first, first.c.id == RefillRequest.id)
        .options(joinedload(RefillRequest.prescription).joinedload(Prescription.patient),
                 joinedload(RefillRequest.prescription).joinedload(Prescription.formula))
        .order_by(RefillRequest.requested_at, RefillRequest.id)
    ).unique().scalars().all()
    rx_ids = [r.prescription_id for r in reqs]
    if not rx_ids:
        return []
    facts = rx_facts(rx_ids, with_requests=False)
    last: dict[int, Order] = {}
    latest = (sa.select(Order.prescription_id, sa.func.max(Order.fill_number).label("f"))
              .where(Order.prescription_id.in_(rx_ids), Order.state == OrderState.DISPENSED)
              .group_by(Order.prescription_id).subquery())
    for o in db.session.execute(sa.select(Order).join(
            latest, sa.and_(latest.c.prescription_id == Order.prescription_id, latest.c.f == Order.fill_number))
    ).scalars():
        last[o.prescription_id] = o
    renewal_ids = [r.renewal_id for r in reqs if r.renewal_id is not None]
    renewals = {}
    if renewal_ids:
        renewals = {x.id: x for x in db.session.execute(
            sa.select(RenewalRequest).where(RenewalRequest.id.in_(renewal_ids))).scalars()}
    percent = settings().too_soon_percent
    out = []
    for r in reqs:
        prev = last.get(r.prescription_id)
        earliest = None
        if prev is not None and prev.dispensed_on is not None:
            earliest = rules.earliest_dispense_date(prev.dispensed_on, prev.days_supply, percent)
        rx_facts_ = facts[r.prescription_id]
        out.append(QueueItem(
            request=r, rx=r.prescription, patient=r.prescription.patient,
            eligibility=_eligibility(r.prescription, rx_facts_, count_open_request=False),
            earliest_dispense=earliest, refills_left=_refills_left(r.prescription, rx_facts_),
            renewal=renewals.get(r.renewal_id) if r.renewal_id is not None else None,
        ))
    audit.record_reads(actor, "refill.queue", [r.patient_id for r in reqs])
    return out


@dataclass
class QueuePage:
    items: list[QueueItem]
    renewals: list[RenewalRequest]
    recent: list[RefillRequest]  # the latest decisions, so an approval's order is one click away


def queue_page(actor: Actor, *, limit: int = 100, recent: int = 10) -> QueuePage:
    """The dashboard's refill page: the queue, the renewals awaited and the latest decisions (bounded queries)."""
    items = queue(actor, limit=limit)
    renewals = renewals_waiting(actor, limit=limit)
    decided = list(db.session.execute(
        sa.select(RefillRequest).where(RefillRequest.state.in_([RefillRequestState.APPROVED,
                                                                RefillRequestState.DECLINED]))
        .options(joinedload(RefillRequest.prescription).joinedload(Prescription.patient))
        .order_by(RefillRequest.decided_at.desc(), RefillRequest.id.desc()).limit(recent)
    ).unique().scalars())
    audit.record_reads(actor, "refill.queue", audit.patient_ids_in(renewals, decided))
    return QueuePage(items=items, renewals=renewals, recent=decided)
