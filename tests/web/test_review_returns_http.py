"""Review of returned fills over HTTP: what a pharmacist reads after a return, through the pages and the JSON API."""
from __future__ import annotations

from flask import Flask
from flask.testing import FlaskClient

from pharmacy.compounding.models import Order
from pharmacy.extensions import db
from tests.conftest import login
from tests.pages import text


def _dispensed(app: Flask, filled: dict) -> tuple[int, str]:
    from pharmacy.workflows import orders as order_flow
    from tests import factories

    with app.test_request_context("/"):
        order_flow.dispense(factories.actor(filled["staff"]["pharmacist"]), filled["order_id"])
        db.session.commit()
        return filled["order_id"], db.session.get(Order, filled["order_id"]).lot_number


def test_a_recall_of_a_returned_fills_lot_still_names_the_patient_who_had_it(app: Flask, client: FlaskClient,
                                                                             filled: dict) -> None:
    """Dispensed in error (wrong strength in the bag), brought back: the patient had it and may have taken some.
    Its lot is then recalled. The API and the recall page must say the fill reached the patient (found in review:
    they said it never left the pharmacy, because a return is a 'cancelled' order)."""
    order_id, lot = _dispensed(app, filled)
    url = f"/api/v1/orders/{order_id}/return"
    done = client.post(url, json={"reason": "dispensing_error", "note": "3 mg in a 4.5 mg bag"},
                       headers=filled["pharmacist"])
    assert done.status_code == 200, done.get_json()

    found = client.get("/api/v1/recall", query_string={"order_lot": lot}, headers=filled["pharmacist"]).get_json()
    row = next(r for r in found["orders"] if r["order_id"] == order_id)
    assert row["reached_patient"] is True, row

    login(client, filled["staff"]["pharmacist"])
    page = text(client.get("/recall", query_string={"order_lot": lot}))
    assert "with the patient" in page
