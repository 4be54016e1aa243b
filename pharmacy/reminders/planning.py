"""Planning reminders per dispensed fill (DOMAIN.md "Refill timing"): rows with a due time, not jobs.

For the latest dispensed fill of an active prescription: reminders before and on the order-by
date and an overdue notice after it; a renewal notice (and a task for the pharmacist) when no
refills remain or the prescription expires before the supply runs out. Re-planning replaces
what is still pending; asking for or ordering a refill cancels what is pending.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date

import sqlalchemy as sa

from pharmacy.compounding.models import Formula, Order
from pharmacy.compounding.rules import DeliveryMethod, OrderState
from pharmacy.core.context import business_calendar, settings, today
from pharmacy.extensions import db
from pharmacy.patients.models import Patient
from pharmacy.prescriptions.models import Prescription
from pharmacy.prescriptions.rules import RxStatus
from pharmacy.refills import rules as refill_rules
from pharmacy.reminders import outbox
from pharmacy.reminders import rules as reminder_rules
from pharmacy.reminders.models import OutboxMessage
from pharmacy.reminders.rules import MessageKind, OutboxState
from pharmacy.sms.models import takes_texts

REMINDER_KINDS = (MessageKind.REMINDER_EARLY, MessageKind.REMINDER_ORDER_BY, MessageKind.REMINDER_OVERDUE,
                  MessageKind.RENEWAL_NEEDED)
OPEN_ORDER_STATES = [s for s in OrderState if s not in (OrderState.DISPENSED, OrderState.CANCELLED)]
# Cancellations whose cause can go away (a declined request, a cancelled order, opting back in, a
# resumed prescription): when the plan wants the reminder again, the same row comes back.
RESTORABLE_REASONS = frozenset({
    "re-planned", "patient opted out", "refill requested", "refill ordered", "prescription on_hold",
})


@dataclass(frozen=True)
class FillFacts:
    """What planning needs about one dispensed fill (one row of a joined query)."""

    order_id: int
    prescription_id: int
    patient_id: int
    dispensed_on: date
    days_supply: int
    fill_number: int
    delivery_method: DeliveryMethod
    shipping_days: int
    opted_in: bool
    has_email: bool
    lead_time: int
    refills_authorized: int
    expiry_date: date


def facts_query() -> sa.Select:
    return (
        sa.select(
            Order.id, Order.prescription_id, Order.patient_id, Order.dispensed_on, Order.days_supply,
            Order.fill_number, Order.delivery_method, Patient.shipping_days, Patient.reminders_opt_in,
            # "has_email" means "reminders can reach the patient": an email address, or (issue 19) texts chosen
            # with a verified number and consent. Texts are spawned from the email rows planned here
            # (pharmacy/sms/fanout.py); the email row itself is then cancelled at send time ("no email address").
            sa.or_(Patient.email.is_not(None), takes_texts(Patient.id)),
            Formula.lead_time_business_days, Prescription.refills_authorized,
            Prescription.expiry_date,
        )
        .join(Prescription, Prescription.id == Order.prescription_id)
        .join(Patient, Patient.id == Order.patient_id)
        .join(Formula, Formula.id == Prescription.formula_id)
        .where(Order.state == OrderState.DISPENSED, Prescription.status == RxStatus.ACTIVE)
    )


def plan_messages(f: FillFacts, *, day: date, refills_used: int) -> list[reminder_rules.PlannedMessage]:
    """The messages one fill should have, as of `day` (pure apart from reading settings)."""
    cfg = settings()
    cal = business_calendar()
    shipping = f.shipping_days if f.delivery_method == DeliveryMethod.SHIP else 0
    line = refill_rules.timeline(
        f.dispensed_on, f.days_supply, shipping_days=shipping, buffer_days=cfg.safety_buffer_days,
        lead_time_business_days=f.lead_time, calendar=cal,
    )
    planned: list[reminder_rules.PlannedMessage] = []
    if f.opted_in and f.has_email:
        planned = reminder_rules.plan_refill_reminders(
            order_by=line.order_by, offsets_days=cfg.reminder_offsets_days, overdue_after_days=cfg.overdue_after_days,
            hour=cfg.reminder_hour, tz=cfg.timezone, today=day, calendar=cal,
        )
    left = refill_rules.refills_left(f.refills_authorized, refills_used)
    renewal = reminder_rules.plan_renewal_notice(
        run_out=line.run_out, expiry_date=f.expiry_date, refills_left=left, notice_days=cfg.renewal_notice_days,
        hour=cfg.reminder_hour, tz=cfg.timezone, today=day,
    )
    if renewal is not None:
        planned.append(renewal)
    return planned


def _refills_used(rx_id: int) -> int:
    from pharmacy.prescriptions.services import refills_used

    return refills_used(rx_id)


def _blocked(rx_id: int) -> bool:
    """No reminders while a refill is already ordered or requested for the prescription."""
    from pharmacy.refills.models import OPEN_REQUEST_STATES, RefillRequest

    open_order = db.session.execute(
        sa.select(Order.id).where(Order.prescription_id == rx_id, Order.state.in_(OPEN_ORDER_STATES)).limit(1)
    ).first()
    open_request = db.session.execute(
        sa.select(RefillRequest.id).where(
            RefillRequest.prescription_id == rx_id, RefillRequest.state.in_(OPEN_REQUEST_STATES)
        ).limit(1)
    ).first()
    return bool(open_order or open_request)


def _write(f: FillFacts, planned: list[reminder_rules.PlannedMessage]) -> int:
    """Make the pending rows of one fill match the plan: keep matching rows, cancel stale ones, add new."""
    keys = {f"fill:{f.order_id}:{p.key}": p for p in planned}
    existing = db.session.execute(
        sa.select(OutboxMessage).where(OutboxMessage.order_id == f.order_id, OutboxMessage.kind.in_(REMINDER_KINDS))
    ).scalars().all()
    by_key = {row.dedupe_key: row for row in existing}
    stale = [row.id for row in existing if row.state == OutboxState.PENDING and row.dedupe_key not in keys]
    if stale:
        # Conditional: a row a delivery worker has just claimed is left to it.
        db.session.execute(
            sa.update(OutboxMessage)
            .where(OutboxMessage.id.in_(stale), OutboxMessage.state == OutboxState.PENDING)
            .values(state=OutboxState.CANCELLED, cancelled_reason="re-planned")
            .execution_options(synchronize_session=False)
        )
    written = 0
    for key, p in keys.items():
        row = by_key.get(key)
        if row is not None:
            restorable = row.state == OutboxState.CANCELLED and row.cancelled_reason in RESTORABLE_REASONS
            if (row.state == OutboxState.PENDING and row.due_at != p.send_at) or restorable:
                db.session.execute(
                    sa.update(OutboxMessage)
                    .where(OutboxMessage.id == row.id, OutboxMessage.state == row.state)
                    .values(state=OutboxState.PENDING, cancelled_reason=None, due_at=p.send_at,
                            next_attempt_at=p.send_at)
                    .execution_options(synchronize_session=False)
                )
            continue
        if outbox.enqueue(p.kind, dedupe_key=key, patient_id=f.patient_id, prescription_id=f.prescription_id,
                          order_id=f.order_id, due_at=p.send_at):
            written += 1
    if any(p.kind == MessageKind.RENEWAL_NEEDED for p in planned):
        from pharmacy.refills import renewals

        renewals.ensure_renewal_task(f.prescription_id, reason="no refills left or expires before run-out")
    db.session.flush()
    return written


def plan_for_order(order_id: int) -> int:
    """Plan (or re-plan) the reminders of a dispensed fill; returns how many rows were added."""
    row = db.session.execute(facts_query().where(Order.id == order_id)).first()
    if row is None:
        return 0
    f = FillFacts(*row)
    latest = db.session.execute(
        sa.select(sa.func.max(Order.fill_number)).where(
            Order.prescription_id == f.prescription_id, Order.state == OrderState.DISPENSED
        )
    ).scalar_one()
    if latest != f.fill_number or _blocked(f.prescription_id):
        return 0
    return _write(f, plan_messages(f, day=today(), refills_used=_refills_used(f.prescription_id)))


def replan_prescription(rx_id: int) -> int:
    order_id = db.session.execute(
        sa.select(Order.id).where(Order.prescription_id == rx_id, Order.state == OrderState.DISPENSED)
        .order_by(Order.fill_number.desc()).limit(1)
    ).scalar_one_or_none()
    return plan_for_order(order_id) if order_id else 0


def replan_patient(patient_id: int) -> int:
    opted_in = db.session.execute(sa.select(Patient.reminders_opt_in).where(Patient.id == patient_id)).scalar_one()
    rx_ids = db.session.execute(
        sa.select(Prescription.id).where(Prescription.patient_id == patient_id, Prescription.status == RxStatus.ACTIVE)
    ).scalars().all()
    if not opted_in:
        outbox.cancel_where(
            sa.and_(OutboxMessage.patient_id == patient_id,
                    OutboxMessage.kind.in_([k for k in REMINDER_KINDS if k != MessageKind.RENEWAL_NEEDED])),
            "patient opted out",
        )
    return sum(replan_prescription(rx_id) for rx_id in rx_ids)


def cancel_for_prescription(rx_id: int, *, reason: str, kinds: tuple[MessageKind, ...] = REMINDER_KINDS) -> int:
    return outbox.cancel_where(
        sa.and_(OutboxMessage.prescription_id == rx_id, OutboxMessage.kind.in_(list(kinds))), reason
    )


def latest_fill_facts(batch_size: int = 2000) -> Iterator[list[FillFacts]]:
    """Every active prescription's latest dispensed fill, streamed in batches (for a full re-plan)."""
    latest = (
        sa.select(Order.prescription_id, sa.func.max(Order.fill_number).label("fill"))
        .where(Order.state == OrderState.DISPENSED).group_by(Order.prescription_id).subquery()
    )
    stmt = facts_query().join(
        latest, sa.and_(latest.c.prescription_id == Order.prescription_id, latest.c.fill == Order.fill_number)
    ).order_by(Order.id)
    result = db.session.execute(stmt.execution_options(yield_per=batch_size))
    for chunk in result.partitions(batch_size):
        yield [FillFacts(*r) for r in chunk]
