"""Refill requests (patients from a signed link or the API, staff at the counter): eligibility, the refill
page's summary and quote, opening and deciding requests.

docs/domain.md "Refill timing": a request may come early (that is the point); what is left and expiry are
enforced (a missing refill count is zero; the rest of a partial fill is still owed); one request or fill in
progress at a time; with nothing left the pharmacy asks the prescriber for a renewal and tells the patient.
Supply comes from the one model (supply/); what a request means for orders, reminders and notices is done
by pharmacy/workflows/refill_requests.py. Renewals are in refills/renewals.py; the queue in refills/queue.py.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from pharmacy.compounding.models import Order
from pharmacy.compounding.rules import DeliveryMethod, OrderState
from pharmacy.core import audit, links
from pharmacy.core.actor import Actor
from pharmacy.core.clock import local_date
from pharmacy.core.context import business_calendar, now, settings, today
from pharmacy.core.errors import Conflict, LinkInvalid, NotFound, ValidationFailed
from pharmacy.core.ids import valid_id
from pharmacy.core.roles import Permission
from pharmacy.extensions import db
from pharmacy.patients.models import Patient
from pharmacy.prescriptions import rules as rx_rules
from pharmacy.prescriptions.models import Prescription
from pharmacy.prescriptions.rules import RxStatus
from pharmacy.refills import renewals, rules
from pharmacy.refills.models import RefillRequest, RenewalRequest
from pharmacy.refills.rules import RefillRequestState, RenewalState, RequestSource
from pharmacy.supply import next_fill, reads
from pharmacy.supply.rules import Supply

OPEN_RENEWAL_STATES = renewals.OPEN_RENEWAL_STATES


def eligibility(rx: Prescription | Any, current: Supply, *, order_in_progress: bool,
                open_request: bool, day: date | None = None) -> rules.Eligibility:
    """The patient's answer from facts already read (lists read them for many prescriptions at once): `rx` is the
    prescription or a row with its `status`; `day` is today, read once by a list."""
    return rules.refill_eligibility(status=rx.status.value, supply=current, today=day or today(),
                                    order_in_progress=order_in_progress, open_request=open_request)


def eligibility_for(rx: Prescription, *, count_open_request: bool = True) -> rules.Eligibility:
    """May a refill of `rx` be requested today? With count_open_request=False: could the open one be approved?"""
    return eligibility(rx, reads.supply_of(rx), order_in_progress=reads.open_order(rx.id) is not None,
                       open_request=count_open_request and reads.open_request(rx.id) is not None)


# ---- what a patient (or the pharmacy) sees about one prescription ------------------------------


@dataclass(frozen=True)
class DeliveryOption:
    """Pick-up or shipping, each with its own total and the day the patient has the medicine."""

    method: DeliveryMethod
    total_cents: int
    shipping_cents: int
    on: date  # ready for pick-up, or the day the parcel arrives
    available: bool = True  # shipping needs an address on file
    quantity_text: str = ""  # what this method's fill holds: a parcel's can be shorter (its BUD at the door)
    days: int = 0
    note: str | None = None  # why it is short of a whole fill


@dataclass
class RefillSummary:
    rx: Prescription
    patient: Patient
    product: str
    dose_text: str
    next_step: str | None
    days_left: int | None
    run_out: date | None  # the last day covered
    refills_left: int
    eligibility: rules.Eligibility
    price_cents: int
    shipping_cents: int
    delivery: DeliveryMethod
    ready_on: date
    arrives_on: date | None
    open_request: RefillRequest | None
    supply: Supply | None = None
    address_lines: list[str] = field(default_factory=list)
    price_known: bool = True
    quantity_text: str = ""
    fill_days: int = 0
    lead_time_days: int = 0
    options: list[DeliveryOption] = field(default_factory=list)
    open_order_state: OrderState | None = None
    renewal_state: RenewalState | None = None
    link_spent: bool = False  # the link made a request that has since been decided: it cannot ask again
    out_since: date | None = None  # the first day without medicine, when the patient has run out
    fill_progress: str | None = None  # "14 of 60 days; 46 days still owed on this fill" for a partial
    fill_note: str | None = None  # why the next fill is short of a whole fill (BUD cap, the rest of a partial)
    timed_by_supply: bool = False  # the dates wait for the too-soon rule, not for the compounding lead time

    @property
    def total_cents(self) -> int:
        return self.price_cents + self.shipping_cents

    @property
    def days_out(self) -> int:
        """Days the patient has been without medicine (0 when not out)."""
        return (today() - self.out_since).days + 1 if self.out_since else 0

    @property
    def last_dose_on(self) -> date | None:
        """The last day covered before the patient ran out (when out)."""
        return self.out_since - timedelta(days=1) if self.out_since else None

    @property
    def on_its_way(self) -> date | None:
        """The day a dispensed refill still travelling reaches the patient, when it starts a new span of cover (a
        parcel after a gap, or one arriving after the bottle in hand runs out); None otherwise."""
        return self.supply.arriving_on(today()) if self.supply is not None else None

    @property
    def gap_ahead(self) -> int:
        """Days without medicine from today before the refill on its way arrives (0: none)."""
        return self.supply.gap_ahead(today()) if self.supply is not None else 0

    @property
    def held_until(self) -> date | None:
        """The last day covered by the medicine in hand today (before any parcel on its way)."""
        return self.supply.held_until(today()) if self.supply is not None else self.run_out


def address_lines(patient: Patient) -> list[str]:
    city_line = " ".join(filter(None, [(patient.city or "") + ",", patient.state, patient.postal_code]))
    return [x for x in (patient.address_line1, patient.address_line2, city_line) if x and x.strip(", ")]


def _next_step(rx: Prescription, current: Supply) -> str | None:
    steps = rx_rules.parse_titration(rx.titration)
    if not steps or current.days_dispensed == 0:
        return None
    ahead = rx_rules.remaining_steps(steps, current.days_dispensed)
    dose = ahead[0].dose_mg if ahead else rx.dose_mg
    return f"Next fill continues at {rx_rules.format_mg(dose)} a day" + (
        f", then {rx_rules.format_mg(rx.dose_mg)}" if ahead and dose != rx.dose_mg else "")


@dataclass(frozen=True)
class _When:
    ready_on: date  # ready for pick-up, or the day the parcel leaves
    arrives_on: date | None  # shipped only


def _promised(rx: Prescription, current: Supply, start_day: date) -> tuple[date, dict[DeliveryMethod, _When]]:
    """The compounding lead time's ready day, and each way's promised dates (too soon may move them later:
    rules.promised_dates)."""
    calendar = business_calendar()
    ready = rules.ready_date(start_day, lead_time_business_days=rx.formula.lead_time_business_days, calendar=calendar)
    return ready, {method: _When(*rules.promised_dates(ready, current.earliest_next_start, shipping_days=shipping,
                                                       calendar=calendar))
                   for method, shipping in ((DeliveryMethod.PICKUP, 0), (DeliveryMethod.SHIP, rx.patient.shipping_days))}


def _options(form: Any, fills: dict[DeliveryMethod, Any], prices: dict[DeliveryMethod, int], fee: int,
             when: dict[DeliveryMethod, _When], lines: list[str]) -> list[DeliveryOption]:
    """Pick-up and shipping side by side: each one's total, day and what its fill holds (a parcel's may be shorter)."""
    def held(method: DeliveryMethod) -> dict[str, Any]:
        f = fills.get(method)
        return {} if f is None else {"quantity_text": rx_rules.quantity_text(form, f.plan.quantity),
                                     "days": f.plan.days_supply, "note": f.plan.note}

    pickup, ship = when[DeliveryMethod.PICKUP], when[DeliveryMethod.SHIP]
    return [
        DeliveryOption(DeliveryMethod.PICKUP, prices.get(DeliveryMethod.PICKUP, 0), 0, pickup.ready_on,
                       **held(DeliveryMethod.PICKUP)),
        DeliveryOption(DeliveryMethod.SHIP, prices.get(DeliveryMethod.SHIP, 0) + fee, fee,
                       ship.arrives_on or ship.ready_on, available=bool(lines), **held(DeliveryMethod.SHIP)),
    ]


def summary(rx: Prescription, *, delivery: DeliveryMethod | None = None) -> RefillSummary:
    """Everything the refill page (and the refill emails) show about the next fill of `rx`.

    The quantity, days and price are exactly what approving would order today (supply/next_fill.py: the
    days still owed on the current fill, capped to the BUD at the patient's door, shipping included), so the
    price a patient confirms is the price the order snapshots. While a request is open, its day and delivery
    method set the dates, so the page and the confirmation email keep saying the same thing on later days.
    """
    patient = rx.patient
    formula = rx.formula
    current = reads.supply_of(rx)
    open_order = reads.open_order(rx.id)
    open_req = reads.open_request(rx.id)
    delivery = delivery or rules.next_fill_delivery(open_req.delivery_method if open_req else None,
                                                    patient.delivery_preference)
    day = today()
    start_day = local_date(open_req.requested_at, settings().timezone) if open_req is not None else day
    fill_days, quantity_text, note = current.days_owed or rx.days_supply, "", None
    prices: dict[DeliveryMethod, int] = {}
    fee = 0
    fills: dict[DeliveryMethod, Any] = {}
    try:
        fills = next_fill.next_fills(rx, day=day)
        chosen = fills[delivery]
        fill_days, note = chosen.plan.days_supply, chosen.plan.note
        quantity_text = rx_rules.quantity_text(formula.form, chosen.plan.quantity)
        prices = {m: f.price_cents for m, f in fills.items() if f.quote is not None}
        fee = fills[DeliveryMethod.SHIP].shipping_cents
    except ValidationFailed:
        pass
    price_known = delivery in prices
    price = prices.get(delivery, 0)
    ready, when = _promised(rx, current, start_day)
    lines = address_lines(patient)
    options = _options(formula.form, fills, prices, fee, when, lines)
    chosen_when = when[delivery]
    renewal_state = None
    if open_req is not None and open_req.renewal_id is not None:
        renewal = db.session.get(RenewalRequest, open_req.renewal_id)
        renewal_state = renewal.state if renewal is not None else None
    return RefillSummary(
        rx=rx, patient=patient, product=rx_rules.product_name(formula.form, formula.strength_mg),
        dose_text=rx.directions, next_step=_next_step(rx, current),
        days_left=current.days_on_hand(day) if current.run_out is not None else None, run_out=current.run_out,
        refills_left=current.refills_left,
        eligibility=eligibility(rx, current, order_in_progress=open_order is not None,
                                open_request=open_req is not None),
        price_cents=price, shipping_cents=fee if delivery == DeliveryMethod.SHIP else 0, delivery=delivery,
        ready_on=chosen_when.ready_on, arrives_on=chosen_when.arrives_on, open_request=open_req,
        supply=current, address_lines=lines, price_known=price_known, quantity_text=quantity_text,
        fill_days=fill_days, lead_time_days=formula.lead_time_business_days, options=options,
        open_order_state=open_order.state if open_order is not None else None, renewal_state=renewal_state,
        out_since=current.out_since(day), fill_progress=current.progress_text() if current.partial else None,
        fill_note=note, timed_by_supply=chosen_when.ready_on != ready,
    )


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
    # Whose prescription it is and its status, as two columns: the page that follows loads the prescription with its
    # patient and formula once (reads.prescription), so the check does not build it twice.
    row = db.session.execute(
        sa.select(Prescription.patient_id, Prescription.status).where(Prescription.id == claims.prescription_id)
    ).first() if valid_id(claims.prescription_id) else None
    if row is None or row.patient_id != claims.patient_id:
        raise LinkInvalid("This link is not valid.", reason="invalid")
    claims = _current(claims, row.status)
    if links.failed_attempts(claims.nonce) >= links.MAX_DOB_ATTEMPTS:
        raise LinkInvalid("Too many wrong dates of birth were entered on this link.", reason="locked")
    if not allow_used and links.is_used(claims.nonce) and reads.open_request(claims.prescription_id) is None:
        raise LinkInvalid("This link has already been used.", reason="used")
    return claims


def _current(claims: links.LinkClaims, status: RxStatus) -> links.LinkClaims:
    """The link's claims on the prescription it now stands for. A reminder's link outlives a renewal or a dose
    change (the new prescription takes over the supply, the waiting request and the reminders), so a link to a
    replaced prescription opens the one that replaced it — the same patient's, followed down a chain of
    replacements — where the patient can ask for the refill they were told to ask for. A discontinued or on-hold
    prescription (or a replacement that is) is not followed: its page says to call the pharmacy."""
    assert claims.prescription_id is not None
    current = reads.current_successor(claims.prescription_id, claims.patient_id, status)
    return claims if current == claims.prescription_id else dataclasses.replace(claims, prescription_id=current)


BIRTH_DATE = links.Question(answers="dates of birth", failed_action="link.dob_failed", field="date_of_birth",
                            wrong="That date of birth does not match our records.", wrong_field="That does not match.")


def confirm_birth_date(token: str, dob: date) -> links.LinkClaims:
    """docs/domain.md: a patient opening a refill link confirms their date of birth before seeing anything."""
    claims = open_link(token)
    patient = db.session.get(Patient, claims.patient_id)
    actor = patient_actor(claims)
    correct = patient is not None and patient.date_of_birth == dob
    links.check_answer(claims, BIRTH_DATE, correct=correct, actor=actor)  # atomic: concurrent guesses cannot pass
    audit.record(actor, "link.open", entity=("prescription", claims.prescription_id))
    return claims


def request_by_link(token: str, dob: date) -> links.LinkClaims:
    """The API's patient path, first half: the date of birth confirmed on the link (workflows open the request)."""
    return confirm_birth_date(token, dob)


def link_summary(claims: links.LinkClaims) -> RefillSummary:
    """The refill page's facts for a confirmed link (only ever the link's own patient and prescription — the one
    `open_link` found the link stands for, the successor of a replaced one)."""
    rx = reads.prescription(claims.prescription_id or 0)
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
    needs_renewal: bool = False


def request_refill(actor: Actor, rx_id: int, *, source: RequestSource, delivery: DeliveryMethod | None = None,
                   claims: links.LinkClaims | None = None, note: str | None = None) -> RequestOutcome:
    """Open a request (idempotent: a second identical one returns the first, enforced by a unique index).

    The prescription row is locked first, so concurrent identical requests queue up behind one
    another on PostgreSQL and each later one finds the first; the partial unique index is the
    backstop (SQLite, or a path that skipped the lock). With nothing left on the prescription the
    request waits for a renewal, and the pharmacist's renewal task is opened.
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
    rx = reads.prescription(rx_id, lock=True)
    if actor.kind == "patient" and rx.patient_id != actor.patient_id:
        raise NotFound("No such prescription.")
    existing = reads.open_request(rx.id)
    if existing is not None:
        if claims is not None:
            links.mark_used(claims)
        return RequestOutcome(existing, False)
    elig = eligibility_for(rx)
    if not elig.ok and not elig.needs_renewal:
        raise Conflict(elig.message)
    delivery = delivery or rx.patient.delivery_preference
    if delivery == DeliveryMethod.SHIP and not address_lines(rx.patient):
        raise ValidationFailed("We have no address on file to ship to; choose pick-up or call the pharmacy.",
                               fields={"delivery": "No address on file for shipping."})
    if claims is not None and not links.mark_used(claims):
        raise LinkInvalid("This link has already been used.", reason="used")
    state = RefillRequestState.AWAITING_RENEWAL if elig.needs_renewal else RefillRequestState.OPEN
    req = RefillRequest(
        prescription_id=rx.id, patient_id=rx.patient_id, state=state, source=source, delivery_method=delivery,
        requested_at=now(), requested_by_id=actor.user_id, note=note,
        # Read by the INSERT itself, inside the write transaction: on SQLite the prescription read above takes no
        # lock, and a dispensing committed since would otherwise leave this request with the run-out before it.
        run_out_date=sa.select(Prescription.latest_run_out_date).where(Prescription.id == rx.id).scalar_subquery(),
    )
    try:
        with db.session.begin_nested():
            db.session.add(req)
            db.session.flush()
    except IntegrityError:
        # Lost a race with an identical request: the database kept exactly one; return it.
        existing = reads.open_request(rx.id)
        if existing is None:
            raise
        return RequestOutcome(existing, False)
    audit.record(actor, "refill.request", patient_id=rx.patient_id, entity=("refill_request", req.id),
                 details={"source": source.value, "state": state.value})
    if elig.needs_renewal:
        renewal = renewals.ensure_renewal_task(rx.id, reason=elig.message)
        req.renewal_id = renewal.id
    db.session.flush()
    return RequestOutcome(req, True, needs_renewal=elig.needs_renewal)


# ---- the pharmacy's side ------------------------------------------------------------------------


def approvable(actor: Actor, request_id: int) -> tuple[RefillRequest, Prescription]:
    """The open request and its prescription, locked, once it is clear it may become an order today."""
    audit.require(actor, Permission.DECIDE_REFILL, what="approve refill requests")
    req = reads.refill_request(request_id, lock=True)
    if req.state != RefillRequestState.OPEN:
        raise Conflict(f"This request is {req.state.value.replace('_', ' ')}; only an open request can be approved.")
    rx = reads.prescription(req.prescription_id, lock=True)
    # The request itself is open, so ask whether it could be made, ignoring that it exists.
    elig = eligibility_for(rx, count_open_request=False)
    if not elig.ok:
        raise Conflict(rules.staff_reason(elig.code, elig.message, rx_number=rx.rx_number, status=rx.status.value,
                                          expiry_date=rx.expiry_date))
    return req, rx


def mark_approved(actor: Actor, req: RefillRequest, order: Order) -> RefillRequest:
    req.state = RefillRequestState.APPROVED
    req.order_id = order.id
    req.decided_at = now()
    req.decided_by_id = actor.user_id
    db.session.flush()
    audit.record(actor, "refill.approve", patient_id=req.patient_id, entity=("refill_request", req.id),
                 details={"order": order.id})
    return req


def decline(actor: Actor, request_id: int, reason: str) -> RefillRequest:
    """Decline with the reason the patient will read in the REQUEST_DECLINED email."""
    audit.require(actor, Permission.DECIDE_REFILL, what="decline refill requests")
    req = reads.refill_request(request_id, lock=True)
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
    return req


def cancel_open_request(actor: Actor, rx_id: int, reason: str) -> RefillRequest | None:
    """Cancel the request waiting on the prescription, if any — and nothing else: a renewal already asked of the
    prescriber stands (the patient skipping one refill still needs the prescription renewed)."""
    req = reads.open_request(rx_id)
    if req is not None:
        req.state = RefillRequestState.CANCELLED
        req.decline_reason = reason[:400]
        req.decided_at = now()
        req.decided_by_id = actor.user_id
        db.session.flush()
    return req


def close_open_requests(actor: Actor, rx_id: int, reason: str) -> None:
    """The prescription stops (discontinued, replaced, renewal denied): its waiting request and every open renewal
    are closed."""
    t = now()
    cancel_open_request(actor, rx_id, reason)
    for renewal in db.session.execute(
        sa.select(RenewalRequest).where(RenewalRequest.prescription_id == rx_id,
                                        RenewalRequest.state.in_(OPEN_RENEWAL_STATES))
    ).scalars():
        renewal.state = RenewalState.CANCELLED
        renewal.resolved_at = t
    db.session.flush()
