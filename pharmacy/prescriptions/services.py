"""Prescription use cases: intake (with screening), overrides, hold/resume, discontinue, replace."""
from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import joinedload

from pharmacy.compounding.models import Formula, Order
from pharmacy.core import audit
from pharmacy.core.actor import Actor
from pharmacy.core.context import now, settings, today
from pharmacy.core.errors import Conflict, NotFound, ValidationFailed
from pharmacy.core.roles import Permission
from pharmacy.extensions import db
from pharmacy.patients.models import Patient
from pharmacy.prescriptions import rules, screening
from pharmacy.prescriptions.models import Prescriber, Prescription, ScreeningAlert
from pharmacy.prescriptions.rules import RxStatus, Severity


def create_prescriber(actor: Actor, data: dict[str, Any]) -> Prescriber:
    audit.require(actor, Permission.EDIT_PATIENT, what="add prescribers")
    rules.validate_npi(data["npi"])
    if db.session.execute(sa.select(Prescriber.id).where(Prescriber.npi == data["npi"])).first():
        raise ValidationFailed("This prescriber is already on file.", fields={"npi": "A prescriber with this NPI exists."})
    prescriber = Prescriber(**data, created_at=now())
    db.session.add(prescriber)
    db.session.flush()
    audit.record(actor, "prescriber.create", entity=("prescriber", prescriber.id))
    return prescriber


def list_prescribers() -> list[Prescriber]:
    return list(db.session.execute(sa.select(Prescriber).order_by(Prescriber.last_name, Prescriber.first_name)).scalars())


def list_formulas(active_only: bool = True) -> list[Formula]:
    stmt = sa.select(Formula).order_by(Formula.form, Formula.strength_mg)
    if active_only:
        stmt = stmt.where(Formula.active.is_(True))
    return list(db.session.execute(stmt).scalars())


def _steps(data: dict[str, Any]) -> list[rules.TitrationStep]:
    return [rules.TitrationStep(dose_mg=Decimal(str(s["dose_mg"])), days=int(s["days"])) for s in data.get("titration") or []]


def _load_refs(data: dict[str, Any]) -> tuple[Patient, Prescriber, Formula]:
    errors: dict[str, str] = {}
    patient = db.session.get(Patient, data["patient_id"])
    prescriber = db.session.get(Prescriber, data["prescriber_id"])
    formula = db.session.get(Formula, data["formula_id"])
    if patient is None:
        errors["patient_id"] = "Unknown patient."
    if prescriber is None:
        errors["prescriber_id"] = "Unknown prescriber."
    if formula is None or not formula.active:
        errors["formula_id"] = "Unknown or inactive formula."
    if errors:
        raise ValidationFailed("The prescription was not saved.", fields=errors)
    assert patient and prescriber and formula
    return patient, prescriber, formula


def plan_from_input(data: dict[str, Any], formula: Formula) -> dict[str, Any]:
    """Apply the dose rules to intake data: whole units per dose, quantity ⇄ days supply, directions, dates."""
    steps = _steps(data)
    form, strength, dose = formula.form, formula.strength_mg, data["dose_mg"]
    try:
        rules.units_per_dose(form, strength, dose)
        if steps:
            rules.titration_schedule(form, strength, steps, data["written_date"], dose)
        quantity, days = rules.resolve_quantity_and_days(
            form, strength, dose, quantity=data.get("quantity"), days_supply=data.get("days_supply"), steps=steps
        )
    except ValidationFailed as exc:
        raise ValidationFailed(exc.message, fields=exc.fields or {"dose_mg": exc.message}) from None
    written = data["written_date"]
    if written > today():
        raise ValidationFailed("Check the written date.", fields={"written_date": "The written date cannot be in the future."})
    expiry = data.get("expiry_date") or written + timedelta(days=settings().rx_valid_days)
    if expiry <= written:
        raise ValidationFailed("Check the dates.", fields={"expiry_date": "The expiry date must be after the written date."})
    if expiry > written + timedelta(days=730):
        raise ValidationFailed(
            "Check the dates.", fields={"expiry_date": "A prescription cannot be valid for more than two years."}
        )
    directions = data.get("directions") or rules.directions(form, strength, dose, data["dosing_time"], steps)
    return {
        "quantity": quantity, "days_supply": days, "expiry_date": expiry, "directions": directions,
        "titration": [{"dose_mg": str(s.dose_mg), "days": s.days} for s in steps] or None,
    }


def create_prescription(actor: Actor, data: dict[str, Any], *, replaces: Prescription | None = None) -> Prescription:
    """Intake: validate against the dose rules, store, and screen; alerts are returned on the prescription."""
    audit.require(actor, Permission.ENTER_PRESCRIPTION, patient_id=data.get("patient_id"), what="enter prescriptions")
    patient, _prescriber, formula = _load_refs(data)
    plan = plan_from_input(data, formula)
    t = now()
    rx = Prescription(
        rx_number=f"TMP-{uuid.uuid4().hex[:12]}",
        patient_id=patient.id, prescriber_id=data["prescriber_id"], formula_id=formula.id,
        dose_mg=data["dose_mg"], titration=plan["titration"], dosing_time=data["dosing_time"],
        quantity=plan["quantity"], days_supply=plan["days_supply"],
        refills_authorized=data.get("refills_authorized") or 0,
        written_date=data["written_date"], expiry_date=plan["expiry_date"], directions=plan["directions"],
        indication=data.get("indication") or "Multiple sclerosis", indication_code=data.get("indication_code") or "G35",
        status=RxStatus.ACTIVE, replaces_id=replaces.id if replaces else None,
        created_by_id=actor.user_id, created_at=t, updated_at=t,
    )
    db.session.add(rx)
    db.session.flush()
    rx.rx_number = f"RX{rx.id:06d}"
    db.session.flush()
    audit.record(actor, "prescription.create", patient_id=patient.id, entity=("prescription", rx.id),
                 details={"replaces": replaces.id if replaces else None})
    screening.screen_prescription(actor, rx, patient)
    return rx


def get_prescription(actor: Actor, rx_id: int, *, lock: bool = False) -> Prescription:
    audit.require(actor, Permission.VIEW_CLINICAL, what="open prescriptions")
    stmt = sa.select(Prescription).where(Prescription.id == rx_id).options(
        joinedload(Prescription.patient), joinedload(Prescription.formula), joinedload(Prescription.prescriber)
    )
    if lock:
        stmt = stmt.with_for_update(of=Prescription)
    rx = db.session.execute(stmt).unique().scalar_one_or_none()
    if rx is None:
        raise NotFound("No such prescription.")
    return rx


@dataclass
class PrescriptionView:
    rx: Prescription
    alerts: list[ScreeningAlert]
    orders: list[Order]
    refills_used: int
    refills_left: int
    schedule: list[Any] = field(default_factory=list)
    replaced_by: list[Prescription] = field(default_factory=list)


def prescription_view(actor: Actor, rx_id: int) -> PrescriptionView:
    from pharmacy.compounding.rules import OrderState

    rx = get_prescription(actor, rx_id)
    orders = list(db.session.execute(
        sa.select(Order).where(Order.prescription_id == rx.id).order_by(Order.fill_number.desc())
    ).scalars())
    used = refills_used(rx.id)
    schedule = []
    steps = screening.steps_of(rx)
    if steps:
        first = next((o for o in sorted(orders, key=lambda o: o.fill_number) if o.state != OrderState.CANCELLED), None)
        start = (first.dispensed_on if first and first.dispensed_on else None) or rx.written_date
        schedule = rules.titration_schedule(rx.formula.form, rx.formula.strength_mg, steps, start, rx.dose_mg)
    replaced_by = list(db.session.execute(sa.select(Prescription).where(Prescription.replaces_id == rx.id)).scalars())
    audit.record(actor, "prescription.view", patient_id=rx.patient_id, entity=("prescription", rx.id))
    return PrescriptionView(
        rx=rx, alerts=screening.alerts_for(rx.id), orders=orders, refills_used=used,
        refills_left=max((rx.refills_authorized or 0) - used, 0), schedule=schedule, replaced_by=replaced_by,
    )


def refills_used(rx_id: int) -> int:
    """Fills after the first that were dispensed or are being made (fill 0 is the original, not a refill)."""
    from pharmacy.compounding.rules import OrderState

    count = db.session.execute(
        sa.select(sa.func.count()).select_from(Order).where(
            Order.prescription_id == rx_id, Order.fill_number > 0, Order.state != OrderState.CANCELLED
        )
    ).scalar_one()
    return int(count)


def resolve_alert(actor: Actor, alert_id: int, reason: str) -> ScreeningAlert:
    """A pharmacist's override (stop) or acknowledgement (warning needing it), with who, when and why."""
    alert = db.session.get(ScreeningAlert, alert_id)
    if alert is None or not alert.current:
        raise NotFound("No such current alert.")
    rx = db.session.get(Prescription, alert.prescription_id)
    assert rx is not None
    audit.require(actor, Permission.OVERRIDE_ALERT, patient_id=rx.patient_id, what="override safety alerts")
    if not rules.can_override(alert.severity):
        if alert.severity == Severity.HARD_STOP:
            raise Conflict(f"{alert.message} This is a hard stop: it cannot be overridden. Resolve the cause "
                           "(e.g. the opioid is stopped and the medication list updated) or contact the prescriber.")
        raise Conflict("This warning needs no override.")
    reason = (reason or "").strip()
    if len(reason) < 3:
        raise ValidationFailed("Give the reason for the override.", fields={"reason": "Say why (at least a few words)."})
    if alert.resolved:
        raise Conflict("This alert has already been resolved.")
    t = now()
    from pharmacy.compounding.rules import OrderState

    open_order_ids = sa.select(Order.id).where(
        Order.prescription_id == rx.id, Order.state.not_in([OrderState.DISPENSED, OrderState.CANCELLED])
    )
    targets = db.session.execute(
        sa.select(ScreeningAlert).where(
            ScreeningAlert.prescription_id == rx.id, ScreeningAlert.code == alert.code,
            ScreeningAlert.current.is_(True), ScreeningAlert.resolved_at.is_(None),
            sa.or_(ScreeningAlert.order_id.is_(None), ScreeningAlert.order_id.in_(open_order_ids)),
        )
    ).scalars()
    for target in targets:
        target.resolved_by_id = actor.user_id
        target.resolved_at = t
        target.resolution_reason = reason
    db.session.flush()
    audit.record(actor, "alert.override", patient_id=rx.patient_id, entity=("screening_alert", alert.id),
                 details={"code": alert.code, "severity": alert.severity.value})
    return alert


def _set_status(actor: Actor, rx_id: int, status: RxStatus, reason: str | None, action: str) -> Prescription:
    rx = get_prescription(actor, rx_id, lock=True)
    audit.require(actor, Permission.MANAGE_PRESCRIPTION, patient_id=rx.patient_id, what=f"{action} prescriptions")
    rx.status = status
    rx.status_reason = reason
    rx.updated_at = now()
    db.session.flush()
    audit.record(actor, f"prescription.{action}", patient_id=rx.patient_id, entity=("prescription", rx.id))
    return rx


def _need_reason(reason: str | None) -> str:
    reason = (reason or "").strip()
    if len(reason) < 3:
        raise ValidationFailed("A reason is required.", fields={"reason": "Say why (at least a few words)."})
    return reason


def hold_prescription(actor: Actor, rx_id: int, reason: str) -> Prescription:
    reason = _need_reason(reason)
    rx = get_prescription(actor, rx_id)
    if rx.status != RxStatus.ACTIVE:
        raise Conflict(f"Only an active prescription can be put on hold (this one is {rx.status.value.replace('_', ' ')}).")
    rx = _set_status(actor, rx_id, RxStatus.ON_HOLD, reason, "hold")
    _after_stop(actor, rx, cancel_orders=False)
    return rx


def resume_prescription(actor: Actor, rx_id: int) -> Prescription:
    rx = get_prescription(actor, rx_id)
    if rx.status != RxStatus.ON_HOLD:
        raise Conflict("Only a prescription on hold can be resumed.")
    rx = _set_status(actor, rx_id, RxStatus.ACTIVE, None, "resume")
    from pharmacy.reminders import planning

    planning.replan_prescription(rx.id)
    return rx


def discontinue_prescription(actor: Actor, rx_id: int, reason: str) -> Prescription:
    reason = _need_reason(reason)
    rx = get_prescription(actor, rx_id)
    if rx.status in (RxStatus.DISCONTINUED, RxStatus.REPLACED):
        raise Conflict("This prescription is already closed.")
    rx = _set_status(actor, rx_id, RxStatus.DISCONTINUED, reason, "discontinue")
    _after_stop(actor, rx, cancel_orders=True, reason=f"Prescription discontinued: {reason}")
    return rx


def _after_stop(actor: Actor, rx: Prescription, *, cancel_orders: bool, reason: str = "") -> None:
    """A stopped prescription sends no more reminders; discontinuing also cancels work not yet dispensed."""
    from pharmacy.reminders import planning

    planning.cancel_for_prescription(rx.id, reason=f"prescription {rx.status.value}")
    if cancel_orders:
        from pharmacy.compounding import services as orders
        from pharmacy.compounding.rules import OrderState

        open_ids = db.session.execute(
            sa.select(Order.id).where(
                Order.prescription_id == rx.id, Order.state.not_in([OrderState.DISPENSED, OrderState.CANCELLED])
            )
        ).scalars().all()
        for order_id in open_ids:
            orders.cancel_order(actor, order_id, reason, _system_cascade=True)
        from pharmacy.refills import services as refills

        refills.close_open_requests(actor, rx.id, reason)


def replace_prescription(actor: Actor, rx_id: int, data: dict[str, Any]) -> Prescription:
    """A dose change or a renewal: a new prescription linked to the old, which is closed as replaced."""
    old = get_prescription(actor, rx_id)
    audit.require(actor, Permission.MANAGE_PRESCRIPTION, patient_id=old.patient_id, what="replace prescriptions")
    if old.status in (RxStatus.DISCONTINUED, RxStatus.REPLACED):
        raise Conflict("This prescription is already closed; start from the current one.")
    if data.get("patient_id") not in (None, old.patient_id):
        raise ValidationFailed("A replacement is for the same patient.", fields={"patient_id": "Must match."})
    data = {**data, "patient_id": old.patient_id}
    new = create_prescription(actor, data, replaces=old)
    old.status = RxStatus.REPLACED
    old.status_reason = f"Replaced by {new.rx_number}"
    old.updated_at = now()
    db.session.flush()
    audit.record(actor, "prescription.replace", patient_id=old.patient_id, entity=("prescription", old.id),
                 details={"new": new.id})
    from pharmacy.refills import services as refills
    from pharmacy.reminders import planning

    planning.cancel_for_prescription(old.id, reason="prescription replaced")
    refills.link_renewal(actor, old.id, new.id)
    return new
