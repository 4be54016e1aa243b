"""End to end through a loopback intermediary: the app served on a real port, a real HTTP server playing the
intermediary (it posts prescribers' messages to /ncpdp/script and receives the pharmacy's), the real services.

- NewRx → queue → a pharmacist accepts → order → dispensed → a MedicationDispense over FHIR; a Verify goes back.
- The same NewRx twice: one queue entry, the same answer.
- A renewal round trip: no refills left → RxRenewalRequest (no email) → RxRenewalResponse approved → the renewed
  prescription replaces the old, linked; denied → the waiting patient is told, the pharmacist sees a notice.
- CancelRx: the prescription stops, its open order and pending reminders are cancelled, a CancelRxResponse goes back
  saying what had been dispensed; a CancelRx that matches nothing is denied and queued.
- Delivery: retries with backoff through the intermediary's outage, gives up on Error 900, and can be retried.
"""
from __future__ import annotations

import json
import urllib.request
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.medicationdispense import MedicationDispense
from fhir.resources.R4B.medicationrequest import MedicationRequest

from pharmacy.compounding.models import Order
from pharmacy.compounding.rules import OrderState
from pharmacy.core.forms import load
from pharmacy.core.models import AuditEvent
from pharmacy.eprescribing import delivery, messages, ncpdp, services
from pharmacy.eprescribing.models import ErxIntake, ErxMessage
from pharmacy.eprescribing.rules import IntakeKind, IntakeState, MatchStatus, MessageState
from pharmacy.extensions import db
from pharmacy.prescriptions.models import Prescription
from pharmacy.prescriptions.rules import RxStatus
from pharmacy.prescriptions.schemas import PrescriptionInSchema
from pharmacy.refills.models import RefillRequest, RenewalRequest
from pharmacy.refills.rules import RefillRequestState, RenewalState, RequestSource
from pharmacy.reminders.models import OutboxMessage
from pharmacy.reminders.rules import MessageKind, OutboxState
from pharmacy.workflows import eprescribing as workflow
from pharmacy.workflows import orders as order_flow
from pharmacy.workflows import refill_requests as refill_flow
from pharmacy.workflows import renewals as renewal_flow
from tests import factories
from tests.erx_support import OKAFOR_NPI, Intermediary, api_token, fixture, ncpdp_token, served


@pytest.fixture
def intermediary() -> Any:
    with Intermediary() as server:
        yield server


@pytest.fixture
def app_config(app_config: dict, intermediary: Intermediary) -> dict:
    return {**app_config, "NCPDP_INTERMEDIARY_URL": intermediary.url, "NCPDP_INTERMEDIARY_TOKEN": "intermediary-secret"}


@pytest.fixture
def world(app: Any, staff: dict[str, Any]) -> dict[str, Any]:
    """A capsule formula, the patient the fixtures name (on file), staff actors; the prescriber is NOT on file."""
    with app.test_request_context("/"):
        ph = factories.actor(staff["pharmacist"])
        f = factories.formula()
        patient = factories.patient(ph)
        db.session.commit()
        return {"formula_id": f.id, "patient_id": patient.id, "pharmacist": ph, "staff": staff,
                "pharmacist2": factories.actor(staff["pharmacist2"]), "technician": factories.actor(staff["technician"])}


def _accept_waiting(app: Any, w: dict[str, Any], *, kind: IntakeKind = IntakeKind.NEW_RX) -> Prescription:
    """What the pharmacist does on the review page: add the prescriber if new, take the suggested values, accept."""
    with app.test_request_context("/"):
        intake = db.session.execute(sa.select(ErxIntake).where(ErxIntake.state == IntakeState.WAITING,
                                                               ErxIntake.kind == kind)).scalar_one()
        if intake.prescriber_id is None:
            workflow.add_prescriber_from_intake(w["pharmacist"], intake.id)
        review = services.review(w["pharmacist"], intake.id)
        data, errors = load(PrescriptionInSchema(), {k: v for k, v in review.form.items() if v})
        assert errors == {}, errors
        rx = workflow.accept(w["pharmacist"], intake.id, data)
        db.session.commit()
        return db.session.get(Prescription, rx.id)


def _dispense_first_fill(app: Any, w: dict[str, Any], rx_id: int) -> int:
    with app.test_request_context("/"):
        order = order_flow.start_fill(w["pharmacist"], rx_id)
        rx = db.session.get(Prescription, rx_id)
        factories.run_order_to({"formula": rx.formula, "pharmacist": w["pharmacist"], "pharmacist2": w["pharmacist2"],
                                "technician": w["technician"]}, order.id, "dispensed")
        db.session.commit()
        return order.id


def _deliver(app: Any) -> delivery.DeliveryReport:
    with app.app_context():
        return delivery.deliver_due()


def _get_json(url: str, token: str) -> dict[str, Any]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})  # noqa: S310 - loopback
    with urllib.request.urlopen(request, timeout=20) as response:  # noqa: S310 - loopback
        assert response.headers["Content-Type"].startswith("application/fhir+json")
        return json.loads(response.read())


def test_new_rx_to_dispensed_and_visible_as_a_medication_dispense(app, world, intermediary, clock) -> None:
    token = ncpdp_token(app)
    with served(app) as base:
        first = intermediary.send(base, token, fixture("new_rx_capsules.xml"))
        assert (first.kind, first.answer.code, first.header.relates_to) == ("Status", "010", "NEWRX-0001")
        again = intermediary.send(base, token, fixture("new_rx_capsules.xml"))
        assert (again.kind, again.answer.code) == ("Status", "010")
        with app.app_context():
            assert db.session.execute(sa.select(sa.func.count()).select_from(ErxIntake)).scalar_one() == 1
            assert db.session.execute(sa.select(sa.func.count()).select_from(ErxMessage)).scalar_one() == 1
            intake = db.session.execute(sa.select(ErxIntake)).scalar_one()
            assert (intake.match_status, intake.patient_id) == (MatchStatus.MATCHED, world["patient_id"])
            assert intake.prescriber_id is None  # not on file yet: the pharmacist adds them from the message
            message = db.session.get(ErxMessage, intake.message_row_id)
            assert message.body == fixture("new_rx_capsules.xml")  # verbatim
            assert messages.address_for(OKAFOR_NPI).address == "6811234567001"

        rx = _accept_waiting(app, world)
        assert (rx.patient_id, rx.formula_id, rx.dose_mg, rx.refills_authorized, rx.days_supply) == (
            world["patient_id"], world["formula_id"], Decimal("4.5"), 5, 30)
        assert rx.directions == "Take 1 capsule (4.5 mg) by mouth at bedtime."
        order_id = _dispense_first_fill(app, world, rx.id)

        report = _deliver(app)
        assert (report.sent, report.failed) == (1, 0)
        [verify] = intermediary.messages("Verify")
        assert (verify.header.relates_to, verify.answer.code, verify.header.rx_reference_number) == (
            "NEWRX-0001", "010", rx.rx_number)
        assert intermediary.authorizations == ["Bearer intermediary-secret"]

        fhir_token = api_token(app, world["staff"]["pharmacist"])
        bundle = _get_json(f"{base}/fhir/MedicationDispense?patient=Patient/{world['patient_id']}&status=completed",
                           fhir_token)
        Bundle.model_validate(bundle)
        [entry] = bundle["entry"]
        dispense = MedicationDispense.model_validate(entry["resource"])
        assert dispense.id == str(order_id) and dispense.status == "completed"
        assert dispense.authorizingPrescription[0].reference == f"MedicationRequest/{rx.id}"
        assert dispense.quantity.value == 30 and dispense.daysSupply.value == 30
        request = MedicationRequest.model_validate(_get_json(f"{base}/fhir/MedicationRequest/{rx.id}", fhir_token))
        assert request.identifier[0].value == rx.rx_number and request.dispenseRequest.numberOfRepeatsAllowed == 5
    with app.app_context():
        reads = db.session.execute(sa.select(AuditEvent.action).where(
            AuditEvent.patient_id == world["patient_id"], AuditEvent.action.in_(["fhir.search", "fhir.read"]))).all()
        assert len(reads) == 2
        actions = set(db.session.execute(sa.select(AuditEvent.action)).scalars())
        assert {"erx.message.receive", "erx.message.duplicate", "erx.intake.open", "erx.intake.accept",
                "erx.message.queue", "erx.message.sent"} <= actions


def _renewable(app: Any, world: dict[str, Any], intermediary: Intermediary, base: str, token: str) -> Prescription:
    """An e-prescription with no refills, accepted and filled once: the next fill needs a renewal."""
    intermediary.send(base, token, fixture("new_rx_capsules.xml", REFILLS="0"))
    rx = _accept_waiting(app, world)
    _dispense_first_fill(app, world, rx.id)
    _deliver(app)  # the Verify
    return rx


def test_renewal_round_trip(app, world, intermediary) -> None:
    token = ncpdp_token(app)
    with served(app) as base:
        old = _renewable(app, world, intermediary, base, token)
        with app.test_request_context("/"):
            req = refill_flow.request(world["pharmacist"], old.id, source=RequestSource.STAFF).request
            assert req.state == RefillRequestState.AWAITING_RENEWAL
            renewal = renewal_flow.ask_prescriber(world["pharmacist"], request_id=req.id)
            db.session.commit()
            req_id, old_number = req.id, old.rx_number
            emails = db.session.execute(sa.select(OutboxMessage).where(
                OutboxMessage.kind == MessageKind.PRESCRIBER_RENEWAL)).scalars().all()
            assert emails == []  # reachable electronically: no email with the patient's name and birth date
            renewal_id = renewal.id
        assert _deliver(app).sent == 1
        [asked] = intermediary.messages("RxRenewalRequest")
        assert asked.header.to == "6811234567001" and asked.header.prescriber_order_number == "PON-7781"
        assert asked.header.rx_reference_number == old_number
        assert (asked.prescription.patient.last_name, asked.prescription.prescriber.npi) == ("Ellison", OKAFOR_NPI)
        assert asked.dispensed.quantity == "30" and asked.prescription.medication.refills == "0"

        answer = intermediary.send(base, token, fixture("rx_renewal_response_approved.xml", MESSAGE_ID="RENEW-OK-1",
                                                        RELATES_TO=asked.header.message_id))
        assert (answer.kind, answer.answer.code) == ("Status", "010")
        new = _accept_waiting(app, world, kind=IntakeKind.RENEWAL)
        with app.app_context():
            old = db.session.get(Prescription, old.id)
            assert old.status == RxStatus.REPLACED and new.replaces_id == old.id and new.refills_authorized == 5
            renewal = db.session.get(RenewalRequest, renewal_id)
            assert (renewal.state, renewal.new_prescription_id) == (RenewalState.RECEIVED, new.id)
            carried = db.session.get(RefillRequest, req_id)
            assert (carried.prescription_id, carried.state) == (new.id, RefillRequestState.OPEN)


def test_a_denied_renewal_tells_the_waiting_patient_and_leaves_a_notice(app, world, intermediary) -> None:
    token = ncpdp_token(app)
    with served(app) as base:
        old = _renewable(app, world, intermediary, base, token)
        with app.test_request_context("/"):
            req = refill_flow.request(world["pharmacist"], old.id, source=RequestSource.STAFF).request
            renewal_flow.ask_prescriber(world["pharmacist"], request_id=req.id)
            db.session.commit()
            req_id = req.id
        _deliver(app)
        [asked] = intermediary.messages("RxRenewalRequest")
        answer = intermediary.send(base, token, fixture("rx_renewal_response_denied.xml", MESSAGE_ID="RENEW-NO-1",
                                                        RELATES_TO=asked.header.message_id))
        assert (answer.kind, answer.answer.code) == ("Status", "010")
    with app.app_context():
        req = db.session.get(RefillRequest, req_id)
        assert req.state == RefillRequestState.DECLINED and "did not renew" in req.decline_reason
        told = db.session.execute(sa.select(OutboxMessage).where(
            OutboxMessage.kind == MessageKind.REQUEST_DECLINED, OutboxMessage.refill_request_id == req_id)).scalar_one()
        assert told.state == OutboxState.PENDING
        notice = db.session.execute(sa.select(ErxIntake).where(ErxIntake.kind == IntakeKind.RENEWAL_DENIED)).scalar_one()
        assert notice.state == IntakeState.WAITING and "Patient must be seen" in notice.notice
        assert "emailed" in notice.notice
        renewal = db.session.execute(sa.select(RenewalRequest)).scalar_one()
        assert renewal.state == RenewalState.CANCELLED


def test_cancel_rx_stops_the_prescription_its_open_order_and_reminders(app, world, intermediary, clock) -> None:
    token = ncpdp_token(app)
    with served(app) as base:
        intermediary.send(base, token, fixture("new_rx_capsules.xml"))
        rx = _accept_waiting(app, world)
        _dispense_first_fill(app, world, rx.id)
        with app.test_request_context("/"):
            reminders = db.session.execute(sa.select(OutboxMessage.id).where(
                OutboxMessage.prescription_id == rx.id, OutboxMessage.state == OutboxState.PENDING,
                OutboxMessage.kind.in_([MessageKind.REMINDER_EARLY, MessageKind.REMINDER_ORDER_BY,
                                        MessageKind.REMINDER_OVERDUE]))).scalars().all()
            assert reminders, "the dispensed fill planned its refill reminders"
            open_order = order_flow.start_fill(world["pharmacist"], rx.id)
            db.session.commit()
            open_order_id = open_order.id

        answer = intermediary.send(base, token, fixture("cancel_rx.xml", MESSAGE_ID="CANCEL-1"))
        assert (answer.kind, answer.answer.code) == ("Status", "010")
        with app.app_context():
            rx = db.session.get(Prescription, rx.id)
            assert rx.status == RxStatus.DISCONTINUED and "CancelRx" in rx.status_reason
            assert db.session.get(Order, open_order_id).state == OrderState.CANCELLED
            still_pending = db.session.execute(sa.select(OutboxMessage.id).where(
                OutboxMessage.id.in_(reminders), OutboxMessage.state == OutboxState.PENDING)).scalars().all()
            assert still_pending == []
            notice = db.session.execute(sa.select(ErxIntake).where(ErxIntake.kind == IntakeKind.CANCEL_RX)).scalar_one()
            assert notice.prescription_id == rx.id and "1 fill had been dispensed" in notice.notice
        assert _deliver(app).sent >= 1
        [response] = intermediary.messages("CancelRxResponse")
        assert response.response.approved and response.header.relates_to == "CANCEL-1"
        assert "1 fill had been dispensed" in response.response.note and rx.rx_number in response.response.note

        again = intermediary.send(base, token, fixture("cancel_rx.xml", MESSAGE_ID="CANCEL-1"))
        assert again.answer.code == "010"
        unknown = intermediary.send(base, token, fixture("cancel_rx.xml", MESSAGE_ID="CANCEL-2", ORDER_NUMBER="NOPE"))
        assert unknown.answer.code == "010"
        _deliver(app)
        denied = [m for m in intermediary.messages("CancelRxResponse") if m.header.relates_to == "CANCEL-2"]
        assert len(denied) == 1 and denied[0].response.denied
    with app.app_context():
        assert db.session.execute(sa.select(sa.func.count()).select_from(ErxIntake).where(
            ErxIntake.kind == IntakeKind.CANCEL_RX)).scalar_one() == 2


def test_cancel_rx_before_review_removes_the_waiting_prescription(app, world, intermediary) -> None:
    token = ncpdp_token(app)
    with served(app) as base:
        intermediary.send(base, token, fixture("new_rx_capsules.xml"))
        intermediary.send(base, token, fixture("cancel_rx.xml", MESSAGE_ID="CANCEL-EARLY"))
        _deliver(app)
    with app.app_context():
        new_rx = db.session.execute(sa.select(ErxIntake).where(ErxIntake.kind == IntakeKind.NEW_RX)).scalar_one()
        assert new_rx.state == IntakeState.REJECTED and new_rx.prescription_id is None
        assert db.session.execute(sa.select(sa.func.count()).select_from(Prescription)).scalar_one() == 0
    [response] = intermediary.messages("CancelRxResponse")
    assert response.response.approved and "nothing was filled" in response.response.note


def test_delivery_retries_through_an_outage_then_gives_up_on_a_rejection(app, world, intermediary, clock) -> None:
    token = ncpdp_token(app)
    with served(app) as base:
        intermediary.send(base, token, fixture("new_rx_capsules.xml"))
    _accept_waiting(app, world)
    intermediary.replies.extend([(503, None), (200, "600")])
    assert _deliver(app).retried == 1
    assert _deliver(app).claimed == 0  # not due yet: the backoff holds it
    clock.advance(timedelta(minutes=1, seconds=1))
    assert _deliver(app).retried == 1  # Error 600: communication problem, try later
    clock.advance(timedelta(minutes=2, seconds=1))
    assert _deliver(app).sent == 1
    with app.app_context():
        verify = db.session.execute(sa.select(ErxMessage).where(ErxMessage.kind == "Verify")).scalar_one()
        assert (verify.state, verify.attempts, verify.answer_code) == (MessageState.SENT, 3, "010")
        results = [a.result for a in messages.attempts_of(verify.id)]
        assert results == ["transient", "transient", "sent"]
        with app.test_request_context("/"):
            workflow.reject(world["pharmacist"], _new_waiting(app, intermediary, base=None), "Duplicate therapy")
            db.session.commit()
    intermediary.replies.append((200, "900"))
    assert _deliver(app).failed == 1
    with app.test_request_context("/"):
        error = db.session.execute(sa.select(ErxMessage).where(ErxMessage.kind == "Error",
                                                               ErxMessage.direction == "out")).scalar_one()
        assert error.state == MessageState.FAILED and "900" in error.last_error
        messages.retry_outbound(factories.actor(world["staff"]["pharmacist"]), error.id)
        db.session.commit()
    assert _deliver(app).sent == 1


def _new_waiting(app: Any, intermediary: Intermediary, base: str | None) -> int:
    """A second NewRx straight through the workflow (the served app is gone in this test) — its entry id."""
    from pharmacy.core.actor import Actor
    from pharmacy.core.roles import Role

    actor = Actor(kind="token", user_id=None, role=Role.PHARMACIST, scope="ncpdp")
    reply = workflow.receive_script(actor, fixture("new_rx_capsules.xml", MESSAGE_ID="NEWRX-0002"))
    assert ncpdp.parse(reply.body).answer.code == "010"
    return db.session.execute(sa.select(ErxIntake.id).where(ErxIntake.state == IntakeState.WAITING)).scalar_one()
