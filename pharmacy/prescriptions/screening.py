"""Running the safety screen (prescriptions/screening_rules.py) against stored alerts, at intake and at every fill.

Alerts live on the prescription; each order gets its own copies so the order page shows what
was true when it was made. An override is a pharmacist's decision about the prescription, so it
resolves the prescription's alert and the matching alerts of its open orders together.
"""
from __future__ import annotations

from collections.abc import Iterable

import sqlalchemy as sa

from pharmacy.compounding.models import Formula, Order
from pharmacy.compounding.rules import OrderState
from pharmacy.core import audit
from pharmacy.core.actor import Actor
from pharmacy.core.context import now, today
from pharmacy.extensions import db
from pharmacy.patients.models import Patient
from pharmacy.prescriptions import rules, screening_rules
from pharmacy.prescriptions.models import Prescription, ScreeningAlert
from pharmacy.prescriptions.rules import RxStatus
from pharmacy.supply import reads

CLOSED_ORDER_STATES = (OrderState.DISPENSED, OrderState.CANCELLED)


def steps_of(rx: Prescription) -> list[rules.TitrationStep]:
    return list(rules.parse_titration(rx.titration))


def findings(patient: Patient, rx: Prescription) -> list[rules.Alert]:
    steps = steps_of(rx)
    max_dose = max([rx.dose_mg, *(s.dose_mg for s in steps)])
    found = screening_rules.screen(
        medications=patient.medications or [], conditions=patient.conditions or [],
        max_dose_mg=max_dose, maintenance_dose_mg=rx.dose_mg, titrating=bool(steps),
        allergies=patient.allergies or [],
    )
    extra = [rules.expiry_alert(rx.expiry_date, rx.days_supply, today()),
             rules.age_alert(patient.date_of_birth, today()),
             rules.duplicate_alert(rx.dose_mg, older_current(rx))]
    return [*found, *(a for a in extra if a is not None)]


def older_current(rx: Prescription) -> list[rules.OtherPrescription]:
    """The patient's other current (active or on hold) LDN prescriptions entered before this one, leaving out the
    one it replaces (closed in the same transaction, after the new one is screened)."""
    rows = db.session.execute(
        sa.select(Prescription.rx_number, Formula.form, Formula.strength_mg, Prescription.dose_mg,
                  Prescription.expiry_date)
        .join(Formula, Formula.id == Prescription.formula_id)
        .where(Prescription.patient_id == rx.patient_id, Prescription.id < rx.id,
               Prescription.status.in_([RxStatus.ACTIVE, RxStatus.ON_HOLD]),
               Prescription.id != (rx.replaces_id or 0))
        .order_by(Prescription.id)
    ).all()
    # The product in words of bounded length (not the formula's free-text name): the message is kept in 400 characters.
    day = today()
    return [rules.OtherPrescription(number, rules.product_name(form, strength), dose,
                                    expiry if expiry is not None and expiry < day else None)
            for number, form, strength, dose, expiry in rows]


def _sync(rx: Prescription, found: Iterable[rules.Alert], order_id: int | None,
          carry_from: dict[str, ScreeningAlert] | None = None) -> list[ScreeningAlert]:
    existing = {
        a.code: a
        for a in db.session.execute(
            sa.select(ScreeningAlert).where(
                ScreeningAlert.prescription_id == rx.id,
                ScreeningAlert.order_id.is_(None) if order_id is None else ScreeningAlert.order_id == order_id,
                ScreeningAlert.current.is_(True),
            )
        ).scalars()
    }
    t = now()
    current: list[ScreeningAlert] = []
    found_codes = set()
    for alert in found:
        found_codes.add(alert.code)
        row = existing.get(alert.code)
        # An override covers the finding it was given for: the same severity and the same entries (the message names
        # them, sorted, so a reordered list reads the same). A new entry behind it — anaphylaxis after an override for
        # nausea, cirrhosis after one for a cured hepatitis — needs a new decision.
        covered = row is not None and row.severity == alert.severity and (
            row.resolved_at is None or row.message == alert.message)
        if row is not None and covered:
            row.message = alert.message
            current.append(row)
            continue
        if row is not None:  # severity or the finding changed: the old decision no longer covers it
            row.current = False
        row = ScreeningAlert(
            prescription_id=rx.id, order_id=order_id, code=alert.code, severity=alert.severity,
            message=alert.message, created_at=t, current=True,
        )
        source = (carry_from or {}).get(alert.code)
        if (source is not None and source.resolved_at is not None and source.severity == alert.severity
                and source.message == alert.message):
            row.resolved_by_id = source.resolved_by_id
            row.resolved_at = source.resolved_at
            row.resolution_reason = source.resolution_reason
        db.session.add(row)
        current.append(row)
    for code, row in existing.items():
        if code not in found_codes:
            row.current = False
    db.session.flush()
    return current


def screen_prescription(actor: Actor, rx: Prescription, patient: Patient) -> list[ScreeningAlert]:
    """Screen at intake (or after the patient's lists change); returns the prescription's current alerts."""
    found = findings(patient, rx)
    alerts = _sync(rx, found, None)
    audit.record(actor, "prescription.screen", patient_id=rx.patient_id, entity=("prescription", rx.id),
                 details={"codes": sorted(a.code for a in found)})
    return alerts


def screen_order(actor: Actor, rx: Prescription, patient: Patient, order_id: int) -> list[ScreeningAlert]:
    """Screen again for a fill: the order gets its own alerts, carrying the prescription's overrides."""
    rx_alerts = {a.code: a for a in screen_prescription(actor, rx, patient)}
    return _sync(rx, findings(patient, rx), order_id, carry_from=rx_alerts)


def rescreen_patient(actor: Actor, patient: Patient) -> None:
    """After a change of conditions or medications: every active prescription and open order again."""

    rxs = list(db.session.execute(
        sa.select(Prescription).where(
            Prescription.patient_id == patient.id,
            Prescription.status.in_([RxStatus.ACTIVE, RxStatus.ON_HOLD]),
        )
    ).scalars())
    for rx in rxs:
        rx_alerts = {a.code: a for a in screen_prescription(actor, rx, patient)}
        open_orders = db.session.execute(
            sa.select(Order.id).where(Order.prescription_id == rx.id, Order.state.not_in(CLOSED_ORDER_STATES))
        ).scalars()
        for order_id in open_orders:
            _sync(rx, findings(patient, rx), order_id, carry_from=rx_alerts)


# The current alerts and which of them block are facts every feature reads: supply/reads.py.
alerts_for = reads.alerts_for
blocking = reads.blocking
