"""Refill requests through the service layer, on the real database: links, rules, idempotency, decisions, renewals."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from itsdangerous import URLSafeTimedSerializer
from sqlalchemy import event
from sqlalchemy.exc import IntegrityError

from pharmacy.compounding.models import Order
from pharmacy.compounding.rules import DeliveryMethod, OrderState
from pharmacy.core import links
from pharmacy.core.errors import Conflict, Forbidden, LinkInvalid, ValidationFailed
from pharmacy.core.models import AuditEvent, LinkGuard
from pharmacy.extensions import db
from pharmacy.prescriptions.models import Prescription
from pharmacy.prescriptions.rules import DosingTime, RxStatus
from pharmacy.refills import queue as refill_queue
from pharmacy.refills import renewals
from pharmacy.refills import services as refills
from pharmacy.refills.models import RefillRequest, RenewalRequest
from pharmacy.refills.rules import RefillRequestState, RenewalState, RequestSource
from pharmacy.reminders import outbox
from pharmacy.reminders.models import OutboxMessage
from pharmacy.reminders.rules import MessageKind, OutboxState
from pharmacy.workflows import orders as order_flow
from pharmacy.workflows import prescription_changes as changes
from pharmacy.workflows import refill_requests as refill_flow
from pharmacy.workflows import renewals as renewal_flow
from tests import factories

DOB = date(1968, 4, 12)  # factories.patient's date of birth


def tries(left: int) -> str:
    return "1 try" if left == 1 else f"{left} tries"


def dispensed_world(staff: dict, **rx: Any) -> tuple[dict[str, Any], Order]:
    """A patient whose first fill (30 days) was dispensed today, Monday 23 November 2026."""
    w = factories.world(staff, **rx)
    order = order_flow.start_fill(w["pharmacist"], w["rx"].id)
    factories.run_order_to(w, order.id, "dispensed")
    db.session.flush()
    return w, order


def other_patient(w: dict[str, Any], **rx: Any) -> tuple[Any, Prescription]:
    p = factories.patient(w["pharmacist"], first_name="Otto", last_name="Other", date_of_birth=date(1950, 1, 2),
                          email="otto@example.com")
    rx_row = factories.prescription(w["pharmacist"], p.id, w["formula"].id, w["prescriber"].id, **rx)
    return p, rx_row


def token_for(w: dict[str, Any]) -> str:
    return links.make_token(links.REFILL, w["patient"].id, w["rx"].id)


def outbox_rows(kind: MessageKind, **where: Any) -> list[OutboxMessage]:
    stmt = sa.select(OutboxMessage).where(OutboxMessage.kind == kind)
    for name, value in where.items():
        stmt = stmt.where(getattr(OutboxMessage, name) == value)
    return list(db.session.execute(stmt.execution_options(populate_existing=True)).scalars())


def open_requests(rx_id: int) -> list[RefillRequest]:
    return list(db.session.execute(sa.select(RefillRequest).where(
        RefillRequest.prescription_id == rx_id,
        RefillRequest.state.in_([RefillRequestState.OPEN, RefillRequestState.AWAITING_RENEWAL]))).scalars())


@contextmanager
def count_queries() -> Iterator[list[str]]:
    statements: list[str] = []

    def _count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if not statement.lstrip().upper().startswith(("SAVEPOINT", "RELEASE")):
            statements.append(statement)

    event.listen(db.engine, "before_cursor_execute", _count)
    try:
        yield statements
    finally:
        event.remove(db.engine, "before_cursor_execute", _count)


# ---- links ----------------------------------------------------------------------------------------


def test_a_link_opens_for_its_own_patient_and_prescription_after_the_birth_date(app_ctx: Flask, staff: dict) -> None:
    w, _ = dispensed_world(staff)
    token = token_for(w)
    claims = refills.open_link(token)
    assert (claims.patient_id, claims.prescription_id) == (w["patient"].id, w["rx"].id)
    assert refills.confirm_birth_date(token, DOB) == claims
    s = refills.link_summary(claims)
    assert s.rx.id == w["rx"].id and s.patient.id == w["patient"].id


@pytest.mark.parametrize("mangle", [
    lambda t: t[:-2] + ("AA" if not t.endswith("AA") else "BB"),  # signature changed
    lambda t: t[:20],  # cut short by a mail client
    lambda t: "not-a-token-at-all",
    lambda t: t.replace(".", "", 1),
])
def test_a_tampered_link_is_invalid(app_ctx: Flask, staff: dict, mangle: Any) -> None:
    w, _ = dispensed_world(staff)
    with pytest.raises(LinkInvalid) as exc:
        refills.open_link(mangle(token_for(w)))
    assert exc.value.reason == "invalid"


def test_a_link_signed_for_another_purpose_or_with_another_key_is_invalid(app_ctx: Flask, staff: dict) -> None:
    w, _ = dispensed_world(staff)
    preferences = links.make_token(links.PREFERENCES, w["patient"].id, w["rx"].id)
    with pytest.raises(LinkInvalid) as exc:
        refills.open_link(preferences)
    assert exc.value.reason == "invalid"
    forged = URLSafeTimedSerializer("some other key", salt="ldn.link.refill").dumps(
        {"p": w["patient"].id, "rx": w["rx"].id, "n": "forged-nonce"})
    with pytest.raises(LinkInvalid) as exc:
        refills.open_link(forged)
    assert exc.value.reason == "invalid"


def test_a_link_expires_after_refill_link_days(app_ctx: Flask, staff: dict, clock: Any) -> None:
    w, _ = dispensed_world(staff)
    token = token_for(w)
    days = app_ctx.extensions["pharmacy.settings"].refill_link_days
    assert days == 21
    clock.advance(timedelta(days=days) - timedelta(minutes=1))
    assert refills.open_link(token).prescription_id == w["rx"].id
    clock.advance(timedelta(minutes=2))
    with pytest.raises(LinkInvalid) as exc:
        refills.open_link(token)
    assert exc.value.reason == "expired"
    with pytest.raises(LinkInvalid):
        refills.confirm_birth_date(token, DOB)


def test_a_link_whose_prescription_is_swapped_for_another_patients_is_invalid(app_ctx: Flask, staff: dict) -> None:
    w, _ = dispensed_world(staff)
    _, their_rx = other_patient(w)
    # Correctly signed, but the prescription is not the patient's: a leaked or crafted link.
    swapped = links.make_token(links.REFILL, w["patient"].id, their_rx.id)
    with pytest.raises(LinkInvalid) as exc:
        refills.open_link(swapped)
    assert exc.value.reason == "invalid"
    no_rx = links.make_token(links.REFILL, w["patient"].id, None)
    with pytest.raises(LinkInvalid):
        refills.open_link(no_rx)


def test_a_patients_link_cannot_request_another_patients_prescription(app_ctx: Flask, staff: dict) -> None:
    w, _ = dispensed_world(staff)
    _, their_rx = other_patient(w)
    claims = refills.confirm_birth_date(token_for(w), DOB)
    with pytest.raises(LinkInvalid):
        refill_flow.request(refills.patient_actor(claims), their_rx.id, source=RequestSource.LINK, claims=claims)
    with pytest.raises(LinkInvalid):  # nor without the link's claims at all
        refill_flow.request(refills.patient_actor(claims), w["rx"].id, source=RequestSource.LINK)
    assert open_requests(their_rx.id) == [] and open_requests(w["rx"].id) == []


def test_wrong_birth_dates_count_down_then_lock_the_link(app_ctx: Flask, staff: dict) -> None:
    w, _ = dispensed_world(staff)
    token = token_for(w)
    for left in (4, 3, 2, 1):
        with pytest.raises(ValidationFailed) as exc:
            refills.confirm_birth_date(token, date(1968, 4, 13))
        assert exc.value.fields == {"date_of_birth": [f"That does not match. You have {tries(left)} left on this link."]}
    with pytest.raises(LinkInvalid) as locked:
        refills.confirm_birth_date(token, date(1968, 4, 13))
    assert locked.value.reason == "locked"
    # Even the right date is refused now, and so is merely opening the link.
    with pytest.raises(LinkInvalid) as exc:
        refills.confirm_birth_date(token, DOB)
    assert exc.value.reason == "locked"
    with pytest.raises(LinkInvalid):
        refills.open_link(token)
    denied = db.session.execute(sa.select(sa.func.count()).select_from(AuditEvent).where(
        AuditEvent.action == "link.dob_failed")).scalar_one()
    assert denied == 5
    # Another link for the same patient is not locked by this one.
    assert refills.confirm_birth_date(token_for(w), DOB).patient_id == w["patient"].id


def test_a_used_link_still_finds_its_open_request_but_is_spent_once_decided(app_ctx: Flask, staff: dict) -> None:
    w, _ = dispensed_world(staff)
    token = token_for(w)
    claims = refills.confirm_birth_date(token, DOB)
    actor = refills.patient_actor(claims)
    first = refill_flow.request(actor, w["rx"].id, source=RequestSource.LINK, claims=claims)
    assert first.created and links.is_used(claims.nonce)
    # A second click (or a retried call) returns the same request.
    again = refill_flow.request(actor, w["rx"].id, source=RequestSource.LINK,
                                   claims=refills.confirm_birth_date(token, DOB))
    assert (again.created, again.request.id) == (False, first.request.id)
    refill_flow.decline(w["pharmacist"], first.request.id, "Please see your neurologist first.")
    with pytest.raises(LinkInvalid) as exc:
        refills.open_link(token)
    assert exc.value.reason == "used"
    with pytest.raises(LinkInvalid) as exc:  # replaying the claims directly does not work either
        refill_flow.request(actor, w["rx"].id, source=RequestSource.LINK, claims=claims)
    assert exc.value.reason == "used"
    assert open_requests(w["rx"].id) == []


# ---- requests: idempotency and rules ----------------------------------------------------------------


def test_requests_are_idempotent_and_the_database_refuses_a_second_open_one(app_ctx: Flask, staff: dict) -> None:
    w, _ = dispensed_world(staff)
    one = refill_flow.request(w["technician"], w["rx"].id, source=RequestSource.STAFF)
    two = refill_flow.request(w["technician"], w["rx"].id, source=RequestSource.STAFF)
    assert one.created and not two.created and one.request.id == two.request.id
    assert len(open_requests(w["rx"].id)) == 1
    db.session.commit()
    # Enforced by the database itself, not only by the service's check.
    db.session.add(RefillRequest(prescription_id=w["rx"].id, patient_id=w["patient"].id,
                                 state=RefillRequestState.AWAITING_RENEWAL, source=RequestSource.API,
                                 delivery_method=DeliveryMethod.PICKUP, requested_at=one.request.requested_at))
    with pytest.raises(IntegrityError):
        db.session.flush()
    db.session.rollback()
    # A decided request does not block the next one.
    refill_flow.decline(w["pharmacist"], one.request.id, "Call us first, please.")
    assert refill_flow.request(w["technician"], w["rx"].id, source=RequestSource.STAFF).created


def test_a_request_while_a_fill_is_in_progress_is_refused_clearly(app_ctx: Flask, staff: dict) -> None:
    w = factories.world(staff)
    order_flow.start_fill(w["pharmacist"], w["rx"].id)
    with pytest.raises(Conflict, match="already being prepared"):
        refill_flow.request(w["technician"], w["rx"].id, source=RequestSource.STAFF)
    assert refills.eligibility_for(w["rx"]).code == "in_progress"
    assert open_requests(w["rx"].id) == []


def test_before_the_first_fill_the_original_fill_is_not_a_refill(app_ctx: Flask, staff: dict) -> None:
    w = factories.world(staff, refills_authorized=0)
    assert refills.eligibility_for(w["rx"]).ok
    outcome = refill_flow.request(w["technician"], w["rx"].id, source=RequestSource.STAFF)
    assert outcome.request.state == RefillRequestState.OPEN


@pytest.mark.parametrize("authorized", [0, None])
def test_no_refills_left_makes_the_request_a_renewal_and_a_missing_count_means_zero(
        app_ctx: Flask, staff: dict, authorized: int | None) -> None:
    w, _ = dispensed_world(staff, refills_authorized=authorized)
    assert w["rx"].refills_authorized == 0
    elig = refills.eligibility_for(w["rx"])
    assert (elig.ok, elig.code, elig.needs_renewal) == (False, "no_refills", True)
    req = refill_flow.request(w["technician"], w["rx"].id, source=RequestSource.STAFF).request
    assert req.state == RefillRequestState.AWAITING_RENEWAL
    renewal = db.session.get(RenewalRequest, req.renewal_id)
    assert renewal is not None and renewal.state == RenewalState.NEEDED
    assert [r.refill_request_id for r in outbox_rows(MessageKind.RENEWAL_IN_PROGRESS)] == [req.id]
    assert outbox_rows(MessageKind.REQUEST_RECEIVED) == []
    with pytest.raises(Conflict, match="only an open request"):
        refill_flow.approve(w["pharmacist"], req.id)
    with pytest.raises(Conflict):  # and no order can be made behind the request's back
        order_flow.start_fill(w["pharmacist"], w["rx"].id)


def test_refills_are_counted_until_none_remain(app_ctx: Flask, staff: dict, clock: Any) -> None:
    w, _ = dispensed_world(staff, refills_authorized=1)
    first = refill_flow.request(w["technician"], w["rx"].id, source=RequestSource.STAFF).request
    assert refills.summary(w["rx"]).refills_left == 1
    order = refill_flow.approve(w["pharmacist"], first.id)
    assert order.fill_number == 1
    clock.advance(timedelta(days=25))
    factories.run_order_to(w, order.id, "dispensed")
    assert refills.summary(w["rx"]).refills_left == 0
    second = refill_flow.request(w["technician"], w["rx"].id, source=RequestSource.STAFF).request
    assert second.state == RefillRequestState.AWAITING_RENEWAL


def test_an_expired_prescription_needs_a_renewal(app_ctx: Flask, staff: dict, clock: Any) -> None:
    w, _ = dispensed_world(staff)
    rx = w["rx"]
    clock.advance(timedelta(days=(rx.expiry_date - date(2026, 11, 23)).days + 1))
    elig = refills.eligibility_for(rx)
    assert (elig.code, elig.needs_renewal) == ("expired", True)
    req = refill_flow.request(w["technician"], rx.id, source=RequestSource.STAFF).request
    assert req.state == RefillRequestState.AWAITING_RENEWAL


def test_shipping_needs_an_address_on_file(app_ctx: Flask, staff: dict) -> None:
    w, _ = dispensed_world(staff, patient={"address_line1": None, "city": None, "state": None, "postal_code": None})
    with pytest.raises(ValidationFailed) as exc:
        refill_flow.request(w["technician"], w["rx"].id, source=RequestSource.STAFF, delivery=DeliveryMethod.SHIP)
    assert "delivery" in exc.value.fields
    assert refill_flow.request(w["technician"], w["rx"].id, source=RequestSource.STAFF,
                                  delivery=DeliveryMethod.PICKUP).created


def test_requesting_cancels_pending_reminders_but_not_sent_ones(app_ctx: Flask, staff: dict) -> None:
    w, order = dispensed_world(staff)
    planned = [r for r in db.session.execute(sa.select(OutboxMessage).where(
        OutboxMessage.prescription_id == w["rx"].id)).scalars() if r.kind.value.startswith("reminder_")]
    assert planned, "dispensing plans reminders"
    extra = outbox.enqueue(MessageKind.REMINDER_EARLY, dedupe_key="test:sent-reminder", patient_id=w["patient"].id,
                           prescription_id=w["rx"].id, order_id=order.id)
    assert extra is not None
    extra.state = OutboxState.SENT
    db.session.flush()
    refill_flow.request(w["technician"], w["rx"].id, source=RequestSource.STAFF)
    db.session.expire_all()
    for row in planned:
        assert db.session.get(OutboxMessage, row.id).state == OutboxState.CANCELLED
    assert db.session.get(OutboxMessage, extra.id).state == OutboxState.SENT


def test_roles_are_checked_in_the_services(app_ctx: Flask, staff: dict) -> None:
    w, _ = dispensed_world(staff)
    with pytest.raises(Forbidden):
        refill_flow.request(w["admin"], w["rx"].id, source=RequestSource.STAFF)
    req = refill_flow.request(w["technician"], w["rx"].id, source=RequestSource.STAFF).request
    for call in (lambda a: refill_flow.approve(a, req.id), lambda a: refill_flow.decline(a, req.id, "No, sorry."),
                 lambda a: renewal_flow.ask_prescriber(a, request_id=req.id)):
        for who in ("technician", "admin"):
            with pytest.raises(Forbidden):
                call(w[who])
    with pytest.raises(Forbidden):
        refill_queue.queue(w["admin"])
    db.session.expire_all()
    assert db.session.get(RefillRequest, req.id).state == RefillRequestState.OPEN


# ---- decisions ------------------------------------------------------------------------------------


def test_approve_creates_the_order_with_the_too_soon_threshold(app_ctx: Flask, staff: dict) -> None:
    w, first = dispensed_world(staff)
    assert first.dispensed_on == date(2026, 11, 23) and first.days_supply == 30
    req = refill_flow.request(w["technician"], w["rx"].id, source=RequestSource.STAFF).request
    assert [r.refill_request_id for r in outbox_rows(MessageKind.REQUEST_RECEIVED)] == [req.id]
    order = refill_flow.approve(w["pharmacist"], req.id)
    # 80% of 30 days = 24 days after 23 November.
    assert order.earliest_dispense_date == date(2026, 12, 17)
    assert (order.fill_number, order.state, order.prescription_id) == (1, OrderState.REQUESTED, w["rx"].id)
    assert order.price_cents == 5500 and order.delivery_method == DeliveryMethod.PICKUP
    assert (req.state, req.order_id, req.decided_by_id) == (RefillRequestState.APPROVED, order.id,
                                                             staff["pharmacist"].id)
    assert [r.refill_request_id for r in outbox_rows(MessageKind.REQUEST_APPROVED)] == [req.id]
    with pytest.raises(Conflict):
        refill_flow.approve(w["pharmacist"], req.id)
    # Dispensing before the threshold needs a pharmacist's reason.
    factories.run_order_to(w, order.id, "ready")
    with pytest.raises((Conflict, ValidationFailed), match="Too soon"):
        factories.dispense(w["technician"], order.id)


def test_approve_refuses_when_a_fill_was_started_meanwhile(app_ctx: Flask, staff: dict) -> None:
    w, _ = dispensed_world(staff)
    req = refill_flow.request(w["technician"], w["rx"].id, source=RequestSource.STAFF).request
    order_flow.start_fill(w["pharmacist"], w["rx"].id)
    with pytest.raises(Conflict, match="already in progress"):
        refill_flow.approve(w["pharmacist"], req.id)


def test_decline_tells_the_patient_with_the_reason(app_ctx: Flask, staff: dict) -> None:
    w, _ = dispensed_world(staff)
    req = refill_flow.request(w["technician"], w["rx"].id, source=RequestSource.STAFF).request
    with pytest.raises(ValidationFailed):
        refill_flow.decline(w["pharmacist"], req.id, " ")
    refill_flow.decline(w["pharmacist"], req.id, "  Your prescriber asked us to pause LDN.  ")
    assert (req.state, req.decline_reason) == (RefillRequestState.DECLINED, "Your prescriber asked us to pause LDN.")
    rows = outbox_rows(MessageKind.REQUEST_DECLINED)
    assert [(r.refill_request_id, r.patient_id, r.state) for r in rows] == [
        (req.id, w["patient"].id, OutboxState.PENDING)]
    with pytest.raises(Conflict):
        refill_flow.decline(w["pharmacist"], req.id, "Twice")


# ---- renewals -------------------------------------------------------------------------------------


def test_renewal_flow_from_request_to_new_prescription(app_ctx: Flask, staff: dict, clock: Any) -> None:
    w, _ = dispensed_world(staff, refills_authorized=0)
    rx = w["rx"]
    req = refill_flow.request(w["technician"], rx.id, source=RequestSource.STAFF).request
    assert req.state == RefillRequestState.AWAITING_RENEWAL
    renewal = renewal_flow.ask_prescriber(w["pharmacist"], request_id=req.id)
    assert (renewal.id, renewal.state, renewal.sent_by_id) == (req.renewal_id, RenewalState.SENT,
                                                               staff["pharmacist"].id)
    to_prescriber = outbox_rows(MessageKind.PRESCRIBER_RENEWAL)
    assert [(r.renewal_id, r.to_address) for r in to_prescriber] == [(renewal.id, "emarquez@neuro.example")]
    assert len(outbox_rows(MessageKind.RENEWAL_IN_PROGRESS, refill_request_id=req.id)) == 1  # told once
    with pytest.raises(Conflict, match="already been sent"):
        renewal_flow.ask_prescriber(w["pharmacist"], request_id=req.id)
    assert [r.id for r in renewals.renewals_waiting(w["pharmacist"])] == [renewal.id]
    doc = renewals.renewal_document(w["technician"], renewal.id)
    assert (doc.patient.date_of_birth, doc.dose, doc.quantity, doc.last_fill, doc.refills_authorized) == (
        DOB, "4.5 mg", "30 capsules", date(2026, 11, 23), 0)

    clock.advance(timedelta(days=3))
    new = changes.replace(w["pharmacist"], rx.id, {
        "prescriber_id": w["prescriber"].id, "formula_id": w["formula"].id, "dose_mg": Decimal("4.5"),
        "titration": [], "dosing_time": DosingTime.BEDTIME, "quantity": None, "days_supply": 30,
        "refills_authorized": 5, "written_date": date(2026, 11, 26)})
    db.session.expire_all()
    renewal = db.session.get(RenewalRequest, renewal.id)
    req = db.session.get(RefillRequest, req.id)
    assert (renewal.state, renewal.new_prescription_id) == (RenewalState.RECEIVED, new.id)
    assert (req.prescription_id, req.state) == (new.id, RefillRequestState.OPEN)
    assert db.session.get(Prescription, rx.id).status == RxStatus.REPLACED
    assert renewals.renewals_waiting(w["pharmacist"]) == []
    order = refill_flow.approve(w["pharmacist"], req.id)
    assert (order.prescription_id, order.fill_number) == (new.id, 0)


def test_the_pharmacy_can_ask_for_a_renewal_before_anyone_requests(app_ctx: Flask, staff: dict) -> None:
    w, _ = dispensed_world(staff)
    renewal = renewal_flow.ask_prescriber(w["pharmacist"], prescription_id=w["rx"].id)
    assert renewal.state == RenewalState.SENT and open_requests(w["rx"].id) == []
    with pytest.raises(Conflict):
        renewal_flow.send_renewal(w["pharmacist"], renewal.id)
    # A request that was decided cannot be turned into a renewal afterwards.
    req = refill_flow.request(w["technician"], w["rx"].id, source=RequestSource.STAFF).request
    refill_flow.decline(w["pharmacist"], req.id, "Duplicate request.")
    with pytest.raises(Conflict):
        renewal_flow.ask_prescriber(w["pharmacist"], request_id=req.id)


# ---- the queue ------------------------------------------------------------------------------------


def _requests(staff: dict, n: int) -> dict[str, Any]:
    w, _ = dispensed_world(staff)
    refill_flow.request(w["technician"], w["rx"].id, source=RequestSource.STAFF)
    for i in range(n - 1):
        p = factories.patient(w["pharmacist"], first_name=f"P{i}", email=f"p{i}@example.com")
        rx = factories.prescription(w["pharmacist"], p.id, w["formula"].id, w["prescriber"].id,
                                    refills_authorized=i % 2)
        order = order_flow.start_fill(w["pharmacist"], rx.id)
        factories.run_order_to(w, order.id, "dispensed")
        refill_flow.request(w["technician"], rx.id, source=RequestSource.STAFF)
    db.session.commit()
    return w


def test_queue_lists_open_requests_oldest_first_with_what_the_pharmacist_needs(app_ctx: Flask, staff: dict,
                                                                                 clock: Any) -> None:
    w, _ = dispensed_world(staff, refills_authorized=0)
    later_patient, later_rx = other_patient(w)
    order = order_flow.start_fill(w["pharmacist"], later_rx.id)
    factories.run_order_to(w, order.id, "dispensed")
    refill_flow.request(w["technician"], w["rx"].id, source=RequestSource.STAFF)
    clock.advance(timedelta(hours=1))
    refill_flow.request(w["technician"], later_rx.id, source=RequestSource.STAFF)
    items = refill_queue.queue(w["technician"])
    assert [i.rx.id for i in items] == [w["rx"].id, later_rx.id]
    first, second = items
    assert (first.eligibility.code, first.refills_left, first.renewal.state) == ("no_refills", 0, RenewalState.NEEDED)
    assert (second.eligibility.code, second.refills_left, second.renewal) == ("ok", 5, None)
    assert first.earliest_dispense == second.earliest_dispense == date(2026, 12, 17)
    assert second.patient.id == later_patient.id


def test_queue_queries_do_not_grow_with_the_number_of_requests(app_ctx: Flask, staff: dict) -> None:
    w = _requests(staff, 2)
    db.session.expire_all()
    with count_queries() as few:
        assert len(refill_queue.queue_page(w["pharmacist"]).items) == 2
    w = _requests_more(w, 6)
    db.session.expire_all()
    with count_queries() as many:
        items = refill_queue.queue_page(w["pharmacist"]).items
        assert len(items) == 8
        for item in items:  # what the page reads must already be loaded
            _ = (item.patient.last_name, item.rx.formula_name, item.eligibility.code, item.refills_left)
    assert len(many) == len(few), many


def _requests_more(w: dict[str, Any], n: int) -> dict[str, Any]:
    for i in range(n):
        p = factories.patient(w["pharmacist"], first_name=f"Q{i}", email=f"q{i}@example.com")
        rx = factories.prescription(w["pharmacist"], p.id, w["formula"].id, w["prescriber"].id,
                                    refills_authorized=i % 2)
        order = order_flow.start_fill(w["pharmacist"], rx.id)
        factories.run_order_to(w, order.id, "dispensed")
        refill_flow.request(w["technician"], rx.id, source=RequestSource.STAFF)
    db.session.commit()
    return w


# ---- what the patient is shown ----------------------------------------------------------------------


def test_summary_shows_price_dates_and_address(app_ctx: Flask, staff: dict) -> None:
    w, _ = dispensed_world(staff)
    w["patient"].delivery_preference = DeliveryMethod.SHIP  # picked up the first fill, wants the next shipped
    s = refills.summary(w["rx"])
    assert (s.product, s.quantity_text, s.fill_days) == ("Naltrexone 4.5 mg capsules", "30 capsules", 30)
    assert (s.run_out, s.days_left, s.refills_left) == (date(2026, 12, 22), 30, 5)  # today's dose counts
    # Asked on Monday 23 November, the day the last fill was handed over: compounding (2 business days) would be
    # done on Wednesday the 25th, but the patient may have the next fill from Thursday 17 December (80% of 30 days
    # used; docs/domain.md "Refill timing"), so that is the pick-up day, and a parcel (2 days) leaves on the 15th.
    assert (s.ready_on, s.arrives_on, s.delivery) == (date(2026, 12, 15), date(2026, 12, 17), DeliveryMethod.SHIP)
    assert s.timed_by_supply
    assert (s.price_cents, s.shipping_cents, s.total_cents) == (5500, 895, 6395)
    assert s.address_lines == ["14 Oak Lane", "Springfield, IL 62704"]
    assert [(o.method, o.total_cents, o.on) for o in s.options] == [
        (DeliveryMethod.PICKUP, 5500, date(2026, 12, 17)), (DeliveryMethod.SHIP, 6395, date(2026, 12, 17))]


def test_asked_in_time_the_dates_are_the_lead_times(app_ctx: Flask, staff: dict, clock: Any) -> None:
    w, _ = dispensed_world(staff)
    w["patient"].delivery_preference = DeliveryMethod.SHIP
    clock.advance(timedelta(days=21))  # Monday 14 December, 9 days before the supply ends on the 22nd
    s = refills.summary(w["rx"])
    # Ready Wednesday the 16th (2 business days), after the 15th too soon lets a parcel leave: shipped, there Friday.
    assert (s.ready_on, s.arrives_on, s.timed_by_supply) == (date(2026, 12, 16), date(2026, 12, 18), False)
    # Picked up, it could be handed over only from the 17th (the patient has it that day): the pick-up option says so.
    assert [(o.method, o.on) for o in s.options] == [
        (DeliveryMethod.PICKUP, date(2026, 12, 17)), (DeliveryMethod.SHIP, date(2026, 12, 18))]


def test_an_open_request_keeps_its_own_dates(app_ctx: Flask, staff: dict, clock: Any) -> None:
    w, _ = dispensed_world(staff)
    refill_flow.request(w["technician"], w["rx"].id, source=RequestSource.STAFF, delivery=DeliveryMethod.SHIP)
    clock.advance(timedelta(days=2))
    s = refills.summary(w["rx"])
    assert s.open_request is not None and s.delivery == DeliveryMethod.SHIP
    assert (s.ready_on, s.arrives_on) == (date(2026, 12, 15), date(2026, 12, 17))  # too soon's, not the lead time's


def test_failed_birth_dates_are_counted_per_link(app_ctx: Flask, staff: dict) -> None:
    w, _ = dispensed_world(staff)
    a, b = token_for(w), token_for(w)
    with pytest.raises(ValidationFailed):
        refills.confirm_birth_date(a, date(2000, 1, 1))
    nonce_a = refills.open_link(a).nonce
    assert db.session.execute(sa.select(LinkGuard.nonce).where(LinkGuard.failed_attempts > 0)).scalars().all() == [nonce_a]
    assert links.failed_attempts(refills.open_link(b).nonce) == 0
