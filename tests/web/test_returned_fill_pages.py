"""Returning a dispensed fill over HTTP: the order page's form (pharmacists only), its refusals in words, what the
pages show afterwards, and the JSON API's POST /orders/{id}/return."""
from __future__ import annotations

from datetime import date
from typing import Any

import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from pharmacy.compounding.models import Order
from pharmacy.compounding.rules import OrderState
from pharmacy.extensions import db
from pharmacy.prescriptions.models import Prescription
from tests.conftest import login
from tests.pages import field_error, text
from tests.portal_helpers import sign_in


def _dispensed(app: Flask, filled: dict) -> int:
    from pharmacy.workflows import orders as order_flow
    from tests import factories

    with app.test_request_context("/"):
        order_flow.dispense(factories.actor(filled["staff"]["pharmacist"]), filled["order_id"])
        db.session.commit()
    return filled["order_id"]


def _state(app: Flask, order_id: int) -> tuple[OrderState, Any, Any]:
    with app.app_context():
        o = db.session.get(Order, order_id)
        rx = db.session.get(Prescription, o.prescription_id)
        return o.state, o.returned_at, rx.latest_run_out_date


def test_a_pharmacist_returns_a_fill_from_the_order_page(app: Flask, client: FlaskClient, filled: dict) -> None:
    order_id = _dispensed(app, filled)
    login(client, filled["staff"]["technician"])
    assert "Return this fill" not in text(client.get(f"/orders/{order_id}"))  # a pharmacist's decision
    assert client.post(f"/orders/{order_id}/return", data={"reason": "lost_in_transit"}).status_code == 403
    client.post("/logout")
    login(client, filled["staff"]["pharmacist"])
    page = client.get(f"/orders/{order_id}").get_data(as_text=True)
    assert "Return this fill (lost in the post, damaged, dispensed in error)" in page
    assert '<option value="lost_in_transit"' in page

    before = _state(app, order_id)
    refused = client.post(f"/orders/{order_id}/return", data={"reason": "", "note": "x" * 300})
    body = refused.get_data(as_text=True)
    assert refused.status_code == 422
    assert field_error(body, "reason") and "240" in field_error(body, "note")
    assert 'aria-invalid="true"' in body and "<details class=\"card\" id=\"return\" open" in body
    assert _state(app, order_id) == before  # nothing changed

    done = client.post(f"/orders/{order_id}/return", data={"reason": "damaged", "note": "Vial cracked in the post"},
                       follow_redirects=True)
    page = text(done)
    assert done.status_code == 200
    assert f"Order {order_id} returned." in page and "start a new fill to replace it" in page
    assert "Returned" in page and "Arrived damaged or leaking — Vial cracked in the post." in page
    assert "Return this fill" not in page
    state, returned_at, run_out = _state(app, order_id)
    assert state == OrderState.CANCELLED and returned_at is not None and run_out is None
    patient_page = client.get(f"/patients/{filled['patient_id']}").get_data(as_text=True)
    assert '<span class="badge stop">returned</span>' in patient_page
    # The patient's portal says so too, not "cancelled" with a price.
    portal = app.test_client()
    sign_in(app, portal, "margaret@example.com", date(1968, 4, 12))  # the factories' patient
    assert "Returned — not charged" in text(portal.get("/my/orders"))
    # Twice is refused in words, next to the form's place.
    again = client.post(f"/orders/{order_id}/return", data={"reason": "damaged"})
    assert again.status_code == 409 and "Only a dispensed fill can be returned" in text(again)


def test_the_api_returns_a_fill_and_names_bad_fields(app: Flask, client: FlaskClient, filled: dict) -> None:
    order_id = _dispensed(app, filled)
    url = f"/api/v1/orders/{order_id}/return"
    assert client.get(f"/api/v1/orders/{order_id}", headers=filled["pharmacist"]).get_json()["returnable"] is True
    bad = client.post(url, json={"reason": "changed my mind", "note": 5}, headers=filled["pharmacist"])
    assert bad.status_code == 422
    assert set(bad.get_json()["errors"]["json"]) == {"reason", "note"}
    assert client.post(url, json={"reason": "lost_in_transit"}, headers=filled["technician"]).status_code == 403
    ok = client.post(url, json={"reason": "lost_in_transit", "note": "Claim 4411"}, headers=filled["pharmacist"])
    body = ok.get_json()
    assert ok.status_code == 200, body
    assert (body["state"], body["return_reason"], body["returnable"]) == ("cancelled", "lost_in_transit", False)
    assert body["returned_at"] and "available again" in body["message"]
    assert client.post(url, json={"reason": "lost_in_transit"}, headers=filled["pharmacist"]).status_code == 409
    with app.app_context():
        assert db.session.execute(sa.select(sa.func.count()).select_from(Order).where(
            Order.returned_at.is_not(None))).scalar_one() == 1


def test_the_replacement_is_paid_by_the_returned_fills_credit_at_the_counter(app: Flask, client: FlaskClient,
                                                                             filled: dict) -> None:
    """The lost fill was paid for; its replacement's page must not ask for the money again."""
    from pharmacy.billing import services as billing
    from pharmacy.workflows import orders as order_flow
    from tests import factories

    order_id = _dispensed(app, filled)
    with app.test_request_context("/"):
        pharmacist = factories.actor(filled["staff"]["pharmacist"])
        billing.record_payment(pharmacist, patient_id=filled["patient_id"], amount_cents=5500, method="card",
                               order_id=order_id)
        order_flow.return_fill(pharmacist, order_id, "lost_in_transit")
        again = order_flow.start_fill(pharmacist, filled["rx_id"])
        from pharmacy.compounding.models import Formula

        world = {**filled["world"], "formula": db.session.get(Formula, filled["formula_id"])}  # this session's rows
        factories.run_order_to(world, again.id, "ready")
        db.session.commit()
        again_id = again.id
    login(client, filled["staff"]["pharmacist"])
    page = text(client.get(f"/orders/{again_id}"))
    assert "Nothing is owed" in page and "covered by the account's credit" in page
    assert "still to pay on it" not in page and "Record payment" not in page
