"""Auto-refill use cases: enrol (the patient, or a pharmacist with the patient's recorded consent), leave, skip,
and the scheduler's daily run that asks for each enrolled prescription's refill on its order-by date.

The request is the ordinary one (refills.services.request_refill, source "auto"), so the pharmacy approves it as
any other; when none can be made (no refills left, expired) that same call starts the renewal path and tells the
patient. Every enrolment, skip and automatic request is in the audit trail.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from pharmacy.autorefill import rules
from pharmacy.autorefill.models import Cycle, Enrolment
from pharmacy.compounding.models import Order
from pharmacy.core import audit, links, uow
from pharmacy.core.actor import SYSTEM, Actor
from pharmacy.core.context import now, settings, today
from pharmacy.core.errors import Conflict, DomainError, LinkInvalid, NotFound, ValidationFailed
from pharmacy.core.roles import Permission
from pharmacy.extensions import db
from pharmacy.prescriptions.models import Prescription
from pharmacy.prescriptions.rules import RxStatus
from pharmacy.refills import services as refills
from pharmacy.refills.models import RefillRequest
from pharmacy.refills.rules import RefillRequestState, RequestSource
from pharmacy.reminders import outbox, planning
from pharmacy.reminders.models import OutboxMessage
from pharmacy.reminders.rules import MessageKind
from pharmacy.supply import reads
from pharmacy.workflows import refill_requests
from pharmacy.workflows.next_refill import next_refill

log = logging.getLogger(__name__)

SKIP_PURPOSE = "autorefill_skip"
SKIP_LINK_DAYS = 30
SKIPPED = "skipped by the patient"


def _rx(rx_id: int) -> Prescription:
    rx = db.session.get(Prescription, rx_id) if 1 <= rx_id <= 2**31 - 1 else None
    if rx is None:
        raise NotFound("No such prescription.")
    return rx


def _check_actor(actor: Actor, rx: Prescription, what: str) -> None:
    """The patient for their own prescription; staff with the right to manage prescriptions (a pharmacist)."""
    if actor.kind == "patient":
        if actor.patient_id != rx.patient_id:
            raise NotFound("No such prescription.")
        return
    audit.require(actor, Permission.MANAGE_PRESCRIPTION, patient_id=rx.patient_id, what=what)


def live_enrolment(rx_id: int) -> Enrolment | None:
    return db.session.execute(
        sa.select(Enrolment).where(Enrolment.prescription_id == rx_id, Enrolment.ended_at.is_(None))
    ).scalar_one_or_none()


def enrolled_ids(rx_ids: list[int]) -> set[int]:
    if not rx_ids:
        return set()
    return set(db.session.execute(sa.select(Enrolment.prescription_id).where(
        Enrolment.prescription_id.in_(rx_ids), Enrolment.ended_at.is_(None))).scalars())


def enrol(actor: Actor, rx_id: int, *, consent: str | None = None) -> Enrolment:
    """Start auto-refill. A pharmacist must say how the patient agreed ("by phone, 2 Dec"); the patient's own
    click in the portal is their consent."""
    rx = _rx(rx_id)
    _check_actor(actor, rx, "enrol prescriptions in auto-refill")
    if rx.status != RxStatus.ACTIVE:
        raise Conflict("Only an active prescription can be refilled automatically.")
    if actor.kind == "patient":
        consent = "the patient, in the portal"
    else:
        consent = " ".join((consent or "").split())
        if len(consent) < 3:
            raise ValidationFailed("Record how the patient agreed to auto-refill.",
                                   fields={"consent": "Say how and when the patient agreed."})
    existing = live_enrolment(rx.id)
    if existing is not None:
        return existing
    row = Enrolment(prescription_id=rx.id, patient_id=rx.patient_id, enrolled_at=now(), enrolled_by_id=actor.user_id,
                    consent=consent[:200])
    try:
        with db.session.begin_nested():
            db.session.add(row)
            db.session.flush()
    except IntegrityError:
        found = live_enrolment(rx.id)
        if found is None:
            raise
        return found
    audit.record(actor, "autorefill.enrol", patient_id=rx.patient_id, entity=("prescription", rx.id),
                 details={"enrolment": row.id, "by": actor.kind})
    return row


# Read on every patient page, built once (its construction costs more than the database's answer).
_LIVE_ENROLMENTS = sa.select(Enrolment).where(
    Enrolment.prescription_id.in_(sa.bindparam("b_rx_ids", expanding=True, type_=sa.Integer)),
    Enrolment.ended_at.is_(None))


def live_enrolments(rx_ids: list[int]) -> dict[int, Enrolment]:
    """The live enrolment of each of these prescriptions (those that have one), in one query."""
    if not rx_ids:
        return {}
    rows = db.session.execute(_LIVE_ENROLMENTS, {"b_rx_ids": rx_ids}).scalars()
    return {row.prescription_id: row for row in rows}


def leave(actor: Actor, rx_id: int) -> int:
    """End auto-refill (nothing to do when it is off); returns the prescription's patient id."""
    rx = _rx(rx_id)
    _check_actor(actor, rx, "end auto-refill")
    row = live_enrolment(rx.id)
    if row is None:
        return rx.patient_id
    _end(row, f"ended by the {'patient' if actor.kind == 'patient' else 'pharmacy'}")
    audit.record(actor, "autorefill.leave", patient_id=rx.patient_id, entity=("prescription", rx.id),
                 details={"enrolment": row.id})
    return rx.patient_id


def _end(row: Enrolment, reason: str) -> None:
    row.ended_at = now()
    row.end_reason = reason[:120]
    db.session.flush()


def _latest_fill(rx: Prescription) -> Order | None:
    """The dispensed order of the supply the patient holds on `rx` — for a renewal not yet dispensed, the one it
    carried its supply from (supply.reads.supply_fill, as the reminders planner reads it): each supply gets its turn,
    and an enrolment that followed a replacement is asked for on the carried supply's order-by date."""
    return reads.supply_fill(rx)


def _turn(enrolment_id: int, fill_id: int) -> Cycle | None:
    return db.session.execute(
        sa.select(Cycle).where(Cycle.enrolment_id == enrolment_id, Cycle.fill_order_id == fill_id)
    ).scalar_one_or_none()


def _take_turn(row: Enrolment, fill: Order, outcome: str, order_by: object) -> Cycle | None:
    """Claim this supply's turn (unique per enrolment and fill): None when another run already took it."""
    cycle = Cycle(enrolment_id=row.id, fill_order_id=fill.id, order_by=order_by, outcome=outcome, created_at=now())
    try:
        with db.session.begin_nested():
            db.session.add(cycle)
            db.session.flush()
    except IntegrityError:
        return None
    return cycle


# ---- skipping ------------------------------------------------------------------------------------------------------


def not_skippable(announced_request: int | None, patient_id: int) -> str | None:
    """Why a skip link can no longer skip the refill it announced, in the patient's words (None: it can) — asked
    before the page offers the button, and again when it is pressed."""
    if announced_request is None:
        return None
    req = db.session.get(RefillRequest, announced_request)
    phone = settings().pharmacy_phone
    if req is None or req.patient_id != patient_id:
        return f"We could not find the refill this link was sent about. Please call us at {phone}."
    if req.state in (RefillRequestState.OPEN, RefillRequestState.AWAITING_RENEWAL):
        return None
    if req.state == RefillRequestState.APPROVED:
        return (f"This automatic refill is already being made, so it cannot be skipped here. To stop it, please "
                f"call us at {phone}.")
    return ("This automatic refill was already cancelled, so there is nothing to skip. To skip a later one, use the "
            "link in its message or sign in to your account.")


def skip_next(actor: Actor, rx_id: int, *, announced_request: int | None = None) -> str:
    """Skip this supply's automatic refill: before it is asked for (the turn is taken as skipped), or after, while
    the pharmacy has not yet approved it (the request is cancelled). Returns what happened, in words.

    `announced_request`: the refill request a notice's skip link was sent about. Once that refill is approved,
    made or cancelled, the link skips nothing — it must not quietly take the next supply's turn."""
    rx = _rx(rx_id)
    _check_actor(actor, rx, "skip automatic refills")
    refusal = not_skippable(announced_request, rx.patient_id)
    if refusal is not None:
        raise Conflict(refusal)
    row = live_enrolment(rx.id)
    if row is None:
        raise Conflict("This prescription is not on auto-refill.")
    fill = _latest_fill(rx)
    if fill is None:
        raise Conflict("There is no refill to skip yet.")
    cycle = _turn(row.id, fill.id)
    if cycle is None:
        cycle = _take_turn(row, fill, "skipped", next_refill(rx).order_by)
        if cycle is None:  # the scheduler took the turn a moment ago
            cycle = _turn(row.id, fill.id)
    assert cycle is not None
    if cycle.outcome == "skipped":
        said = "The next automatic refill is skipped."
    elif cycle.outcome in ("requested", "renewal"):
        req = db.session.get(RefillRequest, cycle.refill_request_id) if cycle.refill_request_id else None
        if req is None or req.state not in (RefillRequestState.OPEN, RefillRequestState.AWAITING_RENEWAL):
            raise Conflict("This refill is already being made; call the pharmacy to stop it.")
        refills.cancel_open_request(actor, rx.id, SKIPPED)  # a renewal already asked of the prescriber stands
        # The notices about the request ("we started your automatic refill", held for the morning's texts) are moot.
        outbox.cancel_where(OutboxMessage.refill_request_id == req.id, SKIPPED)
        planning.replan_prescription(rx.id)  # the usual reminders come back for this supply
        said = "Your automatic refill is cancelled. We will remind you as usual."
    else:
        raise Conflict("A refill is already asked for or being made; call the pharmacy to change it.")
    cycle.outcome = "skipped"
    cycle.skipped_at = now()
    db.session.flush()
    audit.record(actor, "autorefill.skip", patient_id=rx.patient_id, entity=("prescription", rx.id),
                 details={"fill": fill.id})
    return said


def skip_token(patient_id: int, rx_id: int, request_id: int | None = None) -> str:
    """A one-click skip link for the refill request the notice announces (`request_id`)."""
    return links.make_token(SKIP_PURPOSE, patient_id, rx_id, ref=request_id)


@dataclass(frozen=True)
class SkipLink:
    actor: Actor  # the patient, scoped to the prescription (followed to its replacement)
    request_id: int | None  # the refill request the link was sent about (None: a link from before they carried it)


def open_skip_link(token: str) -> SkipLink:
    """The patient behind a skip link (from the automatic refill's email or text): scoped to one prescription and
    to the refill request it announced."""
    claims = links.read_token(SKIP_PURPOSE, token, max_age_days=SKIP_LINK_DAYS)
    rx = db.session.get(Prescription, claims.prescription_id or 0)
    if rx is None or rx.patient_id != claims.patient_id:
        raise LinkInvalid("This link is not valid.", reason="invalid")
    # The enrolment and the request follow a renewal (autorefill/turns.follow_replacement): so does the link.
    current = reads.current_successor(rx.id, rx.patient_id, rx.status)
    return SkipLink(Actor(kind="patient", patient_id=claims.patient_id, prescription_id=current), claims.ref)


# ---- the daily run -------------------------------------------------------------------------------------------------


@dataclass
class RunReport:
    checked: int = 0
    requested: int = 0
    renewals: int = 0
    covered: int = 0
    ended: int = 0
    refused: int = 0
    details: list[str] = field(default_factory=list)

    def line(self) -> str:
        return (f"checked {self.checked}, requested {self.requested}, renewals {self.renewals}, "
                f"already covered {self.covered}, enrolments ended {self.ended}, refused {self.refused}")


def run_due(*, limit: int = 5000) -> RunReport:
    """Every live enrolment whose supply's order-by date has come: ask once. A job: each enrolment is its own step."""
    report = RunReport()
    ids = list(db.session.execute(
        sa.select(Enrolment.id).where(Enrolment.ended_at.is_(None)).order_by(Enrolment.id).limit(limit)
    ).scalars())
    for enrolment_id in ids:
        try:
            _run_one(enrolment_id, report)
            uow.commit_step()
        except DomainError as exc:
            db.session.rollback()
            report.refused += 1
            log.warning("auto-refill for enrolment %d refused: %s", enrolment_id, type(exc).__name__)
    return report


def _run_one(enrolment_id: int, report: RunReport) -> None:
    row = db.session.get(Enrolment, enrolment_id)
    if row is None or row.ended_at is not None:
        return
    report.checked += 1
    rx = db.session.get(Prescription, row.prescription_id)
    assert rx is not None
    fill = _latest_fill(rx)
    nxt = next_refill(rx) if fill is not None else None
    elig = refills.eligibility_for(rx)
    decision = rules.decide(today=today(), order_by=nxt.order_by if nxt else None,
                            turn_taken=fill is not None and _turn(row.id, fill.id) is not None,
                            eligibility_code=elig.code, needs_renewal=elig.needs_renewal)
    if decision.action == rules.Action.WAIT:
        return
    if decision.action == rules.Action.END:
        _end(row, decision.reason)
        audit.record(SYSTEM, "autorefill.end", patient_id=rx.patient_id, entity=("prescription", rx.id),
                     details={"enrolment": row.id, "reason": "inactive"})
        report.ended += 1
        return
    assert fill is not None and nxt is not None
    outcome = {rules.Action.REQUEST: "requested", rules.Action.RENEWAL: "renewal",
               rules.Action.COVERED: "covered"}[decision.action]
    cycle = _take_turn(row, fill, outcome, nxt.order_by)
    if cycle is None:
        return  # another scheduler took this turn
    if decision.action == rules.Action.COVERED:
        report.covered += 1
        return
    note = "Auto-refill: asked for automatically on the order-by date (the patient enrolled)."
    result = refill_requests.request(SYSTEM, rx.id, source=RequestSource.AUTO, note=note)
    cycle.refill_request_id = result.request.id
    if decision.action == rules.Action.REQUEST:
        # The patient hears about it once, with a one-click skip, instead of a plain "request received".
        outbox.cancel_where(sa.and_(OutboxMessage.refill_request_id == result.request.id,
                                    OutboxMessage.kind == MessageKind.REQUEST_RECEIVED),
                            "replaced by the automatic refill notice")
        outbox.enqueue_notice(MessageKind.AUTO_REFILL_REQUESTED, patient_id=rx.patient_id, prescription_id=rx.id,
                              refill_request_id=result.request.id)
        report.requested += 1
    else:
        report.renewals += 1
    db.session.flush()
    audit.record(SYSTEM, "autorefill.request", patient_id=rx.patient_id, entity=("refill_request", result.request.id),
                 details={"enrolment": row.id, "fill": fill.id, "outcome": outcome})


def skip_context(row: OutboxMessage, preview: bool) -> tuple[dict[str, object], frozenset[str]]:
    """The AUTO_REFILL_REQUESTED email's one-click skip link (reminders.rendering.CONTEXT_PROVIDERS)."""
    if preview or row.prescription_id is None or row.patient_id is None:
        return {"skip_url": f"{settings().base_url}/my/auto-refill/skip/preview"}, frozenset()
    token = skip_token(row.patient_id, row.prescription_id, row.refill_request_id)
    return {"skip_url": f"{settings().base_url}/my/auto-refill/skip/{token}"}, frozenset()
