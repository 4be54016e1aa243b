"""The N+1 guard: every page sends the same number of SQL statements with 3 patients as with 30.

The data comes from the chain-scale generator (`pharmacy.bench.generator`) at two sizes — the second
adds 27 patients, with more prescriptions, fills, requests and emails, to the first. Each page is
fetched once at each size (after a warm-up fetch) and its statements are counted with a SQLAlchemy
`before_cursor_execute` listener. The counts must be equal: a count that grows with the rows is a
query per row.

Every request also runs under a lazy-load guard (`do_orm_execute`): each ORM select gets
`raiseload("*")`, and any lazy load that still happens (on an object loaded through an eager chain)
fails the request. Explicit `joinedload`/`selectinload` options, and relationships mapped
`lazy="joined"`, keep working.
"""
from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask, url_for
from flask.testing import FlaskClient
from sqlalchemy import event, orm

from pharmacy.bench.generator import generate
from pharmacy.compounding.models import Order
from pharmacy.compounding.rules import OrderState
from pharmacy.core.models import User
from pharmacy.extensions import db
from pharmacy.patients.models import Patient
from pharmacy.prescriptions.models import Prescription
from pharmacy.prescriptions.rules import RxStatus
from pharmacy.refills.models import OPEN_REQUEST_STATES, RefillRequest
from tests.conftest import counted_statements

PASSWORD = "bench password 123"
PHARMACIST = "bench-pharmacist@pharmacy.example"


# ---- the lazy-load guard -----------------------------------------------------------------------------------


class HiddenLazyLoad(AssertionError):
    pass


def _with_raiseload(statement: Any) -> Any:
    """`raiseload("*")` on the statement, keeping the relationships its entities map as `lazy="joined"`."""
    statement = statement.options(orm.raiseload("*"))
    for desc in getattr(statement, "column_descriptions", []):
        entity = desc.get("entity")
        if entity is None or desc.get("expr") is not entity:
            continue
        mapper = getattr(sa.inspect(entity, raiseerr=False), "mapper", None)
        for rel in (mapper.relationships if mapper is not None else ()):
            if rel.lazy == "joined":
                # (InvalidRequestError: the statement already chose another eager strategy for it.)
                with contextlib.suppress(sa.exc.InvalidRequestError):
                    statement = statement.options(orm.joinedload(getattr(entity, rel.key)))
    return statement


@contextmanager
def lazy_load_guard() -> Iterator[list[str]]:
    """Within the block, a lazy relationship load is an error (and is recorded, in case a page swallows it)."""
    caught: list[str] = []

    def guard(state: orm.ORMExecuteState) -> None:
        if not state.is_select:  # an INSERT (the audit trail's reads, written in one statement) loads nothing
            return
        if state.lazy_loaded_from is not None:
            what = f"{type(state.lazy_loaded_from.obj()).__name__}.{state.loader_strategy_path}"
            caught.append(what)
            raise HiddenLazyLoad(f"hidden lazy load: {what}")
        if not state.is_column_load and not state.is_relationship_load:
            state.statement = _with_raiseload(state.statement)

    event.listen(db.session, "do_orm_execute", guard)
    try:
        yield caught
    finally:
        event.remove(db.session, "do_orm_execute", guard)


def test_the_guard_fails_a_hidden_lazy_load(app: Flask) -> None:
    with app.app_context():
        generate(patients=2, seed=5, password=PASSWORD)
        db.session.expunge_all()
        with lazy_load_guard():
            rx = db.session.execute(sa.select(Prescription).limit(1)).scalar_one()
            with pytest.raises(sa.exc.InvalidRequestError, match="raise"):
                _ = rx.formula  # lazy by default: raiseload refuses it
            order = db.session.execute(
                sa.select(Order).options(orm.joinedload(Order.prescription)).limit(1)).unique().scalar_one()
            assert order.prescription.id  # an explicit eager load still works
            with pytest.raises((sa.exc.InvalidRequestError, HiddenLazyLoad)):
                _ = order.prescription.patient  # lazy on an eagerly loaded object: refused too


# ---- the pages -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Page:
    endpoint: str
    values: Callable[[dict[str, Any]], dict[str, Any]]
    query: dict[str, str] | None = None
    bearer: bool = False

    @property
    def name(self) -> str:
        return self.endpoint + (f"?{sorted(self.query.items())}" if self.query else "")


PAGES = [
    Page("dashboard.home", lambda w: {}),
    Page("dashboard.search", lambda w: {}, {"q": "smith"}),
    Page("patients.index", lambda w: {}),
    Page("patients.detail", lambda w: {"patient_id": w["patient_id"]}),
    Page("prescriptions.detail", lambda w: {"rx_id": w["rx_id"]}),
    Page("compounding.queue", lambda w: {}),
    Page("compounding.queue", lambda w: {}, {"state": "requested", "page": "2"}),  # one step's later page
    Page("compounding.order", lambda w: {"order_id": w["order_id"]}),
    Page("refills.queue", lambda w: {}),
    Page("refills.renewals_queue", lambda w: {}),
    Page("refills.link_refill", lambda w: {"token": w["token"]}),
    Page("reminders.outbox", lambda w: {}),
    Page("billing.patient_costs", lambda w: {"patient_id": w["patient_id"]}),
    Page("billing.reports", lambda w: {}),
    Page("billing.adherence", lambda w: {}),
    Page("refill-requests.queue", lambda w: {}, bearer=True),
]


def _world(app: Flask, client: FlaskClient) -> dict[str, Any]:
    """The rows each page is opened on: the busiest patient, a long active prescription, an open order, a link."""
    from pharmacy.core import links
    from pharmacy.core.actor import staff
    from pharmacy.core.roles import Role
    from pharmacy.core.services import issue_token

    with app.test_request_context("/"):
        patient_id = db.session.execute(
            sa.select(Order.patient_id).group_by(Order.patient_id)
            .order_by(sa.func.count().desc(), Order.patient_id).limit(1)).scalar_one()
        blocked = sa.select(RefillRequest.prescription_id).where(RefillRequest.state.in_(OPEN_REQUEST_STATES))
        open_fill = sa.select(Order.prescription_id).where(
            Order.state.not_in([OrderState.DISPENSED, OrderState.CANCELLED]))
        # Same shape at both sizes (active, a fixed dose, nothing in progress), the one with the most fills.
        rx_id = db.session.execute(
            sa.select(Order.prescription_id).join(Prescription, Prescription.id == Order.prescription_id)
            .where(Prescription.status == RxStatus.ACTIVE, Prescription.titration.is_(None),
                   Prescription.id.not_in(blocked), Prescription.id.not_in(open_fill))
            .group_by(Order.prescription_id).order_by(sa.func.count().desc(), Order.prescription_id).limit(1)
        ).scalar_one()
        rx = db.session.get(Prescription, rx_id)
        # The same shape of patient at both sizes (shipping adds the fee lookup to a quote): pages differ by rows only.
        db.session.execute(sa.update(Patient).where(Patient.id.in_([patient_id, rx.patient_id])).values(
            delivery_preference="ship", shipping_days=2, reminders_opt_in=True, email="shape@example.com"))
        order_id = db.session.execute(
            sa.select(Order.id).where(Order.state == OrderState.COMPOUNDING).order_by(Order.id).limit(1)
        ).scalar_one_or_none()
        dob = db.session.get(Patient, rx.patient_id).date_of_birth
        token = links.make_token(links.REFILL, rx.patient_id, rx.id)
        uid = db.session.execute(sa.select(User.id).where(User.email == PHARMACIST)).scalar_one()
        _, raw = issue_token(staff(uid, Role.PHARMACIST), uid, "query counts")
        db.session.commit()
    response = client.post(f"/r/{token}", data={"month": dob.month, "day": dob.day, "year": dob.year})
    assert response.status_code in (302, 303), response.get_data(as_text=True)[:300]
    return {"patient_id": patient_id, "rx_id": rx_id, "order_id": order_id, "token": token, "bearer": raw}


def _count(app: Flask, client: FlaskClient, page: Page, w: dict[str, Any]) -> tuple[int, list[str], str | None]:
    """How many statements one GET of the page sends, the statements, and what went wrong (None: nothing)."""
    with app.test_request_context("/"):
        url = url_for(page.endpoint, **page.values(w), **(page.query or {}))
    headers = {"Authorization": f"Bearer {w['bearer']}"} if page.bearer else {}
    client.get(url, headers=headers)  # warm-up: first-use lookups (settings, calendars, caches) are not per row
    with app.app_context():
        engine = db.engine
    with counted_statements(engine) as statements, lazy_load_guard() as caught:
        response = client.get(url, headers=headers)
    problem = None
    if caught:
        problem = f"{page.endpoint}: hidden lazy loads {caught}"
    elif response.status_code != 200:
        problem = f"{page.endpoint} ({url}): HTTP {response.status_code} (see the captured log for the error)"
    return len(statements), statements, problem


def _login(client: FlaskClient) -> None:
    response = client.post("/login", data={"email": PHARMACIST, "password": PASSWORD})
    assert response.status_code == 302, response.get_data(as_text=True)[:300]


def _shape(statements: list[str]) -> list[str]:
    return [re.sub(r"\s+", " ", s)[:120] for s in statements]


def test_statement_counts_do_not_grow_with_the_data(app: Flask, client: FlaskClient) -> None:
    present = [p for p in PAGES if p.endpoint in app.view_functions]
    missing = sorted(p.endpoint for p in PAGES if p.endpoint not in app.view_functions)
    with app.app_context():
        generate(patients=3, seed=21, password=PASSWORD)
    _login(client)
    small_world = _world(app, client)
    small = {p.name: _count(app, client, p, small_world) for p in present
             if not (p.endpoint == "compounding.order" and small_world["order_id"] is None)}

    with app.app_context():
        generate(patients=27, seed=22, password=PASSWORD)
        more = db.session.execute(sa.select(sa.func.count()).select_from(Order)).scalar_one()
    assert more > 150
    large_world = _world(app, client)
    problems = []
    for page in present:
        if page.name not in small:
            continue
        n_small, s_small, problem_small = small[page.name]
        n_large, s_large, problem_large = _count(app, client, page, large_world)
        if problem_small or problem_large:
            problems.append(problem_small or problem_large or "")
        elif n_small != n_large:
            problems.append(f"{page.name}: {n_small} statements with 3 patients, {n_large} with 30\n  small: "
                            + "\n         ".join(_shape(s_small)) + "\n  large: " + "\n         ".join(_shape(s_large)))
    assert not problems, "\n".join(problems)
    if missing:
        pytest.skip(f"not built yet, so not counted: {', '.join(missing)}")
