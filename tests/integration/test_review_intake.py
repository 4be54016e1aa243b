"""Review of how prescriptions ARRIVE (NCPDP SCRIPT): defects a pharmacist would hit.

Each test posts real SCRIPT messages to POST /ncpdp/script (the intermediary's door) and then does what the
pharmacist does on the review page (services.review, workflows.eprescribing.accept …). Every test here fails on the
code as it was reviewed and names, in its docstring, what the pharmacist sees and what should happen instead.
"""
from __future__ import annotations

from datetime import date
from typing import Any

import pytest
import sqlalchemy as sa

from pharmacy.compounding.rules import UspCategory
from pharmacy.core.errors import DomainError
from pharmacy.core.forms import load
from pharmacy.core.models import AuditEvent, User
from pharmacy.core.roles import Role
from pharmacy.eprescribing import ncpdp, services
from pharmacy.eprescribing.models import ErxIntake, ErxMessage
from pharmacy.eprescribing.rules import IntakeKind, IntakeState
from pharmacy.extensions import db
from pharmacy.patients.models import Patient
from pharmacy.prescriptions.models import Prescription
from pharmacy.prescriptions.rules import Form, RxStatus
from pharmacy.prescriptions.schemas import PrescriptionInSchema
from pharmacy.workflows import eprescribing as workflow
from pharmacy.workflows import prescription_changes
from pharmacy.workflows import renewals as renewal_flow
from tests import factories
from tests.erx_support import fixture, ncpdp_token

OTHER_NPI = "1234567893"  # a second valid NPI (check digit correct)


@pytest.fixture
def app_config(app_config: dict) -> dict:
    # An intermediary is configured (nothing is delivered in these tests: outbound rows stay in the outbox).
    return {**app_config, "NCPDP_INTERMEDIARY_URL": "http://127.0.0.1:9/script",
            "NCPDP_INTERMEDIARY_TOKEN": "intermediary-secret"}


@pytest.fixture
def world(app: Any, staff: dict[str, Any]) -> dict[str, Any]:
    """Capsules 4.5 and 1.5 mg, a 1 mg/mL sublingual liquid, the fixtures' patient on file; prescriber not on file."""
    with app.test_request_context("/"):
        ph = factories.actor(staff["pharmacist"])
        f45 = factories.formula()
        f15 = factories.formula("LDN-CAP-1.5", strength="1.5")
        sl1 = factories.formula("LDN-SL-1", form=Form.SUBLINGUAL_LIQUID, strength="1",
                                category=UspCategory.AQUEOUS_PRESERVED)
        patient = factories.patient(ph)
        db.session.commit()
        return {"f45": f45.id, "f15": f15.id, "sl1": sl1.id, "patient_id": patient.id, "pharmacist": ph,
                "token": ncpdp_token(app)}


def post(client: Any, token: str, body: bytes) -> ncpdp.ScriptMessage:
    response = client.post("/ncpdp/script", data=body, content_type="application/xml",
                           headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.get_data(as_text=True)[:400]
    return ncpdp.parse(response.get_data())


def new_rx(*, description: str | None = None, sig: str | None = None, quantity: str | None = None,
           unit: str | None = None, days: str | None = None, **values: str) -> bytes:
    """The capsule NewRx fixture with its medication changed (days="" drops DaysSupply)."""
    raw = fixture("new_rx_capsules.xml", **values).decode()
    if description is not None:
        raw = raw.replace("Naltrexone HCl 4.5 mg capsule (compounded, low-dose)", description)
    if sig is not None:
        raw = raw.replace("Take 1 capsule (4.5 mg) by mouth at bedtime.", sig)
    if quantity is not None:
        raw = raw.replace("<Value>30</Value>", f"<Value>{quantity}</Value>")
    if unit is not None:
        raw = raw.replace("<Code>C48480</Code>", f"<Code>{unit}</Code>")
    if days is not None:
        raw = raw.replace("<DaysSupply>30</DaysSupply>", f"<DaysSupply>{days}</DaysSupply>" if days else "")
    return raw.encode()


def waiting(kind: IntakeKind = IntakeKind.NEW_RX) -> list[ErxIntake]:
    return list(db.session.execute(sa.select(ErxIntake).where(ErxIntake.state == IntakeState.WAITING,
                                                              ErxIntake.kind == kind)
                                   .order_by(ErxIntake.id)).scalars())


def accept_as_suggested(app: Any, w: dict[str, Any], intake_id: int) -> int:
    """What the pharmacist does: add the prescriber if new, take the review form's values, accept."""
    with app.test_request_context("/"):
        intake = services.get_intake(intake_id)
        if intake.prescriber_id is None:
            workflow.add_prescriber_from_intake(w["pharmacist"], intake.id)
        review = services.review(w["pharmacist"], intake.id)
        data, errors = load(PrescriptionInSchema(), {k: v for k, v in review.form.items() if v})
        assert errors == {}, errors
        rx = workflow.accept(w["pharmacist"], intake.id, data)
        db.session.commit()
        return rx.id


def review_of_only_waiting(app: Any, w: dict[str, Any]) -> services.Review:
    with app.test_request_context("/"):
        [intake] = waiting()
        return services.review(w["pharmacist"], intake.id)


# ---- CancelRx ----------------------------------------------------------------------------------------------------


def test_cancel_rx_from_another_prescriber_relating_to_our_message_id_does_not_stop_another_patients_rx(
        app, client, world) -> None:
    """A CancelRx is matched "by PrescriberOrderNumber + NPI (or RelatesToMessageID = the NewRx)". The fallback
    looks the NewRx up by MessageID alone — any sender's, any prescriber's, any patient's
    (`messages.inbound_by_message_id` in `workflows/eprescribing._cancel_rx`). MessageIDs are only unique per sender
    (the table's own unique key is sender + MessageID), so a CancelRx from another clinic, another NPI, for another
    patient, whose RelatesToMessageID happens to equal the ID of Margaret Ellison's NewRx, discontinues *her*
    prescription, cancels her open orders and reminders, and tells the other clinic it was done.

    Correct: a CancelRx only reaches a NewRx from the same sender and prescriber NPI; otherwise it is answered
    "not found" (CancelRxResponse Denied) and Ellison's prescription stays active."""
    post(client, world["token"], fixture("new_rx_capsules.xml"))  # From 6811234567001, MessageID NEWRX-0001
    with app.app_context():
        [intake] = waiting()
        intake_id = intake.id
    rx_id = accept_as_suggested(app, world, intake_id)

    cancel = fixture("cancel_rx.xml", MESSAGE_ID="CXL-OTHER-1", ORDER_NUMBER="OTHER-CLINIC-55", NPI=OTHER_NPI,
                     LAST_NAME="Stranger", FIRST_NAME="Samuel", BIRTH_DATE="1971-07-01").decode()
    cancel = cancel.replace('<From Qualifier="D">6811234567001</From>', '<From Qualifier="D">7009998887001</From>')
    cancel = cancel.replace("<MessageID>CXL-OTHER-1</MessageID>",
                            "<MessageID>CXL-OTHER-1</MessageID><RelatesToMessageID>NEWRX-0001</RelatesToMessageID>")
    answer = post(client, world["token"], cancel.encode())
    assert answer.kind == "Status"
    with app.app_context():
        rx = db.session.get(Prescription, rx_id)
        assert rx.status == RxStatus.ACTIVE, (
            f"another clinic's CancelRx for another patient stopped {rx.rx_number}: {rx.status_reason}")


def test_cancel_rx_of_an_old_order_does_not_stop_the_new_prescription_that_replaced_it(app, client, world) -> None:
    """A dose change / renewal often arrives as a *new* NewRx (its own PrescriberOrderNumber); the pharmacist marks it
    as the replacement of the old prescription ("RX… replaces", `workflows.prescription_changes.adopt`), and the
    prescriber's EHR then sends a CancelRx for the *old* order (it was discontinued in the EHR).

    `_cancel_rx` matches the old order's intake, then `_current()` walks from the old prescription to whatever
    replaced it and discontinues *that*: the new prescription — which the prescriber never cancelled and which has
    its own order number — is stopped, its orders and reminders cancelled, and the prescriber is told "RX… is
    stopped". The patient is left with no current LDN prescription.

    Correct: the CancelRx concerns the order it names. The old prescription is already closed (replaced): answer
    that it was already stopped and leave the new one (order PON-NEW) active."""
    post(client, world["token"], fixture("new_rx_capsules.xml", MESSAGE_ID="RX-OLD", ORDER_NUMBER="PON-OLD",
                                         WRITTEN_DATE="2026-06-01"))
    with app.app_context():
        [old_intake] = waiting()
        old_intake_id = old_intake.id
    old_id = accept_as_suggested(app, world, old_intake_id)
    post(client, world["token"], fixture("new_rx_capsules.xml", MESSAGE_ID="RX-NEW", ORDER_NUMBER="PON-NEW"))
    with app.app_context():
        [new_intake] = waiting()
        new_intake_id = new_intake.id
    new_id = accept_as_suggested(app, world, new_intake_id)
    with app.test_request_context("/"):
        prescription_changes.adopt(world["pharmacist"], new_id, old_id)
        db.session.commit()

    answer = post(client, world["token"], fixture("cancel_rx.xml", MESSAGE_ID="CXL-OLD", ORDER_NUMBER="PON-OLD"))
    assert answer.kind == "Status"
    with app.app_context():
        assert db.session.get(Prescription, old_id).status == RxStatus.REPLACED
        new = db.session.get(Prescription, new_id)
        assert new.status == RxStatus.ACTIVE, (
            f"the CancelRx for order PON-OLD stopped {new.rx_number} (order PON-NEW): {new.status_reason}")


# ---- what the sig says -------------------------------------------------------------------------------------------


def test_a_decimal_comma_in_the_sig_is_not_read_as_a_tenfold_dose(app, client, world) -> None:
    """"Place 1,5 mL (1,5 mg) under the tongue at bedtime" (a decimal comma, as many European-trained prescribers and
    some EHR free-text sigs write it) of a 1 mg/mL liquid. `eprescribing/medication_rules._DOSE_MG` / `_UNITS` only know the
    decimal point, so they read the "5 mg" after the comma: the review form is pre-filled with a daily dose of
    **5 mg** (3.3 × the 1.5 mg prescribed), nothing is listed under *What did not map*, and 5 mg of a 1 mg/mL liquid is
    a measurable 5 mL, so accepting as suggested passes the dose rules (5 mg is only a warning). With no days supply
    written, 45 mL becomes a 9-day supply.

    Correct: read "1,5" as 1.5 mg, or leave the dose empty and say the directions could not be read."""
    post(client, world["token"], new_rx(description="Naltrexone 1 mg/mL sublingual solution",
                                        sig="Place 1,5 mL (1,5 mg) under the tongue at bedtime.", quantity="45",
                                        unit="C28254", days=""))
    review = review_of_only_waiting(app, world)
    assert review.form["formula_id"] == str(world["sl1"])
    assert review.form["dose_mg"] in ("", "1.5"), (
        f"the sig says 1,5 mg; the form suggests {review.form['dose_mg']} mg; unmapped: {review.mapping.unmapped}")


@pytest.mark.parametrize(("description", "sig", "quantity", "days", "formula"), [
    pytest.param("Naltrexone HCl 1.5 mg capsule", "Take 1 capsule (1.5 mg) at bedtime for 14 days, then 2 capsules "
                 "(3 mg) at bedtime.", "46", "30", "f15", id="titration-first-step-taken-as-the-dose"),
    pytest.param("Naltrexone HCl 1.5 mg capsule", "Take 2 capsules (1.5 mg each) by mouth at bedtime.", "60", "30",
                 "f15", id="per-capsule-strength-taken-as-the-dose"),
    pytest.param("Naltrexone HCl 1.5 mg capsule", "Take 1 capsule (4.5 mg) by mouth at bedtime.", "30", "",
                 "f15", id="count-times-strength-contradicts-the-mg"),
])
def test_the_daily_dose_is_never_silently_misread_from_the_sig(app, client, world, description, sig, quantity, days,
                                                               formula) -> None:
    """`eprescribing/medication_rules.dose_from_sig` takes the *first* "N mg" in the sig as the daily dose and lists nothing
    under *What did not map*, so the pharmacist sees a confident, wrong pre-filled dose:

    - a titration ("1.5 mg for 14 days, then 3 mg"): dose 1.5 mg, no titration steps, no note — accepted as
      suggested the patient never steps up (and the quantity written for the titration no longer agrees);
    - "Take 2 capsules (1.5 mg each)": dose 1.5 mg, half of the 3 mg prescribed;
    - "Take 1 capsule (4.5 mg)" of 1.5 mg capsules: dose 4.5 mg (3 capsules) while the directions — copied verbatim
      onto the label — say 1 capsule; with no days supply, 30 capsules become a 10-day supply.

    Correct: when the sig states more than one dose, a per-unit strength, or a capsule count that disagrees with the
    mg, the dose is left for the pharmacist (or read right) and the reason is listed under *What did not map*."""
    post(client, world["token"], new_rx(description=description, sig=sig, quantity=quantity, days=days))
    review = review_of_only_waiting(app, world)
    assert review.form["formula_id"] == str(world[formula])
    baseline = [u for u in review.mapping.unmapped if not u.startswith("No ICD-10")]
    assert baseline, (f"sig {sig!r}: dose pre-filled as {review.form['dose_mg']} mg and nothing listed as not mapped")


# ---- the patient -------------------------------------------------------------------------------------------------


def test_two_e_prescriptions_for_a_new_patient_do_not_create_the_patient_twice(app, client, world) -> None:
    """A prescriber sends two NewRx at once for a patient new to the pharmacy (capsules and a cream, or a starter and a
    maintenance prescription). Both are matched "new patient" on arrival. The pharmacist adds the patient from the
    first ("Add as a new patient"); the second entry still says *new patient* (the match is never looked at again,
    `services._suggest` runs only on arrival) and its "Add as a new patient" button creates a **second** record for
    the same person (`workflows.eprescribing.add_patient_from_intake` → `patients.services.create_patient`, which
    checks nothing): two charts, two medication lists — screening runs against the wrong one.

    Correct: adding a patient from an entry refuses (or links) when a patient with the same name, date of birth and
    ZIP is already on file, and the entry suggests that patient."""
    for n in (1, 2):
        post(client, world["token"], fixture("new_rx_capsules.xml", MESSAGE_ID=f"NEW-PT-{n}", ORDER_NUMBER=f"PON-{n}",
                                             LAST_NAME="Quinlan", FIRST_NAME="Harriet", BIRTH_DATE="1979-02-14"))
    with app.test_request_context("/"):
        first, second = waiting()
        workflow.add_patient_from_intake(world["pharmacist"], first.id)
        db.session.commit()
        second_id = second.id
    with app.test_request_context("/"):
        try:
            workflow.add_patient_from_intake(world["pharmacist"], second_id)
            db.session.commit()
        except DomainError:
            db.session.rollback()
    with app.app_context():
        same = db.session.execute(sa.select(Patient.id).where(Patient.last_name == "Quinlan",
                                                              Patient.date_of_birth == date(1979, 2, 14))).all()
        assert len(same) == 1, f"{len(same)} patient records for the same person"


# ---- renewals ----------------------------------------------------------------------------------------------------


def test_an_approved_renewal_that_does_not_restate_the_medication_is_not_dated_as_the_old_prescription(
        app, client, world) -> None:
    """An RxRenewalResponse "Approved" without a MedicationPrescribed (the prescriber approved what we asked). The
    handler (`workflows/eprescribing._renewal_response`) then uses the medication *from our own RxRenewalRequest*,
    which is the old prescription as written — including its **written date** and its refill count. The review form
    is pre-filled with the old written date, so the renewed prescription (accepted as suggested) expires on the
    old prescription's expiry date: the renewal buys no time at all (and an old prescription past its year would be
    refused as expired). The pharmacist is told nothing about it.

    Correct: an approval without a restated medication is dated the day of the approval (or the written date is
    left empty and listed under *What did not map*), never the old prescription's written date."""
    post(client, world["token"], fixture("new_rx_capsules.xml", WRITTEN_DATE="2026-01-12", REFILLS="0"))
    with app.app_context():
        [intake] = waiting()
        intake_id = intake.id
    old_id = accept_as_suggested(app, world, intake_id)
    with app.test_request_context("/"):
        renewal_flow.ask_prescriber(world["pharmacist"], prescription_id=old_id)
        db.session.commit()
        asked = db.session.execute(sa.select(ErxMessage).where(ErxMessage.kind == "RxRenewalRequest")).scalar_one()
        asked_id = asked.message_id
    approval = fixture("rx_renewal_response_approved.xml", MESSAGE_ID="RENEW-OK-1", RELATES_TO=asked_id).decode()
    start, end = approval.index("<MedicationPrescribed>"), approval.index("</MedicationPrescribed>")
    approval = approval[:start] + approval[end + len("</MedicationPrescribed>"):]
    answer = post(client, world["token"], approval.encode())
    assert (answer.kind, answer.answer.code) == ("Status", "010")
    with app.test_request_context("/"):
        [renewal] = waiting(IntakeKind.RENEWAL)
        review = services.review(world["pharmacist"], renewal.id)
        old = db.session.get(Prescription, old_id)
        assert review.form["written_date"] != old.written_date.isoformat(), (
            f"the renewal is pre-filled with the old written date {old.written_date} (expires {old.expiry_date})")


# ---- the prescriber ----------------------------------------------------------------------------------------------


def test_an_npi_with_an_extra_digit_is_refused_not_cut_to_ten_digits(app, client, world) -> None:
    """An NPI is exactly 10 digits. The parser cuts the NPI element to 10 characters *before* it is checked
    (`ncpdp._prescriber`: `_text(..., "NPI", limit=10)`), so "19876543281" (a typo with an extra digit) is read as
    1987654328 — a valid NPI, here Dr. Okafor's — and the NewRx is taken in, the prescriber "identified", and the
    renewal address for that NPI re-pointed at the sender.

    Correct: an NPI that is not exactly 10 digits is refused on arrival (Error 900 naming the NPI), as a wrong check
    digit is."""
    answer = post(client, world["token"], fixture("new_rx_capsules.xml", NPI="19876543281"))
    assert answer.kind == "Error" and "NPI" in answer.answer.description, (answer.kind, answer.answer)
    with app.app_context():
        assert db.session.execute(sa.select(ErxIntake)).first() is None


def test_strength_fields_that_contradict_the_description_are_flagged(app, client, world) -> None:
    """The NewRx's structured strength (DrugCoded/Strength: 1.5 mg) contradicts its DrugDescription ("Naltrexone HCl
    4.5 mg capsule"). `eprescribing/medication_rules._map_product` reads the first strength it finds in "value unit +
    description", so the 1.5 mg capsule formula is pre-selected and nothing is listed under *What did not map*; with
    the sig's "(4.5 mg)" the pharmacist is offered 3 × 1.5 mg capsules a night and, the quantity being 30, a 10-day
    supply — while the prescriber's own text says one 4.5 mg capsule for 30 days.

    Correct: when the coded strength and the description disagree, no formula is guessed (or the conflict is listed
    for the pharmacist to ask the prescriber)."""
    raw = fixture("new_rx_capsules.xml").decode().replace(
        "<DrugDescription>Naltrexone HCl 4.5 mg capsule (compounded, low-dose)</DrugDescription>",
        "<DrugDescription>Naltrexone HCl 4.5 mg capsule (compounded, low-dose)</DrugDescription><DrugCoded>"
        "<Strength><StrengthValue>1.5</StrengthValue><StrengthForm><Code>C25158</Code></StrengthForm>"
        "<StrengthUnitOfMeasure><Code>mg</Code></StrengthUnitOfMeasure></Strength></DrugCoded>")
    post(client, world["token"], raw.encode())
    review = review_of_only_waiting(app, world)
    assert review.form["formula_id"] != str(world["f15"]) or review.mapping.unmapped, (
        f"1.5 mg coded vs 4.5 mg described: formula {review.form['formula_id']} chosen, nothing listed")


# ---- answers and the audit trail ---------------------------------------------------------------------------------


def _set_role(app: Any, email: str, role: Role) -> None:
    with app.app_context():
        db.session.execute(sa.update(User).where(User.email == email).values(role=role))
        db.session.commit()


def test_a_message_answered_error_601_is_processed_when_the_intermediary_retries_it(app, client, world) -> None:
    """Error 601 means "receiver unable to process — try again" (this app's own outbox retries on it,
    `eprescribing/rules.classify_answer`). The docs' example: the intermediary's service account lacks a permission,
    so a CancelRx cannot stop the prescription. Once the account is fixed, the intermediary sends the same message
    again (same MessageID) — and `receive_script` answers it from the stored reply (`messages.record_inbound` finds
    the row, `row.answer_body` is replayed): **Error 601 again, for ever**. The CancelRx is never acted on; the
    prescription the prescriber cancelled stays active and fillable, and nothing reaches the intake queue.

    Correct: only final answers (Status, Error 900) are replayed; a message answered 601/602 is processed again when
    it comes back."""
    post(client, world["token"], fixture("new_rx_capsules.xml"))
    with app.app_context():
        [intake] = waiting()
        intake_id = intake.id
    rx_id = accept_as_suggested(app, world, intake_id)
    _set_role(app, "erx-intermediary@pharmacy.test", Role.TECHNICIAN)  # misconfigured service account
    first = post(client, world["token"], fixture("cancel_rx.xml", MESSAGE_ID="CANCEL-601"))
    assert (first.kind, first.answer.code) == ("Error", "601")
    _set_role(app, "erx-intermediary@pharmacy.test", Role.PHARMACIST)  # fixed
    again = post(client, world["token"], fixture("cancel_rx.xml", MESSAGE_ID="CANCEL-601"))
    with app.app_context():
        rx = db.session.get(Prescription, rx_id)
        assert rx.status == RxStatus.DISCONTINUED, (
            f"the retried CancelRx got {again.kind} {again.answer.code} again; {rx.rx_number} is still {rx.status}")


def test_a_readable_message_refused_on_arrival_is_audited_as_refused(app, client, world) -> None:
    """docs/eprescribing.md lists `erx.message.refuse` in the audit trail, and an unreadable body gets it. A readable
    message refused by a rule — a NewRx whose NPI has a wrong check digit (Error 900), a renewal response relating to
    nothing we sent, a transaction we do not accept — is answered Error and listed under *Messages refused on
    arrival*, but the audit trail only says `erx.message.receive` (`workflows/eprescribing.receive_script` records no
    refusal on the `_Refusal` / DomainError paths): someone reading the audit trail cannot tell which e-prescriptions
    were turned away.

    Correct: every refused inbound message has an `erx.message.refuse` event (ids and codes only)."""
    answer = post(client, world["token"], fixture("new_rx_capsules.xml", NPI="1987654321"))
    assert (answer.kind, answer.answer.code) == ("Error", "900")
    with app.app_context():
        row = db.session.execute(sa.select(ErxMessage)).scalar_one()
        actions = db.session.execute(sa.select(AuditEvent.action).where(
            AuditEvent.entity_type == "erx_message", AuditEvent.entity_id == row.id)).scalars().all()
        assert "erx.message.refuse" in actions, actions
