"""Planning reminders from a prescription's supply (docs/domain.md "Refill timing"): rows with a due time, not jobs.

For an active prescription, from the run-out its supply model gives (the last day covered, early fills
stacked): reminders before and on the order-by date and an overdue notice after it; a renewal notice when
nothing is left to fill after the supply on hand or the prescription expires first — announced as
`core.signals.renewals_needed`, on which the renewals feature opens the pharmacist's task. Re-planning replaces
what is still pending; asking for or ordering a refill cancels what is pending.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date

import sqlalchemy as sa
from sqlalchemy.orm import aliased

from pharmacy.compounding.models import Formula, Order
from pharmacy.compounding.rules import DeliveryMethod, OrderState
from pharmacy.core import signals
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
from pharmacy.supply import reads

REMINDER_KINDS = (MessageKind.REMINDER_EARLY, MessageKind.REMINDER_ORDER_BY, MessageKind.REMINDER_OVERDUE,
                  MessageKind.RENEWAL_NEEDED)
# Cancellations whose cause can go away (a declined request, a cancelled order, opting back in, a
# resumed prescription): when the plan wants the reminder again, the same row comes back.
RESTORABLE_REASONS = frozenset({
    "re-planned", "patient opted out", "refill requested", "refill ordered", "prescription on_hold",
})


@dataclass(frozen=True)
class FillFacts:
    """What planning needs about one prescription's supply and its latest dispensed order (one joined row).

    Reminder rows hang off the latest dispensed order ("fill:<order id>:<key>"); the dates come from the
    supply the prescription caches (supply/rules.py: run-out is the last day covered, early fills stacked).
    A replacement not yet dispensed (`carried`) holds the supply of the prescription it replaced
    (supply/services.carry_over): its reminders hang off that prescription's latest dispensed order, under keys of
    their own ("rx:<prescription id>:fill:<order id>:<key>"), since the old prescription's rows were cancelled.
    """

    order_id: int
    prescription_id: int
    patient_id: int
    prescriber_id: int
    run_out: date
    # How the next fill will travel (refills.rules.next_fill_delivery: the waiting request's method, else the
    # patient's preference) — never the last fill's, so the reminders' order-by date is the portal's.
    delivery_method: DeliveryMethod
    shipping_days: int
    opted_in: bool
    has_email: bool
    lead_time: int
    days_per_fill: int
    refills_authorized: int
    expiry_date: date
    days_dispensed: int
    carried: bool = False

    def dedupe_key(self, planned_key: str) -> str:
        """The outbox key of one planned message of this supply."""
        key = f"fill:{self.order_id}:{planned_key}"
        return f"rx:{self.prescription_id}:{key}" if self.carried else key

    @property
    def can_fill_again(self) -> bool:
        """Days remain on the prescription after what the patient holds (the rest of a partial counts)."""
        authorized = self.days_per_fill * (1 + (self.refills_authorized or 0))
        return self.days_dispensed < authorized


def facts_query() -> sa.Select:
    """Active prescriptions with supply, joined to their latest dispensed order, patient and formula, with how the
    next fill will travel (supply/reads.next_fill_delivery_sql: the waiting request's method, else the patient's
    preference — the order-by date the portal and auto-refill show). A replacement
    not yet dispensed is joined to the latest dispensed order of the prescription whose supply it holds (the one it
    replaced, or further back along a chain of replacements none of which was filled: `supply_source_id`)."""
    source = aliased(Prescription, name="supply_source")
    carried = Prescription.latest_fill_number.is_(None)
    return (
        sa.select(
            Order.id, Prescription.id, Prescription.patient_id, Prescription.prescriber_id,
            Prescription.latest_run_out_date,
            reads.next_fill_delivery_sql(reads.waiting_delivery(Prescription.id), Patient.delivery_preference),
            Patient.shipping_days, Patient.reminders_opt_in,
            # "has_email" means "reminders can reach the patient": an email address, or texts chosen with a
            # verified number and consent. Texts are spawned from the email rows planned here
            # (pharmacy/sms/fanout.py); the email row itself is then cancelled at send time ("no email address").
            sa.or_(Patient.email.is_not(None), takes_texts(Patient.id)), Formula.lead_time_business_days,
            Prescription.days_supply, Prescription.refills_authorized, Prescription.expiry_date,
            Prescription.days_dispensed, sa.case((carried, sa.true()), else_=sa.false()),
        )
        .select_from(Prescription)
        .join(source, source.id == sa.case((carried, Prescription.supply_source_id), else_=Prescription.id))
        .join(Order, sa.and_(Order.prescription_id == source.id, Order.fill_number == source.latest_fill_number))
        .join(Patient, Patient.id == Prescription.patient_id)
        .join(Formula, Formula.id == Prescription.formula_id)
        .where(Prescription.status == RxStatus.ACTIVE, Prescription.latest_run_out_date.is_not(None))
    )


def plan_messages(f: FillFacts, *, day: date) -> list[reminder_rules.PlannedMessage]:
    """The messages one prescription's supply should have, as of `day` (pure apart from reading settings)."""
    cfg = settings()
    cal = business_calendar()
    line = refill_rules.timeline(
        f.run_out, shipping_days=refill_rules.shipping_days_for(f.delivery_method, f.shipping_days),
        buffer_days=cfg.safety_buffer_days,
        lead_time_business_days=f.lead_time, calendar=cal,
    )
    planned: list[reminder_rules.PlannedMessage] = []
    if f.opted_in and f.has_email:
        planned = reminder_rules.plan_refill_reminders(
            order_by=line.order_by, offsets_days=cfg.reminder_offsets_days, overdue_after_days=cfg.overdue_after_days,
            hour=cfg.reminder_hour, tz=cfg.timezone, today=day, calendar=cal,
        )
    renewal = reminder_rules.plan_renewal_notice(
        run_out=line.run_out, expiry_date=f.expiry_date, can_fill_again=f.can_fill_again,
        notice_days=cfg.renewal_notice_days, hour=cfg.reminder_hour, tz=cfg.timezone, today=day,
    )
    if renewal is not None:
        planned.append(renewal)
    return planned


def _blocked(rx_id: int) -> bool:
    """No reminders while a refill is already ordered or requested for the prescription."""
    return reads.open_order(rx_id) is not None or reads.open_request(rx_id) is not None


def _write(f: FillFacts, planned: list[reminder_rules.PlannedMessage]) -> int:
    """Make the pending rows of one fill match the plan: keep matching rows, cancel stale ones, add new."""
    keys = {f.dedupe_key(p.key): p for p in planned}
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
    db.session.flush()
    if any(p.kind == MessageKind.RENEWAL_NEEDED for p in planned):
        signals.renewals_needed.send(None, wanted={f.prescription_id: (f.prescriber_id, f.patient_id)})
    return written


def replan_prescription(rx_id: int) -> int:
    """Plan (or re-plan) the reminders of a prescription's supply; returns how many rows were added.

    Nothing while a refill is already ordered or requested (the request or order answers the reminders).
    """
    row = db.session.execute(facts_query().where(Prescription.id == rx_id)).first()
    if row is None or _blocked(rx_id):
        return 0
    f = FillFacts(*row)
    return _write(f, plan_messages(f, day=today()))


def plan_for_order(order_id: int) -> int:
    """Re-plan the prescription of a dispensed order (reminders follow the latest dispensing only)."""
    rx_id = db.session.execute(
        sa.select(Order.prescription_id).where(Order.id == order_id, Order.state == OrderState.DISPENSED)
    ).scalar_one_or_none()
    return replan_prescription(rx_id) if rx_id is not None else 0


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
    """Every active prescription's supply facts, streamed in batches (for a full re-plan)."""
    result = db.session.execute(facts_query().order_by(Prescription.id).execution_options(yield_per=batch_size))
    for chunk in result.partitions(batch_size):
        yield [FillFacts(*r) for r in chunk]
