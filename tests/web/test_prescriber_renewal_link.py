"""A renewal request to a prescriber by email carries a reference and a link, never the patient's name or birth date;
the page behind the link asks for the prescriber's NPI before it shows the request (and audits the read).
"""
from __future__ import annotations

import html
import re
from typing import Any

import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from pharmacy.core.models import AuditEvent, LinkGuard
from pharmacy.extensions import db
from pharmacy.refills import renewals
from pharmacy.reminders import rendering
from pharmacy.reminders.models import OutboxMessage
from pharmacy.reminders.rules import MessageKind
from pharmacy.workflows import orders as order_flow
from pharmacy.workflows import renewals as renewal_flow
from tests import factories

NPI = "1234567893"  # factories.prescriber's
WRONG_NPI = "1245319599"
PATIENT_FACTS = ("Margaret", "Ellison", "1968-04-12", "April 12, 1968", "Naltrexone", "4.5 mg", "Multiple sclerosis")


def text(response: Any) -> str:
    body = response.get_data(as_text=True)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", body))).strip()


def renewal_email(app: Flask, staff: dict) -> dict[str, Any]:
    """A prescription with no refills left, its renewal sent to the prescriber; the email as it goes out."""
    with app.test_request_context("/"):
        w = factories.world(staff, refills_authorized=0)
        order = order_flow.start_fill(w["pharmacist"], w["rx"].id)
        factories.run_order_to(w, order.id, "dispensed")
        renewal = renewal_flow.ask_prescriber(w["pharmacist"], prescription_id=w["rx"].id)
        row = db.session.execute(sa.select(OutboxMessage).where(OutboxMessage.renewal_id == renewal.id)).scalar_one()
        assert row.kind == MessageKind.PRESCRIBER_RENEWAL
        email = rendering.render(row)
        db.session.commit()
        return {"email": email, "renewal_id": renewal.id, "patient_id": w["patient"].id, "rx_id": w["rx"].id,
                "pharmacist": w["pharmacist"]}


def link_path(email: Any) -> str:
    found = re.search(r"http://pharmacy\.test(/renewal-request/[^\s\"<]+)", email.text)
    assert found, email.text
    return found.group(1)


def test_the_email_to_the_prescriber_carries_a_reference_and_a_link_not_the_patient(app: Flask, staff: dict) -> None:
    d = renewal_email(app, staff)
    email = d["email"]
    assert f"Our reference: renewal {d['renewal_id']}" in email.text and link_path(email) in email.html
    for fact in PATIENT_FACTS:
        assert fact not in email.text and fact not in email.html and fact not in email.subject, fact


def test_the_link_asks_for_the_npi_then_shows_the_request_and_audits_it(app: Flask, client: FlaskClient,
                                                                      staff: dict) -> None:
    d = renewal_email(app, staff)
    path = link_path(d["email"])
    first = client.get(path)
    assert first.status_code == 200 and "confirm your NPI" in text(first)
    assert not [f for f in PATIENT_FACTS if f in text(first)]
    wrong = client.post(path, data={"npi": WRONG_NPI})
    assert wrong.status_code == 422 and "You have 4 tries left on this link." in text(wrong)
    assert not [f for f in PATIENT_FACTS if f in text(wrong)]
    shown = client.post(path, data={"npi": NPI})
    assert shown.status_code == 200
    page = text(shown)
    for fact in ("Prescription renewal request", "Margaret Ellison", "Apr 12, 1968", "Naltrexone 4.5 mg capsules",
                 f"renewal {d['renewal_id']}"):
        assert fact in page, fact
    with app.app_context():
        views = db.session.execute(sa.select(AuditEvent).where(AuditEvent.action == "renewal.view")).scalars().all()
        assert [(e.actor_kind, e.patient_id, e.entity_id) for e in views] == [
            ("prescriber", d["patient_id"], d["renewal_id"])]
        failed = db.session.execute(sa.select(AuditEvent.outcome).where(
            AuditEvent.action == "renewal_link.npi_failed")).scalars().all()
        assert failed == ["denied"]  # kept although the refused request rolled back


def test_five_wrong_npis_lock_the_link(app: Flask, client: FlaskClient, staff: dict) -> None:
    d = renewal_email(app, staff)
    path = link_path(d["email"])
    statuses = [client.post(path, data={"npi": WRONG_NPI}).status_code for _ in range(5)]
    assert statuses == [422, 422, 422, 422, 429]
    for response in (client.post(path, data={"npi": NPI}), app.test_client().get(path)):
        assert response.status_code == 429 and "locked" in text(response)
        assert "Ellison" not in text(response)
    with app.app_context():
        assert db.session.execute(sa.select(LinkGuard.failed_attempts)).scalar_one() == 5


def test_a_link_is_spent_once_the_renewal_arrived_and_a_tampered_one_shows_nothing(app: Flask, client: FlaskClient,
                                                                                 staff: dict) -> None:
    d = renewal_email(app, staff)
    path = link_path(d["email"])
    tampered = path[:-3] + ("AAA" if not path.endswith("AAA") else "BBB")
    assert client.get(tampered).status_code == 400
    with app.test_request_context("/"):
        new_rx = factories.prescription(d["pharmacist"], d["patient_id"], factories.formula().id,
                                        factories.prescriber().id)
        renewals.link_renewal(d["pharmacist"], d["rx_id"], new_rx.id)
        db.session.commit()
    closed = client.post(path, data={"npi": NPI})
    assert closed.status_code == 410 and "closed" in text(closed) and "Ellison" not in text(closed)
