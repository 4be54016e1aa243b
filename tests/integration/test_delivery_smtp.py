"""Delivering the outbox through a real SMTP server on loopback (aiosmtpd), with real failures.

The server is started by the `smtp` fixture on a free port; the app is configured with
SMTP_URL=smtp://127.0.0.1:<port>?security=none. Crashes are real too: a `flask reminders send`
subprocess is killed with SIGKILL while the server is slow, and on PostgreSQL two workers, each
with its own app and engine, drain a few thousand due emails at once.
"""
from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from pharmacy import create_app
from pharmacy.compounding.models import Order
from pharmacy.compounding.rules import DeliveryMethod
from pharmacy.core.context import business_calendar
from pharmacy.core.errors import ConfigError
from pharmacy.core.models import AuditEvent, Heartbeat
from pharmacy.extensions import db
from pharmacy.prescriptions.models import Prescription
from pharmacy.prescriptions.rules import Form, RxStatus
from pharmacy.refills import services as refills
from pharmacy.refills.models import RefillRequest
from pharmacy.refills.rules import RequestSource
from pharmacy.reminders import claims, delivery, planning, rules, scheduler, services, transports
from pharmacy.reminders.models import DeliveryAttempt, OutboxMessage
from pharmacy.reminders.rules import MessageKind, OutboxState
from pharmacy.workflows import orders as order_flow
from pharmacy.workflows import refill_requests as refill_flow
from pharmacy.workflows import renewals as renewal_flow
from tests import factories
from tests.conftest import USE_PG
from tests.factories import actor, run_order_to, world
from tests.reminder_helpers import attempts_of, dispensed, first_reminders_due, fresh, reminder_rows
from tests.smtp_server import SmtpServer, free_port


@pytest.fixture
def app_config(app_config: dict, smtp: SmtpServer) -> dict:
    """The conftest configuration, with SMTP pointing at the loopback server."""
    return {**app_config, "SMTP_URL": smtp.url}


# ---- building blocks ----------------------------------------------------------------------------------------


# ---- the content delivered ----------------------------------------------------------------------------------


def test_reminder_email_carries_what_the_patient_needs_and_nothing_in_the_subject(
        app: Flask, app_ctx: Flask, clock: Any, staff: dict, smtp: SmtpServer, client: Any,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    w, order = dispensed(staff)
    rows = reminder_rows(order.id)
    first = rows[0]
    assert first.kind == MessageKind.REMINDER_EARLY
    clock.set(first.due_at)

    report = delivery.deliver_due()

    assert (report.sent, report.failed, report.retried) == (1, 0, 0)
    [got] = smtp.sink.received
    msg = got.message
    row = fresh(first.id)
    assert got.envelope_from == "refills@pharmacy.example"
    assert got.envelope_to == ["patient0@example.com"]
    assert msg["To"] == "patient0@example.com"
    assert msg["Subject"] == "Riverside Compounding Pharmacy: refill reminder"
    assert not re.search(r"naltrexone|mg|sclerosis|ldn", msg["Subject"], re.IGNORECASE)
    assert msg["Message-ID"] == row.message_id and row.message_id.startswith(f"<ldn.{row.id}.")
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    # On the wire the URL is one plain line (not folded into encoded-words a mail client cannot use).
    assert re.search(rb"\r\nList-Unsubscribe: <http://pharmacy\.test/preferences/[^\s>]+/unsubscribe>\r\n", got.raw)
    unsubscribe = re.fullmatch(r"<http://pharmacy\.test/preferences/([^/>]+)/unsubscribe>", msg["List-Unsubscribe"])
    assert unsubscribe is not None
    assert services.open_preferences(unsubscribe.group(1)).patient_id == w["patient"].id
    assert msg.get_content_type() == "multipart/alternative"

    text = msg.get_body(("plain",)).get_content().replace("\r\n", "\n")
    html = msg.get_body(("html",)).get_content()
    for body in (text, html):
        assert "Margaret" in body
        assert "Naltrexone 4.5 mg capsules" in body
        assert "December 17, 2026" in body  # order-by: first day without 23 Dec − 2 buffer → Mon 21 Dec − 2 business days
        assert "December 22, 2026" in body  # run-out, the last day covered: 30 days from 23 Nov
        assert "$55.00" in body  # the price of the next 30 capsules on the price list
        assert "(217) 555-0100" in body and "100 River Street" in body
        assert "/preferences/" in body
    # The one-click refill link is signed for this patient and prescription, and opens.
    token = re.search(r"http://pharmacy\.test/r/([A-Za-z0-9_.\-]+)", text).group(1)  # type: ignore[union-attr]
    claims = refills.open_link(token)
    assert (claims.patient_id, claims.prescription_id) == (w["patient"].id, w["rx"].id)
    if any(rule.rule.startswith("/r/") for rule in app.url_map.iter_rules()):
        assert client.get(f"/r/{token}").status_code == 200

    # The row says what happened and keeps the email as sent, for the dashboard.
    assert row.state == OutboxState.SENT and row.attempts == 1 and row.sent_at == clock.now()
    assert row.subject == msg["Subject"] and row.body_text == text
    assert attempts_of(row.id) == ["sent"]
    assert all(fresh(r.id).state == OutboxState.PENDING for r in rows[1:])  # later ones wait for their day
    # Logs carry ids and counts only.
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("pharmacy"))
    assert "delivery run" in ours
    assert "patient0@example.com" not in ours and "Margaret" not in ours and "Naltrexone" not in ours


def test_notices_render_their_own_facts(app_ctx: Flask, clock: Any, staff: dict, smtp: SmtpServer) -> None:
    w, _ = dispensed(staff)
    # A declined request carries the pharmacist's reason; the prescriber gets the renewal request.
    req = refill_flow.request(w["technician"], w["rx"].id, source=RequestSource.STAFF).request
    refill_flow.decline(w["pharmacist"], req.id, "Your prescriber asked us to pause LDN until your visit.")
    db.session.get(Prescription, w["rx"].id).prescriber.email = "dr.marquez@neuro.example"
    renewal_flow.ask_prescriber(w["pharmacist"], prescription_id=w["rx"].id)
    db.session.commit()

    report = delivery.deliver_due()

    assert report.failed == 0 and report.sent >= 3
    by_kind = {}
    for r in smtp.sink.received:
        row = db.session.execute(sa.select(OutboxMessage).where(
            OutboxMessage.message_id == r.message_id)).scalar_one()
        by_kind[row.kind] = r
    declined = by_kind[MessageKind.REQUEST_DECLINED].message.get_body(("plain",)).get_content()
    assert "pause LDN until your visit" in declined
    prescriber = by_kind[MessageKind.PRESCRIBER_RENEWAL]
    assert prescriber.envelope_to == ["dr.marquez@neuro.example"]
    assert prescriber.message["Subject"] == "Riverside Compounding Pharmacy: renewal request"
    assert prescriber.message["List-Unsubscribe"] is None  # a professional request, not a patient mailing
    body = prescriber.message.get_body(("plain",)).get_content()
    html_body = prescriber.message.get_body(("html",)).get_content()
    # The least that lets the prescriber act: a reference and a link to a page that asks for the NPI first.
    assert "Our reference: renewal " in body and "http://pharmacy.test/renewal-request/" in body
    for fact in ("Margaret", "Ellison", "April 12, 1968", "1968", "Naltrexone", "4.5 mg", "30 capsules",
                 "Multiple sclerosis", "G35", w["rx"].rx_number):
        assert fact not in body and fact not in html_body, fact
    assert "Margaret" not in prescriber.message["Subject"]


def test_shipped_notice_names_carrier_and_tracking(app_ctx: Flask, clock: Any, staff: dict,
                                                  smtp: SmtpServer) -> None:
    w = world(staff, patient={"delivery_preference": DeliveryMethod.SHIP, "shipping_days": 3})
    order = order_flow.start_fill(w["pharmacist"], w["rx"].id)
    run_order_to(w, order.id, "ready")
    factories.dispense(w["technician"], order.id, carrier="UPS", tracking_number="1Z999AA10123456784")
    db.session.commit()

    delivery.deliver_due()

    [got] = smtp.sink.received
    text = got.message.get_body(("plain",)).get_content()
    assert got.message["Subject"] == "Riverside Compounding Pharmacy: your order has shipped"
    assert "Carrier: UPS" in text and "Tracking number: 1Z999AA10123456784" in text
    assert "Expected to arrive: November 26, 2026" in text  # dispensed Mon 23 Nov + 3 shipping days


# ---- outages and refusals -----------------------------------------------------------------------------------


def test_smtp_down_for_the_whole_run_loses_nothing_and_sends_everything_once_back(
        app_ctx: Flask, clock: Any, staff: dict, smtp: SmtpServer) -> None:
    ids = first_reminders_due(staff, clock, 3)
    smtp.stop()  # connection refused from now on

    report = delivery.deliver_due()

    assert (report.sent, report.retried, report.failed) == (0, 3, 0)
    t = clock.now()
    for row_id in ids:
        row = fresh(row_id)
        assert row.state == OutboxState.PENDING and row.attempts == 1
        assert row.last_error and row.last_error.startswith("connection")
        assert row.next_attempt_at == t + timedelta(seconds=60)  # the first backoff step
        assert row.claimed_by is None and row.lease_until is None
        assert attempts_of(row_id) == ["transient"]

    # Still down a little later, before the backoff is over: nothing is even tried.
    clock.advance(timedelta(seconds=30))
    assert delivery.deliver_due().claimed == 0
    # Still down after the backoff: tried again, the wait doubles.
    clock.advance(timedelta(seconds=31))
    assert delivery.deliver_due().retried == 3
    assert {fresh(i).next_attempt_at for i in ids} == {clock.now() + timedelta(seconds=120)}

    smtp.start()
    clock.advance(timedelta(seconds=121))
    report = delivery.deliver_due()

    assert report.sent == 3
    assert smtp.sink.per_message_id() == Counter({fresh(i).message_id: 1 for i in ids})
    assert all(fresh(i).state == OutboxState.SENT and fresh(i).attempts == 3 for i in ids)
    assert attempts_of(ids[0]) == ["transient", "transient", "sent"]
    assert delivery.deliver_due().claimed == 0  # nothing left, nothing sent twice


def test_a_4yz_reply_is_retried_with_backoff(app_ctx: Flask, clock: Any, staff: dict, smtp: SmtpServer) -> None:
    [row_id] = first_reminders_due(staff, clock, 1)
    smtp.sink.data_reply = "451 4.3.0 Mail server temporarily rejected message"

    report = delivery.deliver_due()

    row = fresh(row_id)
    assert report.retried == 1 and row.state == OutboxState.PENDING
    assert row.last_error == "451: 4.3.0 Mail server temporarily rejected message"
    assert row.next_attempt_at == clock.now() + timedelta(seconds=60)
    smtp.sink.data_reply = None
    clock.advance(timedelta(minutes=1))
    assert delivery.deliver_due().sent == 1 and fresh(row_id).state == OutboxState.SENT


def test_a_5yz_reply_fails_the_message_at_once(app_ctx: Flask, clock: Any, staff: dict, smtp: SmtpServer) -> None:
    ids = first_reminders_due(staff, clock, 2)
    smtp.sink.rcpt_replies["patient0@example.com"] = "550 5.1.1 Mailbox does not exist"

    report = delivery.deliver_due()

    bad, good = fresh(ids[0]), fresh(ids[1])
    assert (report.sent, report.failed) == (1, 1)  # one refusal does not stop the batch
    assert bad.state == OutboxState.FAILED and bad.attempts == 1
    assert bad.last_error == "550: 5.1.1 Mailbox does not exist"
    assert attempts_of(bad.id) == ["permanent"]
    assert good.state == OutboxState.SENT
    clock.advance(timedelta(hours=2))
    assert delivery.deliver_due().claimed == 0  # a failed email waits for a pharmacist


def test_too_many_transient_failures_fail_the_message(app_config: dict, clock: Any, staff: dict,
                                                      smtp: SmtpServer) -> None:
    app = create_app({**app_config, "OUTBOX_MAX_ATTEMPTS": "2"}, clock=clock)
    with app.test_request_context("/"):
        [row_id] = first_reminders_due(staff, clock, 1)
        smtp.sink.data_reply = "421 4.7.0 Try again later"
        assert delivery.deliver_due().retried == 1
        clock.advance(timedelta(minutes=2))
        assert delivery.deliver_due().failed == 1
        row = fresh(row_id)
        assert row.state == OutboxState.FAILED and row.attempts == 2
        assert attempts_of(row_id) == ["transient", "transient"]
        db.session.remove()
    with app.app_context():
        db.engine.dispose()


# ---- crashes: leases -----------------------------------------------------------------------------------------


def test_rows_abandoned_mid_batch_are_sent_exactly_once_after_the_lease_expires(
        app_ctx: Flask, clock: Any, staff: dict, smtp: SmtpServer) -> None:
    ids = first_reminders_due(staff, clock, 3)
    # A worker claims the batch and dies before sending anything.
    claimed = claims.claim_batch("dead-worker", limit=10)
    assert sorted(claimed) == sorted(ids)
    assert {fresh(i).state for i in ids} == {OutboxState.SENDING}

    # Another worker right away: the rows are leased to the dead one, so they are left alone.
    assert delivery.deliver_due(worker="other").claimed == 0
    assert smtp.sink.count() == 0

    clock.advance(claims.LEASE + timedelta(seconds=1))
    report = delivery.deliver_due(worker="other")

    assert report.expired_leases == 3 and report.sent == 3
    assert smtp.sink.per_message_id() == Counter({fresh(i).message_id: 1 for i in ids})
    assert attempts_of(ids[0]) == ["expired_lease", "sent"]
    assert fresh(ids[0]).attempts == 1  # a crash is not the message's fault
    assert delivery.deliver_due(worker="third").claimed == 0


def test_a_worker_whose_lease_was_taken_over_does_not_send(app_ctx: Flask, clock: Any, staff: dict,
                                                          smtp: SmtpServer) -> None:
    [row_id] = first_reminders_due(staff, clock, 1)
    assert claims.claim_batch("slow-worker") == [row_id]
    clock.advance(claims.LEASE + timedelta(seconds=1))
    assert delivery.deliver_due(worker="new-worker").sent == 1
    # The slow worker wakes up and carries on with its old claim: nothing is sent again.
    report, _ = delivery.deliver_batch([row_id], "slow-worker", transports.from_settings(
        app_ctx.extensions["pharmacy.settings"].smtp))
    assert report.skipped == 1 and report.sent == 0
    assert smtp.sink.count() == 1


def test_claims_on_sqlite_and_postgres_are_exclusive(app_ctx: Flask, clock: Any, staff: dict,
                                                     smtp: SmtpServer) -> None:
    ids = first_reminders_due(staff, clock, 3)
    a = claims.claim_batch("a", limit=2)
    b = claims.claim_batch("b", limit=10)
    c = claims.claim_batch("c", limit=10)
    assert len(a) == 2 and len(b) == 1 and c == []
    assert sorted(a + b) == sorted(ids)
    assert {fresh(i).claimed_by for i in a} == {"a"}


def _statements(fn: Any) -> tuple[Any, list[str]]:
    seen: list[str] = []

    def listener(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement.split(None, 1)[0].upper())

    sa.event.listen(db.engine, "before_cursor_execute", listener)
    sa.event.listen(db.engine, "commit", lambda conn: seen.append("COMMIT"))
    try:
        result = fn()
    finally:
        sa.event.remove(db.engine, "before_cursor_execute", listener)
        db.engine.dispatch.commit.clear()
    return result, seen


def test_a_claim_is_one_statement_per_batch_oldest_first(app_ctx: Flask, clock: Any, staff: dict,
                                                         smtp: SmtpServer) -> None:
    ids = first_reminders_due(staff, clock, 5)
    # Make the due order differ from the id order: the last row has been due longest.
    db.session.execute(sa.update(OutboxMessage).where(OutboxMessage.id == ids[-1])
                       .values(next_attempt_at=clock.now() - timedelta(hours=1)))
    db.session.commit()
    claimed, seen = _statements(lambda: claims.claim_batch("w1", limit=3))
    assert claimed == [ids[-1], ids[0], ids[1]]  # (next_attempt_at, id)
    # UPDATE … WHERE id IN (SELECT …) RETURNING; on PostgreSQL WITH due AS MATERIALIZED (…) UPDATE … RETURNING.
    assert [x for x in seen if x not in ("BEGIN",)] == ["WITH" if USE_PG else "UPDATE", "COMMIT"]
    rest = claims.claim_batch("w2", limit=10)
    assert rest == ids[2:4] and claims.claim_batch("w3") == []
    rows = {i: fresh(i) for i in ids}
    assert {rows[i].claimed_by for i in claimed} == {"w1"} and {rows[i].claimed_by for i in rest} == {"w2"}
    assert all(r.state == OutboxState.SENDING and r.lease_until == clock.now() + claims.LEASE for r in rows.values())


def test_without_update_returning_the_claim_reads_back_what_it_took(app_ctx: Flask, clock: Any, staff: dict,
                                                                   smtp: SmtpServer,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """SQLite before 3.35 has no RETURNING: the same UPDATE, then the rows this worker's lease marks."""
    ids = first_reminders_due(staff, clock, 3)
    monkeypatch.setattr(claims, "update_returning", lambda: False)
    assert claims.claim_batch("a", limit=2) == ids[:2]
    assert claims.claim_batch("b", limit=2) == ids[2:]
    assert claims.claim_batch("c") == []
    assert delivery.deliver_due(worker="d").claimed == 0
    clock.advance(claims.LEASE + timedelta(seconds=1))
    assert delivery.deliver_due(worker="d").sent == 3


def test_claims_racing_from_two_connections_never_overlap(app: Flask, app_ctx: Flask, clock: Any, staff: dict,
                                                          smtp: SmtpServer) -> None:
    """Two workers, each in its own thread, app context and connection, claim until nothing is due."""
    fills = [dispensed(staff, i) for i in range(2)]
    t = clock.now() - timedelta(minutes=1)
    n = 400
    db.session.execute(sa.insert(OutboxMessage), [
        {"dedupe_key": f"race:{i}", "kind": MessageKind.REMINDER_EARLY, "patient_id": fills[i % 2][0]["patient"].id,
         "prescription_id": fills[i % 2][0]["rx"].id, "order_id": fills[i % 2][1].id, "due_at": t,
         "next_attempt_at": t, "state": OutboxState.PENDING, "attempts": 0, "created_at": t,
         "message_id": f"<race.{i}@pharmacy.example>"} for i in range(n)])
    db.session.commit()
    start = threading.Barrier(2)
    claimed: dict[str, list[int]] = {"x": [], "y": []}
    errors: list[BaseException] = []

    def worker(name: str) -> None:
        try:
            with app.app_context():
                start.wait()
                while ids := claims.claim_batch(name, limit=7):
                    claimed[name].extend(ids)
                db.session.remove()
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(name,)) for name in claimed]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors
    x, y = set(claimed["x"]), set(claimed["y"])
    assert not x & y and len(x) + len(y) == len(claimed["x"]) + len(claimed["y"])
    due = set(db.session.execute(sa.select(OutboxMessage.id).where(OutboxMessage.dedupe_key.like("race:%"))).scalars())
    assert x | y == due  # every due row claimed, each by one worker
    db.session.expire_all()
    owners = dict(db.session.execute(sa.select(OutboxMessage.id, OutboxMessage.claimed_by)
                                     .where(OutboxMessage.id.in_(due))).all())
    assert all(owners[i] == "x" for i in x) and all(owners[i] == "y" for i in y)


class WatchingTransport(transports.OutboxOnlyTransport):
    """Checks, from a connection of its own, that every message handed over before is already committed as sent."""

    def __init__(self, engine: sa.Engine, on_send: Any = None) -> None:
        super().__init__()
        self.engine = engine
        self.on_send = on_send
        self.handed: list[str] = []
        self.problems: list[str] = []

    def _check_committed(self) -> None:
        with self.engine.connect() as conn:
            states = dict(conn.execute(sa.select(OutboxMessage.message_id, OutboxMessage.state)
                                       .where(OutboxMessage.message_id.in_(self.handed))).all())
        for mid in self.handed:
            if states.get(mid) != "sent":
                self.problems.append(f"{mid} handed over but {states.get(mid)} in the database")

    def send(self, message: Any, *, sender: str, recipients: list[str]) -> None:
        self._check_committed()
        if self.on_send is not None:
            self.on_send(len(self.handed))
        super().send(message, sender=sender, recipients=recipients)
        self.handed.append(message["Message-ID"])

    def __exit__(self, *exc: Any) -> None:
        self._check_committed()  # the batch's last message too, before the connection is closed
        super().__exit__(*exc)


def test_each_send_is_committed_before_the_next_one_and_before_the_connection_closes(
        app_ctx: Flask, clock: Any, staff: dict, smtp: SmtpServer) -> None:
    ids = first_reminders_due(staff, clock, 7)
    transport = WatchingTransport(db.engine)
    report = delivery.deliver_due(transport=transport, batch_size=3)
    assert report.sent == 7 and len(transport.handed) == 7
    assert transport.problems == []
    assert all(fresh(i).state == OutboxState.SENT for i in ids)
    assert {attempts_of(i)[0] for i in ids} == {"sent"}


def test_a_change_made_while_a_batch_is_being_sent_is_seen_before_the_send(
        app_ctx: Flask, clock: Any, staff: dict, smtp: SmtpServer) -> None:
    """The batch's data is read once, but whether each message is still wanted is read just before its send."""
    ids = first_reminders_due(staff, clock, 3)
    rows = [fresh(i) for i in ids]

    def meanwhile(already_sent: int) -> None:
        if already_sent == 0:  # while the first message goes out, patient 2 opts out and patient 3 is stopped
            with db.engine.begin() as conn:
                conn.execute(sa.text("UPDATE patients SET reminders_opt_in = :f WHERE id = :p"),
                             {"f": False, "p": rows[1].patient_id})
                conn.execute(sa.text("UPDATE prescriptions SET status = 'on_hold' WHERE id = :r"),
                             {"r": rows[2].prescription_id})

    transport = WatchingTransport(db.engine, on_send=meanwhile)
    report = delivery.deliver_due(transport=transport)
    assert (report.sent, report.cancelled) == (1, 2)
    assert fresh(ids[1]).cancelled_reason == "patient opted out"
    assert fresh(ids[2]).cancelled_reason == "prescription on_hold"


def test_delivery_costs_a_fixed_number_of_statements_per_message(app_ctx: Flask, clock: Any, staff: dict,
                                                                smtp: SmtpServer) -> None:
    """One transaction per message (the previous "sent", this claim confirmed, its wanted-check), whatever the batch."""
    def run(n: int) -> tuple[int, int]:
        first_reminders_due(staff, clock, n)
        report, seen = _statements(lambda: delivery.deliver_due(transport=transports.OutboxOnlyTransport(),
                                                                batch_size=50))
        assert report.sent == n
        return len(seen), seen.count("COMMIT")

    clock_start = clock.now()
    small, small_commits = run(2)
    clock.set(clock_start)
    db.session.execute(sa.update(OutboxMessage).values(state=OutboxState.CANCELLED))
    db.session.commit()
    large, large_commits = run(10)
    per_message = (large - small) / 8
    assert per_message <= 6, per_message  # mark sent + attempt + confirm + wanted-check (+ BEGIN, COMMIT)
    assert (large_commits - small_commits) / 8 == 1  # one commit per message


def test_a_batch_renders_exactly_what_the_refill_pages_say(app_ctx: Flask, clock: Any, staff: dict,
                                                          smtp: SmtpServer) -> None:
    """The delivery path reads a batch's data at once and builds each email from memory; the figures must be
    those of refills.services.summary and planning's fill facts, for every kind of prescription."""
    from pharmacy.billing.rules import format_cents
    from pharmacy.core.context import settings
    from pharmacy.refills import rules as refill_rules
    from pharmacy.reminders import rendering
    from tests import factories

    # Plain pick-up; shipped; a titration; a formula without prices; an open request to ship; a declined one.
    dispensed(staff, 0)
    ship = world(staff, patient={"first_name": "Sam", "email": "s@example.com",
                                 "delivery_preference": DeliveryMethod.SHIP, "shipping_days": 3})
    order = order_flow.start_fill(ship["pharmacist"], ship["rx"].id)
    run_order_to(ship, order.id, "ready")
    factories.dispense(ship["technician"], order.id, carrier="UPS", tracking_number="1Z")
    ph = ship["pharmacist"]
    low = factories.formula("LDN-CAP-1.5", strength="1.5")
    p = factories.patient(ph, first_name="Tia", email="t@example.com")
    rx = factories.prescription(ph, p.id, low.id, ship["prescriber"].id, dose_mg=Decimal("4.5"), titration=[
        {"dose_mg": "1.5", "days": 14}, {"dose_mg": "3", "days": 14}])
    tw = {**ship, "formula": low, "patient": p, "rx": rx}
    run_order_to(tw, order_flow.start_fill(ph, rx.id).id, "dispensed")
    bare = factories.formula("LDN-LIQ-1", form=Form.SUBLINGUAL_LIQUID, strength="1", prices=(("150", 30, 6000),))
    p2 = factories.patient(ph, first_name="Una", email="u@example.com")
    rx2 = factories.prescription(ph, p2.id, bare.id, ship["prescriber"].id, dose_mg=Decimal("4.5"))
    bw = {**ship, "formula": bare, "patient": p2, "rx": rx2}
    run_order_to(bw, order_flow.start_fill(ph, rx2.id).id, "dispensed")
    db.session.execute(sa.text("UPDATE price_list SET retired_at = effective_at WHERE formula_id = :f"), {"f": bare.id})
    refill_flow.request(ship["technician"], ship["rx"].id, source=RequestSource.STAFF, delivery=DeliveryMethod.SHIP)
    declined = refill_flow.request(ship["technician"], rx.id, source=RequestSource.STAFF).request
    refill_flow.decline(ph, declined.id, "Please see your neurologist first.")
    db.session.commit()
    clock.advance(timedelta(days=2))  # other days: ready and arrival dates move, the request's stay put

    rows = list(db.session.execute(sa.select(OutboxMessage)).scalars())
    kinds = {r.kind for r in rows}
    assert {MessageKind.REMINDER_EARLY, MessageKind.ORDER_SHIPPED, MessageKind.REQUEST_RECEIVED,
            MessageKind.REQUEST_DECLINED} <= kinds
    batch = rendering.Batch.load([r.id for r in rows])
    checked = 0
    for row in rows:
        if row.kind == MessageKind.PRESCRIBER_RENEWAL or row.prescription_id is None:
            continue
        ctx = batch.context(row.id, preview=True)
        rx_row = db.session.get(Prescription, row.prescription_id)
        request = db.session.get(RefillRequest, row.refill_request_id) if row.refill_request_id else None
        s = refills.summary(rx_row, delivery=request.delivery_method if request is not None else None)
        words = refill_rules.long_date
        assert ctx["product"] == s.product
        assert ctx["price"] == (format_cents(s.price_cents) if s.price_cents else None), row.kind
        assert ctx["shipping"] == (format_cents(s.shipping_cents) if s.shipping_cents else None)
        assert ctx["total"] == (format_cents(s.total_cents) if s.total_cents else None)
        assert ctx["ships"] == (s.delivery == DeliveryMethod.SHIP)
        assert ctx["ready_on"] == words(s.ready_on)
        assert ctx["refills_left"] == s.refills_left and ctx["next_step"] == s.next_step
        assert ctx["prescriber_name"] == rx_row.prescriber.display_name
        if row.kind in rules.REFILL_REMINDERS:
            facts = db.session.execute(planning.facts_query().where(Order.id == row.order_id)).first()
            f = planning.FillFacts(*facts)
            line = refill_rules.timeline(
                f.run_out, shipping_days=f.shipping_days if f.delivery_method == "ship" else 0,
                buffer_days=settings().safety_buffer_days, lead_time_business_days=f.lead_time,
                calendar=business_calendar())
            assert (ctx["order_by"], ctx["run_out"]) == (words(line.order_by), words(line.run_out))
        else:
            assert ctx["run_out"] == (words(s.run_out) if s.run_out else None)
        checked += 1
    assert checked >= 8
    declined_text = [batch.render(r.id, preview=True).text for r in rows if r.kind == MessageKind.REQUEST_DECLINED]
    assert "Please see your neurologist first." in declined_text[0]
    # A batch of one (the outbox preview) is the same email as the whole batch's.
    assert all(rendering.render(r, preview=True) == batch.render(r.id, preview=True) for r in rows)


def _env_for_subprocess(app_config: dict) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("SMTP_URL", "DATABASE_URL")}
    env.update({k: str(v) for k, v in app_config.items() if k.isupper() and isinstance(v, str | int)})
    env["FLASK_APP"] = "pharmacy.entry"
    return env


def _wait_for(condition: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.02)


@pytest.mark.slow
def test_send_process_killed_mid_batch_then_a_second_run_loses_nothing(
        app_ctx: Flask, app_config: dict, clock: Any, staff: dict, smtp: SmtpServer) -> None:
    ids = []
    for i in range(6):
        _, order = dispensed(staff, i)
        ids.append(reminder_rows(order.id)[0].id)
    # The child process runs on the real clock: make these rows due in real time.
    real_now = datetime.now(UTC)
    db.session.execute(sa.update(OutboxMessage).where(OutboxMessage.id.in_(ids))
                       .values(next_attempt_at=real_now - timedelta(minutes=1)))
    db.session.commit()
    message_ids = {fresh(i).message_id for i in ids}
    smtp.sink.delay = 1.0  # the server takes a second to answer each message

    child = subprocess.Popen([sys.executable, "-m", "flask", "reminders", "send", "--batch-size", "10"],
                             env=_env_for_subprocess(app_config), stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        _wait_for(lambda: smtp.sink.count() >= 2)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL
    in_flight = smtp.sink.received[-1].message_id  # the server has it; the dead process never heard "250"
    db.session.expire_all()
    states = Counter(fresh(i).state for i in ids)
    assert states[OutboxState.SENDING] >= 4 and states[OutboxState.PENDING] == 0

    smtp.sink.delay = 0
    clock.set(real_now)
    assert delivery.deliver_due().sent == 0  # the dead process's claims are still leased
    clock.set(real_now + claims.LEASE + timedelta(minutes=1))
    report = delivery.deliver_due()

    counts = smtp.sink.per_message_id()
    assert set(counts) == message_ids  # nothing lost
    duplicates = {mid for mid, n in counts.items() if n > 1}
    assert duplicates <= {in_flight} and max(counts.values()) <= 2  # at most the one in flight, once more
    assert report.expired_leases == states[OutboxState.SENDING]
    assert all(fresh(i).state == OutboxState.SENT for i in ids)


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.timeout(900)
@pytest.mark.skipif(not USE_PG, reason="several schedulers need PostgreSQL (SKIP LOCKED); on SQLite exactly one runs")
def test_two_schedulers_on_postgres_send_every_message_exactly_once(
        app_ctx: Flask, app_config: dict, clock: Any, staff: dict, smtp: SmtpServer) -> None:
    fills = [dispensed(staff, i) for i in range(4)]
    db.session.execute(sa.delete(OutboxMessage))  # only the load below is due
    # Two real processes run on the real clock: the load is due in real time.
    t = datetime.now(UTC) - timedelta(minutes=1)
    n = 2000
    db.session.execute(sa.insert(OutboxMessage), [
        {"dedupe_key": f"load:{i}", "kind": MessageKind.REMINDER_EARLY, "patient_id": fills[i % 4][0]["patient"].id,
         "prescription_id": fills[i % 4][0]["rx"].id, "order_id": fills[i % 4][1].id, "due_at": t,
         "next_attempt_at": t, "state": OutboxState.PENDING, "attempts": 0, "created_at": t,
         "message_id": f"<load.{i}@pharmacy.example>"}
        for i in range(n)
    ])
    db.session.commit()

    # Two delivery processes, each with its own app, engine and connections, started together.
    env = _env_for_subprocess(app_config)
    workers = [subprocess.Popen([sys.executable, "-m", "flask", "reminders", "send", "--batch-size", "20"],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
               for _ in range(2)]
    outputs = [w.communicate(timeout=600)[0] for w in workers]

    assert [w.returncode for w in workers] == [0, 0], outputs
    sent = [int(re.match(r"sent (\d+),", out).group(1)) for out in outputs]  # type: ignore[union-attr]
    counts = smtp.sink.per_message_id()
    assert len(counts) == n and set(counts.values()) == {1}  # every email once, none twice
    assert sum(sent) == n
    assert min(sent) > 0  # both really worked at the same time
    db.session.expire_all()
    states = db.session.execute(sa.select(OutboxMessage.state, sa.func.count()).group_by(
        OutboxMessage.state)).all()
    assert dict(states) == {OutboxState.SENT: n}
    attempts = db.session.execute(sa.select(sa.func.count()).select_from(DeliveryAttempt)).scalar_one()
    assert attempts == n  # one "sent" attempt each: nothing was tried twice


# ---- still wanted? ---------------------------------------------------------------------------------------------


def test_reminders_no_longer_wanted_are_cancelled_at_send_time(app_ctx: Flask, clock: Any, staff: dict,
                                                               smtp: SmtpServer) -> None:
    ids = first_reminders_due(staff, clock, 4)
    rows = [fresh(i) for i in ids]
    # Changes that slipped past planning (a direct data fix): planning never got to cancel these.
    db.session.get(Prescription, rows[0].prescription_id).status = RxStatus.ON_HOLD
    db.session.execute(sa.text("UPDATE patients SET reminders_opt_in = :f WHERE id = :p"),
                       {"f": False, "p": rows[1].patient_id})
    db.session.execute(sa.text("UPDATE patients SET email = NULL WHERE id = :p"), {"p": rows[2].patient_id})
    db.session.commit()

    report = delivery.deliver_due()

    assert (report.sent, report.cancelled) == (1, 3)
    assert fresh(ids[0]).cancelled_reason == "prescription on_hold"
    assert fresh(ids[1]).cancelled_reason == "patient opted out"
    assert fresh(ids[2]).cancelled_reason == "the patient has no email address"
    assert fresh(ids[3]).state == OutboxState.SENT
    assert attempts_of(ids[0]) == ["cancelled"]
    assert smtp.sink.per_message_id() == Counter({fresh(ids[3]).message_id: 1})


def test_after_downtime_only_the_latest_due_reminder_of_a_fill_goes_out(app_ctx: Flask, clock: Any, staff: dict,
                                                                         smtp: SmtpServer) -> None:
    _, order = dispensed(staff)
    rows = reminder_rows(order.id)
    kinds = [r.kind for r in rows]
    at = kinds.index(MessageKind.REMINDER_ORDER_BY)
    earlier, order_by, later = rows[:at], rows[at], rows[at + 1:]
    assert len(earlier) >= 2 and {r.kind for r in earlier} == {MessageKind.REMINDER_EARLY}
    # The scheduler was down from before the first early reminder until after the order-by one fell due.
    clock.set(order_by.due_at + timedelta(hours=2))

    report = delivery.deliver_due()

    assert (report.sent, report.cancelled) == (1, len(earlier))
    for r in earlier:
        assert fresh(r.id).state == OutboxState.CANCELLED
        assert fresh(r.id).cancelled_reason == "superseded by a later reminder"
    assert fresh(order_by.id).state == OutboxState.SENT
    assert smtp.sink.per_message_id() == Counter({fresh(order_by.id).message_id: 1})
    assert later and all(fresh(r.id).state == OutboxState.PENDING for r in later)  # the overdue one is to come


def test_an_early_reminder_on_time_is_not_superseded_by_one_not_yet_due(app_ctx: Flask, clock: Any, staff: dict,
                                                                        smtp: SmtpServer) -> None:
    _, order = dispensed(staff)
    rows = reminder_rows(order.id)
    early = rows[0]
    order_by = next(r for r in rows if r.kind == MessageKind.REMINDER_ORDER_BY)
    for r in rows[:rows.index(order_by)]:  # each early reminder on its own day
        clock.set(r.due_at)
        assert delivery.deliver_due().sent == 1
    assert fresh(early.id).state == OutboxState.SENT
    # The early one having gone out does not stop the order-by one when its day comes.
    clock.set(order_by.due_at)
    assert delivery.deliver_due().sent == 1
    assert fresh(order_by.id).state == OutboxState.SENT


def test_reminder_for_a_refill_already_requested_is_not_sent(app_ctx: Flask, clock: Any, staff: dict,
                                                            smtp: SmtpServer) -> None:
    [row_id] = first_reminders_due(staff, clock, 1)
    row = fresh(row_id)
    refill_flow.request(actor(staff["technician"]), row.prescription_id, source=RequestSource.STAFF)
    # Simulate the race: the reminder was claimed just before the request cancelled it.
    db.session.execute(sa.update(OutboxMessage).where(OutboxMessage.id == row_id).values(
        state=OutboxState.PENDING, cancelled_reason=None))
    db.session.commit()

    delivery.deliver_due()

    assert fresh(row_id).state == OutboxState.CANCELLED and fresh(row_id).cancelled_reason == "refill requested"
    kinds = {db.session.execute(sa.select(OutboxMessage.kind).where(OutboxMessage.message_id == r.message_id))
             .scalar_one() for r in smtp.sink.received}
    assert kinds == {MessageKind.REQUEST_RECEIVED}  # the notice of the request went, the reminder did not


# ---- transports and commands -----------------------------------------------------------------------------------


def test_outbox_only_transport_keeps_the_email_for_the_dashboard(app_config: dict, clock: Any, staff: dict,
                                                                 smtp: SmtpServer) -> None:
    config = {k: v for k, v in app_config.items() if k != "SMTP_URL"}
    app = create_app(config, clock=clock)
    with app.test_request_context("/"):
        assert isinstance(delivery.default_transport(), transports.OutboxOnlyTransport)
        [row_id] = first_reminders_due(staff, clock, 1)
        report = delivery.deliver_due()
        row = fresh(row_id)
        assert report.sent == 1 and row.state == OutboxState.SENT
        assert row.subject == "Riverside Compounding Pharmacy: refill reminder"
        assert "December 17, 2026" in (row.body_text or "") and "<html" in (row.body_html or "")
        assert attempts_of(row_id) == ["sent"]
        db.session.remove()
    with app.app_context():
        db.engine.dispose()
    assert smtp.sink.count() == 0  # nothing left the machine


def test_flask_reminders_send_prints_counts(app: Flask, app_ctx: Flask, clock: Any, staff: dict,
                                            smtp: SmtpServer) -> None:
    first_reminders_due(staff, clock, 2)
    result = app.test_cli_runner().invoke(args=["reminders", "send"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("sent 2, retry later 0, failed 0, cancelled 0")
    assert smtp.sink.count() == 2


# ---- the scheduler process --------------------------------------------------------------------------------------


def test_scheduler_delivers_beats_and_stops_cleanly(app: Flask, app_ctx: Flask, clock: Any, staff: dict,
                                                    smtp: SmtpServer) -> None:
    first_reminders_due(staff, clock, 2)
    stop = threading.Event()
    runner = threading.Thread(target=scheduler.run, args=(app,),
                              kwargs={"stop": stop, "install_signals": False, "deliver_seconds": 0.2})
    runner.start()
    try:
        _wait_for(lambda: smtp.sink.count() == 2, timeout=30)
    finally:
        stop.set()
        runner.join(timeout=30)
    assert not runner.is_alive()
    db.session.expire_all()
    beat = db.session.get(Heartbeat, "scheduler")
    assert beat is not None and beat.beat_at == clock.now()
    assert smtp.sink.per_message_id().most_common(1)[0][1] == 1


def test_scheduler_jobs_coalesce_and_never_skip_a_late_run(app: Flask) -> None:
    sched = scheduler.build(app, worker="w", stop=threading.Event())
    sched.start(paused=True)  # job defaults are applied when the scheduler starts
    try:
        jobs = {job.id: job for job in sched.get_jobs()}
    finally:
        sched.shutdown(wait=False)
    on_sqlite = app.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite")
    assert set(jobs) == {"deliver", "plan_sweep", "heartbeat", "adherence", "adherence_catch_up", "deliver_texts",
                         "autorefill", "autorefill_catch_up", "erx_deliver", "document_folder", "prune_sessions",
                         *(["wal_checkpoint"] if on_sqlite else [])}  # the log copied back (ops/wal.py)
    for job in jobs.values():
        assert job.coalesce is True and job.max_instances == 1
        assert job.misfire_grace_time >= 3600  # APScheduler's default (1 s) would drop a late run
    assert jobs["deliver"].trigger.interval == timedelta(seconds=30)
    assert jobs["plan_sweep"].trigger.interval == timedelta(minutes=10)
    assert jobs["erx_deliver"].trigger.interval == timedelta(seconds=30)
    assert jobs["document_folder"].trigger.interval == timedelta(minutes=1)
    # The adherence snapshot: every night at 02:00 pharmacy time, and once at start-up if that was missed.
    nightly = jobs["adherence"].trigger
    assert str(nightly.timezone) == "America/Chicago"
    assert {f.name: str(f) for f in nightly.fields}["hour"] == "2"
    assert jobs["adherence_catch_up"].kwargs == {"only_if_missed": True}
    prune = jobs["prune_sessions"].trigger  # abandoned staff sessions ended, old ones deleted, nightly
    assert str(prune.timezone) == "America/Chicago" and {f.name: str(f) for f in prune.fields}["hour"] == "3"
    assert type(sched._jobstores["default"]).__name__ == "MemoryJobStore"  # never a shared job store


def test_the_nightly_adherence_refresh_runs_at_start_up_only_when_a_night_was_missed(
        app: Flask, app_ctx: Flask, clock: Any, staff: dict, smtp: SmtpServer) -> None:
    from pharmacy.billing.models import AdherenceSnapshot

    def snapshot() -> list[tuple[int, datetime]]:
        db.session.expire_all()
        return [(r.patient_id, r.computed_at) for r in db.session.execute(sa.select(AdherenceSnapshot)).scalars()]

    w, _ = dispensed(staff)
    assert scheduler.adherence_refresh_due(2)  # never computed
    scheduler.job_refresh_adherence(app, only_if_missed=True)
    assert snapshot() == [(w["patient"].id, clock.now())]  # 09:00 on 23 Nov
    assert not scheduler.adherence_refresh_due(2)  # today's 02:00 run is behind it
    scheduler.job_refresh_adherence(app, only_if_missed=True)  # a restart: nothing to catch up
    assert snapshot() == [(w["patient"].id, clock.now())]

    start = clock.now()
    clock.advance(timedelta(hours=18))  # 03:00 on 24 Nov: the 02:00 run did not happen
    assert scheduler.adherence_refresh_due(2)
    assert not scheduler.adherence_refresh_due(4)  # a 04:00 schedule is not due until 04:00
    scheduler.job_refresh_adherence(app, only_if_missed=True)
    assert snapshot() == [(w["patient"].id, start + timedelta(hours=18))]
    scheduler.job_refresh_adherence(app)  # the nightly job itself always runs
    assert db.session.execute(sa.select(sa.func.count()).select_from(AuditEvent).where(
        AuditEvent.action.like("report.%"))).scalar_one() == 0  # a job, not a person: nothing audited


def test_the_adherence_refresh_hour_is_a_checked_setting(app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    assert scheduler.adherence_refresh_hour(app) == 2
    monkeypatch.setenv("ADHERENCE_REFRESH_HOUR", "5")
    assert scheduler.adherence_refresh_hour(app) == 5
    app.config["ADHERENCE_REFRESH_HOUR"] = "23"
    assert scheduler.adherence_refresh_hour(app) == 23
    for bad in ("24", "-1", "two"):
        app.config["ADHERENCE_REFRESH_HOUR"] = bad
        with pytest.raises(ConfigError, match="ADHERENCE_REFRESH_HOUR"):
            scheduler.build(app, worker="w", stop=threading.Event())


def test_scheduler_refuses_to_run_inside_a_web_request(app: Flask) -> None:
    with app.test_request_context("/"), pytest.raises(scheduler.SchedulerRefused):
        scheduler.run(app, install_signals=False)


@pytest.mark.slow
def test_flask_scheduler_process_stops_on_sigterm(app_ctx: Flask, app_config: dict, clock: Any, staff: dict,
                                                  smtp: SmtpServer) -> None:
    ids = first_reminders_due(staff, clock, 1)
    db.session.execute(sa.update(OutboxMessage).where(OutboxMessage.id.in_(ids))
                       .values(next_attempt_at=datetime.now(UTC) - timedelta(minutes=1)))
    db.session.commit()
    env = _env_for_subprocess(app_config)
    child = subprocess.Popen([sys.executable, "-m", "flask", "scheduler"], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: smtp.sink.count() == 1)  # the first run at start-up sends what is due
        if not USE_PG:  # on SQLite a second scheduler is refused while the first runs
            second = subprocess.run([sys.executable, "-m", "flask", "scheduler"], env=env, capture_output=True,
                                    text=True, timeout=60)
            assert second.returncode != 0 and "Another scheduler is already running" in second.stderr
        child.send_signal(signal.SIGTERM)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        assert child.stderr is not None
        child.stderr.close()
    assert child.returncode == 0
    db.session.expire_all()
    assert db.session.get(Heartbeat, "scheduler") is not None
    # The refusal and the process leave no audit noise.
    assert db.session.execute(sa.select(sa.func.count()).select_from(AuditEvent).where(
        AuditEvent.action.like("outbox.%"))).scalar_one() == 0


@pytest.mark.slow
def test_serve_dev_runs_the_web_server_with_a_scheduler_beside_it_and_stops_both(
        app_ctx: Flask, app_config: dict) -> None:
    import urllib.request

    port = free_port()
    child = subprocess.Popen([sys.executable, "-m", "flask", "serve-dev", "--port", str(port)],
                             env=_env_for_subprocess(app_config), stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        def serving() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/login", timeout=2) as response:
                    return response.status == 200
            except OSError:
                return False

        def beating() -> bool:
            db.session.expire_all()
            db.session.commit()
            return db.session.get(Heartbeat, "scheduler") is not None

        _wait_for(serving)
        _wait_for(beating)  # the scheduler child process is alive and writing its heartbeat
        detail = db.session.get(Heartbeat, "scheduler").detail or ""
        scheduler_pid = int(detail.split(":")[1])
        assert scheduler_pid != child.pid
        child.send_signal(signal.SIGTERM)
        child.wait(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 0
    with pytest.raises(ProcessLookupError):  # stopping the server stopped the scheduler too
        os.kill(scheduler_pid, 0)


def test_sweep_plans_fills_whose_reminders_are_missing(app_ctx: Flask, clock: Any, staff: dict,
                                                       smtp: SmtpServer) -> None:
    _, order = dispensed(staff)
    planned = {r.dedupe_key: r.due_at for r in reminder_rows(order.id)}
    db.session.execute(sa.delete(OutboxMessage).where(OutboxMessage.order_id == order.id))
    db.session.commit()

    scheduler.job_plan_sweep(app_ctx)

    db.session.expire_all()
    assert {r.dedupe_key: r.due_at for r in reminder_rows(order.id)} == planned
    scheduler.job_plan_sweep(app_ctx)  # nothing missing now: nothing added twice
    assert len(reminder_rows(order.id)) == len(planned)


def test_an_address_the_server_cannot_take_fails_that_message_only(app_ctx: Flask, clock: Any, staff: dict,
                                                                   smtp: SmtpServer) -> None:
    """The patient form accepts an internationalized address (zoë@…); a server without SMTPUTF8 (aiosmtpd's
    default, and many relays) cannot take it. That is about one message, not the connection: the rest of the
    batch still goes out, and is not charged an attempt (8 such runs would fail it without a single try). The
    message itself fails at once, as a server's 553 5.6.7 would."""
    ids = []
    for i, address in enumerate(["patient0@example.com", "zoë@example.com", "patient2@example.com"]):
        _, order = dispensed(staff, i, patient={"email": address})
        ids.append(reminder_rows(order.id)[0].id)
    clock.set(fresh(ids[0]).due_at)
    smtp.stop()
    smtp.smtputf8 = False
    smtp.start()

    report = delivery.deliver_due()

    assert (report.sent, report.retried, report.failed) == (2, 0, 1)
    assert fresh(ids[2]).state == OutboxState.SENT and attempts_of(ids[2]) == ["sent"]
    # Failed at once (retrying cannot help): the pharmacist sees it among the failed emails.
    assert fresh(ids[1]).state == OutboxState.FAILED and attempts_of(ids[1]) == ["permanent"]
    assert "SMTPUTF8" in fresh(ids[1]).last_error
    assert smtp.sink.per_message_id() == Counter({fresh(ids[0]).message_id: 1, fresh(ids[2]).message_id: 1})


def test_a_failed_check_after_a_send_records_that_send_once(app_ctx: Flask, clock: Any, staff: dict,
                                                            smtp: SmtpServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """The database fails while the next message is confirmed: the one already handed over is committed as sent,
    once — not a second time as "sent (again)", which would tell the pharmacist it went out twice."""
    ids = first_reminders_due(staff, clock, 2)
    real = delivery._check_in

    def failing(conn: Any, row_id: int, *args: Any, **kwargs: Any) -> Any:
        if row_id == ids[1]:
            raise sa.exc.OperationalError("UPDATE outbox", {}, Exception("connection reset"))
        return real(conn, row_id, *args, **kwargs)

    monkeypatch.setattr(delivery, "_check_in", failing)
    with pytest.raises(sa.exc.OperationalError):
        delivery.deliver_due()

    assert fresh(ids[0]).state == OutboxState.SENT
    assert attempts_of(ids[0]) == ["sent"]
    assert smtp.sink.count() == 1
    # The row the error stopped at is back to pending at once (not left `sending` until its lease expires).
    row = fresh(ids[1])
    assert (row.state, row.claimed_by, row.attempts) == (OutboxState.PENDING, None, 0)
    monkeypatch.setattr(delivery, "_check_in", real)
    assert delivery.deliver_due().sent == 1
    assert smtp.sink.count() == 2


def test_a_refused_sender_is_the_configuration_not_each_message(app_ctx: Flask, clock: Any, staff: dict,
                                                                smtp: SmtpServer) -> None:
    """MAIL FROM refused with a 5yz (sender not allowed, authentication required): every email has the same
    envelope sender, so it is the configuration, as an AUTH refusal while connecting is — retried later, never
    every due email failed for good in one run."""
    ids = first_reminders_due(staff, clock, 3)
    smtp.sink.mail_reply = "553 5.7.1 Sender address rejected: not owned by user"

    report = delivery.deliver_due()

    assert report.failed == 0 and report.sent == 0
    assert all(fresh(i).state == OutboxState.PENDING for i in ids)
    smtp.sink.mail_reply = None  # the pharmacy fixes MAIL_FROM
    clock.advance(timedelta(minutes=1))
    assert delivery.deliver_due().sent == 3
