"""A renewal that arrived as a new prescription is marked as the replacement of the old one, on the prescription's
page and through the API (prescriptions/services.adopt_as_replacement)."""
from __future__ import annotations

from flask import Flask
from flask.testing import FlaskClient

from pharmacy.extensions import db
from pharmacy.prescriptions.models import Prescription
from pharmacy.prescriptions.rules import RxStatus
from tests import factories
from tests.conftest import login
from tests.pages import field_error, text


def _two(app: Flask, staff: dict) -> tuple[int, int]:
    with app.test_request_context("/"):
        w = factories.world(staff)
        new = factories.prescription(w["pharmacist"], w["patient"].id, w["formula"].id, w["prescriber"].id,
                                     refills_authorized=11)
        db.session.commit()
        return w["rx"].id, new.id


def _status(app: Flask, rx_id: int) -> RxStatus:
    with app.app_context():
        return db.session.get(Prescription, rx_id).status


def test_the_page_marks_a_renewal_entered_apart_as_the_replacement(app: Flask, client: FlaskClient,
                                                                   staff: dict) -> None:
    old_id, new_id = _two(app, staff)
    login(client, staff["pharmacist"])
    page = client.get(f"/prescriptions/{new_id}").get_data(as_text=True)
    assert 'id="adopt"' in page and "RX000001 · Naltrexone 4.5 mg capsules" in page
    refused = client.post(f"/prescriptions/{new_id}/replaces", data={"old_prescription_id": ""})
    assert refused.status_code == 422 and field_error(refused.get_data(as_text=True), "old_prescription_id")
    assert _status(app, old_id) == RxStatus.ACTIVE
    done = client.post(f"/prescriptions/{new_id}/replaces", data={"old_prescription_id": str(old_id)},
                       follow_redirects=True)
    assert done.status_code == 200 and "RX000002 now replaces RX000001" in text(done)
    assert "already has a current LDN prescription" not in text(done)  # the duplicate stop is lifted
    assert _status(app, old_id) == RxStatus.REPLACED
    assert 'id="adopt"' not in done.get_data(as_text=True)
