"""Use cases behind the outbox pages, the patient's email preferences and the reminder commands.

Like every service: plain values in, permission checked here (not in the view), audit event
written, `flush()` — the request or the command's unit of work commits.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta

import sqlalchemy as sa

from pharmacy.compounding.models import Order
from pharmacy.core import audit, links
from pharmacy.core.actor import Actor
from pharmacy.core.context import business_calendar, now, settings, today
from pharmacy.core.db import UTCDateTime
from pharmacy.core.errors import Conflict, LinkInvalid, NotFound
from pharmacy.core.logging_setup import redact
from pharmacy.core.roles import Permission
from pharmacy.extensions import db
from pharmacy.patients.models import Patient
from pharmacy.prescriptions.models import Prescriber, Prescription
from pharmacy.prescriptions.rules import RxStatus
from pharmacy.refills import rules as refill_rules
from pharmacy.reminders import planning, rendering
from pharmacy.reminders.models import DeliveryAttempt, OutboxMessage
from pharmacy.reminders.rules import MessageKind, OutboxState

#: A preferences/unsubscribe link keeps working for a year: an old email must still be able to unsubscribe.
PREFERENCES_LINK_DAYS = 365
PER_PAGE = 50
# The outbox page shows what needs a pharmacist first.
STATE_ORDER = (OutboxState.FAILED, OutboxState.SENDING, OutboxState.PENDING, OutboxState.SENT,
               OutboxState.CANCELLED)
KIND_LABELS = {
    MessageKind.REMINDER_EARLY: "Refill reminder",
    MessageKind.REMINDER_ORDER_BY: "Order-by reminder",
    MessageKind.REMINDER_OVERDUE: "Overdue reminder",
    MessageKind.RENEWAL_NEEDED: "Renewal needed",
    MessageKind.REQUEST_RECEIVED: "Request received",
    MessageKind.REQUEST_APPROVED: "Request approved",
    MessageKind.REQUEST_DECLINED: "Request declined",
    MessageKind.RENEWAL_IN_PROGRESS: "Renewal in progress",
    MessageKind.ORDER_READY: "Order ready",
    MessageKind.ORDER_SHIPPED: "Order shipped",
    MessageKind.PRESCRIBER_RENEWAL: "Renewal request to prescriber",
    MessageKind.ONE_TIME_CODE: "Sign-in code",
    MessageKind.AUTO_REFILL_REQUESTED: "Automatic refill",
}


# ---- the outbox page ----------------------------------------------------------------------------------


#: Counts above this show as "10,000+": each state's count reads at most this many index entries, so the
#: page costs the same with a thousand rows as with millions (the sent pile only grows).
COUNT_CAP = 10_000
WAITING = (OutboxState.PENDING, OutboxState.SENDING)


@dataclass
class OutboxPage:
    state: OutboxState | None
    counts: dict[OutboxState, int]  # exact up to COUNT_CAP; a state in `capped` has more
    rows: list[OutboxMessage]
    page: int
    per_page: int
    has_next: bool
    capped: frozenset[OutboxState] = frozenset()
    errors: dict[int, str] = field(default_factory=dict)  # each row's last error as this reader may see it
    recipients: dict[int, str] = field(default_factory=dict)  # each row's recipient as this reader may see it

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def cap_label(self) -> str:
        return f"{COUNT_CAP:,}"

    def count_label(self, state: OutboxState | None = None) -> str:
        """A state's count as the page shows it ("1758", "10,000+"); the sum of all without a state."""
        if state is None:
            return f"{self.total:,}+" if self.capped else str(self.total)
        return f"{COUNT_CAP:,}+" if state in self.capped else str(self.counts[state])


def _order_within(state: OutboxState) -> tuple[sa.ColumnElement[object], ...]:
    """Waiting rows in the order they go out (soonest due first); finished ones newest first."""
    if state in WAITING:
        return (OutboxMessage.next_attempt_at.asc(), OutboxMessage.id.asc())
    return (OutboxMessage.id.desc(),)


def _capped_counts(states: tuple[OutboxState, ...]) -> dict[OutboxState, int]:
    """COUNT_CAP + 1 at most per state, all in one statement: each a bounded scan of ix_outbox_state_id."""
    t = OutboxMessage.__table__
    columns = [
        sa.select(sa.func.count()).select_from(
            sa.select(sa.literal(1)).where(t.c.state == s).limit(COUNT_CAP + 1).subquery()
        ).scalar_subquery().label(s.value)
        for s in states
    ]
    row = db.session.execute(sa.select(*columns)).one()
    return {s: int(n) for s, n in zip(states, row, strict=True)}


def outbox_page(actor: Actor, *, state: str | None = None, page: int = 1, per_page: int = PER_PAGE) -> OutboxPage:
    """Counts per state and one page of rows, failed first; two statements whatever the page or the table size.

    The rows: for each state (in STATE_ORDER) the first `offset + per_page + 1` rows of that state in its
    own order — an indexed range read that stops at the limit (ix_outbox_state_id; ix_outbox_state_next_attempt
    for waiting rows) — then the union of those few rows ordered state by state and cut to the page. Never
    a sort of the whole outbox. A deep page costs in proportion to its depth, as any OFFSET does.
    """
    audit.require(actor, Permission.MANAGE_OUTBOX, what="see the email outbox")
    chosen = None
    if state:
        try:
            chosen = OutboxState(state)
        except ValueError:
            raise NotFound(f"There is no outbox state {state!r}.") from None
    page = max(min(page, 10_000), 1)
    counts = _capped_counts(STATE_ORDER)
    capped = frozenset(s for s, n in counts.items() if n > COUNT_CAP)
    counts = {s: min(n, COUNT_CAP) for s, n in counts.items()}
    offset = (page - 1) * per_page
    reach = offset + per_page + 1
    arms = []
    for rank, s in enumerate((chosen,) if chosen is not None else STATE_ORDER):
        waiting = s in WAITING
        arm = (
            sa.select(OutboxMessage.id.label("id"), sa.literal(rank).label("rank"),
                      (OutboxMessage.next_attempt_at if waiting else sa.cast(sa.null(), UTCDateTime())).label("due"),
                      (OutboxMessage.id if waiting else -OutboxMessage.id).label("seq"))
            .where(OutboxMessage.state == s).order_by(*_order_within(s)).limit(reach)
        )
        arms.append(sa.select(arm.subquery()))
    picked = sa.union_all(*arms).subquery("picked")
    stmt = (
        sa.select(OutboxMessage).join(picked, picked.c.id == OutboxMessage.id)
        .order_by(picked.c.rank, picked.c.due, picked.c.seq).offset(offset).limit(per_page + 1)
    )
    rows = list(db.session.execute(stmt).scalars())
    shown = rows[:per_page]
    return OutboxPage(state=chosen, counts=counts, rows=shown, page=page, per_page=per_page,
                      has_next=len(rows) > per_page, capped=capped,
                      errors={r.id: listed_delivery_error(r.last_error) for r in shown if r.last_error},
                      recipients=recipient_names(actor, shown))


def recipient_names(actor: Actor, rows: list[OutboxMessage]) -> dict[int, str]:
    """Who each email is to, by name for staff who may see clinical records (each patient named is an audited
    read); for the others "Patient #12" / "Prescriber" — minimum necessary, as on the email's own page."""
    if not actor.can(Permission.VIEW_CLINICAL):
        return {m.id: "Prescriber" if m.kind == MessageKind.PRESCRIBER_RENEWAL else
                (f"Patient #{m.patient_id}" if m.patient_id else "") for m in rows}
    patient_ids = {m.patient_id for m in rows if m.patient_id and m.kind != MessageKind.PRESCRIBER_RENEWAL}
    rx_ids = {m.prescription_id for m in rows if m.prescription_id and m.kind == MessageKind.PRESCRIBER_RENEWAL}
    patients = dict(db.session.execute(
        sa.select(Patient.id, Patient.last_name + ", " + Patient.first_name).where(Patient.id.in_(patient_ids))
    ).all()) if patient_ids else {}
    prescribers = {rx_id: doc.display_name for rx_id, doc in db.session.execute(
        sa.select(Prescription.id, Prescriber).join(Prescriber, Prescriber.id == Prescription.prescriber_id)
        .where(Prescription.id.in_(rx_ids))
    ).all()} if rx_ids else {}
    audit.record_reads(actor, "outbox.view", sorted(patients))
    out = {}
    for m in rows:
        if m.kind == MessageKind.PRESCRIBER_RENEWAL:
            out[m.id] = f"{prescribers.get(m.prescription_id or 0, 'the prescriber')} (prescriber)"
        elif m.patient_id:
            out[m.id] = patients.get(m.patient_id, f"Patient #{m.patient_id}")
    return out


# ---- what each role sees of an email -------------------------------------------------------------------------
#
# Pharmacists (clinical access and the outbox) see an email whole: they answer the patient who asks about it.
# Admins manage the outbox without clinical access ("minimum necessary"): they see that an email exists and how
# its delivery went — kind, state, times, attempts, the mail server's reply — with the recipient masked and
# without its subject or body (a reminder names the patient, the medicine and its dose; a renewal request the
# diagnosis). Decided here, in the service, so no page or export can show more than this.


def sees_email_content(actor: Actor) -> bool:
    return actor.can(Permission.MANAGE_OUTBOX) and actor.can(Permission.VIEW_CLINICAL)


def mask_address(address: str | None) -> str | None:
    """"margaret@example.com" → "m•••@example.com": enough to tell a typo in the domain, not whose it is."""
    if not address or "@" not in address:
        return address and "•••"
    local, _, domain = address.rpartition("@")
    return f"{local[:1]}•••@{domain}"


def delivery_error_for(actor: Actor, text: str | None) -> str | None:
    """A mail server's reply quotes the recipient ("550 <margaret@…> unknown"): masked for non-clinical readers."""
    if text is None or sees_email_content(actor):
        return text
    return redact(text)


def listed_delivery_error(text: str | None) -> str | None:
    """In a list (the outbox, the dashboard) the reply is masked for everyone: a list shows many patients' emails
    at once without reading any one record; the email's own page shows the reply whole to a pharmacist, audited."""
    return redact(text) if text else text


@dataclass
class MessageView:
    """One email as the recipient sees (or saw) it, with its delivery history — or, for a reader without clinical
    access, its delivery facts only (`content_withheld`: no subject, no body, the recipient masked)."""

    row: OutboxMessage
    attempts: list[DeliveryAttempt]
    subject: str | None = None
    to_address: str | None = None
    text: str | None = None
    html: str | None = None
    as_sent: bool = False  # the stored copy of what went out, not a fresh rendering
    problem: str | None = None
    style_sources: list[str] = field(default_factory=list)
    content_withheld: bool = False
    last_error: str | None = None
    attempt_details: dict[int, str] = field(default_factory=dict)


def _get(message_id: int, *, lock: bool = False) -> OutboxMessage:
    stmt = sa.select(OutboxMessage).where(OutboxMessage.id == message_id)
    if lock:
        stmt = stmt.with_for_update()
    row = db.session.execute(stmt).scalar_one_or_none()
    if row is None:
        raise NotFound("No such email in the outbox.")
    return row


#: Previews of rows of other channels, registered by their feature (pharmacy/sms: "sms"): channel → fn(row) giving
#: (recipient, text) for a row not sent yet. A text is shown as a text, never rendered as an email.
CHANNEL_PREVIEWS: dict[str, Callable[[OutboxMessage], tuple[str | None, str]]] = {}


def message_view(actor: Actor, message_id: int) -> MessageView:
    """A sent email from its stored copy; an unsent one rendered now, with placeholder patient links."""
    audit.require(actor, Permission.MANAGE_OUTBOX, what="read emails in the outbox")
    row = _get(message_id)
    attempts = list(db.session.execute(
        sa.select(DeliveryAttempt).where(DeliveryAttempt.message_id == row.id).order_by(DeliveryAttempt.id)
    ).scalars())
    view = MessageView(row=row, attempts=attempts, last_error=delivery_error_for(actor, row.last_error),
                       attempt_details={a.id: delivery_error_for(actor, a.detail) or "" for a in attempts if a.detail})
    if not sees_email_content(actor):
        view.content_withheld = True
        view.to_address = mask_address(row.to_address or _recipient(row))
        audit.record(actor, "outbox.view", patient_id=row.patient_id, entity=("outbox", row.id),
                     details={"content": False})
        return view
    if row.body_text is not None or row.body_html is not None:
        view.subject, view.text, view.html, view.as_sent = row.subject, row.body_text, row.body_html, True
        view.to_address = row.to_address
        if view.to_address is None and row.patient_id is not None and row.channel == "email":
            view.to_address = db.session.execute(
                sa.select(Patient.email).where(Patient.id == row.patient_id)).scalar_one_or_none()
    elif row.channel in CHANNEL_PREVIEWS:
        try:
            view.to_address, view.text = CHANNEL_PREVIEWS[row.channel](row)
        except rendering.RenderError as exc:
            view.problem = f"This text cannot be built: {exc.reason}."
    else:
        try:
            email = rendering.render(row, preview=True)
        except rendering.RenderError as exc:
            view.problem = f"This email cannot be built: {exc.reason}."
        else:
            view.subject, view.text, view.html, view.to_address = email.subject, email.text, email.html, \
                email.to_address
    if view.html:
        view.style_sources = rendering.style_hashes(view.html)
    audit.record(actor, "outbox.view", patient_id=row.patient_id, entity=("outbox", row.id))
    return view


def _recipient(row: OutboxMessage) -> str | None:
    """Who an email not yet rendered goes to (the patient's address, or the prescriber's for a renewal request)."""
    if row.kind == MessageKind.PRESCRIBER_RENEWAL:
        return db.session.execute(
            sa.select(Prescriber.email).join(Prescription, Prescription.prescriber_id == Prescriber.id)
            .where(Prescription.id == row.prescription_id)).scalar_one_or_none()
    if row.patient_id is None:
        return None
    return db.session.execute(sa.select(Patient.email).where(Patient.id == row.patient_id)).scalar_one_or_none()


def _transition(row_id: int, allowed: tuple[OutboxState, ...], values: dict[str, object]) -> bool:
    """Change a row only if it is still in an allowed state (a worker may have claimed it meanwhile)."""
    result = db.session.execute(
        sa.update(OutboxMessage).where(OutboxMessage.id == row_id, OutboxMessage.state.in_(allowed))
        .values(**values).execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


def noun(row: OutboxMessage) -> str:
    """What the staff pages call a message: a text is not an email, whichever outbox row carries it."""
    return "text" if row.channel == "sms" else "email"


def retry(actor: Actor, message_id: int) -> OutboxMessage:
    """A failed email or text goes back to the queue, due now; its attempt count (and history) is kept."""
    row = _get(message_id, lock=True)
    audit.require(actor, Permission.MANAGE_OUTBOX, patient_id=row.patient_id, what="retry emails")
    if not _transition(row.id, (OutboxState.FAILED,), {
        "state": OutboxState.PENDING, "next_attempt_at": now(), "lease_until": None, "claimed_by": None,
    }):
        raise Conflict(f"Only a failed {noun(row)} can be retried (this one is {row.state.value}).")
    db.session.refresh(row)
    audit.record(actor, "outbox.retry", patient_id=row.patient_id, entity=("outbox", row.id),
                 details={"kind": row.kind.value, "attempts": row.attempts})
    db.session.flush()
    return row


def cancel(actor: Actor, message_id: int) -> OutboxMessage:
    """A pending or failed email or text will not be sent."""
    row = _get(message_id, lock=True)
    audit.require(actor, Permission.MANAGE_OUTBOX, patient_id=row.patient_id, what="cancel emails")
    if not _transition(row.id, (OutboxState.PENDING, OutboxState.FAILED), {
        "state": OutboxState.CANCELLED, "cancelled_reason": "cancelled by the pharmacy", "lease_until": None,
        "claimed_by": None,
    }):
        raise Conflict(f"Only a pending or failed {noun(row)} can be cancelled (this one is {row.state.value}).")
    db.session.refresh(row)
    audit.record(actor, "outbox.cancel", patient_id=row.patient_id, entity=("outbox", row.id),
                 details={"kind": row.kind.value})
    db.session.flush()
    return row


# ---- what goes out on a day (flask reminders due) ---------------------------------------------------------


@dataclass(frozen=True)
class DueItem:
    """One email due on a day, with why — identifiers only, never a name."""

    at: datetime  # local time at the pharmacy
    message_id: int
    kind: MessageKind
    patient_id: int | None
    rx_number: str | None
    order_by: date | None
    why: str


def _why(row: OutboxMessage, order_by: date | None) -> str:
    key = row.dedupe_key.rsplit(":", 1)[-1] if row.dedupe_key.startswith("fill:") else ""
    ob = f" ({order_by.isoformat()})" if order_by else ""
    if key.startswith("early_"):
        why = f"{key.removeprefix('early_')} days before the order-by date{ob}"
    elif key == "order_by":
        why = f"the order-by date{ob}"
    elif key == "overdue":
        why = f"order-by date{ob} passed with no refill requested"
    elif key == "renewal":
        why = "no refills left, or the prescription expires before the supply runs out"
    else:
        why = KIND_LABELS.get(MessageKind(row.kind), row.kind.value).lower()
    if row.attempts:
        why += f"; retry after {row.attempts} failed attempt(s)"
    return why


def due_on(as_of: date) -> list[DueItem]:
    """Pending emails that would go out on `as_of` (pharmacy-local day), in send order.

    For today or a past day, rows already overdue are included too: the next delivery run sends
    them. A bounded number of queries: the rows, then the fills' facts for the order-by dates.
    """
    tz = settings().timezone
    start = datetime.combine(as_of, time(0), tzinfo=tz)
    end = datetime.combine(as_of + timedelta(days=1), time(0), tzinfo=tz)
    stmt = (
        sa.select(OutboxMessage, Prescription.rx_number)
        .outerjoin(Prescription, Prescription.id == OutboxMessage.prescription_id)
        .where(OutboxMessage.state == OutboxState.PENDING, OutboxMessage.next_attempt_at < end)
        .order_by(OutboxMessage.next_attempt_at, OutboxMessage.id)
    )
    if as_of > today():
        stmt = stmt.where(OutboxMessage.next_attempt_at >= start)
    rows = db.session.execute(stmt).all()
    order_ids = {r.order_id for r, _ in rows if r.order_id is not None}
    order_by: dict[int, date] = {}
    if order_ids:
        cfg, cal = settings(), business_calendar()
        for fact in db.session.execute(planning.facts_query().where(Order.id.in_(order_ids))).all():
            f = planning.FillFacts(*fact)
            order_by[f.order_id] = refill_rules.timeline(
                f.run_out, shipping_days=refill_rules.shipping_days_for(f.delivery_method, f.shipping_days),
                buffer_days=cfg.safety_buffer_days,
                lead_time_business_days=f.lead_time, calendar=cal,
            ).order_by
    items = []
    for row, rx_number in rows:
        ob = order_by.get(row.order_id) if row.order_id else None
        why = _why(row, ob)
        if row.next_attempt_at < start:
            why += f"; late (was due {row.next_attempt_at.astimezone(tz).date().isoformat()})"
        items.append(DueItem(at=row.next_attempt_at.astimezone(tz), message_id=row.id, kind=MessageKind(row.kind),
                             patient_id=row.patient_id, rx_number=rx_number, order_by=ob, why=why))
    return items


# ---- planning sweeps (the scheduler) -----------------------------------------------------------------------


def plan_missing_reminders(*, limit: int = 500) -> int:
    """Plan prescriptions that should have reminders but have none (e.g. dispensed while planning failed).

    Active prescriptions still in supply whose latest dispensed order has no reminder rows, for a patient who
    wants reminders and has an email. Returns how many rows were added.
    """
    has_rows = sa.exists().where(OutboxMessage.order_id == Order.id,
                                 OutboxMessage.kind.in_(list(planning.REMINDER_KINDS)))
    ids = db.session.execute(
        sa.select(Prescription.id)
        .join(Order, sa.and_(Order.prescription_id == Prescription.id,
                             Order.fill_number == Prescription.latest_fill_number))
        .join(Patient, Patient.id == Prescription.patient_id)
        .where(Prescription.status == RxStatus.ACTIVE, Prescription.latest_run_out_date >= today(),
               Patient.reminders_opt_in.is_(True), Patient.email.is_not(None), ~has_rows)
        .order_by(Prescription.id).limit(limit)
    ).scalars().all()
    return sum(planning.replan_prescription(rx_id) for rx_id in ids)


# ---- the patient's email preferences --------------------------------------------------------------------


def open_preferences(token: str) -> links.LinkClaims:
    """Check a preferences link (signature, age, patient); LinkInvalid otherwise."""
    claims = links.read_token(links.PREFERENCES, token, max_age_days=PREFERENCES_LINK_DAYS)
    if db.session.get(Patient, claims.patient_id) is None:
        raise LinkInvalid("This link is not valid.", reason="invalid")
    return claims


def reminders_on(patient_id: int) -> bool:
    """Whether the patient gets refill reminder emails now (what the preferences page says before they choose)."""
    return bool(db.session.execute(sa.select(Patient.reminders_opt_in).where(Patient.id == patient_id)).scalar())


def set_reminder_preference(patient_id: int, opted_in: bool, *, via: str) -> bool:
    """The patient turns refill reminder emails off or on (from the link in an email); True if it changed.

    Written directly rather than through patients.services.update_patient, which rightly
    demands a staff permission: here the signed link is the proof. Opting out cancels pending
    reminders (renewal notices, which the patient needs to keep their therapy, stay); opting
    back in re-plans them.
    """
    patient = db.session.execute(
        sa.select(Patient).where(Patient.id == patient_id).with_for_update()
    ).scalar_one_or_none()
    if patient is None:
        raise LinkInvalid("This link is not valid.", reason="invalid")
    changed = patient.reminders_opt_in != opted_in
    if changed:
        patient.reminders_opt_in = opted_in
        patient.updated_at = now()
        if opted_in:
            # Rows cancelled by the opt-out become re-plannable: planning restores those its plan
            # still contains (future ones) and leaves the rest cancelled.
            db.session.execute(
                sa.update(OutboxMessage)
                .where(OutboxMessage.patient_id == patient_id, OutboxMessage.state == OutboxState.CANCELLED,
                       OutboxMessage.cancelled_reason == "patient opted out")
                .values(cancelled_reason="re-planned").execution_options(synchronize_session="fetch")
            )
        db.session.flush()
        planning.replan_patient(patient_id)
    actor = Actor(kind="patient", patient_id=patient_id)
    audit.record(actor, "reminders.opt_in" if opted_in else "reminders.opt_out", patient_id=patient_id,
                 entity=("patient", patient_id), details={"via": via, "changed": changed})
    db.session.flush()
    return changed
