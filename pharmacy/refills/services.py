"""Refill requests (patients from a signed link or the API, staff at the counter) and renewals.

DOMAIN.md "Refill timing": a request may come early (that is the point); refills left and expiry
are enforced (a missing count is zero); one request or fill in progress at a time; with no
refills left the pharmacy asks the prescriber for a renewal and tells the patient.
The renewal use cases are in refills/renewals.py; the pharmacist's queue in refills/queue.py.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import joinedload

from pharmacy.billing import pricing
from pharmacy.compounding import rules as compounding_rules
from pharmacy.compounding.models import Order
from pharmacy.compounding.rules import DeliveryMethod, OrderState
from pharmacy.core import audit, links
from pharmacy.core.actor import Actor
from pharmacy.core.clock import local_date
from pharmacy.core.context import business_calendar, now, settings, today
from pharmacy.core.errors import Conflict, LinkInvalid, NotFound, ValidationFailed
from pharmacy.core.roles import Permission
from pharmacy.extensions import db
from pharmacy.patients.models import Patient
from pharmacy.prescriptions import rules as rx_rules
from pharmacy.prescriptions import screening
from pharmacy.prescriptions.models import Prescription
from pharmacy.refills import rules
from pharmacy.refills.models import OPEN_REQUEST_STATES, RefillRequest, RenewalRequest
from pharmacy.refills.rules import RefillRequestState, RenewalState, RequestSource
from pharmacy.reminders import outbox, planning
from pharmacy.reminders.rules import MessageKind

OPEN_ORDER_STATES = [s for s in OrderState if s not in (OrderState.DISPENSED, OrderState.CANCELLED)]
OPEN_RENEWAL_STATES = (RenewalState.NEEDED, RenewalState.SENT)


# ---- facts about prescriptions, fetched in batches (a page of 100 requests costs the same few queries) ----


@dataclass(frozen=True)
class RxFacts:
    """What eligibility needs about one prescription's fills and requests."""

    in_progress: bool = False  # an order not yet dispensed or cancelled
    has_fill: bool = False  # any fill that was not cancelled (the original fill 0 included)
    refills_used: int = 0  # fills after the first, dispensed or being made
    open_request: bool = False


def rx_facts(rx_ids: Iterable[int], *, with_requests: bool = True) -> dict[int, RxFacts]:
    """One grouped query over orders (and one over requests) for any number of prescriptions.

    "Refills used" counts like prescriptions.services.refills_used: fills numbered after the
    original (fill 0) that were not cancelled.
    """
    ids = sorted(set(rx_ids))
    if not ids:
        return {}
    not_cancelled = Order.state != OrderState.CANCELLED
    rows = db.session.execute(
        sa.select(
            Order.prescription_id,
            sa.func.sum(sa.case((Order.state.in_(OPEN_ORDER_STATES), 1), else_=0)),
            sa.func.sum(sa.case((not_cancelled, 1), else_=0)),
        ).where(Order.prescription_id.in_(ids)).group_by(Order.prescription_id)
    ).all()
    # Refills used = fills not cancelled, less the original (prescriptions.services.refills_used).
    orders = {rx_id: (int(o or 0), int(f or 0), max(int(f or 0) - 1, 0)) for rx_id, o, f in rows}
    open_requests: set[int] = set()
    if with_requests:
        open_requests = set(db.session.execute(
            sa.select(RefillRequest.prescription_id).where(RefillRequest.prescription_id.in_(ids),
                                                           RefillRequest.state.in_(OPEN_REQUEST_STATES))
        ).scalars())
    out = {}
    for rx_id in ids:
        open_n, fills, used = orders.get(rx_id, (0, 0, 0))
        out[rx_id] = RxFacts(in_progress=open_n > 0, has_fill=fills > 0, refills_used=used,
                             open_request=rx_id in open_requests)
    return out


def _eligibility(rx: Prescription, facts: RxFacts, *, count_open_request: bool = True) -> rules.Eligibility:
    # Before the first fill, the original fill is still to come and it is not a refill: with
    # 0 refills authorized the patient may still have it. A missing count is zero (rules.refills_left).
    authorized = rx.refills_authorized or 0
    used = facts.refills_used
    if not facts.has_fill:
        authorized, used = authorized + 1, 0
    return rules.refill_eligibility(
        status=rx.status.value, refills_authorized=authorized, refills_used=used,
        expiry_date=rx.expiry_date, today=today(), order_in_progress=facts.in_progress,
        open_request=facts.open_request and count_open_request,
    )


def eligibility_for(rx: Prescription, *, count_open_request: bool = True) -> rules.Eligibility:
    """May a refill of `rx` be requested today? With count_open_request=False: could the open one be approved?"""
    return _eligibility(rx, rx_facts([rx.id], with_requests=count_open_request)[rx.id],
                        count_open_request=count_open_request)


def _refills_left(rx: Prescription, facts: RxFacts) -> int:
    return rules.refills_left(rx.refills_authorized, facts.refills_used)


# ---- what a patient (or the pharmacy) sees about one prescription ------------------------------


@dataclass(frozen=True)
class DeliveryOption:
    """Pick-up or shipping, each with its own total and the day the patient has the medicine."""

    method: DeliveryMethod
    total_cents: int
    shipping_cents: int
    on: date  # ready for pick-up, or the day the parcel arrives
    available: bool = True  # shipping needs an address on file


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
    price_known: bool = True
    quantity_text: str = ""
    fill_days: int = 0
    lead_time_days: int = 0
    options: list[DeliveryOption] = field(default_factory=list)
    open_order_state: OrderState | None = None
    renewal_state: RenewalState | None = None
    link_spent: bool = False  # the link made a request that has since been decided: it cannot ask again

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


def _address_lines(patient: Patient) -> list[str]:
    city_line = " ".join(filter(None, [(patient.city or "") + ",", patient.state, patient.postal_code]))
    return [x for x in (patient.address_line1, patient.address_line2, city_line) if x and x.strip(", ")]


def summary(rx: Prescription, *, delivery: DeliveryMethod | None = None) -> RefillSummary:
    """Everything the refill page (and the refill emails) show about the next fill of `rx`.

    The quantity, days and price follow exactly what approving would order (titration steps still
    ahead, capped to the BUD), so the price a patient confirms is the price the order snapshots.
    While a request is open, its day and delivery method set the dates, so the page and the
    confirmation email keep saying the same thing on the following days.
    """
    patient = rx.patient
    formula = rx.formula
    facts = rx_facts([rx.id])[rx.id]
    open_req = _open_request(rx.id) if facts.open_request else None
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
    delivery = delivery or (open_req.delivery_method if open_req else None) or patient.delivery_preference
    start_day = today()
    if open_req is not None:
        start_day = local_date(open_req.requested_at, settings().timezone)
    days_left = run_out = None
    if last is not None and last.run_out_date is not None:
        run_out = last.run_out_date
        days_left = max((run_out - today()).days, 0)
    price, fill_days, quantity_text, price_known = 0, rx.days_supply, "", True
    try:
        qty = rx_rules.quantity_for_days(formula.form, formula.strength_mg, rx.dose_mg, rx.days_supply, ahead)
        plan = compounding_rules.cap_to_bud(
            formula.form, formula.strength_mg, rx.dose_mg, quantity=qty, days_supply=rx.days_supply,
            bud_days=compounding_rules.BUD_DAYS[formula.usp_category], steps=ahead)
        fill_days = plan.days_supply
        quantity_text = rx_rules.quantity_text(formula.form, plan.quantity)
        price = pricing.quote(formula.id, plan.quantity, DeliveryMethod.PICKUP).price_cents
    except ValidationFailed:
        price_known = False
    fee = pricing.shipping_fee_cents()
    cal = business_calendar()
    ready = rules.ready_date(start_day, lead_time_business_days=formula.lead_time_business_days, calendar=cal)
    ship_on = rules.arrival_date(ready, patient.shipping_days)
    lines = _address_lines(patient)
    options = [
        DeliveryOption(DeliveryMethod.PICKUP, price, 0, ready),
        DeliveryOption(DeliveryMethod.SHIP, price + fee, fee, ship_on, available=bool(lines)),
    ]
    open_order_state = None
    if facts.in_progress:
        open_order_state = db.session.execute(
            sa.select(Order.state).where(Order.prescription_id == rx.id, Order.state.in_(OPEN_ORDER_STATES))
            .order_by(Order.fill_number.desc()).limit(1)
        ).scalar_one_or_none()
    renewal_state = None
    if open_req is not None and open_req.renewal_id is not None:
        renewal = db.session.get(RenewalRequest, open_req.renewal_id)
        renewal_state = renewal.state if renewal is not None else None
    return RefillSummary(
        rx=rx, patient=patient, product=rx_rules.product_name(formula.form, formula.strength_mg),
        dose_text=rx.directions, next_step=next_step, days_left=days_left, run_out=run_out,
        refills_left=_refills_left(rx, facts), eligibility=_eligibility(rx, facts), price_cents=price,
        shipping_cents=fee if delivery == DeliveryMethod.SHIP else 0, delivery=delivery, ready_on=ready,
        arrives_on=ship_on if delivery == DeliveryMethod.SHIP else None, open_request=open_req,
        address_lines=lines, price_known=price_known, quantity_text=quantity_text, fill_days=fill_days,
        lead_time_days=formula.lead_time_business_days, options=options, open_order_state=open_order_state,
        renewal_state=renewal_state,
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

# How a refused link answers over HTTP: 410 Gone for one that worked once (expired, used), 429 for
# one locked by wrong birth dates, 400 for anything tampered with or out of scope.
LINK_HTTP_STATUS = {"invalid": 400, "expired": 410, "used": 410, "locked": 429}


def patient_actor(claims: links.LinkClaims) -> Actor:
    """The patient behind a confirmed link: may touch only this patient's one prescription."""
    return Actor(kind="patient", patient_id=claims.patient_id, prescription_id=claims.prescription_id)


def open_link(token: str, *, allow_used: bool = False) -> links.LinkClaims:
    """Check a refill link before anything is shown: signature, expiry, scope, lock and single use.

    A used link still opens while the request it made is open (a second click or a retried API
    call gets that same request back); once the request is decided the link is spent ("used").
    `allow_used` is for a browser that has just confirmed the date of birth on this link, so the
    patient can read the page that says what happened to the request.
    """
    claims = links.read_token(links.REFILL, token, max_age_days=settings().refill_link_days)
    if claims.prescription_id is None:
        raise LinkInvalid("This link is not valid.", reason="invalid")
    rx = db.session.get(Prescription, claims.prescription_id)
    if rx is None or rx.patient_id != claims.patient_id:
        raise LinkInvalid("This link is not valid.", reason="invalid")
    if links.failed_attempts(claims.nonce) >= links.MAX_DOB_ATTEMPTS:
        raise LinkInvalid("Too many wrong dates of birth were entered on this link.", reason="locked")
    if not allow_used and links.is_used(claims.nonce) and _open_request(rx.id) is None:
        raise LinkInvalid("This link has already been used.", reason="used")
    return claims


def confirm_birth_date(token: str, dob: date) -> links.LinkClaims:
    """DOMAIN.md: a patient opening a refill link confirms their date of birth before seeing anything."""
    claims = open_link(token)
    patient = db.session.get(Patient, claims.patient_id)
    actor = patient_actor(claims)
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


def request_by_link(token: str, dob: date, *, delivery: DeliveryMethod | None = None,
                    source: RequestSource = RequestSource.API) -> tuple[RequestOutcome, RefillSummary]:
    """The API's patient path in one step: confirm the date of birth, open (or find) the request, say what it brings."""
    claims = confirm_birth_date(token, dob)
    outcome = request_refill(patient_actor(claims), claims.prescription_id or 0, source=source, delivery=delivery,
                             claims=claims)
    return outcome, summary(_rx_for(outcome.request.prescription_id))


def link_summary(claims: links.LinkClaims) -> RefillSummary:
    """The refill page's facts for a confirmed link (only ever the link's own patient and prescription)."""
    rx = _rx_for(claims.prescription_id or 0)
    if rx.patient_id != claims.patient_id:
        raise LinkInvalid("This link is not valid.", reason="invalid")
    audit.record(patient_actor(claims), "link.view", entity=("prescription", rx.id))
    s = summary(rx)
    s.link_spent = s.open_request is None and links.is_used(claims.nonce)
    return s


# ---- requesting ---------------------------------------------------------------------------------


@dataclass
class RequestOutcome:
    request: RefillRequest
    created: bool


def request_refill(actor: Actor, rx_id: int, *, source: RequestSource, delivery: DeliveryMethod | None = None,
                   claims: links.LinkClaims | None = None, note: str | None = None) -> RequestOutcome:
    """Open a request (idempotent: a second identical one returns the first, enforced by a unique index).

    The prescription row is locked first, so concurrent identical requests queue up behind one
    another on PostgreSQL and each later one finds the first; the partial unique index is the
    backstop (SQLite, or a path that skipped the lock).
    """
    if actor.kind == "patient":
        # A refill link's claims, or a patient the portal signed in (or known by their verified mobile number):
        # then actor.prescription_id names the one prescription they act on, and it must be theirs (below).
        # Without a link's claims only the portal's or a verified number's own sources may ask.
        verified_elsewhere = source in (RequestSource.PORTAL, RequestSource.SMS)
        scoped = claims.prescription_id if claims is not None else (actor.prescription_id if verified_elsewhere else None)
        if scoped != rx_id or (claims is not None and claims.patient_id != actor.patient_id):
            raise LinkInvalid("This link is not valid.", reason="invalid")
    elif actor.kind != "system":  # the system: auto-refill, for a patient who enrolled (pharmacy/autorefill)
        audit.require(actor, Permission.REQUEST_REFILL, what="request refills")
    rx = _rx_for(rx_id, lock=True)
    if actor.kind == "patient" and rx.patient_id != actor.patient_id:
        raise NotFound("No such prescription.")
    existing = _open_request(rx.id)
    if existing is not None:
        if claims is not None:
            links.mark_used(claims)
        return RequestOutcome(existing, False)
    elig = eligibility_for(rx)
    if not elig.ok and not elig.needs_renewal:
        raise Conflict(elig.message)
    delivery = delivery or rx.patient.delivery_preference
    if delivery == DeliveryMethod.SHIP and not _address_lines(rx.patient):
        raise ValidationFailed("We have no address on file to ship to; choose pick-up or call the pharmacy.",
                               fields={"delivery": "No address on file for shipping."})
    if claims is not None and not links.mark_used(claims):
        raise LinkInvalid("This link has already been used.", reason="used")
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
        from pharmacy.refills.renewals import ensure_renewal_task

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


def _staff_reason(rx: Prescription, elig: rules.Eligibility) -> str:
    """Why a request cannot become an order, in the pharmacist's words (the patient's are in rules)."""
    if elig.code == "expired":
        return (f"Prescription {rx.rx_number} expired on {rules.long_date(rx.expiry_date)}: ask the prescriber "
                "for a renewal instead.")
    if elig.code == "no_refills":
        return f"No refills remain on {rx.rx_number}: ask the prescriber for a renewal instead."
    if elig.code == "in_progress":
        return (f"A fill of {rx.rx_number} is already in progress: decline this request saying so, "
                "or cancel that order first.")
    if elig.code == "inactive":
        return f"Prescription {rx.rx_number} is {rx.status.value.replace('_', ' ')}; no fill can be made."
    return elig.message


def approve(actor: Actor, request_id: int) -> Order:
    """Approve: the next fill's order is created (too-soon is checked again when it is dispensed)."""
    from pharmacy.compounding.services import new_order

    audit.require(actor, Permission.DECIDE_REFILL, what="approve refill requests")
    req = _load_request(request_id)
    if req.state != RefillRequestState.OPEN:
        raise Conflict(f"This request is {req.state.value.replace('_', ' ')}; only an open request can be approved.")
    rx = _rx_for(req.prescription_id, lock=True)
    # The request itself is open, so ask whether it could be made, ignoring that it exists.
    elig = eligibility_for(rx, count_open_request=False)
    if not elig.ok:
        raise Conflict(_staff_reason(rx, elig))
    order = new_order(actor, rx, delivery=req.delivery_method, request_note=req.note)
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
    """Decline with the reason the patient will read in the REQUEST_DECLINED email."""
    audit.require(actor, Permission.DECIDE_REFILL, what="decline refill requests")
    req = _load_request(request_id)
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
                                        RenewalRequest.state.in_(OPEN_RENEWAL_STATES))
    ).scalars():
        renewal.state = RenewalState.CANCELLED
        renewal.resolved_at = t
    db.session.flush()
