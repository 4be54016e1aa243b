"""Fifty identical refill requests at the same moment leave exactly one open request (PostgreSQL).

Each thread has its own session (its own app context, or its own request through the test client)
on the same database, so the requests really race: the prescription row lock serialises them and
the partial unique index is the backstop. SQLite serialises writers with a database-wide lock, so
the race cannot happen there; the idempotency of sequential requests is tested on both databases
in test_refill_services.py.
"""
from __future__ import annotations

import threading
from collections import Counter
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from pharmacy.core import links
from pharmacy.core.models import AuditEvent, LinkUse
from pharmacy.extensions import db
from pharmacy.refills.models import RefillRequest
from pharmacy.refills.rules import RequestSource
from pharmacy.reminders.models import OutboxMessage
from pharmacy.reminders.rules import MessageKind
from pharmacy.workflows import orders as order_flow
from pharmacy.workflows import refill_requests as refill_flow
from tests import factories
from tests.conftest import USE_PG

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(not USE_PG, reason="needs PostgreSQL (DATABASE_URL): SQLite serialises all writers, "
                                          "so concurrent requests cannot race there"),
]
N = 50


def _setup(app: Flask, staff: dict) -> dict[str, Any]:
    with app.test_request_context("/"):
        w = factories.world(staff)
        order = order_flow.start_fill(w["pharmacist"], w["rx"].id)
        factories.run_order_to(w, order.id, "dispensed")
        out = {"rx_id": w["rx"].id, "patient_id": w["patient"].id, "technician": w["technician"],
               "token": links.make_token(links.REFILL, w["patient"].id, w["rx"].id)}
        db.session.commit()
    return out


def _run(n: int, work: Any) -> list[Any]:
    barrier = threading.Barrier(n)
    results: list[Any] = []
    lock = threading.Lock()

    def thread_main(i: int) -> None:
        try:
            barrier.wait(timeout=60)
            outcome: Any = work(i)
        except Exception as exc:  # reported below: a failure in a thread must fail the test
            outcome = exc
        with lock:
            results.append(outcome)

    threads = [threading.Thread(target=thread_main, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a request hung"
    return results


def _facts(app: Flask, rx_id: int) -> dict[str, Any]:
    with app.app_context():
        requests = db.session.execute(sa.select(RefillRequest.id, RefillRequest.state).where(
            RefillRequest.prescription_id == rx_id)).all()
        received = db.session.execute(sa.select(sa.func.count()).select_from(OutboxMessage).where(
            OutboxMessage.kind == MessageKind.REQUEST_RECEIVED, OutboxMessage.prescription_id == rx_id)).scalar_one()
        audited = db.session.execute(sa.select(sa.func.count()).select_from(AuditEvent).where(
            AuditEvent.action == "refill.request")).scalar_one()
        return {"requests": requests, "received": received, "audited": audited}


def test_fifty_concurrent_service_calls_make_one_request(app: Flask, staff: dict) -> None:
    d = _setup(app, staff)

    def work(i: int) -> tuple[int, bool]:
        with app.app_context():  # its own session on the shared engine
            try:
                outcome = refill_flow.request(d["technician"], d["rx_id"], source=RequestSource.STAFF)
                db.session.commit()
                return outcome.request.id, outcome.created
            finally:
                db.session.rollback()
                db.session.remove()

    results = _run(N, work)
    errors = [r for r in results if isinstance(r, Exception)]
    assert errors == []
    assert len({rid for rid, _ in results}) == 1
    assert Counter(created for _, created in results) == {True: 1, False: N - 1}
    facts = _facts(app, d["rx_id"])
    assert [state.value for _, state in facts["requests"]] == ["open"]
    assert (facts["received"], facts["audited"]) == (1, 1)


def test_fifty_concurrent_link_requests_over_http_make_one_request(app: Flask, staff: dict) -> None:
    d = _setup(app, staff)
    body = {"token": d["token"], "date_of_birth": "1968-04-12"}

    def work(i: int) -> tuple[int, int | None]:
        with app.test_client() as client:  # each request runs in its own app context and session
            response = client.post("/api/v1/refill-requests", json=body,
                                   environ_base={"REMOTE_ADDR": f"10.0.{i // 200}.{i % 200 + 1}"})
            data = response.get_json() or {}
            return response.status_code, (data.get("request") or {}).get("id")

    results = _run(N, work)
    errors = [r for r in results if isinstance(r, Exception)]
    assert errors == []
    assert Counter(status for status, _ in results) == {201: 1, 200: N - 1}, results
    assert len({rid for _, rid in results}) == 1
    facts = _facts(app, d["rx_id"])
    assert len(facts["requests"]) == 1 and facts["received"] == 1
    with app.app_context():
        assert db.session.execute(sa.select(sa.func.count()).select_from(LinkUse)).scalar_one() == 1
