"""Prescription use cases: intake (with screening), overrides, hold/resume, discontinue, replace."""
from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import joinedload

from pharmacy.compounding.models import Formula, Order
from pharmacy.compounding.rules import IN_PROGRESS, OrderState
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
from pharmacy.supply import reads
from pharmacy.supply import rules as supply_rules
from pharmacy.supply.rules import Supply


def prescriber_form(actor: Actor) -> None:
    """Showing the new-prescriber form is for those who may add prescribers."""
    audit.require(actor, Permission.EDIT_PATIENT, what="add prescribers")


def create_prescriber(actor: Actor, data: dict[str, Any]) -> Prescriber:
    audit.require(actor, Permission.EDIT_PATIENT, what="add prescribers")
    rules.validate_npi(data["npi"])
    if db.session.execute(sa.select(Prescriber.id).where(Prescriber.npi == data["npi"])).first():
        raise ValidationFailed("This prescriber is already on file.", fields={"npi": "A prescriber with this NPI exists."})
    prescriber = Prescriber(**data, created_at=now())
    db.session.add(prescriber)
    try:
        db.session.flush()
    except IntegrityError:  # the same NPI entered at the same moment elsewhere
        raise Conflict("This prescriber was added at the same moment by someone else.") from None
    audit.record(actor, "prescriber.create", entity=("prescriber", prescriber.id))
    return prescriber


def list_prescribers(actor: Actor | None = None) -> list[Prescriber]:
    """Prescribers by name; with an actor, only for staff who may see clinical records."""
    if actor is not None:
        audit.require(actor, Permission.VIEW_CLINICAL, what="list prescribers")
    return list(db.session.execute(
        sa.select(Prescriber).order_by(Prescriber.last_name, Prescriber.first_name, Prescriber.id)
    ).scalars())


def list_formulas(active_only: bool = True) -> list[Formula]:
    stmt = sa.select(Formula).order_by(Formula.form, Formula.strength_mg)
    if active_only:
        stmt = stmt.where(Formula.active.is_(True))
    return list(db.session.execute(stmt).scalars())


@dataclass
class IntakeForm:
    """What the intake (or replacement) form offers: the patient, the active formulas, the prescribers."""

    patient: Patient | None
    formulas: list[Formula]
    prescribers: list[Prescriber]
    replaces: Prescription | None = None
    current: list[Prescription] = field(default_factory=list)  # the patient's active LDN prescriptions already there


def intake_form(actor: Actor, patient_id: int | None) -> IntakeForm:
    """The choices for a new prescription (an unknown patient gives patient=None: the form says so)."""
    audit.require(actor, Permission.ENTER_PRESCRIPTION, what="enter prescriptions")
    patient = _get(Patient, patient_id)
    if patient is not None:  # the form shows who it is for: a read of the patient's record
        audit.record(actor, "patient.view", patient_id=patient.id, entity=("patient", patient.id))
    current = list(db.session.execute(
        sa.select(Prescription).where(Prescription.patient_id == patient.id,
                                      Prescription.status.in_([RxStatus.ACTIVE, RxStatus.ON_HOLD]))
        .order_by(Prescription.written_date.desc(), Prescription.id.desc())
    ).scalars()) if patient is not None else []
    return IntakeForm(patient=patient, formulas=list_formulas(), prescribers=list_prescribers(), current=current)


def replace_form(actor: Actor, rx_id: int) -> IntakeForm:
    """The choices for replacing a prescription (a dose change or a renewal), with the old one to pre-fill from."""
    rx = get_prescription(actor, rx_id)
    audit.require(actor, Permission.MANAGE_PRESCRIPTION, patient_id=rx.patient_id, what="replace prescriptions")
    if rx.status in (RxStatus.DISCONTINUED, RxStatus.REPLACED):
        raise Conflict("This prescription is already closed; start from the current one.")
    audit.record(actor, "prescription.view", patient_id=rx.patient_id, entity=("prescription", rx.id))
    return IntakeForm(patient=rx.patient, formulas=list_formulas(), prescribers=list_prescribers(), replaces=rx)


def _steps(data: dict[str, Any]) -> list[rules.TitrationStep]:
    return [rules.TitrationStep(dose_mg=Decimal(str(s["dose_mg"])), days=int(s["days"])) for s in data.get("titration") or []]


MAX_ID = 2**31 - 1


def _get(model: type, key: Any) -> Any:
    """A row by id, or None for anything that cannot be an id (SQLite refuses integers past 64 bits)."""
    if isinstance(key, bool) or not isinstance(key, int) or not 1 <= key <= MAX_ID:
        return None
    return db.session.get(model, key)


def _load_refs(data: dict[str, Any]) -> tuple[Patient, Prescriber, Formula]:
    errors: dict[str, str] = {}
    patient = _get(Patient, data.get("patient_id"))
    prescriber = _get(Prescriber, data.get("prescriber_id"))
    formula = _get(Formula, data.get("formula_id"))
    if patient is None:
        errors["patient_id"] = "Unknown patient."
    if prescriber is None:
        errors["prescriber_id"] = "Unknown prescriber."
    if formula is None or not formula.active:
        errors["formula_id"] = "Unknown or inactive formula."
    elif data.get("form") is not None and rules.Form(data["form"]) != formula.form:
        # The API may name the form as well as the formula: they must agree.
        errors["form"] = (f"{formula.name} is a {formula.form.value.replace('_', ' ')}, "
                          f"not a {rules.Form(data['form']).value.replace('_', ' ')}.")
    if errors:
        raise ValidationFailed("The prescription was not saved.", fields=errors)
    assert patient and prescriber and formula
    return patient, prescriber, formula


def plan_from_input(data: dict[str, Any], formula: Formula, *, allow_expired: bool = False) -> dict[str, Any]:
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
    if expiry < today() and not allow_expired:
        # docs/domain.md "Refill timing": a refill is possible only while the prescription is unexpired; a new one
        # that has already expired cannot be filled at all, so it is refused at the door (typed, API, e-Rx).
        where = "expiry_date" if data.get("expiry_date") else "written_date"
        msg = (f"This prescription expired on {rules.format_date(expiry)} and cannot be filled: "
               "ask the prescriber for a new one.")
        raise ValidationFailed("The prescription has expired.", fields={where: msg})
    refills = data.get("refills_authorized")
    if refills is not None and (isinstance(refills, bool) or not isinstance(refills, int) or not 0 <= refills <= 99):
        # docs/domain.md "Refill timing": a missing count means zero; otherwise a whole count 0–99 (the table's range).
        raise ValidationFailed("Check the refills.", fields={"refills_authorized": "Enter a whole number from 0 to 99."})
    directions = data.get("directions") or rules.directions(form, strength, dose, data["dosing_time"], steps)
    return {
        "quantity": quantity, "days_supply": days, "expiry_date": expiry, "directions": directions,
        "titration": [{"dose_mg": str(s.dose_mg), "days": s.days} for s in steps] or None,
    }


def create_prescription(actor: Actor, data: dict[str, Any], *, replaces: Prescription | None = None,
                        allow_expired: bool = False) -> Prescription:
    """Intake: validate against the dose rules, store, and screen; alerts are returned on the prescription.

    `allow_expired` is for loading history (the demo seeds): an expired prescription is otherwise refused.
    One that expires before its first fill's supply would end is accepted with a warning alert (screening).
    """
    pid = data.get("patient_id")
    audit.require(actor, Permission.ENTER_PRESCRIPTION, what="enter prescriptions",
                  patient_id=pid if isinstance(pid, int) and 1 <= pid <= MAX_ID else None)
    patient, _prescriber, formula = _load_refs(data)
    plan = plan_from_input(data, formula, allow_expired=allow_expired)
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
    if isinstance(rx_id, bool) or not isinstance(rx_id, int) or not 1 <= rx_id <= MAX_ID:
        raise NotFound("No such prescription.")
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
    supply: Supply
    schedule: list[Any] = field(default_factory=list)
    replaced_by: list[Prescription] = field(default_factory=list)
    replaces: Prescription | None = None
    open_order: Order | None = None
    # Whether staff may start the next fill now, and if not, why (shown next to the button).
    can_start_fill: bool = False
    fill_note: str | None = None
    product: str = ""
    blocking: list[Any] = field(default_factory=list)  # the stops that block every fill (hard stops always)
    # Before its first dispensing, the patient's other current prescriptions this one may be marked as replacing
    # (a renewal entered as a new prescription: adopt_as_replacement).
    may_replace: list[Prescription] = field(default_factory=list)

    @property
    def hard_stop(self) -> bool:
        return any(a.severity == Severity.HARD_STOP for a in self.blocking)

    @property
    def refills_left(self) -> int:
        return self.supply.refills_left

    @property
    def refills_used(self) -> int:
        return (self.rx.refills_authorized or 0) - self.supply.refills_left

    @property
    def blocked(self) -> bool:
        """A hard stop (or a stop not yet overridden) is on file: no fill may be made until it is resolved."""
        return bool(reads.blocking(self.alerts))


def prescription_view(actor: Actor, rx_id: int) -> PrescriptionView:
    """The prescription page: alerts, fills, refills used and left, the titration chart, the history links."""
    rx = get_prescription(actor, rx_id)
    audit.record(actor, "prescription.view", patient_id=rx.patient_id, entity=("prescription", rx.id))
    return view_of(rx)


def view_of(rx: Prescription) -> PrescriptionView:
    """The view of a prescription already loaded for an allowed actor (e.g. just created): no audit here."""
    orders = list(db.session.execute(
        sa.select(Order).where(Order.prescription_id == rx.id).order_by(Order.fill_number.desc(), Order.id.desc())
    ).scalars())
    current = reads.supply_of(rx)
    schedule = []
    steps = screening.steps_of(rx)
    if steps:
        first = min((o for o in orders if o.state == OrderState.DISPENSED), key=lambda o: o.fill_number, default=None)
        start = (first.supply_starts_on or first.dispensed_on if first else None) or rx.written_date
        schedule = rules.titration_schedule(rx.formula.form, rx.formula.strength_mg, steps, start, rx.dose_mg)
    replaced_by = list(db.session.execute(sa.select(Prescription).where(Prescription.replaces_id == rx.id)).scalars())
    replaces = db.session.get(Prescription, rx.replaces_id) if rx.replaces_id else None
    open_order = next((o for o in orders if o.state in IN_PROGRESS), None)
    alerts = screening.alerts_for(rx.id)
    refusal = supply_rules.fill_refusal(current, status=rx.status.value, day=today(),
                                        order_in_progress=open_order is not None, rx_number=rx.rx_number)
    blocking = reads.blocking(alerts)
    if blocking and rx.status == RxStatus.ACTIVE:
        refusal = "Resolve the safety alerts first: no fill can be started while a stop is unresolved."
    may_replace = list(db.session.execute(
        sa.select(Prescription).where(Prescription.patient_id == rx.patient_id, Prescription.id < rx.id,
                                      Prescription.status.in_([RxStatus.ACTIVE, RxStatus.ON_HOLD]))
        .options(joinedload(Prescription.formula)).order_by(Prescription.id)
    ).scalars()) if (rx.replaces_id is None and rx.latest_fill_number is None
                     and rx.status in (RxStatus.ACTIVE, RxStatus.ON_HOLD)) else []
    return PrescriptionView(
        rx=rx, alerts=alerts, orders=orders, supply=current, schedule=schedule, replaced_by=replaced_by,
        replaces=replaces, open_order=open_order, can_start_fill=refusal is None, fill_note=refusal,
        product=rules.product_name(rx.formula.form, rx.formula.strength_mg), blocking=blocking,
        may_replace=may_replace,
    )


def resolve_alert(actor: Actor, alert_id: int, reason: str, *, prescription_id: int | None = None) -> ScreeningAlert:
    """A pharmacist's override (stop) or acknowledgement (warning needing it), with who, when and why.

    `prescription_id`, when given (the API path names it), must be the alert's prescription.
    """
    alert = _get(ScreeningAlert, alert_id)
    rx = db.session.get(Prescription, alert.prescription_id) if alert is not None else None
    audit.require(actor, Permission.OVERRIDE_ALERT, patient_id=rx.patient_id if rx else None,
                  what="override safety alerts")
    if alert is None or rx is None or not alert.current or prescription_id not in (None, alert.prescription_id):
        raise NotFound("No such current alert on this prescription.")
    if not rules.can_override(alert.severity):
        if alert.severity == Severity.HARD_STOP:
            raise Conflict(f"{alert.message} This is a hard stop: it cannot be overridden. Resolve the cause "
                           "(e.g. the opioid is stopped and the medication list updated) or contact the prescriber.")
        raise Conflict("This warning needs no override.")
    reason = (reason or "").strip()
    if len(reason) < 3:
        raise ValidationFailed("Give the reason for the override.", fields={"reason": "Say why (at least a few words)."})
    if len(reason) > 400:
        raise ValidationFailed("The reason is too long.", fields={"reason": "At most 400 characters."})
    if alert.resolved:
        raise Conflict("This alert has already been resolved.")
    t = now()
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
    resolved = list(targets)
    for target in resolved:
        target.resolved_by_id = actor.user_id
        target.resolved_at = t
        target.resolution_reason = reason
    db.session.flush()
    for target in resolved:
        db.session.expire(target, ["resolved_by"])  # reload who resolved it on the next read
    audit.record(actor, "alert.override", patient_id=rx.patient_id, entity=("screening_alert", alert.id),
                 details={"code": alert.code, "severity": alert.severity.value})
    return alert


def _set_status(actor: Actor, rx: Prescription, status: RxStatus, reason: str | None, action: str) -> Prescription:
    rx.status = status
    rx.status_reason = reason
    rx.updated_at = now()
    db.session.flush()
    # No reason text in the audit trail (it may name medicines or conditions); it stays on the prescription.
    audit.record(actor, f"prescription.{action}", patient_id=rx.patient_id, entity=("prescription", rx.id))
    return rx


def _managed(actor: Actor, rx_id: int, action: str) -> Prescription:
    """The prescription, locked, after checking the actor may manage prescriptions (before anything else)."""
    rx = get_prescription(actor, rx_id, lock=True)
    audit.require(actor, Permission.MANAGE_PRESCRIPTION, patient_id=rx.patient_id, what=f"{action} prescriptions")
    return rx


def _need_reason(reason: str | None) -> str:
    reason = (reason or "").strip()
    if len(reason) < 3:
        raise ValidationFailed("A reason is required.", fields={"reason": "Say why (at least a few words)."})
    if len(reason) > 240:
        raise ValidationFailed("The reason is too long.", fields={"reason": "At most 240 characters."})
    return reason


def hold_prescription(actor: Actor, rx_id: int, reason: str) -> Prescription:
    """Pause a prescription (workflows/prescription_changes.hold stops its reminders)."""
    rx = _managed(actor, rx_id, "hold")
    reason = _need_reason(reason)
    if rx.status != RxStatus.ACTIVE:
        raise Conflict(f"Only an active prescription can be put on hold (this one is {rx.status.value.replace('_', ' ')}).")
    return _set_status(actor, rx, RxStatus.ON_HOLD, reason, "hold")


def resume_prescription(actor: Actor, rx_id: int) -> Prescription:
    rx = _managed(actor, rx_id, "resume")
    if rx.status != RxStatus.ON_HOLD:
        raise Conflict("Only a prescription on hold can be resumed.")
    return _set_status(actor, rx, RxStatus.ACTIVE, None, "resume")


def discontinue_prescription(actor: Actor, rx_id: int, reason: str) -> Prescription:
    """Stop a prescription for good (workflows/prescription_changes.discontinue closes what hangs off it)."""
    rx = _managed(actor, rx_id, "discontinue")
    reason = _need_reason(reason)
    if rx.status in (RxStatus.DISCONTINUED, RxStatus.REPLACED):
        raise Conflict("This prescription is already closed.")
    return _set_status(actor, rx, RxStatus.DISCONTINUED, reason, "discontinue")


def adopt_as_replacement(actor: Actor, new_id: int, old_id: int) -> tuple[Prescription, Prescription]:
    """A prescription already entered (an e-prescribed renewal sent as a new prescription, say) is marked as the
    replacement of an older current one of the same patient, as if it had been entered with "Replace": the old one
    is closed as replaced. Returns (old, new); workflows/prescription_changes.adopt moves what hangs off the old one
    and carries its supply. Only before the new one's first dispensing: after it, its supply has started on its own."""
    audit.require(actor, Permission.MANAGE_PRESCRIPTION, what="replace prescriptions")  # the role before the rows
    old = _managed(actor, old_id, "replace")
    new = get_prescription(actor, new_id, lock=True)
    if old.id >= new.id or new.patient_id != old.patient_id:  # a replacement is entered after what it replaces
        raise ValidationFailed("Choose an older current prescription of the same patient.",
                               fields={"old_prescription_id": "Not a prescription this one can replace."})
    if old.status in (RxStatus.DISCONTINUED, RxStatus.REPLACED):
        raise Conflict(f"{old.rx_number} is already closed; nothing to replace.")
    if new.status not in (RxStatus.ACTIVE, RxStatus.ON_HOLD):
        raise Conflict(f"{new.rx_number} is {new.status.value.replace('_', ' ')}: it cannot replace another.")
    if new.replaces_id is not None:
        raise Conflict(f"{new.rx_number} already replaces another prescription.")
    if new.latest_fill_number is not None:
        raise Conflict(f"{new.rx_number} has been dispensed already, so its supply started on its own: discontinue "
                       f"{old.rx_number} instead.")
    new.replaces_id = old.id
    new.updated_at = now()
    old.status = RxStatus.REPLACED
    old.status_reason = f"Replaced by {new.rx_number}"
    old.updated_at = now()
    db.session.flush()
    audit.record(actor, "prescription.replace", patient_id=old.patient_id, entity=("prescription", old.id),
                 details={"new": new.id, "entered_apart": True})
    return old, new


def replace_prescription(actor: Actor, rx_id: int, data: dict[str, Any]) -> tuple[Prescription, Prescription]:
    """A dose change or a renewal: a new prescription linked to the old, which is closed as replaced.
    Returns (old, new); workflows/prescription_changes.replace moves what hangs off the old one."""
    old = _managed(actor, rx_id, "replace")
    if old.status in (RxStatus.DISCONTINUED, RxStatus.REPLACED):
        raise Conflict("This prescription is already closed; start from the current one.")
    if data.get("patient_id") not in (None, old.patient_id):
        raise ValidationFailed("A replacement is for the same patient.",
                               fields={"patient_id": "Must be the same patient as the prescription replaced."})
    data = {**data, "patient_id": old.patient_id}
    new = create_prescription(actor, data, replaces=old)
    old.status = RxStatus.REPLACED
    old.status_reason = f"Replaced by {new.rx_number}"
    old.updated_at = now()
    db.session.flush()
    audit.record(actor, "prescription.replace", patient_id=old.patient_id, entity=("prescription", old.id),
                 details={"new": new.id})
    return old, new
