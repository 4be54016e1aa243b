"""Every server error a fuzz run ever found, kept as an explicit case so `make test` checks it on every run.

Found by schemathesis (the suite's own fuzz on PostgreSQL) and by the attack run of the "Health data held
tight" issue. Each case must answer a 4xx with a JSON error and leave nothing behind.
"""
from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from flask.testing import FlaskClient

from pharmacy.core import services
from pharmacy.extensions import db
from pharmacy.refills.models import RefillRequest
from tests import factories

API = "/api/v1"


@pytest.fixture
def token(app: Any, staff: dict[str, Any]) -> str:
    with app.test_request_context("/"):
        factories.world(staff)
        _, raw = services.issue_token(factories.actor(staff["pharmacist"]), staff["pharmacist"].id, "regressions")
        db.session.commit()
    return raw


def _requests(app: Any) -> int:
    with app.app_context():
        return db.session.execute(sa.select(sa.func.count()).select_from(RefillRequest)).scalar_one()


@pytest.mark.parametrize("body", [
    {"prescription_id": 8916334393105271898546094961852416},  # beyond 64 bits: a DataError on PostgreSQL
    {"prescription_id": 2**31},  # beyond the 32-bit id columns
    {"prescription_id": -(2**63) - 1},
])
def test_an_integer_beyond_the_columns_is_a_422(app: Any, client: FlaskClient, token: str, body: dict) -> None:
    before = _requests(app)
    response = client.post(f"{API}/refill-requests", json=body, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 422, response.get_data(as_text=True)
    assert "prescription_id" in response.get_json()["errors"]["json"]
    assert _requests(app) == before


def test_a_lone_surrogate_is_a_422_naming_the_field_even_for_anonymous_callers(client: FlaskClient) -> None:
    raw = b'{"token": "abcdefghijkl\\ud800", "date_of_birth": "1970-01-01"}'
    response = client.post(f"{API}/refill-requests", data=raw, content_type="application/json")
    assert response.status_code == 422, response.get_data(as_text=True)
    body = response.get_json()
    assert body["code"] == "validation_failed"
    assert "Unicode" in body["message"]
    assert body["errors"]["json"] == {"token": ["Contains a character that is not allowed."]}


@pytest.mark.parametrize(("raw", "field"), [
    (b'{"note\\udfff": "x"}', "body"),
    (b'{"lots": [{"quantity_used": "\\ud83d"}]}', "lots[0].quantity_used"),
])
def test_a_surrogate_in_a_key_or_a_nested_value_is_refused(client: FlaskClient, token: str, raw: bytes,
                                                           field: str) -> None:
    response = client.post(f"{API}/refill-requests", data=raw, content_type="application/json",
                           headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 422, raw
    assert list(response.get_json()["errors"]["json"]) == [field]


def test_a_paired_surrogate_is_ordinary_text(client: FlaskClient, token: str) -> None:
    """An emoji escaped as a surrogate pair is valid text: it reaches the schema, which answers as usual."""
    raw = b'{"prescription_id": "\\ud83d\\ude00"}'
    response = client.post(f"{API}/refill-requests", data=raw, content_type="application/json",
                           headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 422


def test_json_nested_100000_deep_is_a_400(client: FlaskClient) -> None:
    raw = b"[" * 100_000 + b"]" * 100_000
    response = client.post(f"{API}/refill-requests", data=raw, content_type="application/json")
    assert response.status_code in (400, 413), response.status_code
    assert response.get_json()["code"] in ("bad_request", "request_entity_too_large")


def test_json_nested_deeper_than_the_limit_is_refused_but_not_a_shallow_body(client: FlaskClient, token: str) -> None:
    deep = b'{"a":' * 40 + b"1" + b"}" * 40
    assert client.post(f"{API}/refill-requests", data=deep, content_type="application/json").status_code == 400
    brackets_in_text = b'{"note": "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["}'
    response = client.post(f"{API}/refill-requests", data=brackets_in_text, content_type="application/json",
                           headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 422  # reaches the schema: brackets inside a string are not nesting


@pytest.mark.parametrize("shipping_days", [2.5890419884777833e-42, 2.5, "2.5"])
def test_a_fraction_where_a_whole_number_belongs_is_a_422_not_truncated(app: Any, client: FlaskClient, token: str,
                                                                       shipping_days: object) -> None:
    """Found by `make fuzz` (schemathesis, negative data): 2.6e-42 shipping days was read as 0 and the patient made."""
    from pharmacy.patients.models import Patient

    body = {"first_name": "Ada", "last_name": "Quinn", "date_of_birth": "1970-01-01", "phone": "(217) 555-0199",
            "shipping_days": shipping_days}
    with app.app_context():
        before = db.session.execute(sa.select(sa.func.count()).select_from(Patient)).scalar_one()
    response = client.post(f"{API}/patients", json=body, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 422, response.get_data(as_text=True)
    assert "shipping_days" in response.get_json()["errors"]["json"]
    with app.app_context():
        assert db.session.execute(sa.select(sa.func.count()).select_from(Patient)).scalar_one() == before
    whole = client.post(f"{API}/patients", json={**body, "shipping_days": 2.0}, headers={"Authorization": f"Bearer {token}"})
    assert whole.status_code == 201, whole.get_data(as_text=True)  # a whole number written with a point is fine


@pytest.mark.parametrize("opt_in", [0, 1, 1.0, [], {}])
def test_a_number_where_a_yes_no_belongs_is_a_422_not_guessed(app: Any, client: FlaskClient, token: str,
                                                              opt_in: object) -> None:
    """Found by `make fuzz` (schemathesis, negative data): `"reminders_opt_in": 0` was read as "no reminders" and the
    patient made. true/false (and a form's text) are read; nothing else is."""
    from pharmacy.patients.models import Patient

    body = {"first_name": "Bea", "last_name": "Flagg", "date_of_birth": "1970-01-01", "reminders_opt_in": opt_in}
    with app.app_context():
        before = db.session.execute(sa.select(sa.func.count()).select_from(Patient)).scalar_one()
    response = client.post(f"{API}/patients", json=body, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 422, response.get_data(as_text=True)
    assert response.get_json()["errors"]["json"] == {"reminders_opt_in": ["Not a valid boolean."]}
    with app.app_context():
        assert db.session.execute(sa.select(sa.func.count()).select_from(Patient)).scalar_one() == before
    no = client.post(f"{API}/patients", json={**body, "reminders_opt_in": False}, headers={"Authorization": f"Bearer {token}"})
    assert no.status_code == 201 and no.get_json()["reminders_opt_in"] is False


def test_a_query_yes_no_is_still_read_from_text(app: Any, client: FlaskClient, staff: dict[str, Any],
                                                token: str) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    with app.test_request_context("/"):
        _, admin = services.issue_token(factories.actor(staff["admin"]), staff["admin"].id, "prices")
        db.session.commit()
    entry = client.get(f"{API}/billing/prices", headers=headers).get_json()["entries"][0]["id"]
    retired = client.post(f"{API}/billing/prices/{entry}/retire", headers={"Authorization": f"Bearer {admin}"})
    assert retired.status_code == 200, retired.get_json()
    for text, shown in (("true", True), ("false", False), ("on", True)):
        ids = [e["id"] for e in client.get(f"{API}/billing/prices?include_retired={text}",
                                             headers=headers).get_json()["entries"]]
        assert (entry in ids) is shown, text
    refused = client.get(f"{API}/billing/prices?include_retired=maybe", headers=headers)
    assert refused.status_code == 422
    assert refused.get_json()["errors"] == {"query": {"include_retired": ["Not a valid boolean."]}}


@pytest.mark.parametrize("field", ["allergies", "conditions", "medications"])
def test_text_where_a_list_belongs_is_a_422_on_the_api(app: Any, client: FlaskClient, token: str, field: str) -> None:
    """Found by `make fuzz`: `"allergies": "AAA"` was split into a list as if it came from the form's textarea."""
    from pharmacy.patients.models import Patient

    body = {"first_name": "Lia", "last_name": "Listes", "date_of_birth": "1970-01-01", field: "penicillin"}
    with app.app_context():
        before = db.session.execute(sa.select(sa.func.count()).select_from(Patient)).scalar_one()
    response = client.post(f"{API}/patients", json=body, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 422, response.get_data(as_text=True)
    assert response.get_json()["errors"]["json"] == {field: ["Not a valid list."]}
    with app.app_context():
        assert db.session.execute(sa.select(sa.func.count()).select_from(Patient)).scalar_one() == before
    listed = client.post(f"{API}/patients", json={**body, field: ["penicillin"]},
                         headers={"Authorization": f"Bearer {token}"})
    assert listed.status_code == 201 and listed.get_json()[field] == ["penicillin"]


@pytest.mark.parametrize(("path", "name"), [
    ("/billing/reports/fills-by-form?months=5&months=zz", "months"),  # make fuzz, 2026-12-07: 200 with months=5
    ("/billing/reports/average-monthly-cost?months=5&months=6", "months"),
    ("/billing/reports/outstanding?limit=5&limit=%5B123%5D", "limit"),
    ("/refill-requests?page=1&page=2", "page"),
])
def test_a_query_parameter_given_twice_is_a_422_naming_it(client: FlaskClient, token: str, path: str,
                                                          name: str) -> None:
    """webargs read the first value and dropped the rest: a 200 for a query it had not understood."""
    response = client.get(API + path, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 422, response.get_json()
    assert response.get_json()["errors"]["query"] == {name: ["Give one value."]}
    once = client.get(API + path.split("&")[0], headers={"Authorization": f"Bearer {token}"})
    assert once.status_code == 200
