"""Review of the refill link over HTTP: a defect a patient would hit."""
from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from pharmacy.core import links
from pharmacy.extensions import db
from pharmacy.refills.models import OPEN_REQUEST_STATES, RefillRequest
from pharmacy.workflows import orders as order_flow
from pharmacy.workflows import prescription_changes
from tests import factories
from tests.pages import confirm_birth_date

DOB = date(1968, 4, 12)


def test_refill_link_from_a_reminder_still_works_after_the_prescription_is_renewed(
        app: Flask, client: FlaskClient, staff: dict, clock: Any) -> None:
    """A patient gets a reminder email with a refill link (valid 21 days); a few days later the prescriber renews
    the prescription (the pharmacy replaces it: the supply, waiting request and reminders move to the new one).
    The patient then clicks the link they were sent, confirms their birth date and is told "This prescription is
    not active; please call the pharmacy" — the link still points at the replaced prescription, and nothing can be
    asked for from it, though the patient has an active prescription and was told to use this link. Correct: a link
    for a replaced prescription opens the prescription that replaced it (the patient and pharmacy are the same), so
    the patient can ask for the refill there."""
    with app.test_request_context("/"):
        w = factories.world(staff)
        order = order_flow.start_fill(w["pharmacist"], w["rx"].id)
        factories.run_order_to(w, order.id, "dispensed")
        token = links.make_token(links.REFILL, w["patient"].id, w["rx"].id)  # as the reminder email carries it
        db.session.commit()
        clock.advance(timedelta(days=20))
        new = prescription_changes.replace(w["pharmacist"], w["rx"].id, factories.replacement_data(w))
        db.session.commit()
        new_id = new.id
    clock.advance(timedelta(days=1))

    assert confirm_birth_date(client, token, DOB).status_code == 303
    page = client.get(f"/r/{token}/refill").get_data(as_text=True)
    assert "not active" not in page
    client.post(f"/r/{token}/refill", data={"delivery": "pickup"})
    with app.app_context():
        opened = db.session.execute(sa.select(RefillRequest).where(
            RefillRequest.prescription_id == new_id, RefillRequest.state.in_(OPEN_REQUEST_STATES))).scalars().all()
    assert len(opened) == 1
