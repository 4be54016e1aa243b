"""/fhir: the CapabilityStatement, reads and searches (by patient, status and date, paged in Bundles), POST
MedicationRequest into the intake queue (contained or referenced Patient and Practitioner), OperationOutcomes for
every error, an audit event for every read of patient data — and every resource valid for fhir.resources."""
from __future__ import annotations

import os
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.capabilitystatement import CapabilityStatement
from fhir.resources.R4B.medicationdispense import MedicationDispense
from fhir.resources.R4B.medicationrequest import MedicationRequest
from fhir.resources.R4B.operationoutcome import OperationOutcome
from fhir.resources.R4B.patient import Patient
from fhir.resources.R4B.practitioner import Practitioner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pharmacy.compounding.rules import UspCategory
from pharmacy.core.context import today
from pharmacy.core.models import AuditEvent
from pharmacy.eprescribing.models import ErxIntake, ErxMessage
from pharmacy.eprescribing.rules import MatchStatus, Source
from pharmacy.extensions import db
from pharmacy.prescriptions import services as rx_services
from pharmacy.prescriptions.rules import Form
from pharmacy.workflows import orders as order_flow
from tests import factories
from tests.erx_support import api_token, medication_request

FHIR = "application/fhir+json"


# make test: a fixed, derandomized sample; make fuzz (HYPOTHESIS_PROFILE=fuzz): the wide random search.
FUZZ_EXAMPLES = 500 if os.environ.get("HYPOTHESIS_PROFILE") == "fuzz" else 60

@pytest.fixture
def world(app: Any, staff: dict[str, Any]) -> dict[str, Any]:
    """Two patients: the first with two prescriptions (one discontinued) and a dispensed fill, the second with one."""
    with app.test_request_context("/"):
        w = factories.world(staff)
        order = order_flow.start_fill(w["pharmacist"], w["rx"].id)
        factories.run_order_to(w, order.id, "dispensed")
        old = factories.prescription(w["pharmacist"], w["patient"].id, w["formula"].id, w["prescriber"].id,
                                     written_date=today() - timedelta(days=200))
        rx_services.discontinue_prescription(w["pharmacist"], old.id, "changed to sublingual")
        other = factories.patient(w["pharmacist"], first_name="Otto", last_name="Baker", date_of_birth=date(1950, 1, 2))
        other_rx = factories.prescription(w["pharmacist"], other.id, w["formula"].id, w["prescriber"].id)
        db.session.commit()
        return {"patient": w["patient"].id, "rx": w["rx"].id, "old": old.id, "order": order.id, "other": other.id,
                "other_rx": other_rx.id, "prescriber": w["prescriber"].id, "formula": w["formula"].id}


@pytest.fixture
def token(app: Any, staff: dict[str, Any]) -> str:
    return api_token(app, staff["pharmacist"], scope="fhir")


def get(client: Any, url: str, token: str | None, status: int = 200) -> dict[str, Any]:
    response = client.get(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    assert response.status_code == status, response.get_data(as_text=True)[:500]
    assert response.mimetype == FHIR
    return response.get_json()


def test_metadata_is_a_valid_capability_statement_for_anyone(client) -> None:
    body = get(client, "/fhir/metadata", None)
    cs = CapabilityStatement.model_validate(body)
    assert cs.fhirVersion == "4.0.1"
    served = {r.type: {i.code for i in r.interaction} for r in cs.rest[0].resource}
    assert served["MedicationRequest"] == {"read", "search-type", "create"}
    assert set(served) == {"Patient", "Practitioner", "MedicationRequest", "MedicationDispense"}


def test_reads_are_valid_resources_and_audited(app, client, world, token) -> None:
    patient = Patient.model_validate(get(client, f"/fhir/Patient/{world['patient']}", token))
    assert patient.name[0].family == "Ellison" and patient.birthDate == date(1968, 4, 12)
    doc = Practitioner.model_validate(get(client, f"/fhir/Practitioner/{world['prescriber']}", token))
    assert doc.identifier[0].value == "1234567893"
    rx = MedicationRequest.model_validate(get(client, f"/fhir/MedicationRequest/{world['rx']}", token))
    assert rx.status == "active" and rx.subject.reference == f"Patient/{world['patient']}"
    assert rx.dosageInstruction[0].doseAndRate[0].doseQuantity.value == 4.5
    old = MedicationRequest.model_validate(get(client, f"/fhir/MedicationRequest/{world['old']}", token))
    assert old.status == "stopped" and old.statusReason.text == "changed to sublingual"
    fill = MedicationDispense.model_validate(get(client, f"/fhir/MedicationDispense/{world['order']}", token))
    assert fill.status == "completed" and fill.whenHandedOver is not None
    with app.app_context():
        reads = db.session.execute(sa.select(AuditEvent.patient_id).where(AuditEvent.action == "fhir.read")).scalars()
        assert sorted(p for p in reads if p) == [world["patient"]] * 4


def test_a_returned_fill_is_cancelled_with_its_reason_and_its_handover(app, client, world, token, staff) -> None:
    """A parcel lost after it left: it no longer counts (cancelled) but it did leave the pharmacy (whenHandedOver)."""
    with app.test_request_context("/"):
        order_flow.return_fill(factories.actor(staff["pharmacist"]), world["order"], "lost_in_transit", "Claim 77")
        db.session.commit()
    found = MedicationDispense.model_validate(get(client, f"/fhir/MedicationDispense/{world['order']}", token))
    assert found.status == "cancelled" and found.whenHandedOver is not None
    assert found.statusReasonCodeableConcept.text == "Returned after dispensing: Lost in the post — Claim 77."


def test_a_dispensing_says_which_fill_it_draws_from_and_whether_it_is_a_part(app, client, world, token, staff,
                                                                            clock) -> None:
    """A 60-day liquid that keeps 14 days goes out in parts: each is a part fill of the *first* fill, not refill 2."""
    with app.test_request_context("/"):
        w = factories.world(staff)
        liquid = factories.formula("LDN-SL-AQ", form=Form.SUBLINGUAL_LIQUID, strength="1",
                                   category=UspCategory.AQUEOUS_UNPRESERVED, prices=(("60", 60, 9000),))
        rx = factories.second_prescription(w["pharmacist"], w["patient"].id, liquid.id, w["prescriber"].id,
                                    dose_mg=Decimal("1.5"), days_supply=60, refills_authorized=2)
        parts = []
        for _ in range(2):
            order = order_flow.start_fill(w["pharmacist"], rx.id)
            factories.run_order_to({**w, "formula": liquid}, order.id, "dispensed")
            parts.append(order.id)
            clock.advance(timedelta(days=12))  # 80 % of the part used: the next may go out
        db.session.commit()
    whole = MedicationDispense.model_validate(get(client, f"/fhir/MedicationDispense/{world['order']}", token))
    assert (whole.type.coding[0].code, whole.type.text) == ("FF", "first fill")
    # 14 days, then 12: the second part, collected with two days left, is used after the first (its BUD counts from
    # when its doses start).
    for order_id, days in zip(parts, (14, 12), strict=True):
        part = MedicationDispense.model_validate(get(client, f"/fhir/MedicationDispense/{order_id}", token))
        assert (part.type.coding[0].code, part.type.text) == ("FFP", "first fill (part fill)")
        assert part.daysSupply.value == days


@pytest.mark.parametrize("url", ["/fhir/Patient/999999", "/fhir/Patient/abc", "/fhir/MedicationRequest/0",
                                 "/fhir/MedicationDispense/99999999999999999999", "/fhir/Patient/%C2%B2",
                                 "/fhir/Patient/%D9%A3"])  # "²" and "٣": digits to str.isdigit(), no id here
def test_unknown_ids_are_404_operation_outcomes(client, world, token, url) -> None:
    OperationOutcome.model_validate(get(client, url, token, status=404))


def test_without_a_token_or_as_an_admin(app, client, world, staff) -> None:
    outcome = get(client, f"/fhir/Patient/{world['patient']}", None, status=401)
    assert OperationOutcome.model_validate(outcome).issue[0].code == "login"
    admin = api_token(app, staff["admin"])
    get(client, f"/fhir/Patient/{world['patient']}", admin, status=403)


def test_search_by_patient_status_and_date_with_paging(app, client, world, token) -> None:
    with app.app_context():
        day = today()
    base = f"/fhir/MedicationRequest?patient=Patient/{world['patient']}"
    both = Bundle.model_validate(get(client, base, token))
    assert both.total == 2 and both.type == "searchset"
    active = Bundle.model_validate(get(client, f"{base}&status=active", token))
    assert [e.resource.id for e in active.entry] == [str(world["rx"])]
    recent = Bundle.model_validate(get(client, f"{base}&authoredon=ge{(day - timedelta(days=30)).isoformat()}",
                                       token))
    assert [e.resource.id for e in recent.entry] == [str(world["rx"])]
    first = Bundle.model_validate(get(client, f"{base}&_count=1", token))
    assert len(first.entry) == 1 and {link.relation for link in first.link} == {"self", "next"}
    next_url = next(link.url for link in first.link if link.relation == "next")
    second = Bundle.model_validate(get(client, next_url.replace("http://localhost", ""), token))
    assert len(second.entry) == 1 and second.entry[0].resource.id != first.entry[0].resource.id
    assert {link.relation for link in second.link} == {"self", "previous"}
    dispenses = Bundle.model_validate(get(client, f"/fhir/MedicationDispense?patient={world['patient']}"
                                                  f"&whenhandedover={day.isoformat()}", token))
    assert [e.resource.id for e in dispenses.entry] == [str(world["order"])]
    none = Bundle.model_validate(get(client, f"/fhir/MedicationDispense?patient={world['other']}", token))
    assert none.total == 0 and not none.entry
    patients = Bundle.model_validate(get(client, "/fhir/Patient?birthdate=1950-01-02", token))
    assert [e.resource.id for e in patients.entry] == [str(world["other"])]
    by_npi = Bundle.model_validate(get(client, "/fhir/Practitioner?identifier=http://hl7.org/fhir/sid/us-npi|1234567893",
                                       token))
    assert by_npi.total == 1


@pytest.mark.parametrize("query", ["status=bogus", "authoredon=yesterday", "patient=Group/1", "_count=x",
                                   "unknown=1", "authoredon=ne2026-01-01", "authoredon=2026-02-30", "_count=%C2%B2",
                                   "patient=Patient/%C2%B2", "identifier=a%00b", "status=%E2%80%AE"])
def test_bad_search_parameters_are_422_naming_them(client, world, token, query) -> None:
    outcome = OperationOutcome.model_validate(get(client, f"/fhir/MedicationRequest?{query}", token, status=422))
    assert outcome.issue[0].code == "invalid"


@pytest.mark.parametrize("url", ["/fhir/Patient?name=%00", "/fhir/Practitioner?name=a%00", "/fhir/Patient?given=%1B",
                                 "/fhir/Patient?name=Smith%E2%80%AE"])
def test_a_search_value_the_database_cannot_hold_is_a_422_naming_it(client, world, token, url) -> None:
    """Found by `make fuzz` on PostgreSQL: a NUL in `name` reached the database, which refuses it (a 400 HTML page)."""
    outcome = OperationOutcome.model_validate(get(client, url, token, status=422))
    name = url.split("?")[1].split("=")[0]
    assert outcome.issue[0].code == "invalid" and name in outcome.issue[0].diagnostics


def test_searches_audit_each_patient_they_show(app, client, world, token) -> None:
    get(client, "/fhir/MedicationRequest", token)
    with app.app_context():
        seen = db.session.execute(sa.select(AuditEvent.patient_id).where(AuditEvent.action == "fhir.search")).scalars()
        assert sorted(seen) == sorted([world["patient"], world["patient"], world["other"]])


def post(client: Any, body: Any, token: str, status: int) -> dict[str, Any]:
    response = client.post("/fhir/MedicationRequest", json=body, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == status, response.get_data(as_text=True)[:800]
    return OperationOutcome.model_validate(response.get_json()).model_dump()


def test_post_with_contained_patient_and_practitioner_goes_to_the_queue_once(app, client, world, token) -> None:
    post(client, medication_request(), token, 202)
    post(client, medication_request(), token, 200)  # the same identifier again: the same entry
    with app.app_context():
        intake = db.session.execute(sa.select(ErxIntake)).scalar_one()
        assert intake.source == Source.FHIR and intake.match_status == MatchStatus.MATCHED
        assert intake.patient_id == world["patient"] and intake.formula_id == world["formula"]
        assert intake.unmapped == []
        assert db.session.execute(sa.select(sa.func.count()).select_from(ErxMessage)).scalar_one() == 1


def test_post_with_referenced_patient_and_practitioner(app, client, world, token) -> None:
    body = medication_request(contained=None, subject={"reference": f"Patient/{world['other']}"},
                              requester={"reference": f"Practitioner/{world['prescriber']}"}, identifier=None)
    post(client, body, token, 202)
    with app.app_context():
        intake = db.session.execute(sa.select(ErxIntake)).scalar_one()
        assert (intake.patient_id, intake.prescriber_id, intake.match_status.value) == (
            world["other"], world["prescriber"], "chosen")
    post(client, body, token, 200)  # no identifier: the same body is recognised by its checksum


@pytest.mark.parametrize(("body", "field"), [
    ({"resourceType": "Patient"}, "resourceType"),
    (medication_request(status="completed"), "status"),
    (medication_request(subject={"reference": "Group/1"}), "subject"),
    (medication_request(subject={"reference": "Patient/999999"}), "subject"),
    (medication_request(authoredOn="yesterday"), "authoredOn"),
    (medication_request(intent=None), "intent"),
    ([1, 2, 3], "resourceType"),
])
def test_invalid_posts_are_422_and_create_nothing(app, client, world, token, body, field) -> None:
    if isinstance(body, dict):
        body = {k: v for k, v in body.items() if v is not None}
    outcome = post(client, body, token, 422)
    assert any(field in (e or "") for issue in outcome["issue"] for e in (issue.get("expression") or [])) \
        or field in outcome["issue"][0]["diagnostics"]
    with app.app_context():
        assert db.session.execute(sa.select(ErxIntake)).first() is None


def _nested(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3)


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20), _nested, max_leaves=10)


@settings(max_examples=FUZZ_EXAMPLES, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(key=st.sampled_from(["status", "intent", "subject", "requester", "medicationCodeableConcept", "authoredOn",
                            "dosageInstruction", "dispenseRequest", "contained", "identifier", "reasonCode", "note"]),
       value=json_values)
def test_fuzz_posted_medication_requests_never_fail_the_server(app, client, world, token, key, value) -> None:
    response = client.post("/fhir/MedicationRequest", json=medication_request(**{key: value}),
                           headers={"Authorization": f"Bearer {token}"})
    assert response.status_code in (200, 202, 400, 422), response.get_data(as_text=True)[:500]
    OperationOutcome.model_validate(response.get_json())


@settings(max_examples=FUZZ_EXAMPLES, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(resource=st.sampled_from(["Patient", "Practitioner", "MedicationRequest", "MedicationDispense"]),
       params=st.dictionaries(st.sampled_from(["patient", "status", "date", "authoredon", "whenhandedover", "_count",
                                               "_page", "name", "birthdate", "identifier", "_id", "subject"]),
                              st.text(max_size=25), max_size=3))
def test_fuzz_searches_answer_a_bundle_or_an_outcome(client, world, token, resource, params) -> None:
    response = client.get(f"/fhir/{resource}", query_string=params, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code in (200, 422), response.get_data(as_text=True)[:500]
    body = response.get_json()
    (Bundle if response.status_code == 200 else OperationOutcome).model_validate(body)
