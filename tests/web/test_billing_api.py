"""The billing JSON API over HTTP: exact cents, 422 with field messages for bad input (nothing recorded),
PDC with shifted overlap, and a schemathesis fuzz run that must find no server error.
"""
from __future__ import annotations

import itertools
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient
from hypothesis.errors import Unsatisfiable

from pharmacy.billing.models import Payment
from pharmacy.compounding.models import Order
from pharmacy.compounding.rules import DeliveryMethod, OrderState
from pharmacy.core.context import now, today
from pharmacy.extensions import db
from pharmacy.workflows import orders as order_flow
from tests.fuzzing import fuzzer

API = "/api/v1/billing"


def payments(app: Flask) -> int:
    with app.app_context():
        return db.session.execute(sa.select(sa.func.count()).select_from(Payment)).scalar_one()


def post_payment(client: FlaskClient, filled: dict[str, Any], cents: Any, *, kind: str = "payments", who: str = "technician",
                 **extra: Any) -> Any:
    body = {"patient_id": filled["patient_id"], "order_id": filled["order_id"], "method": "card", "amount_cents": cents, **extra}
    return client.post(f"{API}/{kind}", json=body, headers=filled[who])


def test_anonymous_callers_get_401(client: FlaskClient, filled: dict[str, Any]) -> None:
    response = client.post(f"{API}/payments", json={"amount_cents": "nonsense"})
    assert response.status_code == 401 and response.get_json()["code"] == "not_authenticated"
    assert client.get(f"{API}/prices").status_code == 401


def test_price_list_and_out_of_band_confirmation(client: FlaskClient, filled: dict[str, Any]) -> None:
    listing = client.get(f"{API}/prices", headers=filled["technician"]).get_json()
    assert listing["shipping_cents"] == 895 and (listing["band_min_cents"], listing["band_max_cents"]) == (4500, 10000)
    assert [(e["quantity"], e["price_cents"], e["monthly_equivalent_cents"], e["band"]) for e in listing["entries"]] == [
        ("30", 5500, 5500, "within"), ("90", 15500, 5167, "within")]
    body = {"formula_id": filled["formula_id"], "quantity": "90", "days_supply": 90, "price_cents": 12900}
    refused = client.post(f"{API}/prices", json=body, headers=filled["admin"])
    assert refused.status_code == 422
    assert refused.get_json()["code"] == "price_out_of_band"
    assert "$43.00 a month is below" in refused.get_json()["errors"]["json"]["accept_out_of_band"][0]
    saved = client.post(f"{API}/prices", json={**body, "accept_out_of_band": True}, headers=filled["admin"])
    assert saved.status_code == 201
    entry = saved.get_json()
    assert (entry["monthly_equivalent_cents"], entry["band"], entry["out_of_band"]) == (4300, "below", True)
    assert client.post(f"{API}/prices", json=body, headers=filled["pharmacist"]).status_code == 403
    history = client.get(f"{API}/prices?include_retired=true&formula_id={filled['formula_id']}",
                         headers=filled["admin"]).get_json()
    assert [(e["price_cents"], e["retired_at"] is None) for e in history["entries"] if e["quantity"] == "90"] == [
        (12900, True), (15500, False)]
    flagged = client.get(f"{API}/reports/out-of-band", headers=filled["admin"]).get_json()
    assert [e["id"] for e in flagged] == [entry["id"]]
    retired = client.post(f"{API}/prices/{entry['id']}/retire", headers=filled["admin"])
    assert retired.status_code == 200 and retired.get_json()["retired_at"] is not None
    assert client.post(f"{API}/prices/{entry['id']}/retire", headers=filled["admin"]).status_code == 409


def test_price_change_does_not_touch_the_order_snapshot(app: Flask, client: FlaskClient, filled: dict[str, Any]) -> None:
    body = {"formula_id": filled["formula_id"], "quantity": "30", "days_supply": 30, "price_cents": 6500}
    assert client.post(f"{API}/prices", json=body, headers=filled["admin"]).status_code == 201
    assert client.put(f"{API}/fees/shipping", json={"amount_cents": 1250}, headers=filled["admin"]).get_json() == {
        "amount_cents": 1250}
    with app.app_context():
        order = db.session.get(Order, filled["order_id"])
        assert (order.price_cents, order.shipping_cents) == (5500, 0)
    quote = client.get(f"{API}/quote?formula_id={filled['formula_id']}&quantity=30&delivery=ship", headers=filled["technician"])
    assert quote.get_json()["total_cents"] == 6500 + 1250


def test_quote(client: FlaskClient, filled: dict[str, Any]) -> None:
    q = client.get(f"{API}/quote?formula_id={filled['formula_id']}&quantity=45&delivery=ship", headers=filled["technician"])
    assert q.status_code == 200
    assert {k: q.get_json()[k] for k in ("price_cents", "shipping_cents", "total_cents", "prorated", "days_supply",
                                         "monthly_equivalent_cents", "band", "quantity")} == {
        "price_cents": 8250, "shipping_cents": 895, "total_cents": 9145, "prorated": True, "days_supply": 45,
        "monthly_equivalent_cents": 5500, "band": "within", "quantity": "45"}
    bad = client.get(f"{API}/quote?formula_id={filled['formula_id']}&quantity=lots", headers=filled["technician"])
    assert bad.status_code == 422 and "quantity" in bad.get_json()["errors"]["query"]
    missing = client.get(f"{API}/quote?formula_id=999999&quantity=30", headers=filled["technician"])
    assert missing.status_code == 422 and "formula_id" in missing.get_json()["errors"]["json"]


def test_payments_to_the_cent_and_overpayment_as_credit(app: Flask, client: FlaskClient, filled: dict[str, Any]) -> None:
    first = post_payment(client, filled, 3333)
    assert first.status_code == 201
    data = first.get_json()
    assert data["receipt_number"] == f"R2026-{data['id']:06d}" and data["kind"] == "payment"
    assert data["order_balance"]["balance_cents"] == 5500 - 3333
    post_payment(client, filled, 3333)
    third = post_payment(client, filled, 3333, method="hsa_fsa").get_json()
    assert third["balance"] == {"charged_cents": 5500, "paid_cents": 9999, "refunded_cents": 0, "net_paid_cents": 9999,
                                "balance_cents": -4499, "owed_cents": 0, "credit_cents": 4499}
    back = post_payment(client, filled, 4499, kind="refunds", method="cash").get_json()
    assert back["kind"] == "refund" and back["balance"]["balance_cents"] == 0
    balance = client.get(f"{API}/patients/{filled['patient_id']}/balance", headers=filled["pharmacist"]).get_json()
    assert (balance["paid_cents"], balance["refunded_cents"], balance["balance_cents"]) == (9999, 4499, 0)
    assert payments(app) == 4


@pytest.mark.parametrize(("cents", "extra", "field"), [
    (-500, {}, "amount_cents"), (0, {}, "amount_cents"), ("33.33", {}, "amount_cents"), (33.33, {}, "amount_cents"),
    ("abc", {}, "amount_cents"), (True, {}, "amount_cents"), (10_000_001, {}, "amount_cents"),
    (1000, {"method": "bitcoin"}, "method"), (1000, {"order_id": 2**40}, "order_id"),
    (1000, {"note": "bad\x00byte"}, "note"), (1000, {"reference": "\ud800"}, "reference"),
])
def test_bad_payments_are_422_with_a_field_message(app: Flask, client: FlaskClient, filled: dict[str, Any], cents: Any,
                                                   extra: dict[str, Any], field: str) -> None:
    response = post_payment(client, filled, cents, **extra)
    assert response.status_code == 422
    assert field in response.get_json()["errors"]["json"]
    assert payments(app) == 0


def test_refund_larger_than_paid_and_cancelled_order(app: Flask, client: FlaskClient, filled: dict[str, Any]) -> None:
    post_payment(client, filled, 2000)
    too_much = post_payment(client, filled, 2001, kind="refunds")
    assert too_much.status_code == 422
    assert too_much.get_json()["errors"]["json"]["amount_cents"] == ["A refund cannot be more than what was paid ($20.00)."]
    assert payments(app) == 1
    with app.test_request_context("/"):
        order_flow.cancel(filled["world"]["pharmacist"], filled["order_id"], "patient moved away")
        db.session.commit()
    refused = post_payment(client, filled, 100)
    assert refused.status_code == 422 and refused.get_json()["code"] == "payment_refused"
    assert "cancelled" in refused.get_json()["errors"]["json"]["order_id"][0]
    assert payments(app) == 1
    assert post_payment(client, filled, 2000, kind="refunds").status_code == 201  # money back on a cancelled order
    assert post_payment(client, filled, 1, who="admin").status_code == 403


def test_patient_costs(client: FlaskClient, filled: dict[str, Any]) -> None:
    post_payment(client, filled, 5000)
    costs = client.get(f"{API}/patients/{filled['patient_id']}/costs", headers=filled["technician"]).get_json()
    assert costs["monthly_equivalent_cents"] == 5500 and costs["spent_this_year_cents"] == 5000
    assert costs["balance"]["owed_cents"] == 500
    assert [(f["order_id"], f["state"], f["charged"], f["balance_cents"]) for f in costs["fills"]] == [
        (filled["order_id"], "ready", True, 500)]
    assert costs["regimen"][0]["total_cents"] == 5500 and costs["statement_years"] == [2026]
    assert client.get(f"{API}/patients/999999/costs", headers=filled["technician"]).status_code == 404
    assert client.get(f"{API}/patients/{filled['patient_id']}/costs", headers=filled["admin"]).status_code == 403


def test_money_reports(client: FlaskClient, filled: dict[str, Any]) -> None:
    post_payment(client, filled, 1234)
    revenue = client.get(f"{API}/reports/revenue?months=3", headers=filled["pharmacist"]).get_json()
    assert [(m["month"], m["net_cents"]) for m in revenue] == [("2026-09", 0), ("2026-10", 0), ("2026-11", 1234)]
    outstanding = client.get(f"{API}/reports/outstanding?limit=5", headers=filled["admin"]).get_json()
    assert outstanding["total_owed_cents"] == 5500 - 1234 and outstanding["rows"][0]["owed_cents"] == 4266
    assert client.get(f"{API}/reports/revenue?months=0", headers=filled["admin"]).status_code == 422
    assert client.get(f"{API}/reports/revenue", headers=filled["technician"]).status_code == 403
    forms = client.get(f"{API}/reports/fills-by-form", headers=filled["admin"]).get_json()
    assert [f["form"] for f in forms] == ["capsule", "sublingual_liquid", "transdermal_cream"]
    assert client.get(f"{API}/reports/average-monthly-cost", headers=filled["admin"]).get_json()["patients"] == 0


def _past_fill(filled: dict[str, Any], days_ago: int, days: int) -> None:
    rx_id, patient_id = filled["rx_id"], filled["patient_id"]
    fill = db.session.execute(sa.select(sa.func.max(Order.fill_number)).where(Order.prescription_id == rx_id)).scalar_one()
    t = now() - timedelta(days=days_ago)
    db.session.add(Order(prescription_id=rx_id, patient_id=patient_id, fill_number=fill + 1, state=OrderState.DISPENSED,
                         state_changed_at=t, quantity=Decimal(days), days_supply=days, delivery_method=DeliveryMethod.PICKUP,
                         dispensed_at=t, dispensed_on=today() - timedelta(days=days_ago), price_cents=5500, created_at=t,
                         updated_at=t))


def test_adherence_over_http_shifts_overlapping_supply(app: Flask, client: FlaskClient, filled: dict[str, Any]) -> None:
    # Window of 100 days (day −99 … today). Fills: day −99 for 30 days; day −80 for 30 days (early: shifted to
    # start at day −69, covering −69 … −40); day −20 for 10 days (−20 … −11). Covered: 30 + 30 + 10 = 70 → 70%.
    # Without the shift the second fill would cover −80 … −51, overlapping the first: only 59 days (59%).
    with app.test_request_context("/"):
        for days_ago, days in ((99, 30), (80, 30), (20, 10)):
            _past_fill(filled, days_ago, days)
        db.session.commit()
    report = client.get(f"{API}/reports/adherence?window_days=100", headers=filled["pharmacist"]).get_json()
    assert (report["measured"], report["below_count"], report["threshold_percent"]) == (1, 1, 80)
    row = report["rows"][0]
    assert (row["percent"], row["pdc"], row["name"], row["last_days_supply"]) == (70, "0.7", "Ellison, Margaret", 10)
    assert row["last_fill_on"] == "2026-11-03" and row["window_start"] == "2026-08-16"
    assert report["distribution"][7] == 1
    admin = client.get(f"{API}/reports/adherence?window_days=100", headers=filled["admin"]).get_json()
    assert admin["rows"] == [] and admin["below_count"] == 1 and admin["show_names"] is False
    assert client.get(f"{API}/reports/adherence?window_days=3", headers=filled["admin"]).status_code == 422


def test_openapi_documents_the_billing_api(client: FlaskClient) -> None:
    spec = client.get("/api/v1/openapi.json").get_json()
    ops = {(path, method) for path, item in spec["paths"].items() if path.startswith(API) for method in item}
    assert (f"{API}/payments", "post") in ops and (f"{API}/reports/adherence", "get") in ops
    payment_in = spec["components"]["schemas"]["BillingPaymentIn"]
    assert set(payment_in["required"]) == {"patient_id", "method", "amount_cents"}
    assert payment_in["properties"]["method"]["enum"] == ["cash", "card", "check", "hsa_fsa"]
    assert payment_in["properties"]["amount_cents"]["minimum"] == 1
    assert spec["paths"][f"{API}/payments"]["post"]["summary"].startswith("Record a payment")


@pytest.mark.slow
def test_fuzzing_the_billing_api_finds_no_server_error(app: Flask, client: FlaskClient, filled: dict[str, Any]) -> None:
    import schemathesis

    spec = client.get("/api/v1/openapi.json").get_json()
    schema = schemathesis.openapi.from_dict(spec).include(path_regex=r"^/api/v1/billing/")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 15
    errors: list[str] = []
    known = {"patient_id": filled["patient_id"]}
    for operation, mode in itertools.product(operations, list(schemathesis.GenerationMode)):
        headers = filled["admin"] if "/prices" in operation.path or "/fees" in operation.path else filled["pharmacist"]
        strategy = operation.as_strategy(mode)
        if "{patient_id}" in operation.path and mode == schemathesis.GenerationMode.POSITIVE:
            strategy = strategy | operation.as_strategy(mode, path_parameters=known)  # a real patient, too

        hit = fuzzer(client, strategy, headers, errors)
        try:
            hit()
        except Unsatisfiable:
            assert mode == schemathesis.GenerationMode.NEGATIVE  # nothing to break in an operation without input
    assert errors == []
