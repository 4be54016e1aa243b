"""Review of the money side over HTTP: what a cashier typing amounts, or an integration sending them, gets back."""
from __future__ import annotations

import re
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from pharmacy.billing.models import Payment
from pharmacy.extensions import db
from tests.conftest import login

API = "/api/v1/billing"


def count(app: Flask) -> int:
    with app.app_context():
        return db.session.execute(sa.select(sa.func.count()).select_from(Payment)).scalar_one()


def text_of(response: Any) -> str:
    return re.sub(r"\s+", " ", response.get_data(as_text=True))


def test_api_refund_too_large_names_the_field_the_caller_sent(app: Flask, client: FlaskClient,
                                                              filled: dict[str, Any]) -> None:
    """An integration posts {"amount_cents": 2001} to /api/v1/billing/refunds after a $20.00 payment. The 422 says
    {"errors": {"json": {"amount": [...]}}} — a field the API does not have (its input is `amount_cents`, and every
    other amount error of the same request, e.g. 0 or "12.5", is keyed `amount_cents`), so a client mapping errors to
    its fields shows nothing. Right: the service's field message comes back under `amount_cents` in the JSON API."""
    body = {"patient_id": filled["patient_id"], "order_id": filled["order_id"], "method": "card"}
    assert client.post(f"{API}/payments", json={**body, "amount_cents": 2000},
                       headers=filled["technician"]).status_code == 201
    too_much = client.post(f"{API}/refunds", json={**body, "amount_cents": 2001}, headers=filled["technician"])
    assert too_much.status_code == 422
    assert count(app) == 1
    errors = too_much.get_json()["errors"]["json"]
    assert set(errors) == {"amount_cents"}, errors


@pytest.mark.parametrize(("amount", "message"), [
    ("1e3", "Enter an amount, like 45.00."), ("12.345", "Use at most two decimals"),
    ("$-5", "An amount cannot be negative."), ("99999999999999999999999", "Enter at most $100,000.00."),
    ("１０", "Enter an amount, like 45.00."), ("NaN", "Enter an amount, like 45.00."),
])
def test_odd_amounts_typed_at_the_counter_are_refused_with_a_field_message(
        app: Flask, client: FlaskClient, filled: dict[str, Any], amount: str, message: str) -> None:
    """Guard: scientific notation, fractions of a cent, negative after the sign, absurd sizes, full-width digits and
    NaN are refused with a message beside the amount field, and no payment row is written."""
    login(client, filled["staff"]["technician"])
    response = client.post(f"/billing/patients/{filled['patient_id']}/payments",
                           data={"amount": amount, "method": "cash", "order_id": str(filled["order_id"])})
    assert response.status_code == 422
    assert message in text_of(response)
    assert count(app) == 0
