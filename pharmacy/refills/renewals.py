"""Renewals: when a prescription has no refills left (or expires), the pharmacy asks the prescriber for a new one.

The pharmacist's task (one open per prescription), sending it to the prescriber (email in the outbox, a printable
copy for fax), the renewals still awaited, and carrying a waiting refill request over to the new prescription.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from pharmacy.compounding.models import Formula
from pharmacy.core import audit
from pharmacy.core.actor import Actor
from pharmacy.core.context import now, today
from pharmacy.core.db import chunks, first_ids_of_each, upsert_insert
from pharmacy.core.errors import Conflict, NotFound
from pharmacy.core.ids import valid_id
from pharmacy.core.roles import Permission
from pharmacy.extensions import db
from pharmacy.patients.models import Patient
from pharmacy.prescriptions import rules as rx_rules
from pharmacy.prescriptions.models import Prescriber, Prescription
from pharmacy.prescriptions.rules import RxStatus
from pharmacy.refills import rules
from pharmacy.refills.models import RefillRequest, RenewalRequest
from pharmacy.refills.rules import RefillRequestState, RenewalState
from pharmacy.supply import reads

OPEN_RENEWAL_STATES = (RenewalState.NEEDED, RenewalState.SENT)


def _open_renewal(rx_id: int) -> RenewalRequest | None:
    return db.session.execute(
        sa.select(RenewalRequest).where(RenewalRequest.prescription_id == rx_id,
                                        RenewalRequest.state.in_(OPEN_RENEWAL_STATES))
    ).scalar_one_or_none()


def ensure_renewal_task(rx_id: int, *, reason: str) -> RenewalRequest:
    """The pharmacist's task to contact the prescriber; one open per prescription."""
    existing = _open_renewal(rx_id)
    if existing is not None:
        return existing
    rx = db.session.get(Prescription, rx_id)
    assert rx is not None
    renewal = RenewalRequest(prescription_id=rx.id, prescriber_id=rx.prescriber_id, patient_id=rx.patient_id,
                             state=RenewalState.NEEDED, reason=reason[:200], created_at=now())
    try:
        with db.session.begin_nested():
            db.session.add(renewal)
            db.session.flush()
    except IntegrityError:
        found = _open_renewal(rx_id)
        if found is None:
            raise
        return found
    return renewal


@dataclass(frozen=True)
class RenewalSent:
    """A renewal marked as sent to the prescriber; `waiting` is the patient's request now awaiting it."""

    renewal: RenewalRequest
    rx: Prescription
    waiting: RefillRequest | None


def ensure_renewal_tasks(wanted: dict[int, tuple[int, int]]) -> int:
    """`ensure_renewal_task` for many prescriptions at once ({rx id: (prescriber id, patient id)}): one open task
    each — the partial unique index decides a race — each saying which reason applies. Returns how many were added."""
    have: set[int] = set()
    for chunk in chunks(list(wanted)):
        have.update(db.session.execute(
            sa.select(RenewalRequest.prescription_id).where(
                RenewalRequest.prescription_id.in_(chunk), RenewalRequest.state.in_(OPEN_RENEWAL_STATES))
        ).scalars())
    missing = [rx_id for rx_id in wanted if rx_id not in have]
    if not missing:
        return 0
    day, t = today(), now()
    rows = []
    for chunk in chunks(missing):
        for rx in db.session.execute(sa.select(Prescription).where(Prescription.id.in_(chunk))).scalars():
            rows.append({"prescription_id": rx.id, "prescriber_id": rx.prescriber_id, "patient_id": rx.patient_id,
                         "state": RenewalState.NEEDED, "created_at": t,
                         "reason": rules.renewal_reason(reads.supply_of(rx), day)[:200]})
    if not rows:
        return 0
    table = RenewalRequest.__table__
    # No conflict target: the arbiter is the partial unique index "one open renewal per prescription".
    insert = upsert_insert(table, db.session.get_bind().dialect.name)
    return len(db.session.execute(insert.on_conflict_do_nothing().returning(table.c.id), rows).all())


def ask_prescriber(actor: Actor, *, request_id: int | None = None, prescription_id: int | None = None) -> RenewalSent:
    """Mark the renewal request as sent to the prescriber (workflows/renewals.py sends it and tells the patient)."""
    audit.require(actor, Permission.DECIDE_REFILL, what="ask prescribers for renewals")
    if request_id is not None:
        req = reads.refill_request(request_id, lock=True)
        if req.state not in (RefillRequestState.OPEN, RefillRequestState.AWAITING_RENEWAL):
            raise Conflict(f"This request is {req.state.value.replace('_', ' ')}; nothing to renew for it.")
        prescription_id = req.prescription_id
    else:
        req = reads.open_request(prescription_id or 0)
    rx = reads.prescription(prescription_id or 0, lock=True)
    if rx.status in (RxStatus.DISCONTINUED, RxStatus.REPLACED):
        raise Conflict("This prescription is closed.")
    renewal = ensure_renewal_task(rx.id, reason="renewal requested by the pharmacy")
    if renewal.state == RenewalState.SENT:
        raise Conflict("The renewal request has already been sent to the prescriber.")
    renewal.state = RenewalState.SENT
    renewal.sent_at = now()
    renewal.sent_by_id = actor.user_id
    if req is not None:
        req.state = RefillRequestState.AWAITING_RENEWAL
        req.renewal_id = renewal.id
    db.session.flush()
    audit.record(actor, "renewal.send", patient_id=rx.patient_id, entity=("renewal_request", renewal.id))
    return RenewalSent(renewal=renewal, rx=rx, waiting=req)


def renewal_to_send(actor: Actor, renewal_id: int) -> int:
    """The prescription of an open renewal (the renewals list's "send to prescriber" button)."""
    audit.require(actor, Permission.DECIDE_REFILL, what="ask prescribers for renewals")
    renewal = db.session.get(RenewalRequest, renewal_id) if valid_id(renewal_id) else None
    if renewal is None:
        raise NotFound("No such renewal request.")
    if renewal.state not in OPEN_RENEWAL_STATES:
        raise Conflict(f"This renewal is {renewal.state.value}; nothing to send.")
    return renewal.prescription_id


def link_renewal(actor: Actor, old_rx_id: int, new_rx_id: int) -> None:
    """A new prescription arrived: close the renewal and carry the waiting request over to it."""
    t = now()
    for renewal in db.session.execute(
        sa.select(RenewalRequest).where(RenewalRequest.prescription_id == old_rx_id,
                                        RenewalRequest.state.in_(OPEN_RENEWAL_STATES))
    ).scalars():
        renewal.state = RenewalState.RECEIVED
        renewal.resolved_at = t
        renewal.new_prescription_id = new_rx_id
        audit.record(actor, "renewal.received", patient_id=renewal.patient_id,
                     entity=("renewal_request", renewal.id), details={"new": new_rx_id})
    waiting = reads.open_request(old_rx_id)
    if waiting is not None:
        waiting.prescription_id = new_rx_id
        waiting.state = RefillRequestState.OPEN
        # Its run_out_date stays: the new prescription took over the old one's run-out (supply.carry_over).
        audit.record(actor, "refill.carried_over", patient_id=waiting.patient_id,
                     entity=("refill_request", waiting.id), details={"from": old_rx_id, "to": new_rx_id})
    db.session.flush()


class WaitingRenewal(NamedTuple):
    """A renewal awaited, as the refill page lists it: the request, its patient, prescription and prescriber, and
    the reason said plainly (`why`)."""

    id: int
    state: RenewalState
    created_at: datetime
    sent_at: datetime | None
    patient_id: int
    last_name: str
    first_name: str
    rx_id: int
    rx_number: str
    formula_name: str
    prescriber_first_name: str
    prescriber_last_name: str
    prescriber_credentials: str | None
    prescriber_email: str | None
    prescriber_fax: str | None
    why: str

    @property
    def prescriber_name(self) -> str:
        suffix = f", {self.prescriber_credentials}" if self.prescriber_credentials else ""
        return f"Dr. {self.prescriber_first_name} {self.prescriber_last_name}{suffix}"


_WAITING = (RenewalRequest.id, RenewalRequest.state, RenewalRequest.created_at, RenewalRequest.sent_at,
            RenewalRequest.patient_id, Patient.last_name, Patient.first_name, Prescription.id,
            Prescription.rx_number, Formula.name, Prescriber.first_name, Prescriber.last_name, Prescriber.credentials,
            Prescriber.email, Prescriber.fax)
_WAITING_SUPPLY = (RenewalRequest.reason, *reads.SUPPLY_COLUMNS)


def renewals_waiting(actor: Actor, *, limit: int = 100, offset: int = 0) -> list[WaitingRenewal]:
    """Renewals still to send or still awaited from the prescriber, oldest first: columns, not the four objects
    each (a page of fifty built 250 of them)."""
    audit.require(actor, Permission.VIEW_CLINICAL, what="see renewals")
    found = db.session.execute(_waiting_statement(), {"b_limit": limit, "b_offset": offset}).all()
    n, day = len(_WAITING), today()
    return [WaitingRenewal(*row[:n], why=why_of(row[n], reads.SupplyColumns(*row[n + 1:]), day)) for row in found]


@functools.cache
def _waiting_statement() -> sa.Select[Any]:
    """Built once per process, with the page as bind parameters: building it (a union of one ordered range per
    state, then four joins) cost more Python than SQLite takes to run it."""
    first = first_ids_of_each(RenewalRequest.id, RenewalRequest.state, OPEN_RENEWAL_STATES,
                              (RenewalRequest.created_at, RenewalRequest.id),
                              sa.bindparam("b_limit", type_=sa.Integer), sa.bindparam("b_offset", type_=sa.Integer))
    return (sa.select(*_WAITING, *_WAITING_SUPPLY).join(first, first.c.id == RenewalRequest.id)
            .join(Prescription, Prescription.id == RenewalRequest.prescription_id)
            .join(Patient, Patient.id == Prescription.patient_id)
            .join(Prescriber, Prescriber.id == Prescription.prescriber_id)
            .join(Formula, Formula.id == Prescription.formula_id)
            .order_by(RenewalRequest.created_at, RenewalRequest.id))


def count_renewals_waiting() -> int:
    """Renewals to send or awaited, along the (state, created_at, id) index."""
    return db.session.execute(
        sa.select(sa.func.count()).select_from(RenewalRequest).where(RenewalRequest.state.in_(OPEN_RENEWAL_STATES))
    ).scalar_one()


@dataclass
class RenewalDocument:
    """What a renewal request to the prescriber says (the printable page faxed when there is no email)."""

    renewal: RenewalRequest
    rx: Prescription
    patient: Patient
    prescriber: Prescriber
    product: str
    dose: str
    quantity: str
    last_fill: date | None
    refills_authorized: int
    refills_used: int


def renewal_document(actor: Actor, renewal_id: int) -> RenewalDocument:
    """The renewal request for printing/faxing; reading it is a read of the patient's record (audited)."""
    audit.require(actor, Permission.VIEW_CLINICAL, what="see renewals")
    renewal = db.session.get(RenewalRequest, renewal_id)
    if renewal is None:
        raise NotFound("No such renewal request.")
    audit.record(actor, "renewal.view", patient_id=renewal.patient_id, entity=("renewal_request", renewal.id))
    return build_renewal_document(renewal)


def build_renewal_document(renewal: RenewalRequest) -> RenewalDocument:
    """What a renewal request says, for a reader already allowed to see it (the caller checks and audits)."""
    rx = reads.prescription(renewal.prescription_id)
    current = reads.supply_of(rx)
    last = reads.latest_dispensed(rx.id)
    formula = rx.formula
    return RenewalDocument(
        renewal=renewal, rx=rx, patient=rx.patient, prescriber=rx.prescriber,
        product=rx_rules.product_name(formula.form, formula.strength_mg), dose=rx_rules.format_mg(rx.dose_mg),
        quantity=rx_rules.quantity_text(formula.form, rx.quantity), last_fill=last.dispensed_on if last else None,
        refills_authorized=rx.refills_authorized or 0,
        refills_used=(rx.refills_authorized or 0) - current.refills_left,
    )


def why_of(reason: str, rx: reads.CachedSupply, day: date | None = None) -> str:
    """Which reason a renewal is needed, said plainly from the prescription's cached supply columns (no query): "no
    refills left" or "expires on Dec 2, 2026, before the supply runs out" — not the stored "one or the other" of
    older rows (`reason`, kept when the supply says nothing more precise)."""
    why = rules.renewal_reason(reads.supply_of(rx), day or today())
    return reason if why == "renewal requested" else why
