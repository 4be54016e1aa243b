"""Every API operation refuses a query parameter it does not document (422 naming it), accepts every one it does,
and asks for the token first. Driven by the app's own OpenAPI document, so an operation added later is covered."""
from __future__ import annotations

import re
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from pharmacy.core import services
from pharmacy.extensions import db
from pharmacy.patients.models import Patient
from tests import factories

METHODS = ("get", "post", "put", "patch", "delete")


@pytest.fixture
def bearer(app: Flask, staff: dict) -> dict[str, str]:
    with app.test_request_context("/"):
        _, raw = services.issue_token(factories.actor(staff["pharmacist"]), staff["pharmacist"].id, "tests")
        db.session.commit()
    return {"Authorization": f"Bearer {raw}"}


def operations(client: FlaskClient) -> list[tuple[str, str, set[str]]]:
    """(method, path with ids filled in, documented query names) for every operation of the document."""
    doc = client.get("/api/v1/openapi.json").json
    out = []
    for path, item in doc["paths"].items():
        shared = item.get("parameters", [])
        for method in METHODS:
            if method not in item:
                continue
            params = shared + item[method].get("parameters", [])
            names = {p["name"] for p in params if p.get("in") == "query"}
            out.append((method, re.sub(r"\{[^}]+\}", "1", path), names))
    return out


def test_every_operation_refuses_an_undocumented_query_parameter(client: FlaskClient, bearer: dict) -> None:
    ops = operations(client)
    assert len(ops) > 40  # the whole API, not a part of it
    for method, path, names in ops:
        assert "colour" not in names
        response = client.open(f"{path}?colour=blue", method=method.upper(), headers=bearer, json={})
        assert response.status_code == 422, (method, path, response.status_code)
        body = response.json
        assert body["code"] == "validation_failed"
        assert body["errors"] == {"query": {"colour": ["Unknown field."]}}, (method, path, body)
        assert "colour" in body["message"]


def test_every_documented_query_parameter_is_taken(client: FlaskClient, bearer: dict) -> None:
    """A documented name is never called unknown, whatever its value (a bad value has its own message)."""
    seen = 0
    for method, path, names in operations(client):
        for name in names:
            seen += 1
            response = client.open(f"{path}?{name}=zz", method=method.upper(), headers=bearer, json={})
            query_errors = ((response.json or {}).get("errors") or {}).get("query") or {}
            assert query_errors.get(name) != ["Unknown field."], (method, path, name, response.json)
    assert seen >= 15


def test_a_misspelt_report_parameter_is_refused_not_ignored(client: FlaskClient, bearer: dict) -> None:
    assert client.get("/api/v1/billing/reports/revenue?months=3", headers=bearer).status_code == 200
    wrong = client.get("/api/v1/billing/reports/revenue?month=3", headers=bearer)
    assert wrong.status_code == 422
    assert wrong.json["errors"] == {"query": {"month": ["Unknown field."]}}
    assert "months" in wrong.json["message"]  # what the operation does take
    paged = client.get("/api/v1/refill-requests?page=1&pagesize=200", headers=bearer)
    assert paged.status_code == 422 and paged.json["errors"] == {"query": {"pagesize": ["Unknown field."]}}
    assert client.get("/api/v1/refill-requests?page=1&page_size=200", headers=bearer).status_code == 200


def test_a_refused_write_saves_nothing(app: Flask, client: FlaskClient, bearer: dict) -> None:
    body: dict[str, Any] = {"first_name": "Quinn", "last_name": "Query", "date_of_birth": "1970-01-01"}
    refused = client.post("/api/v1/patients?notify=yes", headers=bearer, json=body)
    assert refused.status_code == 422
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(Patient)) == 0
    assert client.post("/api/v1/patients", headers=bearer, json=body).status_code == 201


def test_the_token_is_asked_for_before_the_query_is_read(client: FlaskClient) -> None:
    response = client.get("/api/v1/billing/reports/revenue?month=3")
    assert response.status_code == 401
    assert "month" not in response.get_data(as_text=True)
