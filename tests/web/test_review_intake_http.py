"""Review of how prescriptions ARRIVE over FHIR (POST /fhir/MedicationRequest): defects a pharmacist would hit.

Every test here fails on the code as it was reviewed; its docstring says what the pharmacist sees and what should
happen instead."""
from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from pharmacy.eprescribing import services
from pharmacy.eprescribing.models import ErxIntake
from pharmacy.extensions import db
from tests import factories
from tests.erx_support import api_token, medication_request

# A real-looking identifier system of an EHR's prescription order numbers (78 characters).
LONG_SYSTEM = "https://ehr.lakeside-neurology.example.org/fhir/NamingSystem/prescription-order-id"


@pytest.fixture
def world(app: Any, staff: dict[str, Any]) -> dict[str, Any]:
    with app.test_request_context("/"):
        ph = factories.actor(staff["pharmacist"])
        formula = factories.formula()
        patient = factories.patient(ph)
        db.session.commit()
        return {"formula": formula.id, "patient": patient.id, "pharmacist": ph,
                "token": api_token(app, staff["pharmacist"], scope="fhir")}


def post(client: Any, body: Any, token: str) -> Any:
    return client.post("/fhir/MedicationRequest", json=body, headers={"Authorization": f"Bearer {token}"})


def test_two_different_prescriptions_with_a_long_identifier_system_are_both_taken_in(app, client, world) -> None:
    """An EHR numbers its orders under a long identifier system (78 characters here). The duplicate key is
    "system|value" cut to 64 characters (`fhir/rules.read_medication_request`: `key[:64]`, and again in
    `workflows.eprescribing.receive_fhir`), so every order under that system has the *same* key: the second,
    different prescription (EHR-RX-1002, another patient's or a dose change) is answered **200 "Already received
    (entry 1)"** and silently dropped. The EHR believes it was delivered; the pharmacist never sees it.

    Correct: two MedicationRequests with different identifiers are two entries (202 each); only the same identifier
    again is "already received"."""
    first = post(client, medication_request(identifier=[{"system": LONG_SYSTEM, "value": "EHR-RX-1001"}]),
                 world["token"])
    assert first.status_code == 202, first.get_data(as_text=True)
    second = post(client, medication_request(
        identifier=[{"system": LONG_SYSTEM, "value": "EHR-RX-1002"}],
        dosageInstruction=[{"text": "Take 1 capsule by mouth at bedtime",
                            "doseAndRate": [{"doseQuantity": {"value": 3, "unit": "mg"}}]}]), world["token"])
    assert second.status_code == 202, (second.status_code, second.get_json())
    with app.app_context():
        assert db.session.execute(sa.select(sa.func.count()).select_from(ErxIntake)).scalar_one() == 2


def test_an_expected_supply_duration_in_weeks_is_not_read_as_days(app, client, world) -> None:
    """`dispenseRequest.expectedSupplyDuration` is a FHIR Duration with a unit. `fhir/rules._medication` takes its
    value and ignores the unit, so "4 weeks" (UCUM `wk`) is pre-filled on the review form as a **4-day** supply
    and nothing is listed under *What did not map*; accepted as suggested with the quantity left out, the patient
    gets 4 capsules and the refill reminders are planned for 4 days.

    Correct: convert wk/mo (or d/day/days) to days — 28 days here — or leave the days supply empty and say why."""
    body = medication_request(dispenseRequest={
        "numberOfRepeatsAllowed": 3, "quantity": {"value": 28, "unit": "capsule"},
        "expectedSupplyDuration": {"value": 4, "unit": "weeks", "system": "http://unitsofmeasure.org", "code": "wk"}})
    response = post(client, body, world["token"])
    assert response.status_code == 202, response.get_data(as_text=True)
    with app.test_request_context("/"):
        intake = db.session.execute(sa.select(ErxIntake)).scalar_one()
        review = services.review(world["pharmacist"], intake.id)
        assert review.form["days_supply"] in ("", "28"), (
            f"4 weeks pre-filled as {review.form['days_supply']} days; unmapped: {review.mapping.unmapped}")
