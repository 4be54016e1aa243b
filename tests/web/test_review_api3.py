"""API review 3: what an integrator (the pharmacy's own tools, a bench display) hit on the JSON API, FHIR included.

Each test fails on the current code for the reason its docstring gives, and passes once the defect is fixed."""
from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from pharmacy.billing import services as billing
from pharmacy.billing.rules import PaymentMethod
from pharmacy.compounding.models import Order
from pharmacy.core import services as core_services
from pharmacy.extensions import db
from pharmacy.inventory.models import StockMove
from pharmacy.prescriptions.models import Prescriber
from pharmacy.workflows import inventory as inventory_flow
from pharmacy.workflows import orders as order_flow
from tests import factories
from tests.erx_support import api_token

API = "/api/v1"


def bearer(raw: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {raw}"}


def tokens(app: Flask, staff: dict) -> dict[str, dict[str, str]]:
    out = {}
    with app.test_request_context("/"):
        for role in ("technician", "pharmacist", "admin"):
            _, raw = core_services.issue_token(factories.actor(staff[role]), staff[role].id, "tests")
            out[role] = bearer(raw)
        db.session.commit()
    return out


def test_a_json_api_401_says_how_to_authenticate(app: Flask, client: FlaskClient, staff: dict) -> None:
    """An integration whose token was revoked calls GET /api/v1/refill-requests and gets 401 with no
    WWW-Authenticate header, so its HTTP library does not know a bearer token is wanted (nor that the one sent was
    refused: RFC 6750 §3, `error="invalid_token"`). RFC 9110 §15.5.2: a server generating a 401 MUST send
    WWW-Authenticate. The same app's FHIR API and NCPDP endpoint do (`Bearer realm="fhir"` / `"ncpdp"`), and the
    document's security scheme is `http`/`bearer`. Right: every /api/v1 401 carries `WWW-Authenticate: Bearer …`."""
    for headers in ({}, bearer("not-a-token")):
        response = client.get(f"{API}/refill-requests", headers=headers)
        assert response.status_code == 401 and response.get_json()["code"] == "not_authenticated"
        assert response.headers.get("WWW-Authenticate", "").lower().startswith("bearer"), dict(response.headers)
    fhir = client.get("/fhir/Patient", headers=bearer("not-a-token"))
    assert fhir.status_code == 401 and fhir.headers["WWW-Authenticate"].startswith("Bearer")


def test_the_openapi_document_types_every_amount_and_instant_of_billing(client: FlaskClient) -> None:
    """A client generated from /api/v1/openapi.json reads `amount_cents`, `received_at`, `id` and `patient_id` of
    POST /api/v1/billing/payments (and /refunds) as untyped values: the document lists them with only
    `readOnly: true` — no `type: integer`, no `format: date-time` — because the schema builds them with
    `fields.Function`. So do `band_min_cents`/`band_max_cents` of the price list, `monthly_equivalent_cents` and
    `spent_this_year_cents` of a patient's costs, and `formula_id` of a quote. The billing API promises "amounts are
    integer cents in and out" (billing/api.py, README), and every other `*_cents` in the document is an integer.
    Right: each is documented with its type (integer; a string with format date-time for `received_at`)."""
    schemas = client.get(f"{API}/openapi.json").get_json()["components"]["schemas"]
    untyped = []
    for name, schema in schemas.items():
        for prop, spec in schema.get("properties", {}).items():
            whole = prop.endswith("_cents") or prop.endswith("_id") or prop == "id"
            if whole and spec.get("type") != "integer" and "$ref" not in spec:
                untyped.append(f"{name}.{prop}")
            if prop.endswith("_at") and spec.get("format") != "date-time":
                untyped.append(f"{name}.{prop}")
    assert untyped == [], untyped


def test_a_negative_stock_count_names_the_field_the_caller_sent(app: Flask, client: FlaskClient, staff: dict) -> None:
    """A scale integration posts {"kind": "count", "quantity": "-5"} to /api/v1/inventory/lots/{id}/records. The
    422 says {"errors": {"json": {"counted": ["0 or more."]}}} — `counted` is no field of this API (its body is
    kind, quantity, reason: StockRecord in the document), so a client that maps errors to its fields shows nothing
    beside the quantity it sent. docs/architecture.md: a refusal is "a JSON body {…, "errors": {"json": {field:
    [messages]}}}" naming the caller's field (the billing API renames the service's `amount` to `amount_cents` for
    the same reason). Right: the message comes back under `quantity`; nothing is written."""
    headers = tokens(app, staff)
    with app.test_request_context("/"):
        w = factories.world(staff)
        lot = inventory_flow.receive(w["technician"], {
            "ingredient_name": "Naltrexone hydrochloride USP", "supplier": "Spectrum", "lot_number": "SP-1",
            "expiry_date": date(2027, 12, 31), "quantity": Decimal("5000"), "unit": "mg"})
        lot_id = lot.id
        db.session.commit()
    response = client.post(f"{API}/inventory/lots/{lot_id}/records", json={"kind": "count", "quantity": "-5"},
                           headers=headers["technician"])
    assert response.status_code == 422
    with app.app_context():
        assert db.session.execute(sa.select(sa.func.count()).select_from(StockMove)
                                  .where(StockMove.ingredient_lot_id == lot_id)).scalar_one() == 1  # the receipt
    assert set(response.get_json()["errors"]["json"]) == {"quantity"}, response.get_json()


def test_a_fhir_date_range_search_applies_both_ends(app: Flask, client: FlaskClient, staff: dict) -> None:
    """A FHIR client asks for the patients born in the 1950s the way FHIR R4 writes a range — the parameter
    repeated, both conditions applying (FHIR R4 search.html#combining, "AND": `date=ge2010-01-01&date=le2011-12-31`):
    `/fhir/Patient?birthdate=ge1950-01-01&birthdate=le1959-12-31`. The server reads only the first value
    (fhir/views.search builds its arguments with `request.args.items()`), so Margaret, born 1968, comes back as
    born in the 1950s, and the Bundle's self link drops the upper bound. The JSON API refuses a repeated parameter
    rather than read one of them (core/query_params.py). Right: both ends apply (only Otto, born 1950), or the
    request is refused with an OperationOutcome — never half of it answered."""
    with app.test_request_context("/"):
        w = factories.world(staff)
        otto = factories.patient(w["pharmacist"], first_name="Otto", last_name="Baker", date_of_birth=date(1950, 1, 2))
        otto_id = otto.id
        db.session.commit()
    token = api_token(app, staff["pharmacist"], scope="fhir")
    response = client.get("/fhir/Patient?birthdate=ge1950-01-01&birthdate=le1959-12-31", headers=bearer(token))
    assert response.status_code in (200, 422), response.status_code
    if response.status_code == 200:
        bundle = response.get_json()
        assert [e["resource"]["id"] for e in bundle.get("entry", [])] == [str(otto_id)], bundle


def test_the_order_queue_lists_every_open_order_it_counts(app: Flask, client: FlaskClient, staff: dict) -> None:
    """A bench display polls GET /api/v1/orders ("the open orders grouped by state, with counts"). With 51 new
    orders the `requested` group says `count: 51` and lists 50: the API calls compounding/queries.queue with its page
    size (50 a state) and page 1, and the operation takes no `page` or `state` parameter (an unknown query parameter is
    a 422), so the 51st order — the newest — can never be fetched from the list. The HTML board pages each step
    (`/orders?state=requested&page=2`); the API neither pages nor says it truncated. Right: every counted order is
    reachable — the list holds all of them, or the operation pages (`?state=…&page=…`, X-Pagination)."""
    headers = tokens(app, staff)
    with app.test_request_context("/"):
        w = factories.world(staff)
        ids = [order_flow.start_fill(w["pharmacist"], w["rx"].id).id]
        for i in range(50):
            p = factories.patient(w["pharmacist"], first_name=f"P{i:02d}", last_name="Queue", email=None)
            rx = factories.prescription(w["pharmacist"], p.id, w["formula"].id, w["prescriber"].id)
            ids.append(order_flow.start_fill(w["pharmacist"], rx.id).id)
        db.session.commit()
    groups = {g["state"]: g for g in client.get(f"{API}/orders", headers=headers["pharmacist"]).get_json()}
    requested = groups["requested"]
    assert requested["count"] == 51
    listed = [o["id"] for o in requested["orders"]]
    paged = client.get(f"{API}/orders?state=requested&page=2", headers=headers["pharmacist"])
    if paged.status_code == 200:
        listed += [o["id"] for g in paged.get_json() if g["state"] == "requested" for o in g["orders"]]
    assert sorted(set(listed)) == sorted(ids), f"{len(set(listed))} of {len(ids)} reachable"


def test_an_order_started_on_a_hard_stopped_prescription_cannot_go_further(app: Flask, client: FlaskClient,
                                                                             staff: dict) -> None:
    """GET /api/v1/prescriptions/{id} of a 9 mg prescription (a hard stop: "dose above 6 mg — nobody may override")
    says `blocked: true`, `can_start_fill: false`. The reviewer found POST …/fills still answers 201. Decided
    (docs/domain.md, "A hard stop looks blocked from the moment it is found"): `can_start_fill` is the pages' advice;
    an order started anyway (the API, a refill request, an e-prescription) is shown in red in the queue and can never
    be verified — the check that matters. Here: the order's verification is refused with 409, naming the stop."""
    headers = tokens(app, staff)
    with app.test_request_context("/"):
        w = factories.world(staff, dose_mg=Decimal("9"))
        rx_id = w["rx"].id
        db.session.commit()
    view = client.get(f"{API}/prescriptions/{rx_id}", headers=headers["technician"]).get_json()
    assert view["blocked"] is True and view["can_start_fill"] is False
    assert any(a["severity"] == "hard_stop" for a in view["alerts"])
    response = client.post(f"{API}/prescriptions/{rx_id}/fills", json={}, headers=headers["technician"])
    assert response.status_code == 201, response.get_json()
    order_id = response.get_json()["id"]
    verify = client.post(f"{API}/orders/{order_id}/transitions", json={"to": "verified"},
                         headers=headers["pharmacist"])
    assert verify.status_code == 409 and "6 mg" in verify.get_json()["message"], verify.get_json()
    with app.app_context():
        assert db.session.get(Order, order_id).state.value == "requested"



def test_a_patients_costs_page_two_does_not_repeat_page_one_s_payments(app: Flask, client: FlaskClient,
                                                                       filled: dict) -> None:
    """The pharmacy's accounting tool walks GET /api/v1/billing/patients/{id}/costs?page=1, 2, … (the operation's
    only parameter, `page`; `has_next` says when to stop) to reconcile a patient's payments. With 55 payments on file
    page 1 and page 2 carry the same 50 newest payments, and the 5 oldest are on no page at all: `payments` is always
    the latest 50 (billing/services._payment_lines, PAYMENTS_SHOWN) whatever the page, while `fills` is paged. A
    paged answer that repeats items and hides others breaks every client that follows it. Right: the payments are
    paged with the page (or by a page of their own, with `has_next` covering them) so each payment is on exactly
    one page."""
    pid = filled["patient_id"]
    with app.test_request_context("/"):
        tech = factories.actor(filled["staff"]["technician"])
        for i in range(55):
            billing.record_payment(tech, patient_id=pid, order_id=None, method=PaymentMethod.CASH, amount_cents=100 + i)
        db.session.commit()
    seen: list[int] = []
    for page in range(1, 10):
        body = client.get(f"{API}/billing/patients/{pid}/costs?page={page}", headers=filled["technician"]).get_json()
        seen += [p["id"] for p in body["payments"]]
        if not body["has_next"]:
            break
    assert len(seen) == len(set(seen)), "a payment was listed on two pages"
    assert len(set(seen)) == 55, f"{len(set(seen))} of 55 payments reachable"


def test_a_patch_sent_as_a_form_is_refused_not_answered_200(app: Flask, client: FlaskClient, filled: dict) -> None:
    """An integration sends PATCH /api/v1/patients/{id} with `first_name=Maggie` form-encoded (a common slip: the
    HTTP library's `data=` instead of `json=`). The answer is 200 with the unchanged record: webargs reads no JSON
    body from a form, the patch schema is partial, so "nothing to change" is a success — the caller believes the name
    was saved. The document lists only `application/json` for this request body. Right: a body that is not JSON is
    refused (415 Unsupported Media Type, or 422 naming the body), and nothing changes."""
    pid = filled["patient_id"]
    response = client.patch(f"{API}/patients/{pid}", data={"first_name": "Maggie"}, headers=filled["technician"])
    assert response.status_code in (415, 422), (response.status_code, response.get_json())
    assert response.get_json()["code"] and response.get_json()["status"] == response.status_code


def test_following_fhir_next_links_ends(app: Flask, client: FlaskClient, staff: dict) -> None:
    """A FHIR client pages /fhir/Practitioner?_count=1 by following `next` links until there is none (FHIR R4
    http.html#paging). Past page 10,000 the server clamps `_page` silently (fhir/services._paging, MAX_PAGE) but
    still offers `next` (views.search: page × count < total): `_page=10001` answers page 10,000 again, whose `next`
    is `_page=10001` again — the client receives the same entry for ever and never sees the rest. Right: `next` is
    offered only for a page the server will serve, or a page past the limit is refused (422 OperationOutcome), never
    answered with another page's entries."""
    with app.test_request_context("/"):
        at = datetime(2026, 1, 1, tzinfo=UTC)
        db.session.execute(sa.insert(Prescriber), [
            {"first_name": "Pat", "last_name": f"Doc{i:05d}", "npi": f"1{i:09d}", "created_at": at}
            for i in range(10_002)])
        db.session.commit()
    token = bearer(api_token(app, staff["pharmacist"], scope="fhir"))
    last = client.get("/fhir/Practitioner?_count=1&_page=10000", headers=token).get_json()
    links = {link["relation"]: link["url"] for link in last["link"]}
    assert last["total"] == 10_002
    if "next" in links:
        after = client.get(links["next"].replace("http://localhost", ""), headers=token)
        if after.status_code == 200:
            assert after.get_json()["entry"][0]["resource"]["id"] != last["entry"][0]["resource"]["id"], \
                "the next page repeated the page before it"

