"""The money reports' running totals (pharmacy/billing/totals.py) against a real database (SQLite here, PostgreSQL
in the second pass): kept equal to a full recomputation through any sequence of the real use cases, checked by
`flask reports verify`, replaced by `flask reports rebuild-totals`, back-filled by migration 0014, and rebuilt after
the chain-scale generator's bulk load."""
from __future__ import annotations

import importlib.util
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pharmacy.billing import reports, services, totals
from pharmacy.compounding import services as orders
from pharmacy.compounding.models import Order
from pharmacy.compounding.rules import OrderState
from pharmacy.core.clock import FixedClock
from pharmacy.core.errors import DomainError
from pharmacy.core.models import AuditEvent
from pharmacy.extensions import db
from pharmacy.paths import ROOT
from pharmacy.prescriptions.rules import Form
from pharmacy.workflows import orders as order_flow
from tests import factories
from tests.conftest import T0


def _snapshot() -> dict[str, set[tuple[Any, ...]]]:
    """Every kept total that means something (the rows verify() compares)."""
    return {name: {tuple(r) for r in db.session.execute(totals._kept(name))} for name in totals.TABLES}


def _people(world: dict[str, Any]) -> list[tuple[Any, Any]]:
    """Three patients, four prescriptions (one patient has two, in two forms): (patient, prescription)."""
    liquid = factories.formula("LDN-SL-4.5", form=Form.SUBLINGUAL_LIQUID, strength="4.5")
    p2 = factories.patient(world["pharmacist"], first_name="Walter", last_name="Whitaker", email="w@example.com")
    p3 = factories.patient(world["pharmacist"], first_name="Nina", last_name="New", email="n@example.com")
    rx2 = factories.prescription(world["pharmacist"], p2.id, world["formula"].id, world["prescriber"].id, days_supply=90)
    rx3 = factories.prescription(world["pharmacist"], p3.id, world["formula"].id, world["prescriber"].id)
    rx4 = factories.second_prescription(world["pharmacist"], world["patient"].id, liquid.id, world["prescriber"].id)
    db.session.flush()
    return [(world["patient"], world["rx"]), (p2, rx2), (p3, rx3), (world["patient"], rx4)]


def _open_order(rx: Any) -> Order | None:
    return db.session.execute(sa.select(Order).where(
        Order.prescription_id == rx.id, Order.state.not_in([OrderState.DISPENSED, OrderState.CANCELLED]))
        .order_by(Order.id.desc()).limit(1)).scalar_one_or_none()


OPS = st.one_of(
    st.tuples(st.just("fill"), st.integers(0, 3)),
    st.tuples(st.just("advance"), st.integers(0, 3), st.sampled_from(["verified", "compounding", "checked", "ready"])),
    st.tuples(st.just("dispense"), st.integers(0, 3), st.sampled_from(["pickup", "ship"])),
    st.tuples(st.just("hold"), st.integers(0, 3)),
    st.tuples(st.just("resume"), st.integers(0, 3)),
    st.tuples(st.just("cancel"), st.integers(0, 3)),
    st.tuples(st.just("remake"), st.integers(0, 3)),
    st.tuples(st.just("pay"), st.integers(0, 3), st.integers(1, 20000), st.booleans()),
    st.tuples(st.just("refund"), st.integers(0, 3), st.integers(1, 3000), st.booleans()),
    st.tuples(st.just("days"), st.integers(1, 45)),
)


def _run(world: dict[str, Any], people: list[tuple[Any, Any]], clock: FixedClock, op: tuple[Any, ...]) -> None:
    """One use case through the public services and workflows, as a request would run it."""
    name, i = op[0], op[1]
    if name == "days":
        clock.set(clock.now() + timedelta(days=i))
        return
    patient, rx = people[i]
    order = _open_order(rx)
    ph, tech = world["pharmacist"], world["technician"]
    if order is None and name in ("dispense", "remake"):  # something to work on
        order = order_flow.start_fill(ph, rx.id)
    if name == "fill":
        order_flow.start_fill(ph, rx.id)
    elif name == "advance" and order is not None and order.state != OrderState.ON_HOLD:
        factories.run_order_to({**world, "formula": rx.formula}, order.id, op[2])
    elif name == "dispense" and order is not None:
        if order.state not in (OrderState.READY, OrderState.ON_HOLD):
            factories.run_order_to({**world, "formula": rx.formula}, order.id, "ready")
        details = {"carrier": "UPS", "tracking_number": "1Z999"} if op[2] == "ship" else {}
        order_flow.dispense(ph, order.id, method=op[2], too_soon_reason="Travelling: an early refill.", **details)
    elif name == "hold" and order is not None:
        orders.hold_order(ph, order.id, "Waiting for the patient to call back.")
    elif name == "resume" and order is not None:
        orders.resume_order(ph, order.id)
    elif name == "cancel" and order is not None:
        order_flow.cancel(ph, order.id, "The patient cancelled.")
    elif name == "remake" and order is not None:
        if order.state != OrderState.ON_HOLD:
            factories.run_order_to({**world, "formula": rx.formula}, order.id, "checked")
        orders.send_back(world["pharmacist2"], order.id, "Label smudged: make it again.")
    elif name in ("pay", "refund"):
        last = db.session.execute(sa.select(Order.id).where(Order.patient_id == patient.id)
                                  .order_by(Order.id.desc()).limit(1)).scalar() if op[3] else None
        amount = op[2]
        if name == "refund":  # at most what is left to give back, so most refunds go through
            ledger = services.patient_ledger(patient.id)
            amount = min(amount, ledger.paid_cents - ledger.refunded_cents) or amount
        record = services.record_payment if name == "pay" else services.record_refund
        record(tech, patient_id=patient.id, amount_cents=amount, method="card", order_id=last)


@settings(max_examples=25, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(ops=st.lists(OPS, min_size=4, max_size=24))
def test_kept_totals_equal_a_full_recomputation_after_any_sequence(world: dict[str, Any], clock: FixedClock,
                                                                    ops: list[tuple[Any, ...]]) -> None:
    outer = db.session.begin_nested()  # each example starts from the same world
    try:
        people = _people(world)
        for op in ops:
            try:
                with db.session.begin_nested():  # a refused step rolls back, as its request would
                    _run(world, people, clock, op)
            except DomainError:
                pass
        db.session.flush()
        assert totals.verify() == []
        # And the reports read from them give what a recomputation gives, to the cent.
        kept = _snapshot()
        totals.rebuild()
        assert _snapshot() == kept
    finally:
        outer.rollback()
        clock.set(T0)


def test_a_dispensing_changes_every_total_it_should_in_the_same_flush(world: dict[str, Any]) -> None:
    order = order_flow.start_fill(world["pharmacist"], world["rx"].id)
    factories.run_order_to(world, order.id, "ready")  # $55.00, charged from now on
    pid = world["patient"].id
    balance = db.session.get(totals.PatientBalance, pid)
    assert (balance.charged_cents, balance.owed_cents) == (5500, 5500)
    factories.dispense(world["technician"], order.id)
    db.session.refresh(balance)
    assert balance.charged_cents == 5500
    forms = {f.form: f for f in reports._fills_by_form(1)}
    assert (forms["capsule"].fills, forms["capsule"].patients, forms["capsule"].price_cents) == (1, 1, 5500)
    services.record_payment(world["technician"], patient_id=pid, amount_cents=2000, method="cash")
    assert [m.paid_cents for m in reports._revenue(1)] == [2000]
    assert reports._outstanding(25, with_names=True).rows[0].owed_cents == 3500
    avg = reports._average_cost(1, with_names=True)
    assert (avg.patients, avg.average_cents) == (1, 5500)


def test_a_cancelled_ready_order_is_no_longer_a_charge(world: dict[str, Any]) -> None:
    order = order_flow.start_fill(world["pharmacist"], world["rx"].id)
    factories.run_order_to(world, order.id, "ready")
    orders.hold_order(world["pharmacist"], order.id, "Patient away this week.")
    assert reports._outstanding(25, with_names=True).total_owed_cents == 5500  # held once ready: still charged
    order_flow.cancel(world["pharmacist"], order.id, "The patient stopped.")
    report = reports._outstanding(25, with_names=True)
    assert (report.patients, report.total_owed_cents, report.rows) == (0, 0, [])
    assert totals.verify() == []


# ---- flask reports verify / rebuild-totals ---------------------------------------------------------------------


def _some_history(world: dict[str, Any]) -> None:
    order = order_flow.start_fill(world["pharmacist"], world["rx"].id)
    factories.run_order_to(world, order.id, "dispensed")
    services.record_payment(world["technician"], patient_id=world["patient"].id, amount_cents=1234, method="card",
                            order_id=order.id)
    services.record_refund(world["technician"], patient_id=world["patient"].id, amount_cents=234, method="card")
    db.session.commit()


def test_flask_reports_verify_passes_then_names_a_tampered_total(app: Flask, world: dict[str, Any]) -> None:
    _some_history(world)
    runner = app.test_cli_runner()
    ok = runner.invoke(args=["reports", "verify"])
    assert ok.exit_code == 0, ok.output
    assert "match" in ok.output
    # Someone writes around the totals: a balance one cent off, a month's fills one too many.
    db.session.execute(sa.text("UPDATE patient_balances SET paid_cents = paid_cents + 1, owed_cents = owed_cents - 1"))
    db.session.execute(sa.text("UPDATE fill_months SET fills = fills + 1"))
    db.session.commit()
    bad = runner.invoke(args=["reports", "verify"])
    assert bad.exit_code == 1, bad.output
    assert "MISMATCH patient_balances" in bad.output and "MISMATCH fill_months" in bad.output
    assert "revenue_months" not in bad.output.replace("(patient_balances, revenue_months", "")
    pid = world["patient"].id
    assert f"kept, not recomputed: ({pid}, 5500, 1235, 234, 4499)" in bad.output
    assert f"recomputed, not kept: ({pid}, 5500, 1234, 234, 4500)" in bad.output
    # The rebuild puts them right, in one transaction, and says so in the audit trail.
    rebuilt = runner.invoke(args=["reports", "rebuild-totals"])
    assert rebuilt.exit_code == 0, rebuilt.output
    assert "patient_balances 1 row(s)" in rebuilt.output
    assert runner.invoke(args=["reports", "verify"]).exit_code == 0
    db.session.rollback()
    event = db.session.execute(sa.select(AuditEvent).where(AuditEvent.action == "reports.rebuild_totals")).scalar_one()
    assert event.details["patient_balances"] == 1


def test_a_deleted_total_row_is_a_mismatch_too(app: Flask, world: dict[str, Any]) -> None:
    _some_history(world)
    db.session.execute(sa.text("DELETE FROM cost_windows WHERE start_month = (SELECT MAX(start_month) FROM cost_windows)"))
    db.session.commit()
    result = app.test_cli_runner().invoke(args=["reports", "verify"])
    assert result.exit_code == 1 and "MISMATCH cost_windows" in result.output, result.output


# ---- migration 0014's back-fill and the generator ---------------------------------------------------------------


def _migration(name: str = "0014_running_totals") -> Any:
    path = ROOT / "migrations" / "versions" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"migration_{name[:4]}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_migration_back_fills_what_the_app_keeps(world: dict[str, Any], clock: FixedClock) -> None:
    people = _people(world)
    for op in [("fill", 0), ("dispense", 0, "ship"), ("pay", 0, 3000, True), ("fill", 1), ("dispense", 1, "pickup"),
               ("days", 40), ("fill", 3), ("advance", 3, "ready"), ("fill", 2), ("dispense", 2, "pickup"),
               ("refund", 0, 500, False), ("fill", 0), ("hold", 0), ("days", 35), ("fill", 1), ("cancel", 1)]:
        _run(world, people, clock, op)
    db.session.flush()
    kept = _snapshot()
    assert all(kept[name] for name in totals.TABLES)
    for table in totals.TABLES.values():
        db.session.execute(table.delete())
    _migration()._backfill(db.session.connection())
    _migration("0015_read_paths").backfill_cost_window_totals(db.session.connection())  # the table 0015 added
    assert _snapshot() == kept
    assert totals.verify() == []


def test_the_generator_leaves_the_totals_right(app: Flask) -> None:
    from pharmacy.bench.generator import generate

    with app.app_context():
        report, _ = generate(patients=6, seed=3, password="bench password 123")
        assert report.totals_rows["patient_balances"] >= 6
        assert totals.verify() == []
        generate(patients=3, seed=4, password="bench password 123")  # added to a database that has rows
        assert totals.verify() == []


@pytest.mark.parametrize("months", [1, 12, 36])
def test_every_report_reads_a_fixed_number_of_statements(world: dict[str, Any], app: Flask, months: int) -> None:
    def statements(patients: int) -> int:
        for i in range(patients):
            p = factories.patient(world["pharmacist"], first_name=f"S{i}", last_name=f"T{patients}-{i}",
                                  email=f"s{patients}-{i}@example.com")
            rx = factories.prescription(world["pharmacist"], p.id, world["formula"].id, world["prescriber"].id)
            order = order_flow.start_fill(world["pharmacist"], rx.id)
            factories.run_order_to(world, order.id, "dispensed")
            services.record_payment(world["technician"], patient_id=p.id, amount_cents=100 + i, method="cash")
        db.session.flush()
        seen: list[str] = []
        listener = lambda *args: seen.append(args[2])  # noqa: E731
        sa.event.listen(db.engine, "before_cursor_execute", listener)
        try:
            reports._revenue(months), reports._fills_by_form(months)
            reports._average_cost(months, with_names=True), reports._outstanding(25, with_names=True)
        finally:
            sa.event.remove(db.engine, "before_cursor_execute", listener)
        return len(seen)

    assert statements(2) == statements(8) == 4
