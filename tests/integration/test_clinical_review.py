"""Clinical review through the public services, on the real database (docs/domain.md "Safety screening").

Each case failed before its fix: a run-on opioid strength was not screened, a 6 mg order could never be filled,
an allergy to naltrexone and a child's age were never looked at, and a bad refill count crashed in the database.
"""
from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import pytest
from flask import Flask

from pharmacy.compounding import services as orders
from pharmacy.compounding.models import Order
from pharmacy.compounding.rules import OrderState
from pharmacy.core.context import today
from pharmacy.core.errors import Conflict, Forbidden, ValidationFailed
from pharmacy.extensions import db
from pharmacy.patients.models import Patient
from pharmacy.prescriptions import services as prescriptions
from pharmacy.prescriptions.models import Prescription, ScreeningAlert
from pharmacy.prescriptions.rules import Severity
from pharmacy.workflows import orders as order_flow
from pharmacy.workflows import patient_changes
from tests import factories


def alerts_of(rx_id: int, order_id: int | None = None) -> dict[str, ScreeningAlert]:
    return {a.code: a for a in prescriptions.screening.alerts_for(rx_id, order_id)}


def rx_for(w: dict[str, Any], *, patient: dict[str, Any] | None = None, formula: Any = None,
           **rx: Any) -> Prescription:
    ph = w["pharmacist"]
    p = factories.patient(ph, first_name="Pat", last_name=f"Review{db.session.query(Patient).count()}",
                          **(patient or {}))
    f = formula or w["formula"]
    return factories.prescription(ph, p.id, f.id, w["prescriber"].id, **rx)


def test_an_opioid_typed_with_its_strength_run_on_stops_the_fill(app_ctx: Flask, staff: dict) -> None:
    w = factories.world(staff)
    rx = rx_for(w, patient={"medications": ["tramadol50mg at night"]})
    assert alerts_of(rx.id)["opioid"].severity == Severity.HARD_STOP
    order = order_flow.start_fill(w["technician"], rx.id)
    with pytest.raises(Conflict, match="Resolve the safety alerts first"):
        orders.verify_order(w["pharmacist"], order.id)


def test_6_mg_needs_a_pharmacists_override_with_a_reason_then_fills(app_ctx: Flask, staff: dict) -> None:
    w = factories.world(staff)
    f15 = factories.formula("LDN-CAP-1.5", strength="1.5")
    rx = rx_for(w, formula=f15, dose_mg=Decimal("6"))  # 4 capsules of 1.5 mg
    alert = alerts_of(rx.id)["dose_not_low_dose"]
    assert alert.severity == Severity.OVERRIDABLE_STOP
    order = order_flow.start_fill(w["technician"], rx.id)
    with pytest.raises(Conflict):
        orders.verify_order(w["pharmacist"], order.id)
    with pytest.raises(Forbidden):
        prescriptions.resolve_alert(w["technician"], alert.id, "Prescriber said so")
    prescriptions.resolve_alert(w["pharmacist"], alert.id, "Confirmed 6 mg with Dr Marquez by phone")
    orders.verify_order(w["pharmacist"], order.id)
    assert db.session.get(Order, order.id).state == OrderState.VERIFIED


def test_far_above_low_dose_stays_a_hard_stop(app_ctx: Flask, staff: dict) -> None:
    w = factories.world(staff)
    rx = rx_for(w, dose_mg=Decimal("9"))
    alert = alerts_of(rx.id)["dose_not_low_dose"]
    assert alert.severity == Severity.HARD_STOP
    with pytest.raises(Conflict, match="cannot be overridden"):
        prescriptions.resolve_alert(w["pharmacist"], alert.id, "Prescriber insists")


def test_a_naltrexone_allergy_blocks_until_a_pharmacist_reviews_it(app_ctx: Flask, staff: dict) -> None:
    w = factories.world(staff)
    rx = rx_for(w, patient={"allergies": ["Naltrexone (hives)"]})
    alert = alerts_of(rx.id)["naltrexone_allergy"]
    assert alert.severity == Severity.OVERRIDABLE_STOP
    order = order_flow.start_fill(w["technician"], rx.id)
    assert alerts_of(rx.id, order.id)["naltrexone_allergy"].resolved_at is None
    with pytest.raises(Conflict, match="Resolve the safety alerts first"):
        orders.verify_order(w["pharmacist"], order.id)
    prescriptions.resolve_alert(w["pharmacist"], alert.id, "Was nausea from 50 mg tablets, not an allergy")
    orders.verify_order(w["pharmacist"], order.id)
    assert db.session.get(Order, order.id).state == OrderState.VERIFIED


def test_an_allergy_added_later_is_screened_on_the_open_order(app_ctx: Flask, staff: dict) -> None:
    w = factories.world(staff)
    rx = w["rx"]
    order = order_flow.start_fill(w["technician"], rx.id)
    assert "naltrexone_allergy" not in alerts_of(rx.id, order.id)
    patient_changes.update(w["technician"], rx.patient_id, {"allergies": ["Vivitrol - anaphylaxis"]})
    assert alerts_of(rx.id, order.id)["naltrexone_allergy"].severity == Severity.OVERRIDABLE_STOP
    with pytest.raises(Conflict):
        orders.verify_order(w["pharmacist"], order.id)


def test_no_known_allergies_give_no_alert(app_ctx: Flask, staff: dict) -> None:
    w = factories.world(staff)
    rx = rx_for(w, patient={"allergies": ["NKDA"]})
    assert alerts_of(rx.id) == {}


def test_a_child_gets_an_age_warning_that_does_not_block(app_ctx: Flask, staff: dict) -> None:
    w = factories.world(staff)
    rx = rx_for(w, patient={"date_of_birth": today() - timedelta(days=365 * 15)})
    alerts = alerts_of(rx.id)
    assert set(alerts) == {"age_under_18"} and alerts["age_under_18"].severity == Severity.WARNING
    order = order_flow.start_fill(w["technician"], rx.id)
    orders.verify_order(w["pharmacist"], order.id)
    assert db.session.get(Order, order.id).state == OrderState.VERIFIED


def test_an_adult_gets_no_age_warning(app_ctx: Flask, staff: dict) -> None:
    w = factories.world(staff)
    rx = rx_for(w, patient={"date_of_birth": date(1968, 4, 12)})
    assert "age_under_18" not in alerts_of(rx.id)


@pytest.mark.parametrize("refills", [-1, 100, True, "3"])  # a count 0–99, as the API and the table allow
def test_a_refill_count_out_of_range_is_refused_with_a_field_message(app_ctx: Flask, staff: dict,
                                                                       refills: Any) -> None:
    w = factories.world(staff)
    with pytest.raises(ValidationFailed) as exc:
        rx_for(w, refills_authorized=refills)
    assert "refills_authorized" in (exc.value.fields or {})
