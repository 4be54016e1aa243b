"""The JSON API (/api/v1) for intake and compounding: the whole path, 422 with field messages and nothing
written, 409 for a move the workflow refuses, 403 for the wrong role, 401 without a token, never a 500."""
from __future__ import annotations

import io
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient
from pypdf import PdfReader

from pharmacy.compounding.models import Order
from pharmacy.core.models import AuditEvent
from pharmacy.extensions import db
from pharmacy.patients.models import Patient
from pharmacy.prescriptions.models import Prescriber, Prescription, ScreeningAlert
from tests import factories
from tests.fuzzing import fuzzer
from tests.pages import build, count, run


@pytest.fixture
def tokens(app: Flask, staff: dict) -> dict[str, dict[str, str]]:
    """A bearer header per role."""
    from pharmacy.core import services

    out = {}
    with app.test_request_context("/"):
        for key, who in staff.items():
            _, raw = services.issue_token(factories.actor(who), who.id, "tests")
            out[key] = {"Authorization": f"Bearer {raw}"}
        db.session.commit()
    return out


def rx_body(w: dict[str, Any], **change: Any) -> dict[str, Any]:
    return {"patient_id": w["patient"], "prescriber_id": w["prescriber"], "formula_id": w["formula"],
            "dose_mg": "4.5", "days_supply": 30, "refills_authorized": 2, "written_date": "2026-11-20", **change}


def test_intake_to_dispensed_through_the_api(app: Flask, client: FlaskClient, staff: dict, tokens: dict) -> None:
    run(app, lambda: factories.formula())
    tech, ph, ph2 = tokens["technician"], tokens["pharmacist"], tokens["pharmacist2"]
    patient = client.post("/api/v1/patients", headers=tech, json={
        "first_name": "Ida", "last_name": "Integration", "date_of_birth": "1975-02-03", "email": "ida@example.com",
        "conditions": ["relapsing-remitting multiple sclerosis", "hepatitis B"], "medications": ["Copaxone"]})
    assert patient.status_code == 201, patient.json
    assert patient.json["conditions"] == ["relapsing-remitting multiple sclerosis", "hepatitis B"]
    doc = client.post("/api/v1/prescribers", headers=tech, json={"first_name": "Ann", "last_name": "Neuro",
                                                                 "npi": "1003000126", "credentials": "MD"})
    assert doc.status_code == 201 and doc.json["npi"] == "1003000126"
    formula_id = run(app, lambda: factories.formula().id)
    rx = client.post("/api/v1/prescriptions", headers=tech, json={
        "patient_id": patient.json["id"], "prescriber_id": doc.json["id"], "formula_id": formula_id,
        "form": "capsule", "dose_mg": "4.5", "quantity": "30", "refills_authorized": 1, "written_date": "2026-11-20"})
    assert rx.status_code == 201, rx.json
    assert (rx.json["days_supply"], rx.json["quantity"], rx.json["expiry_date"]) == (30, "30", "2027-11-20")
    assert rx.json["directions"] == "Take 1 capsule (4.5 mg) by mouth at bedtime."
    assert rx.json["product"] == "Naltrexone 4.5 mg capsules"
    [alert] = rx.json["alerts"]
    assert (alert["code"], alert["severity"], alert["can_override"], alert["blocks"], alert["resolved"]) == (
        "liver_disease", "overridable_stop", True, True, False)
    rx_id = rx.json["id"]
    order = client.post(f"/api/v1/prescriptions/{rx_id}/fills", headers=tech, json={"delivery": "ship"})
    assert order.status_code == 201, order.json
    assert (order.json["state"], order.json["quantity_text"], order.json["shipping_cents"]) == (
        "requested", "30 capsules", 895)
    assert order.json["next_steps"] == ["verified", "on_hold", "cancelled"]
    assert order.json["alerts"][0]["code"] == "liver_disease"
    oid = order.json["id"]
    url = f"/api/v1/orders/{oid}/transitions"
    blocked = client.post(url, headers=ph, json={"to": "verified"})
    assert blocked.status_code == 409 and blocked.json["message"].startswith("Resolve the safety alerts first")
    refused = client.post(f"/api/v1/prescriptions/{rx_id}/alerts/{alert['id']}/override", headers=tech,
                          json={"reason": "Looks fine to me"})
    assert refused.status_code == 403 and refused.json["code"] == "forbidden"
    done = client.post(f"/api/v1/prescriptions/{rx_id}/alerts/{alert['id']}/override", headers=ph,
                       json={"reason": "Hepatitis B vaccine only, not infection"})
    assert done.status_code == 200
    assert (done.json["resolved"], done.json["resolved_by"]) == (True, "Paula Pharmacist")
    assert done.json["resolved_at"].startswith("2026-11-23T15:00:00")
    assert client.post(url, headers=tech, json={"to": "verified"}).status_code == 403
    verified = client.post(url, headers=ph, json={"to": "verified"})
    assert verified.status_code == 200 and verified.json["state"] == "verified"
    choices = verified.json["lot_choices"]
    assert [c["ingredient"] for c in choices] == ["Naltrexone hydrochloride USP", "Microcrystalline cellulose NF"]
    assert choices[0]["expected_quantity"] == "135" and choices[0]["unit"] == "mg"
    lots = [{"ingredient_lot_id": c["lots"][0]["id"], "quantity_used": c["expected_quantity"]} for c in choices]
    compounded = client.post(url, headers=tech, json={"to": "compounding", "lots": lots, "quantity_made": "30"})
    assert compounded.status_code == 200, compounded.json
    assert (compounded.json["lot_number"], compounded.json["bud"]) == ("L261123-001", "2027-05-22")
    assert [u["lot_number"] for u in compounded.json["lots_used"]] == ["NAL-1", "MIC-1"]
    own = client.post(url, headers=tech, json={"to": "checked"})
    assert own.status_code == 403  # a technician does not do the final check
    checked = client.post(url, headers=ph2, json={"to": "checked", "qc_notes": "In range"})
    assert checked.status_code == 200 and (checked.json["state"], checked.json["qc_passed"]) == ("checked", True)
    assert client.post(url, headers=ph2, json={"to": "ready"}).json["state"] == "ready"
    no_carrier = client.post(url, headers=tech, json={"to": "dispensed", "method": "ship"})
    assert no_carrier.status_code == 422
    assert set(no_carrier.json["errors"]["json"]) == {"carrier", "tracking_number"}
    dispensed = client.post(url, headers=tech, json={"to": "dispensed", "method": "ship", "carrier": "USPS",
                                                     "tracking_number": "9400111899223344556677"})
    assert dispensed.status_code == 200
    # It left today; the parcel arrives in 2 days, when the 30 days start: covered through Dec 24.
    assert (dispensed.json["state"], dispensed.json["dispensed_on"], dispensed.json["supply_starts_on"],
            dispensed.json["run_out_date"]) == ("dispensed", "2026-11-23", "2026-11-25", "2026-12-24")
    assert dispensed.json["next_steps"] == []
    again = client.post(url, headers=ph, json={"to": "cancelled", "reason": "too late"})
    assert again.status_code == 409 and again.json["code"] == "invalid_transition"
    assert again.json["message"] == "An order that is dispensed cannot be cancelled; dispensed orders are final."
    label = client.get(f"/api/v1/orders/{oid}/label.pdf", headers=tech)
    assert label.status_code == 200 and label.mimetype == "application/pdf"
    content = PdfReader(io.BytesIO(label.data)).pages[0].extract_text().replace("\u00a0", " ")
    assert "Ida Integration" in content and "Naltrexone 4.5 mg capsules" in content
    label.close()
    detail = client.get(f"/api/v1/prescriptions/{rx_id}", headers=tech).json
    assert (detail["refills_used"], detail["refills_left"]) == (0, 1)
    assert [o["state"] for o in detail["orders"]] == ["dispensed"]


def test_the_api_needs_a_token(app: Flask, client: FlaskClient, staff: dict) -> None:
    for method, path in [("GET", "/api/v1/patients"), ("POST", "/api/v1/prescriptions"), ("GET", "/api/v1/orders"),
                         ("POST", "/api/v1/orders/1/transitions"), ("GET", "/api/v1/recall?ingredient_lot=X")]:
        response = client.open(path, method=method, json={"to": "verified"} if method == "POST" else None)
        assert response.status_code == 401, path
        assert response.json["code"] == "not_authenticated"
    bad = client.get("/api/v1/orders", headers={"Authorization": "Bearer not-a-token"})
    assert bad.status_code == 401


@pytest.mark.parametrize(("change", "where", "field"), [
    ({"dose_mg": 0}, "json", "dose_mg"),
    ({"dose_mg": "-4.5"}, "json", "dose_mg"),
    ({"dose_mg": "1e9"}, "json", "dose_mg"),
    ({"dose_mg": True}, "json", "dose_mg"),
    ({"dose_mg": "4"}, "json", "dose_mg"),  # not a whole number of 4.5 mg capsules
    ({"titration": [{"dose_mg": "4.5", "days": 0}]}, "json", "titration"),
    ({"quantity": "45"}, "json", "quantity"),  # 45 capsules last 45 days, not 30
    ({"days_supply": None}, "json", "quantity"),  # neither quantity nor days supply
    ({"patient_id": 999999}, "json", "patient_id"),
    ({"patient_id": "abc"}, "json", "patient_id"),
    ({"formula_id": 999999}, "json", "formula_id"),
    ({"form": "tablet"}, "json", "form"),
    ({"form": "transdermal_cream"}, "json", "form"),
    ({"expiry_date": "2026-11-19"}, "json", "expiry_date"),
    ({"written_date": "2027-01-01"}, "json", "written_date"),
    ({"written_date": "20/11/2026"}, "json", "written_date"),
    ({"surprise": 1}, "json", "surprise"),
])
def test_bad_prescriptions_are_422_with_field_messages_and_nothing_written(
        app: Flask, client: FlaskClient, staff: dict, tokens: dict, change: dict, where: str, field: str) -> None:
    w = build(app, staff)
    before = (count(app, Prescription), count(app, ScreeningAlert), count(app, AuditEvent))
    body = rx_body(w, **change)
    if change.get("days_supply", 0) is None:
        body.pop("days_supply")
    response = client.post("/api/v1/prescriptions", headers=tokens["pharmacist"], json=body)
    assert response.status_code == 422, response.json
    messages = response.json["errors"][where]
    assert field in messages and all(isinstance(m, str) and m for m in _flat(messages[field]))
    assert (count(app, Prescription), count(app, ScreeningAlert), count(app, AuditEvent)) == before


def _flat(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [m for v in value.values() for m in _flat(v)]
    return list(value) if isinstance(value, list) else [value]


@pytest.mark.parametrize(("body", "field"), [
    ({"first_name": "A", "last_name": "B", "npi": "1234567890"}, "npi"),
    ({"first_name": "A", "last_name": "B", "npi": "12345"}, "npi"),
    ({"first_name": "", "last_name": "B", "npi": "1003000126"}, "first_name"),
    ({"last_name": "B", "npi": "1003000126"}, "first_name"),
])
def test_bad_prescribers_are_422(app: Flask, client: FlaskClient, staff: dict, tokens: dict, body: dict,
                                 field: str) -> None:
    response = client.post("/api/v1/prescribers", headers=tokens["technician"], json=body)
    assert response.status_code == 422 and field in response.json["errors"]["json"]
    assert count(app, Prescriber) == 0


@pytest.mark.parametrize(("body", "field"), [
    ({"first_name": "Ida", "date_of_birth": "1975-02-03"}, "last_name"),
    ({"first_name": "Ida", "last_name": "I", "date_of_birth": "2099-01-01"}, "date_of_birth"),
    ({"first_name": "Ida", "last_name": "I", "date_of_birth": "1975-02-03", "email": "x"}, "email"),
    ({"first_name": "Ida", "last_name": "I", "date_of_birth": "1975-02-03", "medications": "x" * 121}, "medications"),
    ({"first_name": "Ida", "last_name": "I", "date_of_birth": "1975-02-03", "delivery_preference": "drone"},
     "delivery_preference"),
])
def test_bad_patients_are_422(app: Flask, client: FlaskClient, staff: dict, tokens: dict, body: dict,
                              field: str) -> None:
    response = client.post("/api/v1/patients", headers=tokens["technician"], json=body)
    assert response.status_code == 422 and field in response.json["errors"]["json"], response.json
    assert count(app, Patient) == 0


def test_patients_page_get_and_patch(app: Flask, client: FlaskClient, staff: dict, tokens: dict) -> None:
    w = build(app, staff)

    def more() -> None:
        for i in range(3):
            factories.patient(factories.actor(staff["pharmacist"]), first_name="P", last_name=f"Zed{i}")

    run(app, more)
    tech = tokens["technician"]
    first = client.get("/api/v1/patients?per_page=2", headers=tech).json
    assert ([p["last_name"] for p in first["items"]], first["has_next"]) == (["Ellison", "Zed0"], True)
    second = client.get("/api/v1/patients?per_page=2&page=2", headers=tech).json
    assert ([p["last_name"] for p in second["items"]], second["has_next"]) == (["Zed1", "Zed2"], False)
    assert client.get("/api/v1/patients?per_page=0", headers=tech).status_code == 422
    assert client.get("/api/v1/patients?page=x", headers=tech).status_code == 422
    assert client.get("/api/v1/patients", headers=tokens["admin"]).status_code == 403
    one = client.get(f"/api/v1/patients/{w['patient']}", headers=tech)
    assert one.json["last_name"] == "Ellison"
    patched = client.patch(f"/api/v1/patients/{w['patient']}", headers=tech,
                           json={"medications": ["OxyContin 10 mg"], "phone": "(217) 555-0177"})
    assert patched.status_code == 200
    assert (patched.json["medications"], patched.json["phone"], patched.json["first_name"]) == (
        ["OxyContin 10 mg"], "(217) 555-0177", "Margaret")  # the other fields are untouched
    rx = client.get(f"/api/v1/prescriptions/{w['rx']}", headers=tech).json
    assert [a["code"] for a in rx["alerts"]] == ["opioid"] and rx["alerts"][0]["can_override"] is False
    assert client.patch(f"/api/v1/patients/{w['patient']}", headers=tech, json={"last_name": None}).status_code == 422
    assert client.get("/api/v1/patients/424242", headers=tech).status_code == 404
    with app.app_context():
        actions = db.session.execute(sa.select(AuditEvent.action).where(
            AuditEvent.patient_id == w["patient"])).scalars().all()
    assert "patient.view" in actions and "patient.update" in actions


def test_hard_stop_hold_discontinue_and_replace(app: Flask, client: FlaskClient, staff: dict, tokens: dict) -> None:
    w = build(app, staff, patient={"medications": ["Vicodin"]})
    ph, tech = tokens["pharmacist"], tokens["technician"]
    rx = client.get(f"/api/v1/prescriptions/{w['rx']}", headers=tech).json
    alert_id = rx["alerts"][0]["id"]
    hard = client.post(f"/api/v1/prescriptions/{w['rx']}/alerts/{alert_id}/override", headers=ph,
                       json={"reason": "Patient says it was stopped"})
    assert hard.status_code == 409 and "cannot be overridden" in hard.json["message"]
    assert client.post(f"/api/v1/prescriptions/{w['rx'] + 1}/alerts/{alert_id}/override", headers=ph,
                       json={"reason": "wrong prescription"}).status_code == 404
    assert client.post(f"/api/v1/prescriptions/{w['rx']}/alerts/{alert_id}/override", headers=ph,
                       json={}).status_code == 422
    assert client.post(f"/api/v1/prescriptions/{w['rx']}/hold", headers=tech, json={"reason": "x y z"}
                       ).status_code == 403
    short = client.post(f"/api/v1/prescriptions/{w['rx']}/hold", headers=ph, json={"reason": "x"})
    assert short.status_code == 422 and "reason" in short.json["errors"]["json"]
    held = client.post(f"/api/v1/prescriptions/{w['rx']}/hold", headers=ph, json={"reason": "Waiting for labs"})
    assert (held.json["status"], held.json["status_reason"], held.json["can_start_fill"]) == (
        "on_hold", "Waiting for labs", False)
    assert client.post(f"/api/v1/prescriptions/{w['rx']}/fills", headers=tech, json={}).status_code == 409
    assert client.post(f"/api/v1/prescriptions/{w['rx']}/resume", headers=ph).json["status"] == "active"
    replaced = client.post(f"/api/v1/prescriptions/{w['rx']}/replace", headers=ph,
                           json={k: v for k, v in rx_body(w, dose_mg="9").items() if k != "patient_id"})
    assert replaced.status_code == 201, replaced.json
    assert replaced.json["replaces_id"] == w["rx"]
    assert {a["code"] for a in replaced.json["alerts"]} == {"opioid", "dose_not_low_dose"}
    old = client.get(f"/api/v1/prescriptions/{w['rx']}", headers=tech).json
    assert (old["status"], old["replaced_by"]) == ("replaced", [replaced.json["id"]])
    other = client.post(f"/api/v1/prescriptions/{w['rx']}/replace", headers=ph, json=rx_body(w, patient_id=999))
    assert other.status_code == 409  # already closed
    new_id = replaced.json["id"]
    order = client.post(f"/api/v1/prescriptions/{new_id}/fills", headers=tech, json={}).json
    stopped = client.post(f"/api/v1/prescriptions/{new_id}/discontinue", headers=ph,
                          json={"reason": "Opioid therapy continues"})
    assert stopped.status_code == 200 and stopped.json["status"] == "discontinued"
    assert [o["state"] for o in stopped.json["orders"]] == ["cancelled"]
    assert client.get(f"/api/v1/orders/{order['id']}", headers=tech).json["cancel_reason"] == (
        "Prescription discontinued: Opioid therapy continues")


def test_illegal_moves_and_bad_transition_bodies(app: Flask, client: FlaskClient, staff: dict, tokens: dict) -> None:
    w = build(app, staff)
    oid = client.post(f"/api/v1/prescriptions/{w['rx']}/fills", headers=tokens["technician"], json={}).json["id"]
    url = f"/api/v1/orders/{oid}/transitions"
    ph = tokens["pharmacist"]
    skip = client.post(url, headers=ph, json={"to": "ready"})
    assert skip.status_code == 409
    assert skip.json["message"] == ("An order that is only requested cannot be made ready; it must be verified, "
                                    "compounded and checked first.")
    for body, field in [({}, "to"), ({"to": "flying"}, "to"), ({"to": "compounding", "lots": []}, "lots"),
                        ({"to": "compounding", "lots": [{"ingredient_lot_id": "x", "quantity_used": "1"}]}, "lots"),
                        ({"to": "compounding", "quantity_made": "NaN"}, "quantity_made"),
                        ({"to": "on_hold", "reason": ""}, "reason"), ({"to": "verified", "reason": "why"}, "reason"),
                        ({"to": "dispensed", "method": "drone"}, "method")]:
        response = client.post(url, headers=ph, json=body)
        assert response.status_code == 422 and field in response.json["errors"]["json"], (body, response.json)
    not_json = client.post(url, headers={**ph, "Content-Type": "application/json"}, data="[1, 2")
    assert not_json.status_code in (400, 422)
    listy = client.post(url, headers=ph, json=[{"to": "verified"}])
    assert listy.status_code == 422
    assert client.post("/api/v1/orders/2147483648/transitions", headers=ph, json={"to": "verified"}
                       ).status_code == 404
    assert client.get("/api/v1/orders/424242", headers=ph).status_code == 404
    with app.app_context():
        assert db.session.get(Order, oid).state.value == "requested"


def test_the_queue_and_recall(app: Flask, client: FlaskClient, staff: dict, tokens: dict) -> None:
    w = build(app, staff)
    tech = tokens["technician"]
    oid = client.post(f"/api/v1/prescriptions/{w['rx']}/fills", headers=tech, json={}).json["id"]
    groups = client.get("/api/v1/orders", headers=tech).json
    assert [g["state"] for g in groups] == ["requested", "verified", "compounding", "checked", "ready", "on_hold"]
    assert groups[0]["count"] == 1 and groups[0]["orders"][0]["id"] == oid
    assert groups[0]["orders"][0]["product"] == "Naltrexone 4.5 mg capsules"
    early = client.get(f"/api/v1/orders/{oid}/label.pdf", headers=tech)
    assert early.status_code == 409 and "lot number" in early.json["message"]
    client.post(f"/api/v1/orders/{oid}/transitions", headers=tokens["pharmacist"], json={"to": "verified"})
    view = client.get(f"/api/v1/orders/{oid}", headers=tech).json
    lots = [{"ingredient_lot_id": c["lots"][0]["id"], "quantity_used": "1"} for c in view["lot_choices"]]
    client.post(f"/api/v1/orders/{oid}/transitions", headers=tech, json={"to": "compounding", "lots": lots,
                                                                         "quantity_made": "30"})
    found = client.get("/api/v1/recall?ingredient_lot=NAL-1", headers=tech).json
    assert "patient_count" in found, found
    assert found["patient_count"] == 1
    assert [(o["order_id"], o["patient_name"], o["reached_patient"]) for o in found["orders"]] == [
        (oid, "Ellison, Margaret", False)]
    assert client.get("/api/v1/recall", headers=tech).status_code == 422
    assert client.get("/api/v1/recall?ingredient_lot=A&order_lot=B", headers=tech).status_code == 422
    assert client.get("/api/v1/recall?ingredient_lot=NAL-1", headers=tokens["admin"]).status_code == 403


def test_the_openapi_document_describes_the_workflow(app: Flask, client: FlaskClient) -> None:
    doc = client.get("/api/v1/openapi.json").json
    paths = doc["paths"]
    for path, method in [("/api/v1/patients", "get"), ("/api/v1/patients", "post"),
                         ("/api/v1/patients/{patient_id}", "patch"), ("/api/v1/prescriptions", "post"),
                         ("/api/v1/prescriptions/{rx_id}/alerts/{alert_id}/override", "post"),
                         ("/api/v1/prescriptions/{rx_id}/fills", "post"), ("/api/v1/orders", "get"),
                         ("/api/v1/orders/{order_id}/transitions", "post"),
                         ("/api/v1/orders/{order_id}/label.pdf", "get"), ("/api/v1/recall", "get")]:
        operation = paths[path][method]
        assert operation["summary"] and operation["summary"].endswith("."), (path, method)
    transition = doc["components"]["schemas"]["OrderTransition"]
    assert transition["required"] == ["to"]
    assert transition["properties"]["to"]["enum"] == ["verified", "plan_batch", "compounding", "checked", "ready",
                                                      "dispensed", "on_hold", "cancelled", "resume"]
    assert "application/pdf" in paths["/api/v1/orders/{order_id}/label.pdf"]["get"]["responses"]["200"]["content"]


@pytest.mark.slow
def test_fuzzing_the_workflow_api_finds_no_server_error(app: Flask, client: FlaskClient, staff: dict,
                                                         tokens: dict) -> None:
    import itertools

    import schemathesis
    from hypothesis.errors import Unsatisfiable

    w = build(app, staff, patient={"conditions": ["ms", "cirrhosis"]})
    oid = client.post(f"/api/v1/prescriptions/{w['rx']}/fills", headers=tokens["technician"], json={}).json["id"]
    with app.app_context():
        alert_id = db.session.execute(sa.select(ScreeningAlert.id).where(
            ScreeningAlert.prescription_id == w["rx"], ScreeningAlert.order_id.is_(None))).scalar_one()
    known = {"patient_id": w["patient"], "rx_id": w["rx"], "order_id": oid, "alert_id": alert_id}
    spec = client.get("/api/v1/openapi.json").get_json()
    schema = schemathesis.openapi.from_dict(spec).include(
        path_regex=r"^/api/v1/(patients|prescribers|prescriptions|orders|recall)")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 21  # with POST /orders/{order_id}/return and /prescriptions/{rx_id}/replaces
    errors: list[str] = []
    for operation, mode in itertools.product(operations, list(schemathesis.GenerationMode)):
        strategy = operation.as_strategy(mode)
        params = {k: v for k, v in known.items() if "{" + k + "}" in operation.path}
        if params and mode == schemathesis.GenerationMode.POSITIVE:
            strategy = strategy | operation.as_strategy(mode, path_parameters=params)  # real rows, too
        try:
            fuzzer(client, strategy, tokens["pharmacist"], errors)()
        except Unsatisfiable:
            assert mode == schemathesis.GenerationMode.NEGATIVE  # nothing to break in an operation without input
    assert errors == []


def test_the_api_marks_the_replacement_and_names_bad_input(app: Flask, client: FlaskClient, staff: dict,
                                                           tokens: dict) -> None:
    from tests.web.test_adopt_replacement import _two

    old_id, new_id = _two(app, staff)
    url = f"/api/v1/prescriptions/{new_id}/replaces"
    bad = client.post(url, json={"old_prescription_id": "x"}, headers=tokens["pharmacist"])
    assert bad.status_code == 422 and "old_prescription_id" in bad.get_json()["errors"]["json"]
    assert client.post(url, json={"old_prescription_id": old_id}, headers=tokens["technician"]).status_code == 403
    ok = client.post(url, json={"old_prescription_id": old_id}, headers=tokens["pharmacist"])
    assert ok.status_code == 200, ok.get_json()
    with app.app_context():
        from pharmacy.prescriptions.models import Prescription
        from pharmacy.prescriptions.rules import RxStatus

        assert db.session.get(Prescription, old_id).status == RxStatus.REPLACED
    again = client.post(url, json={"old_prescription_id": old_id}, headers=tokens["pharmacist"])
    assert again.status_code == 409
