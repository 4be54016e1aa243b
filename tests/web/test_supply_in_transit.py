"""A refill that is still on its way is not medicine in hand: what the API, the staff patient page and the patient's
refill link say while a parcel travels — after the patient ran out, and when the bottle in hand runs out before it
arrives. (A parcel's days count from its arrival; before, the days in transit were counted as held.)"""
from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from flask import Flask
from flask.testing import FlaskClient

from pharmacy.compounding.models import Order
from pharmacy.compounding.rules import DeliveryMethod
from pharmacy.core import links
from pharmacy.core import services as core_services
from pharmacy.core.context import today
from pharmacy.extensions import db
from pharmacy.prescriptions.models import Prescription
from pharmacy.workflows import orders as order_flow
from tests import factories
from tests.conftest import login
from tests.pages import confirm_birth_date
from tests.pages import page_text as text

DOB = date(1968, 4, 12)


def _send(w: dict[str, Any], order_id: int) -> None:
    factories.run_order_to(w, order_id, "ready")
    order_flow.dispense(w["technician"], order_id, carrier="USPS", tracking_number=f"9400111{order_id:06d}")


def _ship(app: Flask, staff: dict, clock: Any, *, days_after_run_out: int) -> dict[str, Any]:
    """A shipped 30-day first fill; the clock moved to `days_after_run_out` days after it runs out (negative: before)
    and the refill dispensed that day, shipped (4 days on the road). Committed; ids, the token and dates."""
    with app.test_request_context("/"):
        w = factories.world(staff, patient={"shipping_days": 4, "delivery_preference": "ship"})
        rx_id, patient_id = w["rx"].id, w["patient"].id
        first = order_flow.start_fill(w["pharmacist"], rx_id, delivery=DeliveryMethod.SHIP)
        _send(w, first.id)
        run_out = db.session.get(Prescription, rx_id).latest_run_out_date
        clock.advance(run_out - today() + timedelta(days=days_after_run_out))
        refill = order_flow.start_fill(w["pharmacist"], rx_id, delivery=DeliveryMethod.SHIP)
        _send(w, refill.id)
        arrives = db.session.get(Order, refill.id).supply_starts_on
        _, raw = core_services.issue_token(factories.actor(staff["pharmacist"]), staff["pharmacist"].id, "tests")
        token = links.make_token(links.REFILL, patient_id, rx_id)
        db.session.commit()
    return {"rx_id": rx_id, "patient_id": patient_id, "run_out": run_out, "arrives": arrives, "token": token,
            "api": {"Authorization": f"Bearer {raw}"}}


def test_out_of_medicine_while_the_refill_travels(app: Flask, client: FlaskClient, staff: dict, clock: Any) -> None:
    """Ran out 3 days ago; the refill left today and arrives in 4 days: the patient holds nothing until it comes."""
    d = _ship(app, staff, clock, days_after_run_out=3)
    with app.app_context():
        day = today()
    assert d["arrives"] > day
    supply = client.get(f"/api/v1/prescriptions/{d['rx_id']}", headers=d["api"]).get_json()["supply"]
    assert supply["days_on_hand"] == 0
    assert supply["out_since"] == (d["run_out"] + timedelta(days=1)).isoformat()
    assert supply["arriving_on"] == d["arrives"].isoformat()
    assert supply["days_without_ahead"] == (d["arrives"] - day).days
    assert supply["run_out_date"] == (d["arrives"] + timedelta(days=29)).isoformat()

    login(client, staff["pharmacist"])
    page = text(client.get(f"/patients/{d['patient_id']}"))
    assert "Out of medicine since" in page and "the refill on its way arrives" in page
    assert "days on hand" not in page.split("Supply and next order")[1].split("Payments")[0]

    client.post("/logout")
    confirm_birth_date(client, d["token"], DOB)
    patient_page = text(client.get(f"/r/{d['token']}/refill"))
    assert "Your refill is on its way" in patient_page
    assert "About 3" not in patient_page and "days without it" in patient_page


def test_the_bottle_in_hand_runs_out_before_the_parcel_arrives(app: Flask, client: FlaskClient, staff: dict,
                                                                clock: Any) -> None:
    """Two days of the old bottle left, the refill 4 days on the road: 2 days in hand, then 2 days without."""
    d = _ship(app, staff, clock, days_after_run_out=-1)  # today and tomorrow still covered
    with app.app_context():
        day = today()
    supply = client.get(f"/api/v1/prescriptions/{d['rx_id']}", headers=d["api"]).get_json()["supply"]
    assert supply["days_on_hand"] == 2
    assert supply["out_since"] is None
    assert supply["arriving_on"] == d["arrives"].isoformat()
    assert supply["days_without_ahead"] == (d["arrives"] - day).days - 2

    login(client, staff["pharmacist"])
    page = text(client.get(f"/patients/{d['patient_id']}"))
    assert "2 days on hand" in page and "without medicine before the refill on its way arrives" in page


def test_an_early_refill_on_its_way_adds_to_the_days_in_hand(app: Flask, client: FlaskClient, staff: dict,
                                                             clock: Any) -> None:
    """Refilled with a week left (the parcel arrives before the bottle runs out): every day is held, nothing ahead."""
    d = _ship(app, staff, clock, days_after_run_out=-7)
    with app.app_context():
        day = today()
    supply = client.get(f"/api/v1/prescriptions/{d['rx_id']}", headers=d["api"]).get_json()["supply"]
    assert supply["arriving_on"] is None and supply["days_without_ahead"] == 0
    assert supply["days_on_hand"] == (d["run_out"] - day).days + 1 + 30
