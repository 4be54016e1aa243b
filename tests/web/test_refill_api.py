"""The refill-request JSON API: patients with a signed link and birth date, staff with bearer tokens."""
from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from pharmacy.core import links
from pharmacy.core import services as core_services
from pharmacy.extensions import db
from pharmacy.refills.models import RefillRequest
from pharmacy.refills.rules import RequestSource
from pharmacy.workflows import orders as order_flow
from pharmacy.workflows import refill_requests as refill_flow
from tests import factories

URL = "/api/v1/refill-requests"
DOB = "1968-04-12"


def tries(left: int) -> str:
    return "1 try" if left == 1 else f"{left} tries"


def setup(app: Flask, staff: dict, **rx: Any) -> dict[str, Any]:
    """A dispensed first fill, a refill link, and a bearer token per role; committed."""
    with app.test_request_context("/"):
        w = factories.world(staff, **rx)
        order = order_flow.start_fill(w["pharmacist"], w["rx"].id)
        factories.run_order_to(w, order.id, "dispensed")
        out: dict[str, Any] = {"rx_id": w["rx"].id, "patient_id": w["patient"].id, "w": w,
                               "formula_id": w["formula"].id, "prescriber_id": w["prescriber"].id,
                               "token": links.make_token(links.REFILL, w["patient"].id, w["rx"].id)}
        for role in ("technician", "pharmacist", "admin"):
            _, raw = core_services.issue_token(factories.actor(staff[role]), staff[role].id, "tests")
            out[role] = {"Authorization": f"Bearer {raw}"}
        db.session.commit()
    return out


def open_count(app: Flask, rx_id: int) -> int:
    with app.app_context():
        return db.session.execute(sa.select(sa.func.count()).select_from(RefillRequest).where(
            RefillRequest.prescription_id == rx_id, RefillRequest.state.in_(["open", "awaiting_renewal"]))).scalar_one()


def test_a_patient_asks_with_the_link_and_birth_date_idempotently(app: Flask, client: FlaskClient,
                                                                 staff: dict) -> None:
    d = setup(app, staff)
    first = client.post(URL, json={"token": d["token"], "date_of_birth": DOB, "delivery": "ship"})
    assert first.status_code == 201, first.get_json()
    body = first.get_json()
    assert body["created"] is True
    req = body["request"]
    assert (req["state"], req["source"], req["delivery_method"], req["prescription_id"]) == (
        "open", "api", "ship", d["rx_id"])
    s = body["summary"]
    assert s["product"] == "Naltrexone 4.5 mg capsules" and s["quantity"] == "30 capsules"
    assert (s["price_cents"], s["shipping_cents"], s["total_cents"]) == (5500, 895, 6395)
    # Asked the day the last fill was handed over: the dates wait for too soon (80% used), not the 2-day lead time.
    assert (s["ready_on"], s["arrives_on"], s["run_out"]) == ("2026-12-15", "2026-12-17", "2026-12-22")
    assert s["lead_time_business_days"] == 2 and s["refills_left"] == 5
    assert s["eligibility"]["code"] == "already_requested"
    again = client.post(URL, json={"token": d["token"], "date_of_birth": DOB, "delivery": "ship"})
    assert again.status_code == 200 and again.get_json()["created"] is False
    assert again.get_json()["request"]["id"] == req["id"]
    assert open_count(app, d["rx_id"]) == 1


def test_bad_links_answer_with_their_code(app: Flask, client: FlaskClient, staff: dict, clock: Any) -> None:
    d = setup(app, staff)
    tampered = client.post(URL, json={"token": d["token"][:-4] + "AAAA", "date_of_birth": DOB})
    assert tampered.status_code == 400 and tampered.get_json()["code"] == "invalid"
    with app.test_request_context("/"):
        swapped_patient = factories.patient(d["w"]["pharmacist"], first_name="Eve", email="eve@example.com",
                                            date_of_birth=date(1968, 4, 12))
        swapped = links.make_token(links.REFILL, swapped_patient.id, d["rx_id"])
        db.session.commit()
    response = client.post(URL, json={"token": swapped, "date_of_birth": DOB})
    assert response.status_code == 400 and response.get_json()["code"] == "invalid"
    for left in (4, 3, 2, 1):
        wrong = client.post(URL, json={"token": d["token"], "date_of_birth": "1968-04-13"})
        assert wrong.status_code == 422
        said = wrong.get_json()["errors"]["json"]["date_of_birth"]
        assert said == [f"That does not match. You have {tries(left)} left on this link."]
    locked = client.post(URL, json={"token": d["token"], "date_of_birth": "1968-04-13"},
                         environ_base={"REMOTE_ADDR": "198.51.100.2"})
    assert locked.status_code == 429 and locked.get_json()["code"] == "locked"
    assert open_count(app, d["rx_id"]) == 0
    with app.test_request_context("/"):
        fresh = links.make_token(links.REFILL, d["patient_id"], d["rx_id"])
    clock.advance(timedelta(days=22))
    expired = client.post(URL, json={"token": fresh, "date_of_birth": DOB}, environ_base={"REMOTE_ADDR": "198.51.100.3"})
    assert expired.status_code == 410 and expired.get_json()["code"] == "expired"
    assert "Traceback" not in expired.get_data(as_text=True)


def test_a_used_link_is_refused_once_its_request_is_decided(app: Flask, client: FlaskClient, staff: dict) -> None:
    d = setup(app, staff)
    created = client.post(URL, json={"token": d["token"], "date_of_birth": DOB}).get_json()["request"]
    declined = client.post(f"{URL}/{created['id']}/decline", json={"reason": "Please call us first."},
                           headers=d["pharmacist"])
    assert declined.status_code == 200 and declined.get_json()["state"] == "declined"
    used = client.post(URL, json={"token": d["token"], "date_of_birth": DOB})
    assert used.status_code == 410 and used.get_json()["code"] == "used"


def test_bad_input_gets_field_messages(app: Flask, client: FlaskClient, staff: dict) -> None:
    d = setup(app, staff)
    response = client.post(URL, json={"token": d["token"], "date_of_birth": "12/04/1968", "delivery": "drone"})
    assert response.status_code == 422
    fields = response.get_json()["errors"]["json"]
    assert set(fields) == {"date_of_birth", "delivery"}
    response = client.post(URL, json={"token": d["token"]})
    assert response.status_code == 422 and "date_of_birth" in response.get_json()["errors"]["json"]
    response = client.post(URL, json={"token": d["token"], "date_of_birth": DOB, "surprise": 1})
    assert response.status_code == 422 and "surprise" in response.get_json()["errors"]["json"]
    response = client.post(URL, json={"prescription_id": d["rx_id"]})  # staff's shape without credentials
    assert response.status_code == 401
    response = client.post(URL, json={}, headers=d["technician"])
    assert response.status_code == 422 and "prescription_id" in response.get_json()["errors"]["json"]
    response = client.post(URL, json={"prescription_id": 999999}, headers=d["technician"])
    assert response.status_code == 404
    assert open_count(app, d["rx_id"]) == 0


def test_staff_request_list_and_decide(app: Flask, client: FlaskClient, staff: dict) -> None:
    d = setup(app, staff)
    created = client.post(URL, json={"prescription_id": d["rx_id"], "note": "phoned in"}, headers=d["technician"])
    assert created.status_code == 201
    req = created.get_json()["request"]
    assert (req["source"], req["note"], created.get_json()["summary"]) == ("api", "phoned in", None)
    assert client.post(URL, json={"prescription_id": d["rx_id"]}, headers=d["technician"]).status_code == 200
    assert client.post(URL, json={"prescription_id": d["rx_id"]}, headers=d["admin"]).status_code == 403

    listed = client.get(URL, headers=d["technician"])
    assert listed.status_code == 200
    [item] = listed.get_json()
    assert item["request"]["id"] == req["id"] and item["patient_name"] == "Margaret Ellison"
    assert (item["refills_left"], item["eligibility"]["code"], item["earliest_dispense_date"]) == (
        5, "ok", "2026-12-17")
    assert client.get(URL).status_code == 401
    assert client.get(URL, headers=d["admin"]).status_code == 403

    assert client.post(f"{URL}/{req['id']}/approve", headers=d["technician"]).status_code == 403
    approved = client.post(f"{URL}/{req['id']}/approve", headers=d["pharmacist"])
    assert approved.status_code == 200
    body = approved.get_json()
    assert (body["request_id"], body["fill_number"], body["earliest_dispense_date"], body["price_cents"]) == (
        req["id"], 1, "2026-12-17", 5500)
    again = client.post(f"{URL}/{req['id']}/approve", headers=d["pharmacist"])
    assert again.status_code == 409 and again.get_json()["code"] == "conflict"
    assert client.get(URL, headers=d["technician"]).get_json() == []


def test_decline_and_renewal_over_the_api(app: Flask, client: FlaskClient, staff: dict) -> None:
    d = setup(app, staff, refills_authorized=0)
    req = client.post(URL, json={"prescription_id": d["rx_id"]}, headers=d["technician"]).get_json()["request"]
    assert req["state"] == "awaiting_renewal" and req["renewal_id"] is not None
    response = client.post(f"{URL}/{req['id']}/decline", json={}, headers=d["pharmacist"])
    assert response.status_code == 422 and "reason" in response.get_json()["errors"]["json"]
    renewal = client.post(f"{URL}/{req['id']}/renewal", headers=d["pharmacist"])
    assert renewal.status_code == 200
    assert (renewal.get_json()["id"], renewal.get_json()["state"]) == (req["renewal_id"], "sent")
    assert client.post(f"{URL}/{req['id']}/renewal", headers=d["pharmacist"]).status_code == 409
    assert client.post(f"{URL}/999999/renewal", headers=d["pharmacist"]).status_code == 404


def test_the_patient_path_is_rate_limited_per_address_but_staff_are_not(app: Flask, staff: dict) -> None:
    d = setup(app, staff)
    client = app.test_client()
    statuses = [client.post(URL, json={"token": d["token"], "date_of_birth": DOB}).status_code for _ in range(11)]
    assert statuses == [201] + [200] * 9 + [429]
    assert client.post(URL, json={"token": d["token"], "date_of_birth": DOB},
                       headers={"Authorization": "Bearer not-a-real-token"}).status_code == 429
    with app.test_request_context("/"):
        rx = factories.prescription(d["w"]["pharmacist"], d["patient_id"], d["formula_id"], d["prescriber_id"])
        rx_id = rx.id
        db.session.commit()
    staff_statuses = {client.post(URL, json={"prescription_id": rx_id}, headers=d["technician"]).status_code
                      for _ in range(12)}
    assert staff_statuses == {201, 200}


def test_the_openapi_document_describes_the_endpoints(client: FlaskClient) -> None:
    spec = client.get("/api/v1/openapi.json").get_json()
    paths = spec["paths"]
    assert {"/api/v1/refill-requests", "/api/v1/refill-requests/{request_id}/approve",
            "/api/v1/refill-requests/{request_id}/decline", "/api/v1/refill-requests/{request_id}/renewal"} <= set(paths)
    post = paths["/api/v1/refill-requests"]["post"]
    assert post["summary"].startswith("Ask for a refill")
    assert {"200", "201", "422"} <= set(post["responses"])
    assert paths["/api/v1/refill-requests"]["get"]["summary"].startswith("The open refill requests")


def test_services_and_api_agree_on_idempotency(app: Flask, client: FlaskClient, staff: dict) -> None:
    d = setup(app, staff)
    with app.test_request_context("/"):
        first = refill_flow.request(d["w"]["technician"], d["rx_id"], source=RequestSource.STAFF).request.id
        db.session.commit()
    response = client.post(URL, json={"token": d["token"], "date_of_birth": DOB})
    assert response.status_code == 200 and response.get_json()["request"]["id"] == first


def test_the_pagination_header_is_json_and_documented_as_json(app: Flask, client: FlaskClient, staff: dict) -> None:
    """X-Pagination carries JSON text; the document says so (`content: application/json`), not an object `schema`,
    which OpenAPI reads as `total,1,total_pages,1` — a client following the document misread the header."""
    import json

    d = setup(app, staff)
    assert client.post(URL, json={"prescription_id": d["rx_id"]}, headers=d["technician"]).status_code == 201
    listed = client.get(URL, headers=d["technician"])
    meta = json.loads(listed.headers["X-Pagination"])
    assert (meta["total"], meta["total_pages"], meta["page"]) == (1, 1, 1)

    spec = client.get("/api/v1/openapi.json").get_json()
    header = spec["components"]["headers"]["PAGINATION"]
    assert "schema" not in header
    documented = header["content"]["application/json"]["schema"]
    name = documented["$ref"].rsplit("/", 1)[-1]
    properties = spec["components"]["schemas"][name]["properties"]
    assert set(meta) <= set(properties) and all(properties[k]["type"] == "integer" for k in meta)
    assert spec["paths"]["/api/v1/refill-requests"]["get"]["responses"]["200"]["headers"]["X-Pagination"] == {
        "$ref": "#/components/headers/PAGINATION"}
