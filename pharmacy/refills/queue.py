"""The pharmacist's refill queue: open requests with what is needed to decide them, the renewals awaited
and the latest decisions — a fixed number of queries whatever the length.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import sqlalchemy as sa
from sqlalchemy.orm import joinedload

from pharmacy.core import audit
from pharmacy.core.actor import Actor
from pharmacy.core.context import today
from pharmacy.core.db import first_ids
from pharmacy.core.roles import Permission
from pharmacy.extensions import db
from pharmacy.patients.models import Patient
from pharmacy.prescriptions.models import Prescription
from pharmacy.refills import rules, services
from pharmacy.refills.models import OPEN_REQUEST_STATES, RefillRequest, RenewalRequest
from pharmacy.refills.renewals import renewals_waiting
from pharmacy.refills.rules import RefillRequestState
from pharmacy.supply import reads
from pharmacy.supply.rules import Supply


@dataclass
class QueueItem:
    request: RefillRequest
    rx: Prescription
    patient: Patient
    eligibility: rules.Eligibility  # could this request become an order today (the request itself aside)?
    earliest_dispense: date | None  # the too-soon threshold: the first day the next fill may reach the patient
    refills_left: int = 0
    renewal: RenewalRequest | None = None
    supply: Supply | None = None
    out_since: date | None = None  # the first day without medicine, when the patient has already run out
    renewal_reason: str | None = None  # which reason a renewal is needed, when it is

    @property
    def days_out(self) -> int:
        return (today() - self.out_since).days + 1 if self.out_since else 0


def queue(actor: Actor, *, limit: int = 100) -> list[QueueItem]:
    """Open requests with what the pharmacist needs to decide: patients already out of medicine first (longest
    out first), then the oldest request first.

    A fixed number of queries whatever the length: requests with their prescriptions, patients and formulas;
    the orders in progress; the renewals. Supply is read from the columns each prescription caches.
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
    if not reqs:
        return []
    in_progress = reads.open_orders_of(r.prescription_id for r in reqs)
    renewal_ids = [r.renewal_id for r in reqs if r.renewal_id is not None]
    renewals = {}
    if renewal_ids:
        renewals = {x.id: x for x in db.session.execute(
            sa.select(RenewalRequest).where(RenewalRequest.id.in_(renewal_ids))).scalars()}
    day = today()
    out = []
    for r in reqs:
        rx = r.prescription
        current = reads.supply_of(rx)
        elig = services.eligibility(rx, current, order_in_progress=rx.id in in_progress, open_request=False)
        out.append(QueueItem(
            request=r, rx=rx, patient=rx.patient, eligibility=elig, earliest_dispense=current.earliest_next_start,
            refills_left=current.refills_left,
            renewal=renewals.get(r.renewal_id) if r.renewal_id is not None else None, supply=current,
            out_since=current.out_since(day),
            renewal_reason=rules.renewal_reason(current, day) if elig.needs_renewal else None,
        ))
    out.sort(key=lambda item: (item.out_since is None, item.out_since or day))
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
