"""Patient use cases: intake, edits (with re-screening), the patient record, listing."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.orm import joinedload

from pharmacy.core import audit
from pharmacy.core.actor import Actor
from pharmacy.core.errors import NotFound
from pharmacy.core.roles import Permission
from pharmacy.extensions import db
from pharmacy.patients.models import Patient
from pharmacy.prescriptions.models import Prescription, ScreeningAlert

if TYPE_CHECKING:
    from pharmacy.compounding.models import Order

PAGE_SIZE = 50


@dataclass
class PatientPage:
    items: list[Patient]
    page: int
    has_next: bool


MAX_PAGE_SIZE = 200
MAX_ID = 2**31 - 1


@dataclass
class PatientRecord:
    """What the patient page shows, assembled in a fixed number of queries.

    `alerts` and `orders` are keyed by prescription id (current prescription-level alerts; orders
    newest first); `extra` is where other features add their blocks (timeline, payments …).
    """

    patient: Patient
    prescriptions: list[Prescription] = field(default_factory=list)
    alerts: dict[int, list[ScreeningAlert]] = field(default_factory=dict)
    orders: dict[int, list[Order]] = field(default_factory=dict)
    side_effects: list[Any] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def open_alert_count(self) -> int:
        """Alerts still waiting for a pharmacist (hard stops always count: they cannot be overridden)."""
        return sum(1 for alerts in self.alerts.values() for a in alerts
                   if a.severity.value != "warning" and (a.severity.value == "hard_stop" or not a.resolved))


def list_patients(actor: Actor, *, page: int = 1, per_page: int = PAGE_SIZE) -> PatientPage:
    audit.require(actor, Permission.VIEW_CLINICAL, what="list patients")
    page = min(max(page, 1), 1_000_000)
    per_page = min(max(per_page, 1), MAX_PAGE_SIZE)
    rows = list(
        db.session.execute(
            sa.select(Patient)
            .order_by(Patient.name_key, Patient.id)
            .offset((page - 1) * per_page)
            .limit(per_page + 1)
        ).scalars()
    )
    audit.record_reads(actor, "patient.list", [p.id for p in rows[:per_page]])
    return PatientPage(rows[:per_page], page, len(rows) > per_page)


def _safe_id(value: Any) -> int | None:
    """An id that can be stored or looked up (anything else names no patient)."""
    return value if not isinstance(value, bool) and isinstance(value, int) and 1 <= value <= MAX_ID else None


def get_patient(actor: Actor, patient_id: int) -> Patient:
    audit.require(actor, Permission.VIEW_CLINICAL, patient_id=_safe_id(patient_id), what="open a patient record")
    patient = db.session.get(Patient, patient_id) if _safe_id(patient_id) else None
    if patient is None:
        raise NotFound("No such patient.")
    return patient


def view_patient(actor: Actor, patient_id: int) -> Patient:
    """One patient's details, read (and audited as read) by staff or an integration."""
    patient = get_patient(actor, patient_id)
    audit.record(actor, "patient.view", patient_id=patient.id, entity=("patient", patient.id))
    return patient


def patient_record(actor: Actor, patient_id: int) -> PatientRecord:
    """The patient page: details, lists, prescriptions with their current alerts and fills (4 queries)."""
    from pharmacy.compounding.models import Order
    from pharmacy.patients.models import SideEffectEntry

    patient = get_patient(actor, patient_id)
    rxs = list(
        db.session.execute(
            sa.select(Prescription).where(Prescription.patient_id == patient_id)
            .options(joinedload(Prescription.formula), joinedload(Prescription.prescriber))
            .order_by(Prescription.written_date.desc(), Prescription.id.desc())
        ).scalars()
    )
    record = PatientRecord(patient=patient, prescriptions=rxs)
    ids = [rx.id for rx in rxs]
    if ids:
        for alert in db.session.execute(
            sa.select(ScreeningAlert).where(ScreeningAlert.prescription_id.in_(ids), ScreeningAlert.order_id.is_(None),
                                            ScreeningAlert.current.is_(True))
            .order_by(ScreeningAlert.id)
        ).scalars():
            record.alerts.setdefault(alert.prescription_id, []).append(alert)
        for order in db.session.execute(
            sa.select(Order).where(Order.prescription_id.in_(ids)).order_by(Order.created_at.desc(), Order.id.desc())
        ).scalars():
            record.orders.setdefault(order.prescription_id, []).append(order)
    order_rank = {"hard_stop": 0, "overridable_stop": 1, "acknowledge": 2, "warning": 3}
    for alerts in record.alerts.values():
        alerts.sort(key=lambda a: (order_rank.get(a.severity.value, 9), a.id))
    record.side_effects = list(db.session.execute(
        sa.select(SideEffectEntry).where(SideEffectEntry.patient_id == patient_id)
        .order_by(SideEffectEntry.noted_on.desc(), SideEffectEntry.id.desc()).limit(20)
    ).scalars())
    _add_timeline(record)
    _add_messages_and_requests(record)
    if actor.can(Permission.VIEW_BILLING):
        from pharmacy.billing.services import patient_cost_summary

        record.extra["costs"] = patient_cost_summary(actor, patient_id)
    audit.record(actor, "patient.view", patient_id=patient_id, entity=("patient", patient_id))
    return record


@dataclass(frozen=True)
class TimelineRow:
    """One active prescription's supply: when it was dispensed, runs out, and must be ordered by."""

    rx: Prescription
    dispensed_on: Any
    run_out: Any
    order_by: Any
    in_progress: Order | None


def _add_timeline(record: PatientRecord) -> None:
    from pharmacy.compounding.rules import DeliveryMethod, OrderState
    from pharmacy.core.context import business_calendar, settings
    from pharmacy.prescriptions.rules import RxStatus
    from pharmacy.refills import rules as refill_rules

    rows = []
    for rx in record.prescriptions:
        if rx.status != RxStatus.ACTIVE:
            continue
        orders = record.orders.get(rx.id, [])
        last = max((o for o in orders if o.state == OrderState.DISPENSED and o.dispensed_on),
                   key=lambda o: o.fill_number, default=None)
        open_order = next((o for o in orders if o.state not in (OrderState.DISPENSED, OrderState.CANCELLED)), None)
        if last is None:
            rows.append(TimelineRow(rx, None, None, None, open_order))
            continue
        shipping = record.patient.shipping_days if last.delivery_method == DeliveryMethod.SHIP else 0
        line = refill_rules.timeline(last.dispensed_on, last.days_supply, shipping_days=shipping,
                                     buffer_days=settings().safety_buffer_days,
                                     lead_time_business_days=rx.formula.lead_time_business_days,
                                     calendar=business_calendar())
        rows.append(TimelineRow(rx, line.dispensed_on, line.run_out, line.order_by, open_order))
    record.extra["timeline"] = rows


def _add_messages_and_requests(record: PatientRecord) -> None:
    from pharmacy.refills.models import RefillRequest
    from pharmacy.reminders.models import OutboxMessage

    pid = record.patient.id
    record.extra["messages"] = list(db.session.execute(
        sa.select(OutboxMessage).where(OutboxMessage.patient_id == pid)
        .order_by(OutboxMessage.due_at.desc(), OutboxMessage.id.desc()).limit(15)
    ).scalars())
    record.extra["requests"] = list(db.session.execute(
        sa.select(RefillRequest).where(RefillRequest.patient_id == pid)
        .order_by(RefillRequest.requested_at.desc()).limit(10)
    ).scalars())


PATIENT_FIELDS = (
    "first_name", "last_name", "date_of_birth", "email", "phone", "address_line1", "address_line2", "city",
    "state", "postal_code", "conditions", "medications", "allergies", "reminders_opt_in", "delivery_preference",
    "shipping_days", "notes",
)


def _clean(data: dict[str, Any]) -> dict[str, Any]:
    from pharmacy.core.context import today
    from pharmacy.core.errors import ValidationFailed
    from pharmacy.patients.rules import normalise_list

    out = {k: v for k, v in data.items() if k in PATIENT_FIELDS}
    for key in ("conditions", "medications", "allergies"):
        if key in out:
            out[key] = normalise_list(out[key] or [])
    if out.get("email"):
        out["email"] = out["email"].strip().lower()
    if "date_of_birth" in out and out["date_of_birth"] > today():
        raise ValidationFailed("Check the date of birth.", fields={"date_of_birth": "A birth date cannot be in the future."})
    return out


def create_patient(actor: Actor, data: dict[str, Any]) -> Patient:
    """Intake: a new patient record (validated data from PatientInSchema)."""
    from pharmacy.core.context import now, settings
    from pharmacy.dashboard.services import name_key

    audit.require(actor, Permission.EDIT_PATIENT, what="add patients")
    values = _clean(data)
    if values.get("shipping_days") is None:
        values["shipping_days"] = settings().default_shipping_days
    t = now()
    patient = Patient(**values, created_at=t, updated_at=t)
    patient.name_key = name_key(patient.last_name, patient.first_name)
    db.session.add(patient)
    db.session.flush()
    audit.record(actor, "patient.create", patient_id=patient.id, entity=("patient", patient.id))
    return patient


def update_patient(actor: Actor, patient_id: int, data: dict[str, Any]) -> Patient:
    """Edit details; a change to conditions or medications re-runs the safety screen of every active prescription."""
    from pharmacy.core.context import now
    from pharmacy.dashboard.services import name_key
    from pharmacy.prescriptions import screening

    audit.require(actor, Permission.EDIT_PATIENT, patient_id=_safe_id(patient_id), what="edit patient records")
    patient = get_patient(actor, patient_id)
    values = _clean(data)
    if values.get("shipping_days", 0) is None:
        values.pop("shipping_days")  # a blank field keeps the current number of shipping days
    changed = sorted(k for k, v in values.items() if getattr(patient, k) != v)
    for key in changed:
        setattr(patient, key, values[key])
    if not changed:
        return patient
    patient.name_key = name_key(patient.last_name, patient.first_name)
    patient.updated_at = now()
    db.session.flush()
    # Field names only: the values are PHI and the audit trail is read by admins.
    audit.record(actor, "patient.update", patient_id=patient.id, entity=("patient", patient.id),
                 details={"fields": changed})
    if {"conditions", "medications"} & set(changed):
        screening.rescreen_patient(actor, patient)
    if "reminders_opt_in" in changed:
        from pharmacy.reminders import planning

        planning.replan_patient(patient.id)
    return patient


def add_side_effect(actor: Actor, patient_id: int, data: dict[str, Any]) -> Any:
    """Log a side effect with the suggested action from DOMAIN.md "Side effects worth logging"."""
    from pharmacy.core.context import now, today
    from pharmacy.patients.models import SideEffectEntry
    from pharmacy.patients.rules import suggested_action

    audit.require(actor, Permission.EDIT_PATIENT, patient_id=patient_id, what="log side effects")
    patient = db.session.get(Patient, patient_id)
    if patient is None:
        raise NotFound("No such patient.")
    current_form = db.session.execute(
        sa.select(Prescription).where(Prescription.patient_id == patient_id, Prescription.status == "active")
        .options(joinedload(Prescription.formula)).order_by(Prescription.written_date.desc()).limit(1)
    ).scalar_one_or_none()
    form = current_form.formula.form.value if current_form else None
    entry = SideEffectEntry(
        patient_id=patient_id, effect=data["effect"].value, noted_on=data.get("noted_on") or today(),
        note=data.get("note"), recorded_by_id=actor.user_id, created_at=now(),
        suggested_action=suggested_action(data["effect"], form=form, persistent=data.get("persistent", False)),
    )
    db.session.add(entry)
    db.session.flush()
    audit.record(actor, "side_effect.create", patient_id=patient_id, entity=("side_effect", entry.id),
                 details={"effect": entry.effect})
    return entry
