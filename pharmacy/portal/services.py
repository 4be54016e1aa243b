"""The patient portal's use cases: signing in with a one-time code, the session, and everything a patient sees and
does under /my/.

A layer above the features (like workflows/): it calls their public services — refills.services for the refill
page and the request (the same rules and quote as the refill link), billing for receipts and statements,
patients.self_service, sms.services, autorefill.services — with a patient actor whose patient id comes from the
session, never from the request. Every read of the patient's record is audited ("portal.*").
"""
from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from flask import current_app
from icalendar import Calendar, Event
from sqlalchemy.orm import joinedload

from pharmacy.autorefill import services as autorefill
from pharmacy.billing.models import Payment
from pharmacy.billing.rules import Ledger
from pharmacy.billing.services import local_date_of, patient_ledger, receipt_number_for, statement_years
from pharmacy.compounding.models import Formula, Order
from pharmacy.compounding.rules import DeliveryMethod
from pharmacy.core import audit, links
from pharmacy.core.actor import ANONYMOUS, Actor
from pharmacy.core.context import now, settings, today
from pharmacy.core.errors import Conflict, NotFound, ValidationFailed
from pharmacy.core.models import LinkGuard
from pharmacy.extensions import db
from pharmacy.patients.models import Patient
from pharmacy.portal import rules
from pharmacy.portal.models import CalendarFeed, PortalSession, SignInChallenge
from pharmacy.portal.rules import Purpose
from pharmacy.prescriptions import rules as rx_rules
from pharmacy.prescriptions import services as prescriptions
from pharmacy.prescriptions.models import Prescription
from pharmacy.prescriptions.rules import RxStatus
from pharmacy.refills.rules import RequestSource
from pharmacy.refills.services import RefillSummary, RequestOutcome
from pharmacy.reminders import outbox
from pharmacy.reminders import services as reminders
from pharmacy.reminders.models import OutboxMessage
from pharmacy.reminders.rendering import RenderError
from pharmacy.reminders.rules import REFILL_REMINDERS, MessageKind, OutboxState
from pharmacy.sms import rules as sms_rules
from pharmacy.sms import services as sms
from pharmacy.sms.models import ContactPreference
from pharmacy.workflows import refill_requests
from pharmacy.workflows.next_refill import next_refill

CODE_KEY = "code:"  # outbox dedupe keys of one-time codes: "code:<challenge id>"


def patient_actor(patient_id: int, rx_id: int | None = None) -> Actor:
    return Actor(kind="patient", patient_id=patient_id, prescription_id=rx_id)


def _secret() -> str:
    return current_app.config["SECRET_KEY"]


# ---- one-time codes ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CodeSent:
    token: str  # the browser's half of the challenge (kept in the portal cookie)
    channel: str
    shown_to: str  # "m•••@example.com" / "•••-•••-0101": where we said we sent it


def _mask_email(address: str) -> str:
    local, _, domain = address.partition("@")
    return f"{local[:1]}•••@{domain}"


def _code_nonce(challenge_id: Any) -> Any:
    """The link-guard key of a code's wrong tries ("code:<challenge id>"), as Python or SQL."""
    if isinstance(challenge_id, int):
        return f"code:{challenge_id}"
    return sa.literal("code:", sa.String) + sa.cast(challenge_id, sa.String)


def _address_failures(contact_key: str, since: datetime) -> int:
    """Wrong tries on every code sent to one address lately (each code's tries are counted atomically in
    core.links' guard rows; an address is locked when their sum reaches the limit)."""
    return int(db.session.execute(
        sa.select(sa.func.coalesce(sa.func.sum(LinkGuard.failed_attempts), 0)).select_from(SignInChallenge)
        .join(LinkGuard, LinkGuard.nonce == _code_nonce(SignInChallenge.id))
        .where(SignInChallenge.contact_hash == contact_key, SignInChallenge.created_at >= since)
    ).scalar_one())


def _new_challenge(*, purpose: Purpose, channel: str, contact: str, candidates: list[int],
                   phone: str | None = None) -> tuple[SignInChallenge, str]:
    t = now()
    key = rules.contact_hash(_secret(), contact)
    recent = int(db.session.execute(sa.select(sa.func.count()).select_from(SignInChallenge).where(
        SignInChallenge.contact_hash == key, SignInChallenge.created_at >= t - timedelta(hours=1))).scalar_one())
    if recent >= rules.MAX_CODES_PER_HOUR:
        raise Conflict("We have sent several codes to this address in the last hour. Please use the latest one, "
                       f"wait a while, or call us at {settings().pharmacy_phone}.")
    if _address_failures(key, t - timedelta(hours=rules.LOCK_HOURS)) >= rules.MAX_ATTEMPTS * 3:
        raise Conflict(f"Too many wrong codes were tried for this address. Wait an hour or call us at "
                       f"{settings().pharmacy_phone}.")
    token = secrets.token_urlsafe(32)
    challenge = SignInChallenge(
        token_hash=rules.token_hash(token), purpose=purpose.value, channel=channel, contact_hash=key,
        candidates=candidates, phone=phone, salt=secrets.token_hex(12), created_at=t,
        expires_at=t + timedelta(minutes=settings().portal_code_minutes),
        patient_id=candidates[0] if purpose == Purpose.VERIFY_NUMBER else None,
    )
    db.session.add(challenge)
    db.session.flush()
    return challenge, token


def start_sign_in(contact: str) -> CodeSent:
    """Send a code to an email address or a verified mobile number. The answer is the same whether or not the
    address belongs to a patient (nothing is sent then), so the page cannot be used to find out who is one."""
    contact = (contact or "").strip()
    if "@" in contact:
        address = contact.lower()
        if len(address) > 254 or "." not in address.rsplit("@", 1)[-1]:
            raise ValidationFailed("Enter your email address or mobile number.",
                                   fields={"contact": "Enter an email address like name@example.com, or a mobile "
                                                      "number."})
        candidates = list(db.session.execute(
            sa.select(Patient.id).where(Patient.email == address).order_by(Patient.id)).scalars())
        channel, shown = "email", _mask_email(address)
        key_contact = address
    else:
        phone = sms_rules.require_phone(contact, field="contact")
        candidates = [row.patient_id for row in sms.rows_for_number(phone) if row.sms_consent]
        channel, shown, key_contact = "sms", sms_rules.masked(phone), phone
        address = phone
    challenge, token = _new_challenge(purpose=Purpose.SIGN_IN, channel=channel, contact=key_contact,
                                      candidates=candidates)
    if candidates:
        outbox.enqueue(MessageKind.ONE_TIME_CODE, dedupe_key=f"{CODE_KEY}{challenge.id}", patient_id=candidates[0],
                       to_address=address, channel=channel)
    audit.record(ANONYMOUS, "portal.code_requested", details={"channel": channel, "known": bool(candidates)})
    return CodeSent(token=token, channel=channel, shown_to=shown)


def _challenge(token: str | None, *, lock: bool = True) -> SignInChallenge | None:
    if not token:
        return None
    stmt = sa.select(SignInChallenge).where(SignInChallenge.token_hash == rules.token_hash(token))
    if lock:
        stmt = stmt.with_for_update()
    return db.session.execute(stmt).scalar_one_or_none()


def _problem_words(problem: str) -> str:
    return {
        "used": "This code has already been used. Ask for a new one.",
        "locked": "Too many wrong tries with this code. Ask for a new one.",
        "expired": "This code has expired. Ask for a new one.",
    }[problem]


def _check(challenge: SignInChallenge, code: str, *, ok_extra: bool) -> None:
    """Count a wrong try (atomically, kept though the refused request rolls back) or pass."""
    nonce = _code_nonce(challenge.id)
    state = rules.ChallengeState(challenge.created_at, challenge.expires_at, challenge.used_at,
                                 links.failed_attempts(nonce))
    problem = rules.challenge_problem(state, now())
    if problem is not None:
        raise Conflict(_problem_words(problem))
    expected = rules.code_for(_secret(), challenge.id, challenge.salt)
    if rules.code_matches(expected, code) and ok_extra:
        # The right answer goes through the same atomic gate as the guesses (core.links.count_answer, adding
        # nothing): the count read above may predate a concurrent burst of guesses that has since locked the code.
        if links.count_answer(nonce, correct=True) is None:
            raise Conflict(_problem_words("locked"))
        return
    tries = links.count_answer(nonce, correct=False)
    if tries is None:
        raise Conflict(_problem_words("locked"))
    audit.record(ANONYMOUS, "portal.code_failed", outcome="denied", survive_rollback=True,
                 details={"attempt": tries, "purpose": challenge.purpose})
    left = rules.MAX_ATTEMPTS - tries
    if left <= 0:
        raise Conflict(_problem_words("locked"))
    raise ValidationFailed("That code or date of birth is not right.",
                           fields={"code": f"The code or the date of birth does not match. {left} tries left."})


def _use(challenge: SignInChallenge) -> None:
    """Mark the code used: exactly once, even if two requests race with it."""
    done = db.session.execute(
        sa.update(SignInChallenge).where(SignInChallenge.id == challenge.id, SignInChallenge.used_at.is_(None))
        .values(used_at=now()).execution_options(synchronize_session=False)
    ).rowcount
    if done != 1:
        raise Conflict(_problem_words("used"))


def verify_sign_in(token: str | None, code: str, date_of_birth: date) -> tuple[str, int]:
    """The code and the date of birth: a new session (its token, and the patient's id)."""
    challenge = _challenge(token)
    if challenge is None or challenge.purpose != Purpose.SIGN_IN.value:
        raise Conflict("Ask for a new code: this page has no code waiting.")
    matches = list(db.session.execute(sa.select(Patient.id).where(
        Patient.id.in_(challenge.candidates or [0]), Patient.date_of_birth == date_of_birth)).scalars())
    _check(challenge, code, ok_extra=len(matches) == 1)
    _use(challenge)
    patient_id = matches[0]
    session_token = secrets.token_urlsafe(32)
    t = now()
    db.session.add(PortalSession(token_hash=rules.token_hash(session_token), patient_id=patient_id, created_at=t,
                                 last_seen_at=t))
    db.session.flush()
    audit.record(patient_actor(patient_id), "portal.sign_in", patient_id=patient_id,
                 details={"channel": challenge.channel})
    return session_token, patient_id


def code_context(row: OutboxMessage, preview: bool) -> tuple[dict[str, object], frozenset[str]]:
    """The one-time code email's (and text's) code, computed at send time (reminders.rendering.CONTEXT_PROVIDERS)."""
    challenge_id = int(row.dedupe_key.split(":")[1]) if row.dedupe_key.startswith(CODE_KEY) else 0
    challenge = db.session.get(SignInChallenge, challenge_id)
    if challenge is None:
        raise RenderError("the code is gone")
    minutes = max(int((challenge.expires_at - now()).total_seconds() // 60), 1)
    code = "••••••" if preview else rules.code_for(_secret(), challenge.id, challenge.salt)
    return {"code": code, "minutes": minutes, "purpose": challenge.purpose}, frozenset({"code"})


# ---- sessions ------------------------------------------------------------------------------------------------------


def open_session(token: str | None) -> PortalSession | None:
    """The live session for a cookie's token, its idle clock restarted; None (and ended) when it is over."""
    if not token:
        return None
    row = db.session.execute(sa.select(PortalSession).where(
        PortalSession.token_hash == rules.token_hash(token), PortalSession.ended_at.is_(None))).scalar_one_or_none()
    if row is None:
        return None
    cfg = settings()
    t = now()
    problem = rules.session_problem(row.created_at, row.last_seen_at, t, idle_minutes=cfg.portal_idle_minutes,
                                    max_minutes=cfg.portal_max_minutes)
    if problem is not None:
        row.ended_at, row.end_reason = t, problem
        db.session.flush()
        return None
    row.last_seen_at = t
    db.session.flush()
    return row


def end_session(token: str | None, reason: str = "signed out") -> None:
    row = open_session(token)
    if row is None:
        return
    row.ended_at, row.end_reason = now(), reason
    db.session.flush()
    audit.record(patient_actor(row.patient_id), "portal.sign_out", patient_id=row.patient_id)


def session_ends_at(row: PortalSession) -> datetime:
    cfg = settings()
    return min(row.last_seen_at + timedelta(minutes=cfg.portal_idle_minutes),
               row.created_at + timedelta(minutes=cfg.portal_max_minutes))


# ---- my LDN --------------------------------------------------------------------------------------------------------


@dataclass
class MyPrescription:
    rx: Prescription
    product: str
    form: str
    directions: str
    chart: list[tuple[str, str, str]]
    step_starts: list[tuple[date, str]]
    summary: RefillSummary
    run_out: date | None
    days_left: int | None
    order_by: date | None
    auto_refill: bool


@dataclass
class MyLdn:
    patient: Patient
    prescriptions: list[MyPrescription] = field(default_factory=list)
    reminders_on: bool = True
    channel: str = "email"
    paused_until: date | None = None


def _own_rxs(patient_id: int) -> list[Prescription]:
    return list(db.session.execute(
        sa.select(Prescription).where(Prescription.patient_id == patient_id, Prescription.status == RxStatus.ACTIVE)
        .options(joinedload(Prescription.formula), joinedload(Prescription.prescriber), joinedload(Prescription.patient))
        .order_by(Prescription.written_date.desc(), Prescription.id.desc())
    ).unique().scalars())


def _own_rx(actor: Actor, rx_id: int) -> Prescription:
    rx = db.session.get(Prescription, rx_id) if 1 <= rx_id <= 2**31 - 1 else None
    if rx is None or rx.patient_id != actor.patient_id:
        raise NotFound("No such prescription.")
    return rx


def _patient(actor: Actor) -> Patient:
    patient = db.session.get(Patient, actor.patient_id or 0)
    if patient is None:
        raise NotFound("No such patient.")
    return patient


def _my_prescription(rx: Prescription, enrolled: set[int]) -> MyPrescription:
    view = prescriptions.view_of(rx)
    nxt = next_refill(rx)
    form = rx.formula.form
    starts = [(s.start, rx_rules.format_mg(s.dose_mg)) for s in view.schedule]
    return MyPrescription(
        rx=rx, product=rx_rules.product_name(form, rx.formula.strength_mg), form=form.value,
        directions=rx.directions, chart=rx_rules.titration_chart_rows(view.schedule, form) if view.schedule else [],
        step_starts=starts, summary=nxt.summary, run_out=nxt.run_out, days_left=nxt.days_left,
        order_by=nxt.order_by, auto_refill=rx.id in enrolled)


def my_ldn(actor: Actor) -> MyLdn:
    """Current dose and form, the dated titration chart, days left, the next refill and when to ask for it."""
    patient = _patient(actor)
    rxs = _own_rxs(patient.id)
    enrolled = autorefill.enrolled_ids([rx.id for rx in rxs])
    pref = sms.preference(patient.id)
    view = MyLdn(patient=patient, prescriptions=[_my_prescription(rx, enrolled) for rx in rxs],
                 reminders_on=patient.reminders_opt_in, channel=pref.channel if pref else "email",
                 paused_until=pref.paused_until if pref and pref.paused_until and pref.paused_until >= today()
                 else None)
    audit.record(actor, "portal.view", patient_id=patient.id, entity=("patient", patient.id), details={"page": "home"})
    return view


def refill_view(actor: Actor, rx_id: int) -> MyPrescription:
    """The refill page: what the next fill is, when it will be ready and what it costs (the refill link's facts)."""
    rx = _own_rx(actor, rx_id)
    item = _my_prescription(rx, autorefill.enrolled_ids([rx.id]))
    audit.record(actor, "portal.view", patient_id=rx.patient_id, entity=("prescription", rx.id),
                 details={"page": "refill"})
    return item


def ask_refill(actor: Actor, rx_id: int, delivery: DeliveryMethod | None) -> RequestOutcome:
    """One click: the refill request, exactly as from a refill link (idempotent; the pharmacy approves it)."""
    rx = _own_rx(actor, rx_id)
    return refill_requests.request(patient_actor(rx.patient_id, rx.id), rx.id, source=RequestSource.PORTAL,
                                  delivery=delivery, note="Asked in the patient portal.")


# ---- history and money ---------------------------------------------------------------------------------------------

STATE_WORDS = {
    "requested": "Received", "verified": "Being prepared", "compounding": "Being made", "checked": "Being checked",
    "ready": "Ready", "dispensed": "Done", "on_hold": "On hold — we will call you", "cancelled": "Cancelled",
}


@dataclass(frozen=True)
class FillRow:
    order_id: int
    product: str
    quantity: str
    days_supply: int
    state: str
    day: date | None
    total_cents: int
    delivery: str


def fill_history(actor: Actor, *, limit: int = 100) -> list[FillRow]:
    patient = _patient(actor)
    rows = db.session.execute(
        sa.select(Order, Formula.form, Formula.strength_mg)
        .join(Prescription, Prescription.id == Order.prescription_id).join(Formula, Formula.id == Prescription.formula_id)
        .where(Order.patient_id == patient.id).order_by(Order.created_at.desc(), Order.id.desc()).limit(limit)
    ).all()
    out = []
    for order, form, strength in rows:
        day = local_date_of(order.dispensed_at) if order.dispensed_at else (order.dispensed_on or local_date_of(
            order.created_at))
        out.append(FillRow(order.id, rx_rules.product_name(form, strength), rx_rules.quantity_text(form, order.quantity),
                           order.days_supply, "Returned — not charged" if order.returned_at else
                           STATE_WORDS.get(order.state.value, order.state.value), day,
                           order.price_cents + order.shipping_cents,
                           "Shipped" if order.delivery_method == DeliveryMethod.SHIP else "Pick-up"))
    audit.record(actor, "portal.view", patient_id=patient.id, entity=("patient", patient.id),
                 details={"page": "history"})
    return out


@dataclass(frozen=True)
class PaymentRow:
    id: int
    kind: str
    method: str
    amount_cents: int
    day: date
    receipt_number: str


@dataclass
class Money:
    ledger: Ledger
    payments: list[PaymentRow]
    years: list[int]


def money(actor: Actor) -> Money:
    patient = _patient(actor)
    payments = [PaymentRow(p.id, p.kind.value, p.method.value, p.amount_cents, local_date_of(p.received_at),
                           receipt_number_for(p)) for p in db.session.execute(
        sa.select(Payment).where(Payment.patient_id == patient.id)
        .order_by(Payment.received_at.desc(), Payment.id.desc()).limit(100)).scalars()]
    audit.record(actor, "portal.view", patient_id=patient.id, entity=("patient", patient.id), details={"page": "money"})
    return Money(ledger=patient_ledger(patient.id), payments=payments, years=statement_years(patient.id))


# ---- reminders and contact -----------------------------------------------------------------------------------------


@dataclass
class Contact:
    patient: Patient
    pref: ContactPreference | None
    next_reminder: OutboxMessage | None


def contact_view(actor: Actor) -> Contact:
    patient = _patient(actor)
    nxt = db.session.execute(
        sa.select(OutboxMessage).where(OutboxMessage.patient_id == patient.id, OutboxMessage.channel == "email",
                                       OutboxMessage.state == OutboxState.PENDING,
                                       OutboxMessage.kind.in_(sorted(REFILL_REMINDERS)))
        .order_by(OutboxMessage.due_at, OutboxMessage.id).limit(1)).scalar_one_or_none()
    audit.record(actor, "portal.view", patient_id=patient.id, entity=("patient", patient.id),
                 details={"page": "reminders"})
    return Contact(patient=patient, pref=sms.preference(patient.id), next_reminder=nxt)


def set_reminders(actor: Actor, *, on: bool, channel: sms_rules.Choice | None, paused_until: date | None) -> None:
    """The reminders form: on or off, the way (None: left as it is — a choice of texts greyed while they are
    stopped is not sent, and must survive for START), a pause."""
    patient = _patient(actor)
    reminders.set_reminder_preference(patient.id, on, via="portal")
    if channel is not None:
        sms.set_channel(actor, channel)
    sms.set_pause(actor, paused_until)


def skip_next_reminder(actor: Actor) -> date | None:
    """Skip the next refill reminder (email and text): the day it would have come, or None when none is planned."""
    patient = _patient(actor)
    row = db.session.execute(
        sa.select(OutboxMessage).where(OutboxMessage.patient_id == patient.id, OutboxMessage.channel == "email",
                                       OutboxMessage.state == OutboxState.PENDING,
                                       OutboxMessage.kind.in_(sorted(REFILL_REMINDERS)))
        .order_by(OutboxMessage.due_at, OutboxMessage.id).limit(1).with_for_update()).scalar_one_or_none()
    if row is None:
        return None
    outbox.cancel_where(OutboxMessage.dedupe_key.in_([row.dedupe_key, row.dedupe_key + ":sms"]),
                        "skipped by the patient")
    audit.record(actor, "reminders.skip_next", patient_id=patient.id, entity=("outbox", row.id))
    return row.due_at.astimezone(settings().timezone).date()


def start_number_check(actor: Actor, raw_phone: str) -> CodeSent:
    """Send a code by text to the number the patient typed: it becomes theirs once they type the code back."""
    patient = _patient(actor)
    phone = sms_rules.require_phone(raw_phone)
    challenge, token = _new_challenge(purpose=Purpose.VERIFY_NUMBER, channel="sms", contact=phone,
                                      candidates=[patient.id], phone=phone)
    outbox.enqueue(MessageKind.ONE_TIME_CODE, dedupe_key=f"{CODE_KEY}{challenge.id}", patient_id=patient.id,
                   to_address=phone, channel="sms")
    audit.record(actor, "contact.number_code", patient_id=patient.id)
    return CodeSent(token=token, channel="sms", shown_to=sms_rules.masked(phone))


def confirm_number(actor: Actor, token: str | None, code: str, *, consent: bool) -> ContactPreference:
    patient = _patient(actor)
    challenge = _challenge(token)
    if challenge is None or challenge.purpose != Purpose.VERIFY_NUMBER.value or challenge.patient_id != patient.id:
        raise Conflict("Ask for a new code: no code is waiting for this number.")
    _check(challenge, code, ok_extra=True)
    if not consent:
        raise ValidationFailed("Tick the box to agree to text messages.",
                               fields={"consent": "We can only text you if you agree."})
    _use(challenge)
    assert challenge.phone is not None
    return sms.number_verified(actor, challenge.phone, consent=True)


# ---- the calendar --------------------------------------------------------------------------------------------------


def _calendar(patient: Patient, *, show_drug_name: bool) -> bytes:
    cfg = settings()
    portal = f"{cfg.base_url}/my/"
    domain = cfg.base_url.split("//", 1)[-1].split("/", 1)[0] or "pharmacy"
    cal = Calendar()
    cal.add("prodid", f"-//{cfg.pharmacy_name}//Refill calendar//EN")
    cal.add("version", "2.0")
    cal.add("calscale", "GREGORIAN")
    cal.add("x-wr-calname", f"{cfg.pharmacy_name}" if not show_drug_name else f"{cfg.pharmacy_name}: LDN")
    stamp = now()
    for rx in _own_rxs(patient.id):
        item = _my_prescription(rx, set())
        ready = item.summary.ready_on if item.summary.open_request is not None else None
        entries = rules.calendar_entries(
            rx_key=f"rx{rx.id}", product="LDN" if show_drug_name else None,
            steps=item.step_starts[1:] if len(item.step_starts) > 1 else [], order_by=item.order_by,
            run_out=item.run_out, ready_on=ready, portal_url=portal, show_drug_name=show_drug_name)
        for entry in entries:
            event = Event()
            event.add("uid", f"{entry.key}@{domain}")
            event.add("dtstamp", stamp)
            event.add("dtstart", entry.day)
            event.add("dtend", entry.day + timedelta(days=1))
            event.add("summary", entry.title)
            event.add("description", entry.description)
            event.add("transp", "TRANSPARENT")
            cal.add_component(event)
    return cal.to_ical()


def calendar_ics(actor: Actor, *, show_drug_name: bool = False) -> bytes:
    patient = _patient(actor)
    audit.record(actor, "portal.calendar_download", patient_id=patient.id, entity=("patient", patient.id))
    return _calendar(patient, show_drug_name=show_drug_name)


def live_feed(patient_id: int) -> CalendarFeed | None:
    return db.session.execute(sa.select(CalendarFeed).where(
        CalendarFeed.patient_id == patient_id, CalendarFeed.revoked_at.is_(None))).scalar_one_or_none()


def new_feed(actor: Actor, *, show_drug_name: bool) -> str:
    """A new private subscription address (the old one stops working): its token, shown once."""
    patient = _patient(actor)
    revoke_feed(actor)
    token = secrets.token_urlsafe(32)
    db.session.add(CalendarFeed(patient_id=patient.id, token_hash=rules.token_hash(token),
                                show_drug_name=show_drug_name, created_at=now()))
    db.session.flush()
    audit.record(actor, "portal.calendar_feed_new", patient_id=patient.id, details={"drug_name": show_drug_name})
    return token


def revoke_feed(actor: Actor) -> bool:
    patient = _patient(actor)
    feed = live_feed(patient.id)
    if feed is None:
        return False
    feed.revoked_at = now()
    db.session.flush()
    audit.record(actor, "portal.calendar_feed_revoke", patient_id=patient.id)
    return True


def feed_ics(token: str) -> bytes:
    """A calendar app fetching the private address (no cookie: the token is the key, and can be revoked)."""
    feed = db.session.execute(sa.select(CalendarFeed).where(
        CalendarFeed.token_hash == rules.token_hash(token), CalendarFeed.revoked_at.is_(None))).scalar_one_or_none()
    if feed is None:
        raise NotFound("This calendar address does not work any more.")
    patient = db.session.get(Patient, feed.patient_id)
    if patient is None:
        raise NotFound("This calendar address does not work any more.")
    feed.last_fetched_at = now()
    audit.record(patient_actor(patient.id), "portal.calendar_feed", patient_id=patient.id,
                 entity=("calendar_feed", feed.id))
    return _calendar(patient, show_drug_name=feed.show_drug_name)
