"""The patient page joins every feature: supply timeline, requests, emails, costs, and the side-effect log."""
from __future__ import annotations

from datetime import timedelta

from pharmacy.extensions import db
from tests import factories
from tests.conftest import login


def test_patient_page_shows_timeline_messages_costs_and_side_effects(app, client, staff, clock) -> None:
    with app.test_request_context("/"):
        w, _order_id = factories.world_with_order(staff, "dispensed")
        db.session.commit()
        patient_id, rx_number = w["patient"].id, w["rx"].rx_number
    clock.advance(timedelta(days=3))
    login(client, staff["pharmacist"])
    html = client.get(f"/patients/{patient_id}").get_data(as_text=True)
    # Dispensed Monday 23 Nov 2026 for 30 days: runs out 23 Dec; ready-by 21 Dec; 2 business days earlier.
    assert f"<strong>{rx_number}</strong>" in html
    assert "runs out Dec 22, 2026" in html and "order by Dec 17, 2026" in html
    assert "reminder early" in html  # the planned reminders are listed with their state
    assert "Monthly cost of the current regimen" in html and "$55.00" in html

    response = client.post(f"/patients/{patient_id}/side-effects",
                           data={"effect": "nausea", "note": "three weeks now", "persistent": "1"})
    assert response.status_code == 302
    page = client.get(f"/patients/{patient_id}").get_data(as_text=True)
    assert "three weeks now" in page and "sublingual" in page.split('id="side-effects"')[1]


def test_side_effect_with_an_unknown_effect_is_refused_and_nothing_saved(app, client, staff) -> None:
    with app.test_request_context("/"):
        w = factories.world(staff)
        db.session.commit()
        patient_id = w["patient"].id
    login(client, staff["technician"])
    response = client.post(f"/patients/{patient_id}/side-effects", data={"effect": "hiccups"})
    assert response.status_code == 422
    with app.app_context():
        from pharmacy.patients.models import SideEffectEntry

        assert db.session.query(SideEffectEntry).count() == 0
