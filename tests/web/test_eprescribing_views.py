"""The intake queue pages: the Today block, the queue, the review page beside the form, accepting (screened as typed
intake), rejecting, matching the patient, adding a patient or prescriber from the message, faxes uploaded and shown,
notices, clarifications and the messages verbatim — each audited."""
from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from pharmacy.core.actor import Actor
from pharmacy.core.models import AuditEvent
from pharmacy.core.roles import Role
from pharmacy.documents.rules import DocumentSource
from pharmacy.eprescribing import ncpdp
from pharmacy.eprescribing.models import ErxIntake, ErxMessage
from pharmacy.eprescribing.rules import IntakeState, MatchStatus, MessageState
from pharmacy.extensions import db
from pharmacy.patients.models import Patient
from pharmacy.prescriptions.models import Prescriber, Prescription, ScreeningAlert
from pharmacy.workflows import eprescribing as workflow
from tests import factories
from tests.conftest import login
from tests.documents_support import prescription_pdf
from tests.erx_support import fixture

INTERMEDIARY = "http://127.0.0.1:9/script"  # never contacted here: delivery is not run in these tests


@pytest.fixture
def app_config(app_config: dict) -> dict:
    return {**app_config, "NCPDP_INTERMEDIARY_URL": INTERMEDIARY, "DOCUMENT_MAX_MB": "1"}


NCPDP = Actor(kind="token", user_id=None, role=Role.PHARMACIST, scope="ncpdp")


def arrive(app: Any, name: str = "new_rx_capsules.xml", **values: str) -> int:
    """A SCRIPT message arriving (as the endpoint would hand it over); the id of the queue entry it opened."""
    with app.test_request_context("/"):
        reply = workflow.receive_script(NCPDP, fixture(name, **values))
        assert ncpdp.parse(reply.body).kind == "Status", reply.body
        db.session.commit()
        return db.session.execute(sa.select(ErxIntake.id).order_by(ErxIntake.id.desc())).scalars().first()


@pytest.fixture
def setup(app: Any, staff: dict[str, Any]) -> dict[str, Any]:
    with app.test_request_context("/"):
        ph = factories.actor(staff["pharmacist"])
        f = factories.formula()
        patient = factories.patient(ph, conditions=["multiple sclerosis", "spasticity"])
        db.session.commit()
        return {"formula": f.id, "patient": patient.id}


def test_today_shows_waiting_e_prescriptions_and_faxes(app, client, staff, setup) -> None:
    arrive(app)
    with app.test_request_context("/"):
        workflow.receive_document(factories.actor(staff["technician"]), name="fax.pdf", data=prescription_pdf(),
                                  source=DocumentSource.UPLOAD)
        db.session.commit()
    login(client, staff["technician"])
    page = client.get("/").get_data(as_text=True)
    assert "Prescriptions that arrived" in page and "1</strong> e-prescription waiting" in page
    assert "Ellison, Margaret" in page and "Dr. Adaeze Okafor, MD" in page
    assert "1</strong> fax or scan to type in" in page
    admin = app.test_client()
    login(admin, staff["admin"])
    assert "Prescriptions that arrived" not in admin.get("/").get_data(as_text=True)  # minimum necessary


def test_review_accept_runs_the_safety_screen_and_sends_a_verify(app, client, staff, setup) -> None:
    intake_id = arrive(app)
    login(client, staff["pharmacist"])
    queue = client.get("/eprescriptions").get_data(as_text=True)
    assert f"/eprescriptions/{intake_id}" in queue and "patient matched" in queue
    page = client.get(f"/eprescriptions/{intake_id}").get_data(as_text=True)
    for text in ("As written", "Naltrexone HCl 4.5 mg capsule", "Take 1 capsule (4.5 mg) by mouth at bedtime.",
                 "Prescriber not on file", "Accept and screen", "Ask the prescriber"):
        assert text in page
    response = client.post(f"/eprescriptions/{intake_id}/prescriber/new")
    assert response.status_code == 302
    with app.app_context():
        doc = db.session.execute(sa.select(Prescriber).where(Prescriber.npi == "1987654328")).scalar_one()
        form = {"patient_id": setup["patient"], "prescriber_id": doc.id, "formula_id": setup["formula"],
                "dose_mg": "4.5", "dosing_time": "bedtime", "quantity": "30", "days_supply": "30",
                "refills_authorized": "5", "written_date": "2026-11-20", "directions": "Take 1 capsule by mouth at bedtime.",
                "indication": "Multiple sclerosis", "indication_code": "G35"}
    response = client.post(f"/eprescriptions/{intake_id}/accept", data=form)
    assert response.status_code == 302 and "/prescriptions/" in response.headers["Location"]
    with app.app_context():
        rx = db.session.execute(sa.select(Prescription)).scalar_one()
        alerts = db.session.execute(sa.select(ScreeningAlert.code).where(ScreeningAlert.prescription_id == rx.id))
        assert "spasticity_dose" in set(alerts.scalars())  # 4.5 mg with spasticity: screened as typed intake
        verify = db.session.execute(sa.select(ErxMessage).where(ErxMessage.kind == "Verify")).scalar_one()
        assert verify.state == MessageState.PENDING and verify.relates_to_message_id == "NEWRX-0001"
        actions = set(db.session.execute(sa.select(AuditEvent.action)).scalars())
        assert {"erx.intake.view", "erx.intake.accept", "prescription.create"} <= actions
    again = client.post(f"/eprescriptions/{intake_id}/accept", data=form)
    assert again.status_code == 409  # accepted once only


def test_a_technician_prepares_but_only_a_pharmacist_decides(app, client, staff, setup) -> None:
    intake_id = arrive(app, LAST_NAME="Stranger")
    login(client, staff["technician"])
    page = client.get(f"/eprescriptions/{intake_id}").get_data(as_text=True)
    assert "Add Margaret Stranger as a new patient" in page and "A pharmacist accepts or rejects it." in page
    assert client.post(f"/eprescriptions/{intake_id}/patient/new").status_code == 302
    with app.app_context():
        patient = db.session.execute(sa.select(Patient).where(Patient.last_name == "Stranger")).scalar_one()
        intake = db.session.get(ErxIntake, intake_id)
        assert (intake.patient_id, intake.match_status) == (patient.id, MatchStatus.CHOSEN)
        assert patient.postal_code == "62704" and patient.phone == "2175550101"
    assert client.post(f"/eprescriptions/{intake_id}/accept", data={}).status_code == 422  # the form first …
    assert client.post(f"/eprescriptions/{intake_id}/reject", data={"reason": "no"}).status_code == 403


def test_an_ambiguous_match_is_chosen_from_the_candidates(app, client, staff, setup) -> None:
    with app.test_request_context("/"):
        twin = factories.patient(factories.actor(staff["pharmacist"]), email="twin@example.com")
        db.session.commit()
        twin_id = twin.id
    intake_id = arrive(app)
    login(client, staff["technician"])
    page = client.get(f"/eprescriptions/{intake_id}").get_data(as_text=True)
    assert "Patients on file born the same day" in page and f'value="{twin_id}"' in page
    search = client.get(f"/eprescriptions/{intake_id}?q=ellison").get_data(as_text=True)
    assert search.count("Choose<span") == 2
    client.post(f"/eprescriptions/{intake_id}/patient", data={"patient_id": twin_id})
    with app.app_context():
        assert db.session.get(ErxIntake, intake_id).patient_id == twin_id


def test_accepting_without_a_patient_says_so(app, client, staff, setup) -> None:
    intake_id = arrive(app, LAST_NAME="Stranger")
    login(client, staff["pharmacist"])
    response = client.post(f"/eprescriptions/{intake_id}/accept", data={
        "prescriber_id": "1", "formula_id": str(setup["formula"]), "dose_mg": "4.5", "days_supply": "30",
        "written_date": "2026-11-20"})
    assert response.status_code == 422 and "patient_id" in response.get_data(as_text=True)
    with app.app_context():
        assert db.session.get(ErxIntake, intake_id).state == IntakeState.WAITING


def test_reject_sends_the_reason_back_as_an_error(app, client, staff, setup) -> None:
    intake_id = arrive(app)
    login(client, staff["pharmacist"])
    assert client.post(f"/eprescriptions/{intake_id}/reject", data={"reason": "x"}).status_code == 422
    response = client.post(f"/eprescriptions/{intake_id}/reject", data={"reason": "Patient already has an LDN supply"})
    assert response.status_code == 302
    with app.app_context():
        intake = db.session.get(ErxIntake, intake_id)
        assert intake.state == IntakeState.REJECTED and intake.decided_by_id == staff["pharmacist"].id
        error = db.session.execute(sa.select(ErxMessage).where(ErxMessage.kind == "Error",
                                                               ErxMessage.direction == "out")).scalar_one()
        answer = ncpdp.parse(error.body)
        assert answer.answer.code == "900" and "already has an LDN supply" in answer.answer.description


def test_a_clarification_goes_out_and_the_answer_updates_the_entry(app, client, staff, setup) -> None:
    intake_id = arrive(app)
    login(client, staff["pharmacist"])
    response = client.post(f"/eprescriptions/{intake_id}/clarify",
                           data={"request_code": "D", "question": "4.5 mg with spasticity: confirm, or 3 mg?"})
    assert response.status_code == 302
    with app.app_context():
        request = db.session.execute(sa.select(ErxMessage).where(ErxMessage.kind == "RxChangeRequest")).scalar_one()
        sent = ncpdp.parse(request.body)
        assert sent.request_code == "D" and "confirm, or 3 mg?" in sent.prescription.medication.note
        our_id = request.message_id
    header = ncpdp.Header(to="1234567", sender="6811234567001", sender_qualifier="D", message_id="CHG-1",
                          relates_to=our_id, sent_time="2026-11-23T16:00:00Z")
    medication = ncpdp.parse(fixture("new_rx_capsules.xml")).prescription.medication
    medication.description, medication.sig = "Naltrexone HCl 3 mg capsule", "Take 1 capsule (3 mg) by mouth at bedtime."
    body = ncpdp.response_message("RxChangeResponse", header,
                                  ncpdp.PrescriberResponse(outcome="approved_with_changes", note="Use 3 mg"), medication)
    with app.test_request_context("/"):
        assert ncpdp.parse(workflow.receive_script(NCPDP, body).body).answer.code == "010"
        db.session.commit()
    page = client.get(f"/eprescriptions/{intake_id}").get_data(as_text=True)
    assert "The prescriber approved with changes the clarification: Use 3 mg" in page
    assert "Naltrexone HCl 3 mg capsule" in page and "No active formula is 3 mg capsule" in page


def upload(client: Any, name: str, data: bytes) -> Any:
    """POST the upload form with a multipart body built here (the test client's own encoder leaves a temporary file
    open for large bodies: a ResourceWarning in the client, not in the app)."""
    head = (f'--b0undary\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n").encode()
    body = head + data + b"\r\n--b0undary--\r\n"
    return client.post("/documents/upload", data=body, content_type="multipart/form-data; boundary=b0undary")


def test_upload_a_fax_and_see_it_page_by_page(app, client, staff, setup) -> None:
    login(client, staff["technician"])
    assert client.get("/documents/upload").status_code == 200
    pdf = prescription_pdf(pages=2)
    response = upload(client, "fax.pdf", pdf)
    assert response.status_code == 302
    review = client.get(response.headers["Location"]).get_data(as_text=True)
    assert "The document (2 pages)" in review and "Page 2 of 2 of the faxed prescription" in review
    with app.app_context():
        doc_id = db.session.execute(sa.select(ErxIntake.document_id)).scalar_one()
    png = client.get(f"/documents/{doc_id}/pages/2.png")
    assert png.status_code == 200 and png.mimetype == "image/png" and png.data.startswith(b"\x89PNG")
    # Loaded beside the form, perhaps after it was submitted: no cookie that would put back the session as it was.
    assert "Set-Cookie" not in png.headers and "Set-Cookie" in client.get(response.headers["Location"]).headers
    assert client.get(f"/documents/{doc_id}/pages/3.png").status_code == 404
    original = client.get(f"/documents/{doc_id}/original")
    assert original.data == pdf and "attachment" in original.headers["Content-Disposition"]


@pytest.mark.parametrize(("name", "data", "status", "words"), [
    ("fax.pdf", b"MZ this is an executable", 422, "not a PDF, TIFF, PNG or JPEG"),
    ("empty.pdf", b"", 422, "Choose a PDF"),
    ("big.pdf", b"%PDF-" + b"0" * (1024 * 1024 + 10), 422, "At most 1 MB"),
    ("huge.pdf", b"%PDF-" + b"0" * (1024 * 1024 + 100 * 1024), 413, "At most 1 MB"),
])
def test_uploads_that_are_refused(app, client, staff, setup, name, data, status, words) -> None:
    login(client, staff["technician"])
    response = upload(client, name, data)
    assert response.status_code == status and words in response.get_data(as_text=True)
    with app.app_context():
        assert db.session.execute(sa.select(ErxIntake)).first() is None


def test_a_notice_is_marked_done_and_messages_are_shown_verbatim(app, client, staff, setup) -> None:
    arrive(app, "cancel_rx.xml", MESSAGE_ID="CANCEL-X", ORDER_NUMBER="UNKNOWN")
    login(client, staff["pharmacist"])
    with app.app_context():
        notice = db.session.execute(sa.select(ErxIntake)).scalar_one()
        message_id = notice.message_row_id
    page = client.get(f"/eprescriptions/{notice.id}").get_data(as_text=True)
    assert "matches no e-prescription" in page
    assert client.post(f"/eprescriptions/{notice.id}/done", data={"note": "Checked: typed-in Rx stopped"}).status_code == 302
    message = client.get(f"/eprescriptions/messages/{message_id}").get_data(as_text=True)
    assert "CANCEL-X" in message and "&lt;CancelRx&gt;" in message
    with app.app_context():
        assert db.session.get(ErxIntake, notice.id).state == IntakeState.DONE
        assert db.session.execute(sa.select(AuditEvent).where(AuditEvent.action == "erx.message.view")).first()


def test_intake_pages_send_the_same_statements_with_more_waiting(app, client, staff, setup) -> None:
    """The N+1 guard for the intake queue, an entry's review page and Today's e-prescription block: two waiting
    e-prescriptions or ten, the same number of statements (a query per entry would grow with them)."""
    from tests.pages import queries

    login(client, staff["pharmacist"])
    paths = ["/eprescriptions", "/"]

    def counts(review_id: int) -> dict[str, int]:
        found = {}
        for path in [*paths, f"/eprescriptions/{review_id}"]:
            assert client.get(path).status_code == 200  # warm-up: first-use lookups are not per row
            with queries(app) as seen:
                assert client.get(path).status_code == 200
            found[path.replace(str(review_id), "<id>")] = len(seen)
        return found

    first = [arrive(app, MESSAGE_ID=f"NEWRX-N{i}", ORDER_NUMBER=f"PON-N{i}") for i in range(2)]
    few = counts(first[0])
    for i in range(2, 10):
        arrive(app, MESSAGE_ID=f"NEWRX-N{i}", ORDER_NUMBER=f"PON-N{i}", LAST_NAME=f"Waiting{i}")
    with app.app_context():
        assert db.session.execute(sa.select(sa.func.count()).select_from(ErxIntake)).scalar_one() == 10
    assert "Waiting9" in client.get("/eprescriptions").get_data(as_text=True)
    assert counts(first[0]) == few
