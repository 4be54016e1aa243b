"""The read paths behind Today at chain scale (issue 21): the same rows as the plain queries they replace, and the
indexes they were written for actually used."""
from __future__ import annotations

import random
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from flask import Flask

from pharmacy.compounding.models import Order
from pharmacy.compounding.rules import OrderState
from pharmacy.core.context import now
from pharmacy.core.db import first_ids, first_ids_of_each
from pharmacy.dashboard import services as today_services
from pharmacy.extensions import db
from pharmacy.prescriptions.models import ScreeningAlert
from pharmacy.prescriptions.rules import Severity
from pharmacy.workflows import orders as order_flow
from tests.factories import world

STATES = (OrderState.REQUESTED, OrderState.VERIFIED, OrderState.COMPOUNDING, OrderState.CHECKED, OrderState.READY)


def _orders_in_many_states(staff: dict[str, Any], n: int = 60) -> None:
    """`n` orders copied from a real one, spread over every state, many sharing the same instant (ties)."""
    w = world(staff)
    template = order_flow.start_fill(w["pharmacist"], w["rx"].id)
    db.session.flush()
    t = Order.__table__
    row = dict(db.session.execute(sa.select(t).where(t.c.id == template.id)).mappings().one())
    rnd = random.Random(7)
    start = now()
    rows = []
    for i in range(n):
        copy = {k: v for k, v in row.items() if k not in ("id", "lot_number")}
        copy.update(fill_number=1000 + i, state=rnd.choice([*STATES, OrderState.DISPENSED]),
                    created_at=start + timedelta(minutes=rnd.choice([0, 0, 0, 1, 2, 5])))  # ties on purpose
        rows.append(copy)
    db.session.execute(sa.insert(t), rows)


def test_the_first_of_each_state_merged_are_the_first_of_all(app_ctx: Flask, staff: dict) -> None:
    """Today's oldest orders read as the first few of each state, merged: the same ids, in the same order, as the
    plain `state IN (…) ORDER BY created_at, id LIMIT n` — ties in time broken by id — for every size asked."""
    _orders_in_many_states(staff)
    for limit in (1, 3, 8, 25, 100):
        merged = first_ids_of_each(Order.id, Order.state, STATES, (Order.created_at, Order.id), limit)
        plain = first_ids(Order.id, Order.state.in_(STATES), (Order.created_at, Order.id), limit)

        def ids(sub: Any) -> list[int]:
            return list(db.session.execute(
                sa.select(Order.id).join(sub, sub.c.id == Order.id).order_by(Order.created_at, Order.id)).scalars())

        assert ids(merged) == ids(plain), limit
        assert len(ids(merged)) == min(limit, db.session.execute(
            sa.select(sa.func.count()).select_from(Order).where(Order.state.in_(STATES))).scalar_one())
    everything = list(db.session.execute(sa.select(Order.id).where(Order.state.in_(STATES))
                                         .order_by(Order.created_at, Order.id)).scalars())
    for limit, offset in ((7, 7), (7, 14), (10, 40), (25, 100)):  # pages on (the renewals' list): the same slice
        page = first_ids_of_each(Order.id, Order.state, STATES, (Order.created_at, Order.id), limit, offset)
        got = list(db.session.execute(sa.select(Order.id).join(page, page.c.id == Order.id)
                                      .order_by(Order.created_at, Order.id)).scalars())
        assert got == everything[offset:offset + limit], (limit, offset)


def test_today_lists_the_oldest_orders_across_states(app_ctx: Flask, staff: dict) -> None:
    _orders_in_many_states(staff)
    view = today_services.TodayView()
    today_services._add_oldest(view)
    expected = list(db.session.execute(
        sa.select(Order.id).where(Order.state.in_(STATES)).order_by(Order.created_at, Order.id).limit(8)).scalars())
    assert [o.id for o in view.oldest_orders] == expected


def test_the_open_alerts_are_read_along_their_partial_index(app_ctx: Flask, staff: dict) -> None:
    """Today's safety alerts must spell ix_screening_alerts_open's condition as the index does (`= 1`, the literal
    'warning'): written with a bound value or SQLite's `IS 1`, the database can no longer prove the index applies
    and reads every alert ever raised. Checked on SQLite's plan, and the list still holds what it should."""
    w = world(staff)
    at = now()
    db.session.add_all([
        ScreeningAlert(prescription_id=w["rx"].id, code="opioid", severity=Severity.HARD_STOP, message="Stop",
                       created_at=at),
        ScreeningAlert(prescription_id=w["rx"].id, code="note", severity=Severity.WARNING, message="Warn",
                       created_at=at),
    ])
    db.session.flush()
    sent: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, parameters: Any, *args: Any) -> None:
        if "FROM screening_alerts" in statement:
            sent.append((statement, parameters))

    sa.event.listen(db.engine, "before_cursor_execute", capture)
    try:
        assert [a.code for a in today_services._alerts_for_a_pharmacist()] == ["opioid"]
    finally:
        sa.event.remove(db.engine, "before_cursor_execute", capture)
    if db.engine.dialect.name != "sqlite":
        return  # PostgreSQL's planner reads a table this small whole, whatever the indexes
    (statement, parameters), = sent  # the statement exactly as the page sends it, with its parameters
    # On a few rows the planner may start elsewhere; INDEXED BY asks whether the index *can* serve this statement —
    # SQLite refuses it ("no query solution") when the WHERE clause does not imply the index's condition.
    forced = statement.replace("FROM screening_alerts", "FROM screening_alerts INDEXED BY ix_screening_alerts_open", 1)
    plan = " ".join(str(r[-1]) for r in db.session.connection().exec_driver_sql(
        f"EXPLAIN QUERY PLAN {forced}", parameters))
    assert "ix_screening_alerts_open" in plan, plan
    # And the check can fail: the same statement with the bound value SQLAlchemy would send for 'warning' cannot.
    bound = forced.replace("!= 'warning'", "!= ?", 1)
    try:
        db.session.connection().exec_driver_sql(f"EXPLAIN QUERY PLAN {bound}", ("warning", *parameters))
    except sa.exc.OperationalError as exc:
        assert "no query solution" in str(exc)
    else:
        raise AssertionError("a bound 'warning' should not be able to use the partial index")


def test_the_alerts_tile_counts_every_finding_not_just_the_lines_shown(app_ctx: Flask, staff: dict) -> None:
    """Today lists the oldest 20 findings; its tile counts all of them (one per prescription and code, as listed),
    so 22 waiting read 22, not 20 — and warnings, resolved or stale ones are not counted."""
    from tests.factories import actor

    w = world(staff)
    at = now()
    db.session.add_all([ScreeningAlert(prescription_id=w["rx"].id, code=f"stop-{i}", severity=Severity.OVERRIDABLE_STOP,
                                       message=f"Stop {i}", created_at=at + timedelta(seconds=i)) for i in range(22)])
    db.session.add_all([
        ScreeningAlert(prescription_id=w["rx"].id, code="stop-0", severity=Severity.OVERRIDABLE_STOP,
                       message="the same finding again", created_at=at),
        ScreeningAlert(prescription_id=w["rx"].id, code="warn", severity=Severity.WARNING, message="w", created_at=at),
        ScreeningAlert(prescription_id=w["rx"].id, code="done", severity=Severity.HARD_STOP, message="r",
                       created_at=at, resolved_at=at),
        ScreeningAlert(prescription_id=w["rx"].id, code="gone", severity=Severity.HARD_STOP, message="g",
                       created_at=at, current=False),
    ])
    db.session.flush()
    view = today_services.today_view(actor(staff["pharmacist"]))
    tile = next(t for t in view.tiles if t.key == "alerts")
    assert (tile.count, len(view.alerts), view.alerts_count) == (22, 20, 22)
    assert [a.code for a in view.alerts][:2] == ["stop-0", "stop-1"]  # oldest first
