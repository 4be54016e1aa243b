"""The intake pages over HTTP: patients, prescribers, prescriptions, the prescription page and its actions.

Bad input re-shows the form with the message next to the field (422) and writes nothing; every
change is audited; pages show alerts with who/when/why once resolved, and stay within a fixed
number of queries whatever the amount of history.
"""
from __future__ import annotations

import html
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from pharmacy.compounding.models import Order
from pharmacy.compounding.rules import OrderState
from pharmacy.core.audit import READ_SUFFIXES
from pharmacy.core.models import AuditEvent
from pharmacy.extensions import db
from pharmacy.patients.models import Patient
from pharmacy.prescriptions.models import Prescriber, Prescription, ScreeningAlert
from pharmacy.prescriptions.rules import RxStatus
from pharmacy.workflows import orders as order_flow
from tests import factories
from tests.conftest import login
from tests.demo_seeds import load_demo_seeds
from tests.pages import audit_actions, build, count, field_error, labels_cover_inputs, queries, run, text

# ---- patients -------------------------------------------------------------------------------------------


def test_a_new_patient_through_the_form(app: Flask, client: FlaskClient, staff: dict) -> None:
    login(client, staff["technician"])
    form = client.get("/patients/new")
    assert form.status_code == 200
    labels_cover_inputs(form.get_data(as_text=True))
    response = client.post("/patients/new", data={
        "first_name": "Nora", "last_name": "Lindqvist", "date_of_birth": "1979-03-02", "email": "nora@example.com",
        "phone": "(217) 555-0142", "state": "il", "postal_code": "62704",
        "conditions": "relapsing-remitting multiple sclerosis\r\n\r\nspasticity\r\n",
        "medications": "baclofen 10 mg\r\nvitamin D3", "delivery_preference": "ship", "shipping_days": "3",
    })
    assert response.status_code == 302
    with app.app_context():
        p = db.session.execute(sa.select(Patient).where(Patient.last_name == "Lindqvist")).scalar_one()
        assert p.conditions == ["relapsing-remitting multiple sclerosis", "spasticity"]
        assert p.medications == ["baclofen 10 mg", "vitamin D3"]
        assert (p.state, p.shipping_days, p.reminders_opt_in) == ("IL", 3, False)  # the box was not ticked
        pid = p.id
    assert response.headers["Location"] == f"/patients/{pid}"
    page = client.get(f"/patients/{pid}")
    assert "Nora Lindqvist was added." in text(page)
    assert "spasticity" in text(page) and "baclofen 10 mg" in text(page)
    assert "patient.create" in audit_actions(app, patient_id=pid)


@pytest.mark.parametrize(("change", "field", "message"), [
    ({"last_name": ""}, "last_name", "Enter the last name."),
    ({"date_of_birth": "12/04/1968"}, "date_of_birth", "Enter the date of birth, e.g. 1968-04-12."),
    ({"date_of_birth": "2030-01-01"}, "date_of_birth", "A birth date cannot be in the future."),
    ({"postal_code": "6270"}, "postal_code", "Use a ZIP code like 62704."),
    ({"email": "not-an-email"}, "email", "Enter an email address like name@example.com."),
    ({"shipping_days": "40"}, "shipping_days", "Enter the days shipping takes: a number from 0 to 14."),
])
def test_a_bad_patient_form_is_re_shown_with_the_message_and_nothing_saved(
        app: Flask, client: FlaskClient, staff: dict, change: dict, field: str, message: str) -> None:
    login(client, staff["pharmacist"])
    data = {"first_name": "Nora", "last_name": "Lindqvist", "date_of_birth": "1979-03-02", **change}
    before = count(app, Patient)
    response = client.post("/patients/new", data=data)
    body = response.get_data(as_text=True)
    assert response.status_code == 422
    assert field_error(body, field) == message
    assert 'value="Nora"' in body  # what was typed is kept
    assert count(app, Patient) == before


def test_editing_a_patient_re_screens_their_prescriptions(app: Flask, client: FlaskClient, staff: dict) -> None:
    w = build(app, staff)
    login(client, staff["technician"])
    form = client.get(f"/patients/{w['patient']}/edit")
    body = form.get_data(as_text=True)
    labels_cover_inputs(body)
    assert ">multiple sclerosis</textarea>" in body and "checked" in body.split('id="f-reminders_opt_in"')[1][:80]
    response = client.post(f"/patients/{w['patient']}/edit", data={
        "first_name": "Margaret", "last_name": "Ellison", "date_of_birth": "1968-04-12",
        "conditions": "multiple sclerosis", "medications": "Percocet 5/325 mg as needed\nvitamin D3",
        "reminders_opt_in": "1",
    })
    assert response.status_code == 302
    page = text(client.get(f"/patients/{w['patient']}"))
    assert "Details saved" in page
    assert "Hard stop" in page and "Percocet 5/325 mg as needed" in page
    with app.app_context():
        alert = db.session.execute(sa.select(ScreeningAlert).where(ScreeningAlert.prescription_id == w["rx"])).scalar_one()
        assert alert.code == "opioid"
        assert db.session.get(Patient, w["patient"]).email is None  # a blank field clears it
    assert audit_actions(app, patient_id=w["patient"])[-3:-1] == ["patient.update", "prescription.screen"]


def test_an_admin_may_not_open_or_add_patients(app: Flask, client: FlaskClient, staff: dict) -> None:
    w = build(app, staff)
    login(client, staff["admin"])
    assert client.get("/patients/new").status_code == 403
    assert client.post("/patients/new", data={"first_name": "X"}).status_code == 403
    assert client.get(f"/patients/{w['patient']}/edit").status_code == 403
    assert "denied.edit_patient" in audit_actions(app, actor_user_id=staff["admin"].id)


def test_user_text_is_escaped_on_the_record(app: Flask, client: FlaskClient, staff: dict) -> None:
    w = build(app, staff, patient={"first_name": "<script>alert(1)</script>", "medications": ['"><img src=x>']})
    login(client, staff["pharmacist"])
    body = client.get(f"/patients/{w['patient']}").get_data(as_text=True)
    assert "<script>alert(1)</script>" not in body and "&lt;script&gt;alert(1)&lt;/script&gt;" in body
    assert '"><img src=x>' not in body


def test_the_patient_record_does_not_grow_queries_with_history(app: Flask, client: FlaskClient, staff: dict) -> None:
    w = build(app, staff, patient={"conditions": ["multiple sclerosis", "hepatitis B"]})
    login(client, staff["pharmacist"])
    client.get(f"/patients/{w['patient']}")
    with queries(app) as small:
        assert client.get(f"/patients/{w['patient']}").status_code == 200

    def more() -> None:
        ph = factories.actor(staff["pharmacist"])
        for _ in range(4):
            rx = factories.second_prescription(ph, w["patient"], w["formula"], w["prescriber"])
            order = order_flow.start_fill(ph, rx.id)
            order_flow.cancel(ph, order.id, "Duplicate")
            order_flow.start_fill(ph, rx.id)

    run(app, more)
    with queries(app) as large:
        page = client.get(f"/patients/{w['patient']}")
    # Five liver stops waiting, and the four duplicate-therapy stops (overridden: both meant) listed with them.
    assert page.status_code == 200 and text(page).count("Stop: pharmacist review") == 9
    assert "5 alerts for a pharmacist" in text(page)
    assert len(large) == len(small)


# ---- prescribers ------------------------------------------------------------------------------------------


def test_prescribers_list_and_a_bad_npi(app: Flask, client: FlaskClient, staff: dict) -> None:
    w = build(app, staff)
    login(client, staff["technician"])
    listing = text(client.get("/prescribers"))
    assert "Dr. Elena Marquez, MD" in listing and "1234567893" in listing
    labels_cover_inputs(client.get("/prescribers/new").get_data(as_text=True))
    bad = client.post("/prescribers/new", data={"first_name": "Ann", "last_name": "Neuro", "npi": "1003000127"})
    assert bad.status_code == 422
    assert "check digit" in field_error(bad.get_data(as_text=True), "npi")
    assert count(app, Prescriber) == 1
    good = client.post("/prescribers/new", data={"first_name": "Ann", "last_name": "Neuro", "npi": "1003000126",
                                                 "patient_id": str(w["patient"])})
    assert good.status_code == 302
    with app.app_context():
        doc = db.session.execute(sa.select(Prescriber).where(Prescriber.npi == "1003000126")).scalar_one()
    assert good.headers["Location"] == f"/prescriptions/new?patient_id={w['patient']}&prescriber_id={doc.id}"
    form = client.get(good.headers["Location"]).get_data(as_text=True)
    assert f'<option value="{doc.id}" selected>' in form


# ---- prescription intake ----------------------------------------------------------------------------------


def rx_form(w: dict[str, Any], **change: Any) -> dict[str, Any]:
    data = {"patient_id": str(w["patient"]), "formula_id": str(w["formula"]), "prescriber_id": str(w["prescriber"]),
            "dose_mg": "4.5", "dosing_time": "bedtime", "days_supply": "30", "refills_authorized": "3",
            "written_date": "2026-11-20", "step_dose": ["", "", "", ""], "step_days": ["", "", "", ""]}
    data.update(change)
    return data


def test_a_prescription_through_the_intake_form(app: Flask, client: FlaskClient, staff: dict) -> None:
    w = build(app, staff, patient={"conditions": ["multiple sclerosis", "spasticity"]})
    f15 = run(app, lambda: factories.formula("LDN-CAP-1.5", strength="1.5").id)
    login(client, staff["technician"])
    form = client.get(f"/prescriptions/new?patient_id={w['patient']}")
    body = form.get_data(as_text=True)
    labels_cover_inputs(body)
    assert '<optgroup label="Capsules">' in body and body.count('name="step_dose"') == 4
    assert 'value="2026-11-23"' in body  # written today (pharmacy time) by default
    response = client.post("/prescriptions/new", data=rx_form(
        w, formula_id=str(f15), dose_mg="4.5", days_supply="", quantity="84",
        step_dose=["1.5", "3", "", ""], step_days=["14", "14", "", ""]))
    assert response.status_code == 302
    with app.app_context():
        rx = db.session.execute(sa.select(Prescription).order_by(Prescription.id.desc()).limit(1)).scalar_one()
        assert (rx.days_supply, rx.quantity, rx.refills_authorized) == (42, 84, 3)
        assert rx.titration == [{"dose_mg": "1.5", "days": 14}, {"dose_mg": "3", "days": 14}]
    assert response.headers["Location"] == f"/prescriptions/{rx.id}"
    page = text(client.get(response.headers["Location"]))
    # The patient already had a prescription (the world's): a duplicate-therapy stop beside the spasticity check.
    assert f"{rx.rx_number} saved. The safety screen raised 2 alerts, 2 needing a pharmacist before any fill" in page
    assert "The patient already has a current LDN prescription: RX000001" in page
    assert "Needs acknowledgement" in page and "no more than 3 mg daily" in page
    assert "Waiting for a pharmacist." in page  # a technician sees no acknowledgement form
    assert "Nov 20 – Dec 3, 2026 1 capsule 1.5 mg" in page  # the dated titration chart
    assert "From Dec 18, 2026 3 capsules 4.5 mg" in page
    assert "84 capsules · 42 days supply" in page


def test_intake_without_a_patient_goes_back_to_the_patient_list(app: Flask, client: FlaskClient, staff: dict) -> None:
    login(client, staff["pharmacist"])
    response = client.get("/prescriptions/new")
    assert response.status_code == 302 and response.headers["Location"] == "/patients/"
    assert "Open the patient's page first" in text(client.get("/patients/"))


@pytest.mark.parametrize(("change", "field", "message"), [
    ({"dose_mg": "0"}, "dose_mg", "Must be at least 0.001."),
    ({"dose_mg": "-4.5"}, "dose_mg", "Must be at least 0.001."),
    ({"dose_mg": "450"}, "dose_mg", "Must be at most 100."),
    ({"dose_mg": "four"}, "dose_mg", "Enter a number, e.g. 4.5."),
    ({"dose_mg": "4"}, "dose_mg", "4 mg is not a whole number of 4.5 mg capsules."),
    ({"step_dose": ["4.5", "", "", ""], "step_days": ["0", "", "", ""]}, "titration.0.days", "Each step lasts 1–180 days."),
    ({"quantity": "45"}, "quantity", "45 capsules last 45 days at 1 capsule a day, not 30."),
    ({"days_supply": ""}, "quantity", "Enter a quantity or a days supply."),
    ({"formula_id": "9999"}, "formula_id", "Unknown or inactive formula."),
    ({"prescriber_id": "9999"}, "prescriber_id", "Unknown prescriber."),
    ({"patient_id": "9999"}, "patient_id", "Unknown patient."),
    ({"expiry_date": "2026-11-01"}, "expiry_date", "The expiry date must be after the written date."),
    ({"written_date": "2026-12-24"}, "written_date", "The written date cannot be in the future."),
    ({"dosing_time": "noon"}, "dosing_time", "Choose when the dose is taken."),
])
def test_bad_intake_re_shows_the_form_with_the_message_and_saves_nothing(
        app: Flask, client: FlaskClient, staff: dict, change: dict, field: str, message: str) -> None:
    w = build(app, staff)
    login(client, staff["pharmacist"])
    # Nothing written; the read of the patient the form shows is audited all the same (reads survive a refusal).
    writes = ~sa.or_(*(AuditEvent.action.endswith(suffix) for suffix in READ_SUFFIXES))
    before = (count(app, Prescription), count(app, ScreeningAlert), count(app, AuditEvent, writes))
    response = client.post("/prescriptions/new", data=rx_form(w, **change))
    body = response.get_data(as_text=True)
    assert response.status_code == 422
    assert field_error(body, field) == message
    assert "Please check the form: nothing was saved." in body
    assert 'id="f-dose_mg" name="dose_mg" type="text" value="' + html.escape(rx_form(w, **change)["dose_mg"]) in body
    assert (count(app, Prescription), count(app, ScreeningAlert), count(app, AuditEvent, writes)) == before


# ---- the prescription page and its actions ------------------------------------------------------------------


def test_a_pharmacist_overrides_a_liver_stop_and_the_page_says_who_when_why(
        app: Flask, client: FlaskClient, staff: dict) -> None:
    w = build(app, staff, patient={"conditions": ["multiple sclerosis", "fatty liver disease"]})
    with app.app_context():
        alert_id = db.session.execute(sa.select(ScreeningAlert.id).where(
            ScreeningAlert.prescription_id == w["rx"])).scalar_one()
    login(client, staff["technician"])
    assert client.post(f"/prescriptions/{w['rx']}/alerts/{alert_id}/resolve",
                       data={"reason": "fine"}).status_code == 403
    client.post("/logout")
    login(client, staff["pharmacist"])
    page = client.get(f"/prescriptions/{w['rx']}").get_data(as_text=True)
    assert 'class="alert overridable_stop"' in page
    assert f'action="/prescriptions/{w["rx"]}/alerts/{alert_id}/resolve"' in page
    empty = client.post(f"/prescriptions/{w['rx']}/alerts/{alert_id}/resolve", data={"reason": ""})
    assert empty.status_code == 422
    assert "Say why (at least a few words)." in empty.get_data(as_text=True)
    done = client.post(f"/prescriptions/{w['rx']}/alerts/{alert_id}/resolve",
                       data={"reason": "Ultrasound only; LFTs normal"})
    assert done.status_code == 302
    page = text(client.get(f"/prescriptions/{w['rx']}"))
    assert "Alert overridden; your name, the time and the reason are recorded." in page
    assert "Overridden by Paula Pharmacist on Nov 23, 2026 9:00 AM: “Ultrasound only; LFTs normal”" in page


def test_a_hard_stop_offers_no_override_and_refuses_one(app: Flask, client: FlaskClient, staff: dict) -> None:
    w = build(app, staff, patient={"medications": ["oxycodone 5 mg"]})
    with app.app_context():
        alert_id = db.session.execute(sa.select(ScreeningAlert.id).where(
            ScreeningAlert.prescription_id == w["rx"])).scalar_one()
    login(client, staff["pharmacist"])
    page = client.get(f"/prescriptions/{w['rx']}").get_data(as_text=True)
    assert 'class="alert hard_stop"' in page and "/resolve" not in page
    assert "This cannot be overridden" in page
    refused = client.post(f"/prescriptions/{w['rx']}/alerts/{alert_id}/resolve", data={"reason": "Patient insists"})
    assert refused.status_code == 409
    assert "This is a hard stop: it cannot be overridden." in text(refused)
    with app.app_context():
        assert db.session.get(ScreeningAlert, alert_id).resolved_at is None


def test_hold_resume_and_discontinue_from_the_prescription_page(app: Flask, client: FlaskClient, staff: dict) -> None:
    w = build(app, staff)
    order_id = run(app, lambda: order_flow.start_fill(factories.actor(staff["technician"]), w["rx"]).id)
    login(client, staff["technician"])
    assert client.post(f"/prescriptions/{w['rx']}/hold", data={"reason": "Waiting"}).status_code == 403
    assert "Change this prescription" not in text(client.get(f"/prescriptions/{w['rx']}"))
    client.post("/logout")
    login(client, staff["pharmacist"])
    no_reason = client.post(f"/prescriptions/{w['rx']}/hold", data={"reason": " "})
    assert no_reason.status_code == 422 and "Say why (at least a few words)." in text(no_reason)
    assert client.post(f"/prescriptions/{w['rx']}/hold", data={"reason": "Waiting for labs"}).status_code == 302
    page = text(client.get(f"/prescriptions/{w['rx']}"))
    assert "On hold Waiting for labs" in page and "Resume" in page
    assert client.post(f"/prescriptions/{w['rx']}/resume").status_code == 302
    again = client.post(f"/prescriptions/{w['rx']}/resume")
    assert again.status_code == 409 and "Only a prescription on hold can be resumed." in text(again)
    assert client.post(f"/prescriptions/{w['rx']}/discontinue", data={"reason": "Stopped by neurologist"}
                       ).status_code == 302
    page = text(client.get(f"/prescriptions/{w['rx']}"))
    assert "Discontinued Stopped by neurologist" in page
    assert "Prescription discontinued: Stopped by neurologist" in page  # the cancelled order says why
    with app.app_context():
        assert db.session.get(Order, order_id).state == OrderState.CANCELLED
    changes = [a for a in audit_actions(app, entity_type="prescription", entity_id=w["rx"])
               if a not in ("prescription.view", "prescription.screen")]
    assert changes == ["prescription.create", "prescription.hold", "prescription.resume", "prescription.discontinue"]


def test_replacing_from_a_form_pre_filled_from_the_old_prescription(app: Flask, client: FlaskClient, staff: dict) -> None:
    w = build(app, staff)
    login(client, staff["pharmacist"])
    form = client.get(f"/prescriptions/{w['rx']}/replace").get_data(as_text=True)
    assert 'id="f-dose_mg" name="dose_mg" type="text" value="4.5"' in form
    assert f'<option value="{w["formula"]}" selected>' in form and 'name="days_supply" type="number" value="30"' in form
    bad = client.post(f"/prescriptions/{w['rx']}/replace", data=rx_form(w, dose_mg="0"))
    assert bad.status_code == 422 and count(app, Prescription) == 1
    done = client.post(f"/prescriptions/{w['rx']}/replace", data={
        k: v for k, v in rx_form(w, dose_mg="9", refills_authorized="5").items() if k != "patient_id"})
    assert done.status_code == 302
    new_id = int(done.headers["Location"].rsplit("/", 1)[1])
    page = text(client.get(done.headers["Location"]))
    assert "replaces RX" in page and "Hard stop" in page and "9 mg is above the low-dose range" in page
    old_page = text(client.get(f"/prescriptions/{w['rx']}"))
    assert f"Replaced by RX{new_id:06d}" in old_page and "Change this prescription" not in old_page
    with app.app_context():
        assert db.session.get(Prescription, w["rx"]).status == RxStatus.REPLACED
        assert db.session.get(Prescription, new_id).replaces_id == w["rx"]


def test_start_a_fill_from_the_prescription_page(app: Flask, client: FlaskClient, staff: dict) -> None:
    w = build(app, staff)
    login(client, staff["technician"])
    page = client.get(f"/prescriptions/{w['rx']}").get_data(as_text=True)
    assert f'action="/prescriptions/{w["rx"]}/fills"' in page
    response = client.post(f"/prescriptions/{w['rx']}/fills", data={"delivery": "ship"})
    assert response.status_code == 302
    with app.app_context():
        order = db.session.execute(sa.select(Order).where(Order.prescription_id == w["rx"])).scalar_one()
        assert order.delivery_method.value == "ship" and order.shipping_cents == 895
    assert response.headers["Location"] == f"/orders/{order.id}"
    twice = client.post(f"/prescriptions/{w['rx']}/fills", data={})
    assert twice.status_code == 409 and "A fill of this prescription is already in progress." in text(twice)
    assert f"Order {order.id} is requested" in text(client.get(f"/prescriptions/{w['rx']}"))


def test_the_prescription_page_does_not_grow_queries_with_fills(app: Flask, client: FlaskClient, staff: dict) -> None:
    w = build(app, staff, patient={"conditions": ["multiple sclerosis", "cirrhosis"]})
    login(client, staff["pharmacist"])
    client.get(f"/prescriptions/{w['rx']}")
    with queries(app) as small:
        client.get(f"/prescriptions/{w['rx']}")

    def fills() -> None:
        ph = factories.actor(staff["pharmacist"])
        for _ in range(4):
            order_flow.cancel(ph, order_flow.start_fill(ph, w["rx"]).id, "Duplicate")

    run(app, fills)
    with queries(app) as large:
        page = client.get(f"/prescriptions/{w['rx']}")
    assert text(page).count("Prescription") and text(page).count("cancelled") == 4
    assert len(large) == len(small)


# ---- the seeded cases in the dashboard -------------------------------------------------------------------


def test_the_seeded_cases_show_their_alerts_in_the_dashboard(app: Flask, client: FlaskClient, staff: dict) -> None:
    run(app, load_demo_seeds)
    login(client, staff["pharmacist"])

    def rx_page(last_name: str) -> str:
        with app.app_context():
            rx_id = db.session.execute(sa.select(Prescription.id).join(Patient, Patient.id == Prescription.patient_id)
                                       .where(Patient.last_name == last_name)).scalars().first()
        return client.get(f"/prescriptions/{rx_id}").get_data(as_text=True)

    park = rx_page("Park")
    assert 'class="alert hard_stop"' in park and "tramadol 50 mg as needed" in html.unescape(park)
    assert "/resolve" not in park
    novak = rx_page("Novak")
    assert 'class="alert overridable_stop"' in novak and ">Override</button>" in novak
    brooks = rx_page("Brooks")
    assert 'class="alert acknowledge"' in brooks and ">Acknowledge</button>" in brooks
    queue = text(client.get("/orders"))
    assert "Park, Linda" in queue and "Novak, Thomas" in queue and "Brooks, Angela" in queue
    with app.app_context():
        park_order = db.session.execute(sa.select(Order.id).join(Patient, Patient.id == Order.patient_id)
                                        .where(Patient.last_name == "Park")).scalar_one()
    order_page = text(client.get(f"/orders/{park_order}"))
    assert "Cannot verify yet" in order_page and "a hard stop cannot be overridden" in order_page
