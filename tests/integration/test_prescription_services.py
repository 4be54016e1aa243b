"""Intake and safety screening through the service layer, on the real database.

docs/domain.md "Safety screening": screening runs at intake and at every fill; an opioid is a hard stop
(never overridden, blocks verification); liver disease is a stop only a pharmacist overrides, with
who/when/why recorded; spasticity above 3 mg needs an acknowledgement; interferon beta and
pregnancy/breastfeeding warn without blocking; above 5 mg is not low-dose (a hard stop).
"""
from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from pharmacy.compounding import services as orders
from pharmacy.compounding.models import Order
from pharmacy.compounding.rules import OrderState
from pharmacy.core.context import now, today
from pharmacy.core.errors import Conflict, Forbidden, NotFound, ValidationFailed
from pharmacy.core.models import AuditEvent
from pharmacy.dashboard import patient_page
from pharmacy.extensions import db
from pharmacy.patients.models import Patient
from pharmacy.prescriptions import services as prescriptions
from pharmacy.prescriptions.models import Prescriber, Prescription, ScreeningAlert
from pharmacy.prescriptions.rules import DosingTime, RxStatus, Severity
from pharmacy.workflows import orders as order_flow
from pharmacy.workflows import patient_changes
from pharmacy.workflows import prescription_changes as changes
from tests import factories
from tests.conftest import T0

ROOT = Path(__file__).resolve().parents[2]




def alerts_of(rx_id: int, order_id: int | None = None) -> dict[str, ScreeningAlert]:
    return {a.code: a for a in prescriptions.screening.alerts_for(rx_id, order_id)}


def rx_for(w: dict[str, Any], *, medications: list[str] = (), conditions: list[str] = ("multiple sclerosis",),
           formula: Any = None, **rx: Any) -> Prescription:
    """A new patient (with these lists) and a prescription for them, entered by the pharmacist."""
    ph = w["pharmacist"]
    p = factories.patient(ph, first_name="Pat", last_name=f"Case{db.session.query(Patient).count()}",
                          medications=list(medications), conditions=list(conditions))
    f = formula or w["formula"]
    return factories.prescription(ph, p.id, f.id, w["prescriber"].id, **rx)


def events(action: str, **where: Any) -> list[AuditEvent]:
    stmt = sa.select(AuditEvent).where(AuditEvent.action == action)
    for name, value in where.items():
        stmt = stmt.where(getattr(AuditEvent, name) == value)
    return list(db.session.execute(stmt.order_by(AuditEvent.id)).scalars())


def counts() -> tuple[int, int, int, int]:
    return tuple(db.session.execute(sa.select(sa.func.count()).select_from(m)).scalar_one()  # type: ignore[return-value]
                 for m in (Patient, Prescriber, Prescription, ScreeningAlert))


# ---- intake -----------------------------------------------------------------------------------------


def test_intake_computes_the_days_supply_directions_expiry_and_screens(app_ctx: Flask, staff: dict) -> None:
    w = factories.world(staff)
    newcomer = factories.patient(w["pharmacist"], first_name="Nora", last_name="Newcomb", email="nora@example.com")
    rx = prescriptions.create_prescription(w["technician"], {
        "patient_id": newcomer.id, "prescriber_id": w["prescriber"].id, "formula_id": w["formula"].id,
        "dose_mg": Decimal("4.5"), "titration": [], "dosing_time": DosingTime.BEDTIME, "quantity": Decimal("60"),
        "days_supply": None, "refills_authorized": None, "written_date": date(2026, 11, 20),
    })
    assert rx.days_supply == 60  # 60 capsules of 4.5 mg at 4.5 mg a day
    assert rx.quantity == 60
    assert rx.directions == "Take 1 capsule (4.5 mg) by mouth at bedtime."
    assert rx.expiry_date == date(2027, 11, 20)  # one year after the written date (RX_VALID_DAYS)
    assert rx.refills_authorized == 0  # missing means zero, never unlimited
    assert rx.rx_number == f"RX{rx.id:06d}"
    assert alerts_of(rx.id) == {}
    assert [e.entity_id for e in events("prescription.create")][-1] == rx.id
    assert events("prescription.screen", entity_id=rx.id)[0].details == {"codes": []}


def test_a_titration_plan_sets_the_quantity_for_the_days_supply(app_ctx: Flask, staff: dict) -> None:
    w = factories.world(staff)
    f = factories.formula("LDN-CAP-1.5", strength="1.5")
    rx = factories.prescription(w["pharmacist"], w["patient"].id, f.id, w["prescriber"].id, dose_mg=Decimal("4.5"),
                                titration=[{"dose_mg": Decimal("1.5"), "days": 14}, {"dose_mg": Decimal("3"), "days": 14}],
                                days_supply=42)
    assert rx.quantity == 14 * 1 + 14 * 2 + 14 * 3
    assert rx.titration == [{"dose_mg": "1.5", "days": 14}, {"dose_mg": "3", "days": 14}]
    assert rx.directions.startswith("Follow the dated chart: take 1 capsule (1.5 mg) by mouth at bedtime")
    view = prescriptions.prescription_view(w["pharmacist"], rx.id)
    rows = prescriptions.rules.titration_chart_rows(view.schedule, f.form)
    assert rows[0] == ("Nov 13 – Nov 26, 2026", "1 capsule", "1.5 mg")  # written Nov 13 (10 days before T0)
    assert rows[-1] == ("From Dec 11, 2026", "3 capsules", "4.5 mg")


@pytest.mark.parametrize(("change", "field"), [
    ({"patient_id": 999999}, "patient_id"),
    ({"prescriber_id": 999999}, "prescriber_id"),
    ({"formula_id": 999999}, "formula_id"),
    ({"patient_id": 2**63 + 5}, "patient_id"),  # not even an id: "unknown", never a crash
    ({"dose_mg": Decimal("4")}, "dose_mg"),  # not a whole number of 4.5 mg capsules
    ({"dose_mg": Decimal("40.5")}, "dose_mg"),  # 9 capsules a dose: the wrong strength
    ({"quantity": Decimal("45"), "days_supply": 30}, "days_supply"),  # 45 capsules last 45 days, not 30
    ({"quantity": Decimal("30.5")}, "quantity"),
    ({"titration": [{"dose_mg": Decimal("1"), "days": 14}]}, "titration"),  # 1 mg is not whole 4.5 mg capsules
    ({"written_date": T0.date() + timedelta(days=2)}, "written_date"),
    ({"expiry_date": date(2026, 11, 1)}, "expiry_date"),  # before the written date
    ({"expiry_date": date(2029, 1, 1)}, "expiry_date"),  # more than two years
    ({"form": "sublingual_liquid"}, "form"),  # the formula is a capsule
])
def test_bad_intake_is_refused_with_a_field_message_and_writes_nothing(
        app_ctx: Flask, staff: dict, change: dict, field: str) -> None:
    w = factories.world(staff)
    before = counts()
    audit_before = db.session.execute(sa.select(sa.func.count()).select_from(AuditEvent)).scalar_one()
    data = {"patient_id": w["patient"].id, "prescriber_id": w["prescriber"].id, "formula_id": w["formula"].id,
            "dose_mg": Decimal("4.5"), "titration": [], "dosing_time": DosingTime.BEDTIME, "quantity": None,
            "days_supply": 30, "refills_authorized": 1, "written_date": date(2026, 11, 13), **change}
    with pytest.raises(ValidationFailed) as caught:
        prescriptions.create_prescription(w["pharmacist"], data)
    assert field in caught.value.fields, caught.value.fields
    assert all(msg for msg in caught.value.fields[field])
    assert counts() == before
    assert db.session.execute(sa.select(sa.func.count()).select_from(AuditEvent)).scalar_one() == audit_before


def test_quantity_and_days_supply_that_disagree_say_how_long_the_quantity_lasts(app_ctx: Flask, staff: dict) -> None:
    w = factories.world(staff)
    with pytest.raises(ValidationFailed) as caught:
        factories.prescription(w["pharmacist"], w["patient"].id, w["formula"].id, w["prescriber"].id,
                               quantity=Decimal("45"), days_supply=30)
    assert caught.value.fields["quantity"] == ["45 capsules last 45 days at 1 capsule a day, not 30."]


def test_a_bad_npi_is_refused_and_a_duplicate_prescriber_too(app_ctx: Flask, staff: dict) -> None:
    ph = factories.actor(staff["pharmacist"])
    with pytest.raises(ValidationFailed) as bad:
        prescriptions.create_prescriber(ph, {"first_name": "A", "last_name": "B", "npi": "1234567890"})
    assert "check digit" in bad.value.fields["npi"][0]
    doc = prescriptions.create_prescriber(ph, {"first_name": "A", "last_name": "B", "npi": "1234567893"})
    assert events("prescriber.create")[-1].entity_id == doc.id
    with pytest.raises(ValidationFailed) as dup:
        prescriptions.create_prescriber(ph, {"first_name": "C", "last_name": "D", "npi": "1234567893"})
    assert dup.value.fields == {"npi": ["A prescriber with this NPI exists."]}


def test_an_admin_cannot_enter_prescriptions_and_the_refusal_is_audited(app_ctx: Flask, staff: dict) -> None:
    w = factories.world(staff)
    with pytest.raises(Forbidden):
        factories.prescription(w["admin"], w["patient"].id, w["formula"].id, w["prescriber"].id)
    denied = events("denied.enter_prescription")
    assert denied and denied[-1].actor_user_id == staff["admin"].id and denied[-1].patient_id == w["patient"].id


# ---- screening ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("medication", [
    "oxycodone 5 mg every 6 hours as needed", "OxyContin ER 10 mg", "Percocet 5/325 mg", "Vicodin", "NORCO 5/325",
    "tramadol 50 mg as needed", "Ultram", "Tylenol #3", "codeine cough syrup", "MS Contin 15 mg", "fentanyl patch",
])
def test_an_opioid_by_generic_or_brand_name_is_a_hard_stop(app_ctx: Flask, staff: dict, medication: str) -> None:
    w = factories.world(staff)
    rx = rx_for(w, medications=["vitamin D3", medication])
    alert = alerts_of(rx.id)["opioid"]
    assert alert.severity == Severity.HARD_STOP
    assert medication.split()[0].lower() in alert.message.lower()
    assert "naltrexone blocks opioids" in alert.message


@pytest.mark.parametrize("medication", ["Copaxone 40 mg/mL", "apomorphine", "loperamide (Imodium)", "naloxone kit",
                                        "morphine allergy"])
def test_what_is_not_an_opioid_raises_no_opioid_alert(app_ctx: Flask, staff: dict, medication: str) -> None:
    w = factories.world(staff)
    rx = rx_for(w, medications=[medication])
    assert "opioid" not in alerts_of(rx.id)


def test_an_opioid_hard_stop_cannot_be_overridden_and_blocks_verification(app_ctx: Flask, staff: dict) -> None:
    w = factories.world(staff)
    rx = rx_for(w, medications=["Percocet 5/325 mg"])
    alert = alerts_of(rx.id)["opioid"]
    with pytest.raises(Conflict, match="hard stop: it cannot be overridden"):
        prescriptions.resolve_alert(w["pharmacist"], alert.id, "Patient says they stopped")
    assert db.session.get(ScreeningAlert, alert.id).resolved_at is None
    order = order_flow.start_fill(w["technician"], rx.id)
    assert alerts_of(rx.id, order.id)["opioid"].severity == Severity.HARD_STOP  # screened again at the fill
    with pytest.raises(Conflict, match="Resolve the safety alerts first"):
        orders.verify_order(w["pharmacist"], order.id)
    assert db.session.get(Order, order.id).state == OrderState.REQUESTED


def test_a_hard_stop_clears_when_the_medication_list_changes(app_ctx: Flask, staff: dict) -> None:
    w = factories.world(staff)
    rx = rx_for(w, medications=["tramadol 50 mg"])
    order = order_flow.start_fill(w["technician"], rx.id)
    patient_changes.update(w["technician"], rx.patient_id, {"medications": ["vitamin D3"]})
    assert alerts_of(rx.id) == {} and alerts_of(rx.id, order.id) == {}
    orders.verify_order(w["pharmacist"], order.id)
    assert db.session.get(Order, order.id).state == OrderState.VERIFIED
    assert events("patient.update", patient_id=rx.patient_id)[-1].details == {"fields": ["medications"]}


def test_liver_disease_is_overridden_by_a_pharmacist_only_with_who_when_why(app_ctx: Flask, staff: dict) -> None:
    w = factories.world(staff)
    rx = rx_for(w, conditions=["multiple sclerosis", "hepatitis C (treated 2019)"])
    order = order_flow.start_fill(w["technician"], rx.id)
    alert = alerts_of(rx.id)["liver_disease"]
    assert alert.severity == Severity.OVERRIDABLE_STOP
    with pytest.raises(Conflict):
        orders.verify_order(w["pharmacist"], order.id)
    with pytest.raises(Forbidden):
        prescriptions.resolve_alert(w["technician"], alert.id, "Looks fine to me")
    assert events("denied.override_alert")[-1].actor_user_id == staff["technician"].id
    with pytest.raises(ValidationFailed) as no_reason:
        prescriptions.resolve_alert(w["pharmacist"], alert.id, "  ")
    assert "reason" in no_reason.value.fields
    prescriptions.resolve_alert(w["pharmacist"], alert.id, "LFTs normal in October; cleared by hepatologist")
    for row in (db.session.get(ScreeningAlert, alert.id), alerts_of(rx.id, order.id)["liver_disease"]):
        assert row.resolved_by_id == staff["pharmacist"].id
        assert row.resolved_at == now() == T0
        assert row.resolution_reason == "LFTs normal in October; cleared by hepatologist"
    event = events("alert.override")[-1]
    assert event.details == {"code": "liver_disease", "severity": "overridable_stop"}
    assert "LFT" not in str(event.details)  # the reason stays on the alert, not in the audit trail
    orders.verify_order(w["pharmacist"], order.id)
    assert db.session.get(Order, order.id).state == OrderState.VERIFIED
    with pytest.raises(Conflict, match="already been resolved"):
        prescriptions.resolve_alert(w["pharmacist"], alert.id, "again")


def test_an_override_carries_to_the_next_fill(app_ctx: Flask, staff: dict) -> None:
    w = factories.world(staff)
    rx = rx_for(w, conditions=["cirrhosis"])
    prescriptions.resolve_alert(w["pharmacist"], alerts_of(rx.id)["liver_disease"].id, "Hepatologist agrees")
    order = order_flow.start_fill(w["technician"], rx.id)
    carried = alerts_of(rx.id, order.id)["liver_disease"]
    assert carried.resolved and carried.resolution_reason == "Hepatologist agrees"


def test_spasticity_above_3_mg_needs_an_acknowledgement(app_ctx: Flask, staff: dict) -> None:
    w = factories.world(staff)
    f3 = factories.formula("LDN-CAP-3", strength="3")
    fine = rx_for(w, conditions=["multiple sclerosis", "spasticity"], formula=f3, dose_mg=Decimal("3"))
    assert "spasticity_dose" not in alerts_of(fine.id)
    rx = rx_for(w, conditions=["multiple sclerosis", "spasticity"], dose_mg=Decimal("4.5"))
    alert = alerts_of(rx.id)["spasticity_dose"]
    assert alert.severity == Severity.ACKNOWLEDGE and "no more than 3 mg" in alert.message
    order = order_flow.start_fill(w["technician"], rx.id)
    with pytest.raises(Conflict):
        orders.verify_order(w["pharmacist"], order.id)
    prescriptions.resolve_alert(w["pharmacist"], alert.id, "Prescriber aware; stiffness monitored")
    orders.verify_order(w["pharmacist"], order.id)
    assert db.session.get(Order, order.id).state == OrderState.VERIFIED


@pytest.mark.parametrize(("medications", "conditions", "code"), [
    (["Avonex 30 mcg weekly"], ["multiple sclerosis"], "interferon_beta"),
    (["Rebif 44 mcg"], ["multiple sclerosis"], "interferon_beta"),
    (["Betaseron"], ["multiple sclerosis"], "interferon_beta"),
    ([], ["multiple sclerosis", "pregnant (12 weeks)"], "pregnancy_breastfeeding"),
    ([], ["multiple sclerosis", "breastfeeding"], "pregnancy_breastfeeding"),
])
def test_interferon_and_pregnancy_warn_without_blocking(app_ctx: Flask, staff: dict, medications: list[str],
                                                         conditions: list[str], code: str) -> None:
    w = factories.world(staff)
    rx = rx_for(w, medications=medications, conditions=conditions)
    alerts = alerts_of(rx.id)
    assert set(alerts) == {code} and alerts[code].severity == Severity.WARNING
    order = order_flow.start_fill(w["technician"], rx.id)
    factories.run_order_to(w, order.id, "dispensed")
    assert db.session.get(Order, order.id).state == OrderState.DISPENSED
    with pytest.raises(Conflict, match="needs no override"):
        prescriptions.resolve_alert(w["pharmacist"], alerts[code].id, "noted")


def test_glatiramer_raises_no_alert(app_ctx: Flask, staff: dict) -> None:
    w = factories.world(staff)
    rx = rx_for(w, medications=["Copaxone 40 mg/mL three times a week", "glatiramer"])
    assert alerts_of(rx.id) == {}


def test_above_5_mg_is_a_hard_stop_and_outside_the_usual_range_a_warning(app_ctx: Flask, staff: dict) -> None:
    w = factories.world(staff)
    big = rx_for(w, dose_mg=Decimal("9"))  # 2 capsules of 4.5 mg: possible to make, but not low-dose
    alert = alerts_of(big.id)["dose_not_low_dose"]
    assert alert.severity == Severity.HARD_STOP and "not LDN" in alert.message
    with pytest.raises(Conflict):
        prescriptions.resolve_alert(w["pharmacist"], alert.id, "Prescriber insists")
    f05 = factories.formula("LDN-CAP-0.5", strength="0.5")
    low = rx_for(w, formula=f05, dose_mg=Decimal("1"))
    assert alerts_of(low.id)["dose_outside_usual_range"].severity == Severity.WARNING


def test_screening_runs_again_at_every_fill(app_ctx: Flask, staff: dict) -> None:
    w = factories.world(staff)
    first = order_flow.start_fill(w["technician"], w["rx"].id)
    factories.run_order_to(w, first.id, "dispensed")
    assert alerts_of(w["rx"].id, first.id) == {}
    # The list changed without going through the patient service (e.g. an import): the next fill still sees it.
    db.session.get(Patient, w["patient"].id).medications = ["hydrocodone 5 mg"]
    db.session.flush()
    second = order_flow.start_fill(w["technician"], w["rx"].id)
    assert alerts_of(w["rx"].id, second.id)["opioid"].severity == Severity.HARD_STOP
    assert alerts_of(w["rx"].id)["opioid"].severity == Severity.HARD_STOP  # and the prescription shows it
    assert alerts_of(w["rx"].id, first.id) == {}  # the dispensed fill keeps what was true when it was made


# ---- hold, resume, discontinue, replace ----------------------------------------------------------------


def test_hold_and_resume_need_a_pharmacist_and_a_reason(app_ctx: Flask, staff: dict) -> None:
    w = factories.world(staff)
    rx_id = w["rx"].id
    with pytest.raises(Forbidden):
        changes.hold(w["technician"], rx_id, "Waiting for labs")
    with pytest.raises(ValidationFailed) as no_reason:
        changes.hold(w["pharmacist"], rx_id, "")
    assert "reason" in no_reason.value.fields
    changes.hold(w["pharmacist"], rx_id, "Waiting for labs")
    rx = db.session.get(Prescription, rx_id)
    assert (rx.status, rx.status_reason) == (RxStatus.ON_HOLD, "Waiting for labs")
    with pytest.raises(Conflict, match="on hold"):
        order_flow.start_fill(w["technician"], rx_id)
    with pytest.raises(Conflict):
        changes.hold(w["pharmacist"], rx_id, "again")
    changes.resume(w["pharmacist"], rx_id)
    assert db.session.get(Prescription, rx_id).status == RxStatus.ACTIVE
    with pytest.raises(Conflict, match="Only a prescription on hold"):
        changes.resume(w["pharmacist"], rx_id)
    assert [e.action for e in events("prescription.hold") + events("prescription.resume")] == [
        "prescription.hold", "prescription.resume"]


def test_discontinuing_cancels_the_open_orders(app_ctx: Flask, staff: dict) -> None:
    w = factories.world(staff)
    order = order_flow.start_fill(w["technician"], w["rx"].id)
    factories.run_order_to(w, order.id, "compounding")
    changes.discontinue(w["pharmacist"], w["rx"].id, "Stopped by the neurologist")
    rx = db.session.get(Prescription, w["rx"].id)
    cancelled = db.session.get(Order, order.id)
    assert rx.status == RxStatus.DISCONTINUED and rx.status_reason == "Stopped by the neurologist"
    assert cancelled.state == OrderState.CANCELLED
    assert cancelled.cancel_reason == "Prescription discontinued: Stopped by the neurologist"
    assert events("order.cancel", entity_id=order.id)[0].details == {"from": "compounding", "to": "cancelled"}
    with pytest.raises(Conflict, match="already closed"):
        changes.discontinue(w["pharmacist"], w["rx"].id, "again")


def test_replacing_links_the_history_and_closes_the_old_prescription(app_ctx: Flask, staff: dict) -> None:
    w = factories.world(staff)
    f3 = factories.formula("LDN-CAP-3", strength="3")
    first = order_flow.start_fill(w["technician"], w["rx"].id)
    factories.run_order_to(w, first.id, "dispensed")
    waiting = order_flow.start_fill(w["technician"], w["rx"].id)
    new = changes.replace(w["pharmacist"], w["rx"].id, {
        "prescriber_id": w["prescriber"].id, "formula_id": f3.id, "dose_mg": Decimal("3"), "titration": [],
        "dosing_time": DosingTime.BEDTIME, "quantity": None, "days_supply": 30, "refills_authorized": 3,
        "written_date": today(),
    })
    old = db.session.get(Prescription, w["rx"].id)
    assert new.replaces_id == old.id and new.patient_id == old.patient_id
    assert old.status == RxStatus.REPLACED and old.status_reason == f"Replaced by {new.rx_number}"
    assert db.session.get(Order, first.id).state == OrderState.DISPENSED  # history stays
    assert db.session.get(Order, waiting.id).state == OrderState.CANCELLED  # made for the old dose
    assert [r.id for r in prescriptions.prescription_view(w["pharmacist"], old.id).replaced_by] == [new.id]
    assert prescriptions.prescription_view(w["pharmacist"], new.id).replaces.id == old.id
    assert events("prescription.replace")[-1].details == {"new": new.id}
    with pytest.raises(Conflict):
        changes.replace(w["pharmacist"], old.id, {})


def test_a_replacement_for_another_patient_is_refused(app_ctx: Flask, staff: dict) -> None:
    w = factories.world(staff)
    other = factories.patient(w["pharmacist"], first_name="Otto", last_name="Other", date_of_birth=date(1950, 1, 2))
    with pytest.raises(ValidationFailed) as caught:
        changes.replace(w["pharmacist"], w["rx"].id, {"patient_id": other.id})
    assert "patient_id" in caught.value.fields
    assert db.session.get(Prescription, w["rx"].id).status == RxStatus.ACTIVE


def test_refills_are_counted_from_what_was_dispensed(app_ctx: Flask, staff: dict, clock: Any) -> None:
    """A refill is used when its days have been dispensed: a cancelled order or one still being made uses none."""
    w = factories.world(staff, refills_authorized=1)
    first = order_flow.start_fill(w["technician"], w["rx"].id)
    order_flow.cancel(w["pharmacist"], first.id, "Wrong delivery address")
    again = order_flow.start_fill(w["technician"], w["rx"].id)  # the original fill again, under a new number
    assert (first.fill_number, again.fill_number) == (0, 1)
    assert (again.authorized_fill, prescriptions.view_of(w["rx"]).refills_left) == (0, 1)
    factories.run_order_to(w, again.id, "dispensed")
    refill = order_flow.start_fill(w["pharmacist"], w["rx"].id)
    view = prescriptions.view_of(w["rx"])
    assert (refill.authorized_fill, view.refills_used, view.refills_left) == (1, 0, 1)  # being made: not used yet
    assert (view.can_start_fill, view.fill_note) == (False, "A fill of this prescription is already in progress.")
    order_flow.cancel(w["pharmacist"], refill.id, "Patient is travelling")
    last = order_flow.start_fill(w["pharmacist"], w["rx"].id)
    clock.advance(timedelta(days=25))  # not too soon: most of the first supply is used
    factories.run_order_to(w, last.id, "dispensed")
    view = prescriptions.prescription_view(w["pharmacist"], w["rx"].id)
    assert (view.refills_used, view.refills_left, view.can_start_fill) == (1, 0, False)
    assert view.fill_note == f"No refills remain on {w['rx'].rx_number}; ask the prescriber for a renewal."


def test_unknown_ids_are_not_found(app_ctx: Flask, staff: dict) -> None:
    ph = factories.actor(staff["pharmacist"])
    with pytest.raises(NotFound):
        prescriptions.prescription_view(ph, 424242)
    with pytest.raises(NotFound):
        changes.hold(ph, 2**40, "why not")
    with pytest.raises(NotFound):
        patient_page.patient_record(ph, 424242)


# ---- the seeded cases ---------------------------------------------------------------------------------


def test_the_seeded_cases_show_the_right_alerts(app_ctx: Flask) -> None:
    from pharmacy.seeding.loader import load

    load(ROOT / "seeds")

    def case(last_name: str) -> tuple[dict[str, ScreeningAlert], dict[str, ScreeningAlert]]:
        patient = db.session.execute(sa.select(Patient).where(Patient.last_name == last_name)).scalar_one()
        rx = db.session.execute(sa.select(Prescription).where(Prescription.patient_id == patient.id)).scalars().first()
        order = db.session.execute(sa.select(Order).where(Order.prescription_id == rx.id)
                                   .order_by(Order.fill_number.desc())).scalars().first()
        return alerts_of(rx.id), (alerts_of(rx.id, order.id) if order else {})

    park, park_order = case("Park")
    assert park["opioid"].severity == Severity.HARD_STOP and "tramadol" in park["opioid"].message
    assert park_order["opioid"].severity == Severity.HARD_STOP  # the seeded order waiting to be verified
    novak, novak_order = case("Novak")
    assert set(novak) == {"liver_disease"} and novak["liver_disease"].severity == Severity.OVERRIDABLE_STOP
    assert not novak_order["liver_disease"].resolved
    brooks, _ = case("Brooks")
    assert set(brooks) == {"spasticity_dose"} and brooks["spasticity_dose"].severity == Severity.ACKNOWLEDGE
    reed, _ = case("Reed")
    assert set(reed) == {"interferon_beta"}
    schultz, _ = case("Schultz")
    assert set(schultz) == {"pregnancy_breastfeeding"}
    ellison, _ = case("Ellison")
    assert ellison == {}  # Copaxone: no conflict
