"""Refill requests (patients from a signed link or the API, staff at the counter) and renewals.

DOMAIN.md "Refill timing": a request may come early (that is the point); refills left and expiry
are enforced (a missing count is zero); one request or fill in progress at a time; with no
refills left the pharmacy asks the prescriber for a renewal and tells the patient.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import joinedload

from pharmacy.billing import pricing
from pharmacy.compounding.models import Order
from pharmacy.compounding.rules import DeliveryMethod, OrderState
from pharmacy.core import audit, links
from pharmacy.core.actor import Actor
from pharmacy.core.context import business_calendar, now, settings, today
from pharmacy.core.errors import Conflict, LinkInvalid, NotFound, ValidationFailed
from pharmacy.core.roles import Permission
from pharmacy.extensions import db
from pharmacy.patients.models import Patient
from pharmacy.prescriptions import rules as rx_rules
from pharmacy.prescriptions import screening
from pharmacy.prescriptions.models import Prescriber, Prescription
from pharmacy.prescriptions.rules import RxStatus
from pharmacy.refills import rules
from pharmacy.refills.models import OPEN_REQUEST_STATES, RefillRequest, RenewalRequest
from pharmacy.refills.rules import RefillRequestState, RenewalState, RequestSource
from pharmacy.reminders import outbox, planning
from pharmacy.reminders.rules import MessageKind

OPEN_ORDER_STATES = [s for s in OrderState if s not in (OrderState.DISPENSED, OrderState.CANCELLED)]


# ---- what a patient (or the pharmacy) sees about one prescription ------------------------------


@dataclass
class RefillSummary:
    rx: Prescription
    patient: Patient
    product: str
    dose_text: str
    next_step: str | None
    days_left: int | None
    run_out: date | None
    refills_left: int
    eligibility: rules.Eligibility
    price_cents: int
    shipping_cents: int
    delivery: DeliveryMethod
    ready_on: date
    arrives_on: date | None
    open_request: RefillRequest | None
    address_lines: list[str] = field(default_factory=list)

    @property
    def total_cents(self) -> int:
        return self.price_cents + self.shipping_cents


def _latest_dispensed(rx_id: int) -> Order | None:
    return db.session.execute(
        sa.select(Order).where(Order.prescription_id == rx_id, Order.state == OrderState.DISPENSED)
        .order_by(Order.fill_number.desc()).limit(1)
    ).scalar_one_or_none()


def _open_request(rx_id: int) -> RefillRequest | None:
    return db.session.execute(
        sa.select(RefillRequest).where(RefillRequest.prescription_id == rx_id,
                                       RefillRequest.state.in_(OPEN_REQUEST_STATES))
    ).scalar_one_or_none()


def eligibility_for(rx: Prescription) -> rules.Eligibility:
    from pharmacy.prescriptions.services import refills_used

    in_progress = db.session.execute(
        sa.select(Order.id).where(Order.prescription_id == rx.id, Order.state.in_(OPEN_ORDER_STATES)).limit(1)
    ).first() is not None
    has_fill = db.session.execute(
        sa.select(Order.id).where(Order.prescription_id == rx.id, Order.state != OrderState.CANCELLED).limit(1)
    ).first() is not None
    # Before the first fill, "refills used" is -1 in effect: the original fill is not a refill.
    used = refills_used(rx.id) if has_fill else -1
    return rules.refill_eligibility(
        status=rx.status.value, refills_authorized=rx.refills_authorized, refills_used=used,
        expiry_date=rx.expiry_date, today=today(), order_in_progress=in_progress,
        open_request=_open_request(rx.id) is not None,
    )


def summary(rx: Prescription, *, delivery: DeliveryMethod | None = None) -> RefillSummary:
    from pharmacy.prescriptions.services import refills_used

    patient = rx.patient
    formula = rx.formula
    day = today()
    last = _latest_dispensed(rx.id)
    steps = screening.steps_of(rx)
    supplied = int(db.session.execute(
        sa.select(sa.func.coalesce(sa.func.sum(Order.days_supply), 0)).where(
            Order.prescription_id == rx.id, Order.state == OrderState.DISPENSED)
    ).scalar_one()) if steps else 0
    ahead = rx_rules.remaining_steps(steps, supplied) if steps else ()
    next_step = None
    if steps and last is not None:
        dose = ahead[0].dose_mg if ahead else rx.dose_mg
        next_step = f"Next fill continues at {rx_rules.format_mg(dose)} a day" + (
            f", then {rx_rules.format_mg(rx.dose_mg)}" if ahead and dose != rx.dose_mg else "")
    delivery = delivery or patient.delivery_preference
    days_left = run_out = None
    if last is not None and last.run_out_date is not None:
        run_out = last.run_out_date
        days_left = max((run_out - day).days, 0)
    elig = eligibility_for(rx)
    try:
        qty = rx_rules.quantity_for_days(formula.form, formula.strength_mg, rx.dose_mg, rx.days_supply, ahead)
        q = pricing.quote(formula.id, qty, delivery)
        price, ship = q.price_cents, q.shipping_cents
    except ValidationFailed:
        price, ship = 0, 0
    cal = business_calendar()
    ready = rules.ready_date(day, lead_time_business_days=formula.lead_time_business_days, calendar=cal)
    arrives = None
    if delivery == DeliveryMethod.SHIP:
        arrives = rules.arrival_date(ready, patient.shipping_days)
    lines = [x for x in (patient.address_line1, patient.address_line2,
                         " ".join(filter(None, [(patient.city or "") + ",", patient.state, patient.postal_code])))
             if x and x.strip(", ")]
    left = rules.refills_left(rx.refills_authorized, max(refills_used(rx.id), 0))
    return RefillSummary(
        rx=rx, patient=patient, product=rx_rules.product_name(formula.form, formula.strength_mg),
        dose_text=rx.directions, next_step=next_step, days_left=days_left, run_out=run_out, refills_left=left,
        eligibility=elig, price_cents=price, shipping_cents=ship, delivery=delivery, ready_on=ready,
        arrives_on=arrives, open_request=_open_request(rx.id), address_lines=lines,
    )


def _rx_for(rx_id: int, *, lock: bool = False) -> Prescription:
    stmt = sa.select(Prescription).where(Prescription.id == rx_id).options(
        joinedload(Prescription.patient), joinedload(Prescription.formula), joinedload(Prescription.prescriber))
    if lock:
        stmt = stmt.with_for_update(of=Prescription)
    rx = db.session.execute(stmt).unique().scalar_one_or_none()
    if rx is None:
        raise NotFound("No such prescription.")
    return rx


# ---- patient links ------------------------------------------------------------------------------


def open_link(token: str) -> links.LinkClaims:
    """Check a refill link before anything is shown: signature, expiry, and scope."""
    claims = links.read_token(links.REFILL, token, max_age_days=settings().refill_link_days)
    if claims.prescription_id is None:
        raise LinkInvalid("This link is not valid.", reason="invalid")
    rx = db.session.get(Prescription, claims.prescription_id)
    if rx is None or rx.patient_id != claims.patient_id:
        raise LinkInvalid("This link is not valid.", reason="invalid")
    if links.failed_attempts(claims.nonce) >= links.MAX_DOB_ATTEMPTS:
        raise LinkInvalid("Too many wrong dates of birth were entered on this link.", reason="locked")
    return claims


def confirm_birth_date(token: str, dob: date) -> links.LinkClaims:
    """DOMAIN.md: a patient opening a refill link confirms their date of birth before seeing anything."""
    claims = open_link(token)
    patient = db.session.get(Patient, claims.patient_id)
    actor = Actor(kind="patient", patient_id=claims.patient_id, prescription_id=claims.prescription_id)
    if patient is None or patient.date_of_birth != dob:
        attempts = links.record_failed_attempt(claims.nonce)
        audit.record(actor, "link.dob_failed", outcome="denied", survive_rollback=True,
                     details={"attempt": attempts})
        left = links.MAX_DOB_ATTEMPTS - attempts
        if left <= 0:
            raise LinkInvalid("Too many wrong dates of birth were entered on this link.", reason="locked")
        raise ValidationFailed("That date of birth does not match our records.",
                               fields={"date_of_birth": f"That does not match. {left} attempt(s) left."})
    audit.record(actor, "link.open", entity=("prescription", claims.prescription_id))
    return claims


def link_summary(claims: links.LinkClaims) -> RefillSummary:
    rx = _rx_for(claims.prescription_id or 0)
    return summary(rx)


# ---- requesting ---------------------------------------------------------------------------------


@dataclass
class RequestOutcome:
    request: RefillRequest
    created: bool


def request_refill(actor: Actor, rx_id: int, *, source: RequestSource, delivery: DeliveryMethod | None = None,
                   claims: links.LinkClaims | None = None, note: str | None = None) -> RequestOutcome:
    """Open a request (idempotent: a second identical one returns the first, enforced by a unique index)."""
    if actor.kind == "patient":
        if claims is None or claims.prescription_id != rx_id or claims.patient_id != actor.patient_id:
            raise LinkInvalid("This link is not valid.", reason="invalid")
    else:
        audit.require(actor, Permission.REQUEST_REFILL, what="request refills")
    rx = _rx_for(rx_id, lock=True)
    existing = _open_request(rx.id)
    if existing is not None:
        if claims is not None:
            links.mark_used(claims)
        return RequestOutcome(existing, False)
    elig = eligibility_for(rx)
    if not elig.ok and not elig.needs_renewal:
        raise Conflict(elig.message)
    if claims is not None and not links.mark_used(claims):
        raise LinkInvalid("This link has already been used.", reason="used")
    delivery = delivery or rx.patient.delivery_preference
    state = RefillRequestState.AWAITING_RENEWAL if elig.needs_renewal else RefillRequestState.OPEN
    req = RefillRequest(
        prescription_id=rx.id, patient_id=rx.patient_id, state=state, source=source, delivery_method=delivery,
        requested_at=now(), requested_by_id=actor.user_id, note=note,
    )
    try:
        with db.session.begin_nested():
            db.session.add(req)
            db.session.flush()
    except IntegrityError:
        # Lost a race with an identical request: the database kept exactly one; return it.
        existing = _open_request(rx.id)
        if existing is None:
            raise
        return RequestOutcome(existing, False)
    audit.record(actor, "refill.request", patient_id=rx.patient_id, entity=("refill_request", req.id),
                 details={"source": source.value, "state": state.value})
    planning.cancel_for_prescription(rx.id, reason="refill requested", kinds=planning.REMINDER_KINDS[:3])
    if elig.needs_renewal:
        renewal = ensure_renewal_task(rx.id, reason=elig.message)
        req.renewal_id = renewal.id
        outbox.enqueue_notice(MessageKind.RENEWAL_IN_PROGRESS, patient_id=rx.patient_id, prescription_id=rx.id,
                              refill_request_id=req.id)
    else:
        outbox.enqueue_notice(MessageKind.REQUEST_RECEIVED, patient_id=rx.patient_id, prescription_id=rx.id,
                              refill_request_id=req.id)
    db.session.flush()
    return RequestOutcome(req, True)


# ---- the pharmacy's side ------------------------------------------------------------------------


def _load_request(request_id: int) -> RefillRequest:
    req = db.session.execute(
        sa.select(RefillRequest).where(RefillRequest.id == request_id).with_for_update()
    ).scalar_one_or_none()
    if req is None:
        raise NotFound("No such refill request.")
    return req


def approve(actor: Actor, request_id: int) -> Order:
    """Approve: the next fill's order is created (too-soon is checked again when it is dispensed)."""
    from pharmacy.compounding.services import new_order

    req = _load_request(request_id)
    audit.require(actor, Permission.DECIDE_REFILL, patient_id=req.patient_id, what="approve refill requests")
    if req.state != RefillRequestState.OPEN:
        raise Conflict(f"This request is {req.state.value.replace('_', ' ')}; only an open request can be approved.")
    rx = _rx_for(req.prescription_id, lock=True)
    elig = eligibility_for(rx)
    if elig.needs_renewal:
        raise Conflict(elig.message + " Ask the prescriber for a renewal instead.")
    order = new_order(actor, rx, delivery=req.delivery_method)
    req.state = RefillRequestState.APPROVED
    req.order_id = order.id
    req.decided_at = now()
    req.decided_by_id = actor.user_id
    db.session.flush()
    audit.record(actor, "refill.approve", patient_id=req.patient_id, entity=("refill_request", req.id),
                 details={"order": order.id})
    outbox.enqueue_notice(MessageKind.REQUEST_APPROVED, patient_id=req.patient_id, prescription_id=rx.id,
                          refill_request_id=req.id)
    return order


def decline(actor: Actor, request_id: int, reason: str) -> RefillRequest:
    req = _load_request(request_id)
    audit.require(actor, Permission.DECIDE_REFILL, patient_id=req.patient_id, what="decline refill requests")
    reason = (reason or "").strip()
    if len(reason) < 3:
        raise ValidationFailed("Give the reason the patient will see.", fields={"reason": "Say why."})
    if req.state not in (RefillRequestState.OPEN, RefillRequestState.AWAITING_RENEWAL):
        raise Conflict("Only an open request can be declined.")
    req.state = RefillRequestState.DECLINED
    req.decline_reason = reason[:400]
    req.decided_at = now()
    req.decided_by_id = actor.user_id
    db.session.flush()
    audit.record(actor, "refill.decline", patient_id=req.patient_id, entity=("refill_request", req.id))
    outbox.enqueue_notice(MessageKind.REQUEST_DECLINED, patient_id=req.patient_id,
                          prescription_id=req.prescription_id, refill_request_id=req.id)
    planning.replan_prescription(req.prescription_id)
    return req


def ensure_renewal_task(rx_id: int, *, reason: str) -> RenewalRequest:
    """The pharmacist's task to contact the prescriber; one open per prescription."""
    existing = db.session.execute(
        sa.select(RenewalRequest).where(RenewalRequest.prescription_id == rx_id,
                                        RenewalRequest.state.in_([RenewalState.NEEDED, RenewalState.SENT]))
    ).scalar_one_or_none()
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
        return db.session.execute(
            sa.select(RenewalRequest).where(RenewalRequest.prescription_id == rx_id,
                                            RenewalRequest.state.in_([RenewalState.NEEDED, RenewalState.SENT]))
        ).scalar_one()
    return renewal


def ask_prescriber(actor: Actor, *, request_id: int | None = None, prescription_id: int | None = None) -> RenewalRequest:
    """Send the renewal request to the prescriber (email in the outbox; a printable copy for fax)."""
    if request_id is not None:
        req = _load_request(request_id)
        prescription_id = req.prescription_id
    else:
        req = _open_request(prescription_id or 0)
    rx = _rx_for(prescription_id or 0, lock=True)
    audit.require(actor, Permission.DECIDE_REFILL, patient_id=rx.patient_id, what="ask prescribers for renewals")
    if rx.status in (RxStatus.DISCONTINUED, RxStatus.REPLACED):
        raise Conflict("This prescription is closed.")
    renewal = ensure_renewal_task(rx.id, reason="renewal requested by the pharmacy")
    if renewal.state == RenewalState.SENT:
        raise Conflict("The renewal request has already been sent to the prescriber.")
    renewal.state = RenewalState.SENT
    renewal.sent_at = now()
    renewal.sent_by_id = actor.user_id
    prescriber: Prescriber = rx.prescriber
    outbox.enqueue(MessageKind.PRESCRIBER_RENEWAL, dedupe_key=f"prescriber_renewal:{renewal.id}",
                   patient_id=rx.patient_id, prescription_id=rx.id, renewal_id=renewal.id,
                   to_address=prescriber.email)
    if req is not None:
        req.state = RefillRequestState.AWAITING_RENEWAL
        req.renewal_id = renewal.id
        outbox.enqueue_notice(MessageKind.RENEWAL_IN_PROGRESS, patient_id=rx.patient_id, prescription_id=rx.id,
                              refill_request_id=req.id)
    db.session.flush()
    audit.record(actor, "renewal.send", patient_id=rx.patient_id, entity=("renewal_request", renewal.id))
    return renewal


def link_renewal(actor: Actor, old_rx_id: int, new_rx_id: int) -> None:
    """A new prescription arrived: close the renewal and carry the waiting request over to it."""
    t = now()
    for renewal in db.session.execute(
        sa.select(RenewalRequest).where(RenewalRequest.prescription_id == old_rx_id,
                                        RenewalRequest.state.in_([RenewalState.NEEDED, RenewalState.SENT]))
    ).scalars():
        renewal.state = RenewalState.RECEIVED
        renewal.resolved_at = t
        renewal.new_prescription_id = new_rx_id
        audit.record(actor, "renewal.received", patient_id=renewal.patient_id,
                     entity=("renewal_request", renewal.id), details={"new": new_rx_id})
    waiting = _open_request(old_rx_id)
    if waiting is not None:
        waiting.prescription_id = new_rx_id
        waiting.state = RefillRequestState.OPEN
    db.session.flush()


def close_open_requests(actor: Actor, rx_id: int, reason: str) -> None:
    t = now()
    req = _open_request(rx_id)
    if req is not None:
        req.state = RefillRequestState.CANCELLED
        req.decline_reason = reason[:400]
        req.decided_at = t
        req.decided_by_id = actor.user_id
    for renewal in db.session.execute(
        sa.select(RenewalRequest).where(RenewalRequest.prescription_id == rx_id,
                                        RenewalRequest.state.in_([RenewalState.NEEDED, RenewalState.SENT]))
    ).scalars():
        renewal.state = RenewalState.CANCELLED
        renewal.resolved_at = t
    db.session.flush()


@dataclass
class QueueItem:
    request: RefillRequest
    rx: Prescription
    patient: Patient
    eligibility: rules.Eligibility
    earliest_dispense: date | None


def queue(actor: Actor, *, limit: int = 100) -> list[QueueItem]:
    """Open requests, oldest first, with what the pharmacist needs to decide."""
    audit.require(actor, Permission.VIEW_CLINICAL, what="see refill requests")
    reqs = db.session.execute(
        sa.select(RefillRequest).where(RefillRequest.state.in_(OPEN_REQUEST_STATES))
        .options(joinedload(RefillRequest.prescription).joinedload(Prescription.patient),
                 joinedload(RefillRequest.prescription).joinedload(Prescription.formula))
        .order_by(RefillRequest.requested_at, RefillRequest.id).limit(limit)
    ).unique().scalars().all()
    rx_ids = [r.prescription_id for r in reqs]
    last = {}
    if rx_ids:
        latest = (sa.select(Order.prescription_id, sa.func.max(Order.fill_number).label("f"))
                  .where(Order.prescription_id.in_(rx_ids), Order.state == OrderState.DISPENSED)
                  .group_by(Order.prescription_id).subquery())
        for o in db.session.execute(sa.select(Order).join(
                latest, sa.and_(latest.c.prescription_id == Order.prescription_id, latest.c.f == Order.fill_number))
        ).scalars():
            last[o.prescription_id] = o
    out = []
    for r in reqs:
        prev = last.get(r.prescription_id)
        earliest = None
        if prev is not None and prev.dispensed_on is not None:
            earliest = rules.earliest_dispense_date(prev.dispensed_on, prev.days_supply, settings().too_soon_percent)
        out.append(QueueItem(request=r, rx=r.prescription, patient=r.prescription.patient,
                             eligibility=eligibility_for(r.prescription), earliest_dispense=earliest))
    return out


def renewals_waiting(actor: Actor, *, limit: int = 100) -> list[RenewalRequest]:
    audit.require(actor, Permission.VIEW_CLINICAL, what="see renewals")
    return list(db.session.execute(
        sa.select(RenewalRequest).where(RenewalRequest.state.in_([RenewalState.NEEDED, RenewalState.SENT]))
        .options(joinedload(RenewalRequest.prescription).joinedload(Prescription.patient))
        .order_by(RenewalRequest.created_at).limit(limit)
    ).unique().scalars())
