"""Twenty wrong dates of birth at the same moment, half on the JSON API and half on the link page, check exactly five
(PostgreSQL; each request its own session and connection, so they really race).

Counting first and inserting after let 6–8 guesses through a limit of five; the count is now one atomic upsert
(core/links.py `count_answer`), so guesses beyond the fifth are refused as "locked" without being looked at.
"""
from __future__ import annotations

import threading
from collections import Counter
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from pharmacy.core import links
from pharmacy.core.models import AuditEvent, LinkGuard
from pharmacy.extensions import db
from pharmacy.workflows import orders as order_flow
from tests import factories
from tests.conftest import USE_PG

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(not USE_PG, reason="needs PostgreSQL (DATABASE_URL): SQLite serialises all writers"),
]
WRONG = "1968-12-04"
RIGHT = "1968-04-12"


def _token(app: Flask, staff: dict) -> str:
    with app.test_request_context("/"):
        w = factories.world(staff)
        order = order_flow.start_fill(w["pharmacist"], w["rx"].id)
        factories.run_order_to(w, order.id, "dispensed")
        token = links.make_token(links.REFILL, w["patient"].id, w["rx"].id)
        db.session.commit()
    return token


def _race(app: Flask, token: str, answers: list[tuple[str, str]]) -> list[Any]:
    """Each (channel, date) in its own thread and client, released together by a barrier."""
    barrier = threading.Barrier(len(answers))
    results: list[Any] = [None] * len(answers)

    def one(i: int, channel: str, dob: str) -> None:
        environ = {"REMOTE_ADDR": f"10.1.{i // 200}.{i % 200 + 1}"}  # past the per-address rate limit
        year, month, day = dob.split("-")
        try:
            with app.test_client() as client:
                barrier.wait(timeout=60)
                if channel == "api":
                    response = client.post("/api/v1/refill-requests", json={"token": token, "date_of_birth": dob},
                                           environ_base=environ)
                else:
                    response = client.post(f"/r/{token}", data={"month": month, "day": day, "year": year},
                                           environ_base=environ)
                results[i] = (channel, dob, response.status_code)
        except Exception as exc:  # reported below: a failure in a thread must fail the test
            results[i] = exc

    threads = [threading.Thread(target=one, args=(i, c, d)) for i, (c, d) in enumerate(answers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a request hung"
    assert [r for r in results if isinstance(r, Exception)] == []
    return results


def _counted(app: Flask) -> tuple[int, int]:
    with app.app_context():
        attempts = db.session.execute(sa.select(sa.func.sum(LinkGuard.failed_attempts))).scalar_one()
        audited = db.session.execute(sa.select(sa.func.count()).select_from(AuditEvent).where(
            AuditEvent.action == "link.dob_failed")).scalar_one()
        return int(attempts or 0), audited


def test_twenty_concurrent_wrong_dates_on_both_channels_check_exactly_five(app: Flask, staff: dict) -> None:
    token = _token(app, staff)
    results = _race(app, token, [("api", WRONG)] * 10 + [("page", WRONG)] * 10)
    statuses = Counter(status for _, _, status in results)
    # Four "n attempt(s) left", the fifth locks the link (429), and the fifteen others are refused unchecked.
    assert statuses == {422: 4, 429: 16}, results
    assert _counted(app) == (5, 5)
    with app.test_client() as late:  # the right date no longer opens it
        assert late.post("/api/v1/refill-requests", json={"token": token, "date_of_birth": RIGHT}).status_code == 429


def test_the_right_date_among_concurrent_guesses_is_never_the_sixth_answer_checked(app: Flask, staff: dict) -> None:
    token = _token(app, staff)
    answers = [("api", WRONG)] * 6 + [("page", WRONG)] * 6 + [("api", RIGHT)]
    results = _race(app, token, answers)
    attempts, audited = _counted(app)
    assert (attempts, audited) == (5, 5)
    right = [status for _, dob, status in results if dob == RIGHT]
    # Either it came before the fifth wrong date (and opened the request) or after it (and met a locked link).
    assert right in ([201], [429]), results
    wrong = Counter(status for _, dob, status in results if dob == WRONG)
    assert wrong == {422: 4, 429: 8}, results
