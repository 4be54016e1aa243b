"""The pharmacy's refill pages over HTTP: the queue, approve / decline / renewal, renewals, counter requests."""
from __future__ import annotations

import html
import re
from datetime import date
from typing import Any

import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from pharmacy.compounding.models import Order
from pharmacy.compounding.rules import DeliveryMethod
from pharmacy.extensions import db
from pharmacy.patients.models import Patient
from pharmacy.prescriptions.models import Prescription
from pharmacy.refills.models import RefillRequest, RenewalRequest
from pharmacy.refills.rules import RefillRequestState, RenewalState, RequestSource
from pharmacy.reminders.models import OutboxMessage
from pharmacy.reminders.rules import MessageKind
from pharmacy.workflows import orders as order_flow
from pharmacy.workflows import refill_requests as refill_flow
from tests import factories
from tests.conftest import login
from tests.pages import page_text as text
from tests.pages import queries


def setup_requests(app: Flask, staff: dict, *, extra: int = 0, renewal: bool = True) -> dict[str, Any]:
    """Ellison (refills left, request open) and, optionally, Chen (no refills: awaiting renewal); committed."""
    with app.test_request_context("/"):
        w = factories.world(staff)
        order = order_flow.start_fill(w["pharmacist"], w["rx"].id)
        factories.run_order_to(w, order.id, "dispensed")
        out: dict[str, Any] = {"rx_id": w["rx"].id, "patient_id": w["patient"].id, "formula_id": w["formula"].id,
                               "prescriber_id": w["prescriber"].id, "w": {k: w[k] for k in (
                                   "pharmacist", "pharmacist2", "technician", "admin")}}
        out["request_id"] = refill_flow.request(w["technician"], w["rx"].id, source=RequestSource.STAFF).request.id
        if renewal:
            p = factories.patient(w["pharmacist"], first_name="Robert", last_name="Chen",
                                  date_of_birth=date(1959, 7, 4), email="robert@example.com")
            rx = factories.prescription(w["pharmacist"], p.id, w["formula"].id, w["prescriber"].id,
                                        refills_authorized=0)
            o = order_flow.start_fill(w["pharmacist"], rx.id)
            factories.run_order_to(w, o.id, "dispensed")
            req = refill_flow.request(w["technician"], rx.id, source=RequestSource.STAFF).request
            out.update(renewal_rx_id=rx.id, renewal_request_id=req.id, renewal_id=req.renewal_id)
        for i in range(extra):
            p = factories.patient(w["pharmacist"], first_name=f"Extra{i}", last_name=f"Person{i}",
                                  email=f"extra{i}@example.com")
            rx = factories.prescription(w["pharmacist"], p.id, w["formula"].id, w["prescriber"].id,
                                        refills_authorized=i % 2)
            o = order_flow.start_fill(w["pharmacist"], rx.id)
            factories.run_order_to(w, o.id, "dispensed")
            refill_flow.request(w["technician"], rx.id, source=RequestSource.STAFF)
        db.session.commit()
    return out


def fetch(app: Flask, model: type, row_id: int) -> Any:
    with app.app_context():
        row = db.session.get(model, row_id)
        db.session.expunge_all()
        return row


def test_the_queue_shows_what_the_pharmacist_decides_with(app: Flask, client: FlaskClient, staff: dict) -> None:
    d = setup_requests(app, staff)
    login(client, staff["pharmacist"])
    response = client.get("/refills")
    assert response.status_code == 200 and response.headers["Cache-Control"] == "no-store"
    page = text(response)
    # Oldest first: Ellison asked before Chen.
    assert page.index("Ellison, Margaret") < page.index("Chen, Robert")
    assert "born Apr 12, 1968" in page
    assert "eligible" in page and "awaiting renewal" in page
    assert "Dec 17, 2026" in page  # earliest dispense: 80% of the 30 days dispensed 23 November
    assert "too soon until then" in page
    body = response.get_data(as_text=True)
    assert f'action="/refills/{d["request_id"]}/approve"' in body
    assert f'action="/refills/{d["renewal_request_id"]}/approve"' not in body  # no refills: cannot approve
    assert f'action="/refills/{d["request_id"]}/decline"' in body
    # The renewals awaited are the other tab, with their count: chasing prescribers is other work than deciding.
    assert re.search(r'<a href="/refills/renewals">Renewals awaited <span class="badge">1</span>', body)
    assert f'href="/renewals/{d["renewal_id"]}"' not in body
    renewals = client.get("/refills/renewals").get_data(as_text=True)
    assert 'id="renewals"' in renewals and f'href="/renewals/{d["renewal_id"]}"' in renewals
    assert re.search(r'<a href="/refills" >Requests to decide|<a href="/refills">Requests to decide', renewals)
    row = re.search(rf'<tr id="request-{d["request_id"]}">.*?</tr>', body, re.S).group(0)  # type: ignore[union-attr]
    assert re.search(r"<td>5</td>", row), "refills left"


def test_approve_creates_the_order(app: Flask, client: FlaskClient, staff: dict) -> None:
    d = setup_requests(app, staff, renewal=False)
    login(client, staff["pharmacist"])
    response = client.post(f"/refills/{d['request_id']}/approve")
    assert response.status_code == 303 and response.headers["Location"].endswith("/refills")
    req = fetch(app, RefillRequest, d["request_id"])
    assert req.state == RefillRequestState.APPROVED and req.order_id is not None
    order = fetch(app, Order, req.order_id)
    assert (order.fill_number, order.earliest_dispense_date) == (1, date(2026, 12, 17))
    page = text(client.get("/refills"))
    assert f"Approved: order #{order.id} was created; it may be dispensed from December 17, 2026." in page
    assert f"order #{order.id}" in page.split("Latest decisions")[1]
    if "compounding.order" in app.view_functions:
        with app.test_request_context("/"):
            from flask import url_for

            assert url_for("compounding.order", order_id=order.id) in client.get("/refills").get_data(as_text=True)
    again = client.post(f"/refills/{d['request_id']}/approve")
    assert again.status_code == 409 and "only an open request can be approved" in text(again)


def test_a_shipped_request_may_leave_before_the_patient_may_have_it(app: Flask, client: FlaskClient,
                                                                   staff: dict) -> None:
    """Too soon is judged on the day the patient has the fill; a parcel (3 days) may leave that many days before, and
    the queue, the order approving makes and the patient's promised dates all say the same day."""
    d = setup_requests(app, staff, renewal=False)
    with app.test_request_context("/"):
        req = db.session.get(RefillRequest, d["request_id"])
        req.delivery_method = DeliveryMethod.SHIP
        db.session.get(Patient, d["patient_id"]).shipping_days = 3
        db.session.commit()
    login(client, staff["pharmacist"])
    body = client.get("/refills").get_data(as_text=True)
    row = re.search(rf'<tr id="request-{d["request_id"]}">.*?</tr>', body, re.S).group(0)  # type: ignore[union-attr]
    # The patient may have it from Thursday 17 December: leaving Monday the 14th it arrives on the 17th.
    assert "Dec 14, 2026" in row and "Dec 17, 2026" not in row and "too soon until then" in row
    client.post(f"/refills/{d['request_id']}/approve")
    order = fetch(app, Order, fetch(app, RefillRequest, d["request_id"]).order_id)
    assert (order.delivery_method, order.earliest_dispense_date) == (DeliveryMethod.SHIP, date(2026, 12, 14))
    with app.test_request_context("/"):
        from pharmacy.refills import services as refill_services

        s = refill_services.summary(db.session.get(Prescription, d["rx_id"]), delivery=DeliveryMethod.SHIP)
        assert (s.ready_on, s.arrives_on) == (date(2026, 12, 14), date(2026, 12, 17))


def test_decline_needs_a_reason_and_tells_the_patient(app: Flask, client: FlaskClient, staff: dict) -> None:
    d = setup_requests(app, staff, renewal=False)
    login(client, staff["pharmacist"])
    response = client.post(f"/refills/{d['request_id']}/decline", data={"reason": " "})
    assert response.status_code == 422
    assert fetch(app, RefillRequest, d["request_id"]).state == RefillRequestState.OPEN
    response = client.post(f"/refills/{d['request_id']}/decline", data={"reason": "Please see Dr. Marquez first."})
    assert response.status_code == 303
    req = fetch(app, RefillRequest, d["request_id"])
    assert (req.state, req.decline_reason) == (RefillRequestState.DECLINED, "Please see Dr. Marquez first.")
    with app.app_context():
        rows = db.session.execute(sa.select(OutboxMessage.kind).where(
            OutboxMessage.refill_request_id == req.id)).scalars().all()
    assert MessageKind.REQUEST_DECLINED in rows
    assert "declined: Please see Dr. Marquez first." in text(client.get("/refills"))


def test_the_latest_decisions_newest_first_with_patient_and_prescription(app: Flask, client: FlaskClient,
                                                                          staff: dict, clock: Any) -> None:
    from datetime import timedelta

    from pharmacy.prescriptions.models import Prescription

    d = setup_requests(app, staff, renewal=False, extra=2)  # Person1 has a refill left
    with app.app_context():
        other = db.session.execute(sa.select(RefillRequest.id, Prescription.rx_number)
                                   .join(Prescription, Prescription.id == RefillRequest.prescription_id)
                                   .where(RefillRequest.state == RefillRequestState.OPEN,
                                          RefillRequest.id != d["request_id"])).one()
        ellison_rx = db.session.get(Prescription, d["rx_id"]).rx_number
    login(client, staff["pharmacist"])
    assert client.post(f"/refills/{d['request_id']}/approve").status_code == 303
    clock.advance(timedelta(minutes=3))
    assert client.post(f"/refills/{other.id}/decline", data={"reason": "Call us about your dose."}).status_code == 303
    order_id = fetch(app, RefillRequest, d["request_id"]).order_id
    decisions = text(client.get("/refills")).split("Latest decisions")[1]
    assert decisions.index("Person1, Extra1") < decisions.index("Ellison, Margaret")  # newest first
    assert other.rx_number in decisions and "declined: Call us about your dose." in decisions
    assert ellison_rx in decisions and f"approved: order #{order_id}" in decisions


def test_asking_the_prescriber_and_the_printable_renewal(app: Flask, client: FlaskClient, staff: dict) -> None:
    d = setup_requests(app, staff)
    login(client, staff["pharmacist"])
    response = client.post(f"/refills/{d['renewal_request_id']}/renewal")
    # Back to the request decided, where the pharmacist was working (the renewal is on the other tab).
    assert response.status_code == 303 and response.headers["Location"].endswith(f"/refills#request-{d['renewal_request_id']}")
    renewal = fetch(app, RenewalRequest, d["renewal_id"])
    assert renewal.state == RenewalState.SENT
    with app.app_context():
        to = db.session.execute(sa.select(OutboxMessage.to_address).where(
            OutboxMessage.kind == MessageKind.PRESCRIBER_RENEWAL, OutboxMessage.renewal_id == renewal.id)).scalar_one()
    assert to == "emarquez@neuro.example"
    page = text(client.get("/refills/renewals"))
    assert "sent" in page.split("Renewals waiting on prescribers")[-1]
    response = client.get(f"/renewals/{d['renewal_id']}")
    assert response.status_code == 200
    doc = text(response)
    for fact in ("Prescription renewal request", "Dr. Elena Marquez, MD", "NPI 1234567893",
                 "Robert Chen", "Date of birth Jul 4, 1959", "Naltrexone 4.5 mg capsules", "Dose 4.5 mg daily",
                 "Quantity 30 capsules (30-day supply)", "Last fill Nov 23, 2026", "Refills authorized 0",
                 "Phone (217) 555-0100", "Multiple sclerosis (G35)"):
        assert fact in doc, fact
    # Sending twice is refused clearly.
    again = client.post(f"/renewals/{d['renewal_id']}/send")
    assert again.status_code == 409 and "already been sent" in text(again)


def test_the_renewals_list_leads_to_entering_the_new_prescription(app: Flask, client: FlaskClient,
                                                                  staff: dict) -> None:
    d = setup_requests(app, staff)
    login(client, staff["pharmacist"])
    response = client.post(f"/renewals/{d['renewal_id']}/send", data={"page": "1"})
    assert response.status_code == 303 and response.headers["Location"].endswith(f"/refills/renewals#renewal-{d['renewal_id']}")
    body = client.get("/refills/renewals").get_data(as_text=True)
    replace = [r for r in app.url_map.iter_rules() if r.rule.startswith("/prescriptions/<")
               and r.rule.endswith("/replace") and "GET" in (r.methods or ())]
    if replace:
        assert f"/prescriptions/{d['renewal_rx_id']}/replace" in body
    else:
        assert "enter it as a replacement of" in html.unescape(body)
    # A technician sees the list but not the pharmacist's buttons.
    tech = app.test_client()
    login(tech, staff["technician"])
    body = tech.get("/refills").get_data(as_text=True)
    assert "/approve" not in body
    body = tech.get("/refills/renewals").get_data(as_text=True)
    assert "/send" not in body and f'href="/renewals/{d["renewal_id"]}"' in body


def test_roles_on_the_refill_pages(app: Flask, staff: dict) -> None:
    d = setup_requests(app, staff, renewal=False)
    tech = app.test_client()
    login(tech, staff["technician"])
    assert tech.get("/refills").status_code == 200
    for path in (f"/refills/{d['request_id']}/approve", f"/refills/{d['request_id']}/renewal"):
        assert tech.post(path).status_code == 403
    assert tech.post(f"/refills/{d['request_id']}/decline", data={"reason": "Not allowed"}).status_code == 403
    admin = app.test_client()
    login(admin, staff["admin"])
    assert admin.get("/refills").status_code == 403
    assert fetch(app, RefillRequest, d["request_id"]).state == RefillRequestState.OPEN


def test_staff_open_a_request_for_a_patient_on_the_phone(app: Flask, client: FlaskClient, staff: dict) -> None:
    with app.test_request_context("/"):
        w = factories.world(staff)
        order = order_flow.start_fill(w["pharmacist"], w["rx"].id)
        factories.run_order_to(w, order.id, "dispensed")
        rx_id = w["rx"].id
        db.session.commit()
    login(client, staff["technician"])
    path = f"/prescriptions/{rx_id}/refill-requests"
    response = client.post(path, data={"delivery": "ship", "note": "Called 9:05, wants it shipped"})
    assert response.status_code == 303
    assert "Refill request opened" in text(client.get("/refills"))
    client.post(path, data={"delivery": "ship"})
    assert "already open; nothing new was added" in text(client.get("/refills"))
    with app.app_context():
        rows = db.session.execute(sa.select(RefillRequest).where(RefillRequest.prescription_id == rx_id)).scalars().all()
        assert [(r.source, r.delivery_method.value, r.note, r.requested_by_id) for r in rows] == [
            (RequestSource.STAFF, "ship", "Called 9:05, wants it shipped", staff["technician"].id)]
    response = client.post(path, data={"delivery": "drone"})
    assert response.status_code == 422


def test_the_queue_page_costs_the_same_queries_for_two_or_ten_requests(app: Flask, client: FlaskClient,
                                                                        staff: dict) -> None:
    d = setup_requests(app, staff)
    login(client, staff["pharmacist"])
    assert client.post(f"/refills/{d['request_id']}/decline", data={"reason": "Duplicate"}).status_code == 303
    with queries(app) as few:
        assert client.get("/refills").status_code == 200
    with app.test_request_context("/"):
        from pharmacy.compounding.models import Formula

        w = dict(d["w"], formula=db.session.get(Formula, d["formula_id"]))
        for i in range(8):
            p = factories.patient(w["pharmacist"], first_name=f"Many{i}", email=f"many{i}@example.com")
            rx = factories.prescription(w["pharmacist"], p.id, d["formula_id"], d["prescriber_id"],
                                        refills_authorized=i % 2)
            o = order_flow.start_fill(w["pharmacist"], rx.id)
            factories.run_order_to(w, o.id, "dispensed")
            refill_flow.request(w["technician"], rx.id, source=RequestSource.STAFF)
        db.session.commit()
    with queries(app) as many:
        page = text(client.get("/refills"))
    assert page.count("born ") == 9
    assert len(many) == len(few), "\n".join(many)


def test_the_queue_pages_fifty_at_a_time_in_the_order_decided(app: Flask, client: FlaskClient, staff: dict) -> None:
    """53 open requests: 50 on the first page with the count, the rest on page 2; the API pages the same list."""
    import json

    from pharmacy.core import services as core_services

    setup_requests(app, staff, extra=51)
    login(client, staff["pharmacist"])
    first = text(client.get("/refills"))
    assert first.count("born ") == 50 and "53 open requests — showing 1–50." in first
    assert 'href="/refills?page=2"' in client.get("/refills").get_data(as_text=True)
    second = text(client.get("/refills?page=2"))
    assert second.count("born ") == 3 and "showing 51–53" in second and "page 2 of 2" in second
    shown = set(re.findall(r"Person\d+", first)) | set(re.findall(r"Person\d+", second))
    assert len(shown) == 51  # every request once, none on both pages
    far = client.get("/refills?page=99999999999999999999")
    assert far.status_code == 200 and "No requests on page 1000000" in text(far)

    with app.test_request_context("/"):
        _, raw = core_services.issue_token(factories.actor(staff["pharmacist"]), staff["pharmacist"].id, "tests")
        db.session.commit()
    bearer = {"Authorization": f"Bearer {raw}"}
    got = client.get("/api/v1/refill-requests?page=3&page_size=20", headers=bearer)
    assert got.status_code == 200 and len(got.get_json()) == 13
    assert json.loads(got.headers["X-Pagination"])["total"] == 53
    assert client.get("/api/v1/refill-requests?page_size=500", headers=bearer).status_code == 422


def test_every_patient_the_renewals_list_shows_is_a_recorded_read(app: Flask, client: FlaskClient,
                                                                  staff: dict) -> None:
    """The renewals awaited are listed by name: each of their patients is a read in the audit trail (the renewals
    were once listed without a read event); the requests' page, which no longer lists them, records none of them."""
    from pharmacy.core.models import AuditEvent

    d = setup_requests(app, staff)
    chen = fetch(app, RenewalRequest, d["renewal_id"]).patient_id
    login(client, staff["pharmacist"])
    page = client.get("/refills?page=2")  # two requests: the second page of requests is empty
    assert page.status_code == 200 and "Chen" not in text(page)
    page = client.get("/refills/renewals")
    assert page.status_code == 200 and "Chen" in text(page)
    with app.app_context():
        read = db.session.execute(sa.select(AuditEvent.action, AuditEvent.patient_id).where(
            AuditEvent.action.in_(["refill.queue", "renewal.queue"]))).all()
    assert [tuple(r) for r in read if r.patient_id is not None] == [("renewal.queue", chen)], read
    # An old address of the renewals' pages leads to them.
    old = client.get("/refills?renewals_page=2")
    assert old.status_code == 302 and old.headers["Location"].endswith("/refills/renewals?page=2")
