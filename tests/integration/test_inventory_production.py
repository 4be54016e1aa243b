"""Inventory, batches, recalls, formula versions and the production plan against a real database, through the
workflows the pages call."""
from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
import sqlalchemy as sa

from pharmacy.compounding import batches, recall
from pharmacy.compounding import services as orders
from pharmacy.compounding.models import Formula, IngredientLot, Order
from pharmacy.core.context import today
from pharmacy.core.errors import Conflict, Forbidden, ValidationFailed
from pharmacy.extensions import db
from pharmacy.formulas import services as formulas
from pharmacy.inventory import services as inventory
from pharmacy.inventory.models import LotStock, StockMove
from pharmacy.production import services as production
from pharmacy.production.rules import Source
from pharmacy.workflows import batches as batch_flow
from pharmacy.workflows import inventory as inventory_flow
from pharmacy.workflows import orders as order_flow
from tests import factories


def _receive(w: dict, ingredient: str, number: str, quantity: str, unit: str, *, days: int = 300) -> IngredientLot:
    return inventory_flow.receive(w["technician"], {
        "ingredient_name": ingredient, "supplier": "PCCA", "lot_number": number,
        "expiry_date": today() + timedelta(days=days), "quantity": Decimal(quantity), "unit": unit})


def _stocked_world(staff: dict) -> dict:
    """The test world, its formula's factory lots replaced by received ones with known quantities."""
    w = factories.world(staff)
    db.session.execute(sa.update(IngredientLot).values(expiry_date=today() - timedelta(days=1)))
    w["ntx"] = _receive(w, "Naltrexone hydrochloride USP", "NTX-1", "10", "g")
    w["mcc"] = _receive(w, "Microcrystalline cellulose NF", "MCC-1", "500", "g")
    return w


def _verified(w: dict, patient_overrides: dict | None = None) -> Order:
    if patient_overrides is None:
        rx = w["rx"]
    else:
        p = factories.patient(w["pharmacist"], **patient_overrides)
        rx = factories.prescription(w["pharmacist"], p.id, w["formula"].id, w["prescriber"].id)
    order = order_flow.start_fill(w["pharmacist"], rx.id)
    orders.verify_order(w["pharmacist"], order.id)
    return order


def test_compounding_draws_stock_down_in_its_own_transaction(world: dict, staff: dict) -> None:
    w = _stocked_world(staff)
    order = _verified(w)
    lots = [{"ingredient_lot_id": w["ntx"].id}, {"ingredient_lot_id": w["mcc"].id}]
    order_flow.transition(w["technician"], order.id, "plan_batch", {"lots": lots})
    measured = [{"ingredient_lot_id": w["ntx"].id, "quantity_used": "135"},  # mg, as the formula measures it
                {"ingredient_lot_id": w["mcc"].id, "quantity_used": "4.2"}]  # g
    order_flow.transition(w["technician"], order.id, "compounding",
                          {"lots": measured, "quantity_made": order.quantity})
    ntx = db.session.get(LotStock, w["ntx"].id)
    mcc = db.session.get(LotStock, w["mcc"].id)
    assert (ntx.unit, ntx.received, ntx.used, ntx.on_hand) == ("g", Decimal(10), Decimal("0.135"), Decimal("9.865"))
    assert (mcc.used, mcc.on_hand) == (Decimal("4.2"), Decimal("495.8"))
    uses = db.session.execute(sa.select(StockMove).where(StockMove.order_id == order.id)).scalars().all()
    assert sorted(m.quantity for m in uses) == [Decimal("-4.2"), Decimal("-0.135")]
    assert inventory.ledger_mismatches() == []


def test_waste_adjust_and_count_record_the_difference(world: dict, staff: dict) -> None:
    w = _stocked_world(staff)
    lot = w["mcc"].id
    inventory.record(w["technician"], lot, "waste", Decimal("20"), reason="spilled on the bench")
    inventory.record(w["technician"], lot, "adjust", Decimal("-5"), reason="bag weighed light")
    count = inventory.record(w["technician"], lot, "count", Decimal("470"))
    assert count.quantity == Decimal(-5) and count.counted == Decimal(470)
    stock = db.session.get(LotStock, lot)
    assert (stock.wasted, stock.adjusted, stock.on_hand) == (Decimal(20), Decimal(-10), Decimal(470))
    with pytest.raises(ValidationFailed):
        inventory.record(w["technician"], lot, "waste", Decimal("1"), reason="")  # waste says why
    with pytest.raises(Forbidden):
        inventory.record(w["admin"], lot, "count", Decimal("1"))
    assert inventory.ledger_mismatches() == []


def test_receiving_in_a_unit_the_formula_cannot_use_is_refused(world: dict, staff: dict) -> None:
    with pytest.raises(ValidationFailed) as err:
        _receive(world, "Naltrexone hydrochloride USP", "NTX-9", "100", "mL")
    assert "unit" in err.value.fields


def _batch_of_three(w: dict) -> tuple:
    first = _verified(w)
    second = _verified(w, {"first_name": "Ruth", "last_name": "Okafor", "email": "ruth@example.com"})
    third = _verified(w, {"first_name": "Dev", "last_name": "Raman", "email": "dev@example.com"})
    lots = [{"ingredient_lot_id": w["ntx"].id}, {"ingredient_lot_id": w["mcc"].id}]
    batch = batch_flow.plan(w["technician"], [first.id, second.id, third.id], lots=lots)
    return batch, (first, second, third)


def test_a_batch_is_one_lot_number_record_and_bud_for_every_order(world: dict, staff: dict) -> None:
    w = _stocked_world(staff)
    batch, three = _batch_of_three(w)
    assert batch.expected_quantity == sum(o.quantity for o in three)
    batch_flow.record(w["technician"], batch.id, quantity_made=batch.expected_quantity, lots=[
        {"ingredient_lot_id": w["ntx"].id, "quantity_used": "405"},
        {"ingredient_lot_id": w["mcc"].id, "quantity_used": "12.6"}])
    made = [db.session.get(Order, o.id) for o in three]
    # One batch lot number on every label, with the order's place in the batch.
    assert [o.lot_number for o in made] == [f"{batch.lot_number}/{i}" for i in (1, 2, 3)] and batch.lot_number
    assert {o.bud for o in made} == {batch.bud} and {o.batch_id for o in made} == {batch.id}
    assert all(o.state.value == "compounding" for o in made)
    assert sum(u.quantity_used for o in made for u in o.lots_used if u.ingredient_lot_id == w["ntx"].id) == 405
    # Stock leaves once, for the whole batch.
    assert db.session.get(LotStock, w["ntx"].id).on_hand == Decimal("9.595")
    assert db.session.execute(sa.select(sa.func.count()).select_from(StockMove)
                              .where(StockMove.batch_id == batch.id)).scalar_one() == 2
    batch_flow.check(w["pharmacist2"], batch.id)
    batch_flow.release(w["pharmacist2"], batch.id)
    assert {db.session.get(Order, o.id).state.value for o in three} == {"ready"}
    # A single order the next day still gets its own number.
    assert orders.next_lot_number(today()) != batch.lot_number


def test_a_failed_check_of_the_batch_reaches_every_order(world: dict, staff: dict) -> None:
    w = _stocked_world(staff)
    batch, three = _batch_of_three(w)
    batch_flow.record(w["technician"], batch.id, quantity_made=batch.expected_quantity * Decimal("0.9"), lots=[
        {"ingredient_lot_id": w["ntx"].id, "quantity_used": "405"},
        {"ingredient_lot_id": w["mcc"].id, "quantity_used": "12.6"}])
    with pytest.raises(Forbidden):
        batch_flow.check(w["technician"], batch.id)
    checked = batch_flow.check(w["pharmacist2"], batch.id)
    assert checked.qc_passed is False
    assert [(o.state.value, o.qc_passed) for o in (db.session.get(Order, x.id) for x in three)] == \
        [("compounding", False)] * 3


def test_a_recall_quarantines_the_lot_and_lists_every_batch_and_patient(world: dict, staff: dict) -> None:
    w = _stocked_world(staff)
    batch, three = _batch_of_three(w)
    batch_flow.record(w["technician"], batch.id, quantity_made=batch.expected_quantity, lots=[
        {"ingredient_lot_id": w["ntx"].id, "quantity_used": "405"},
        {"ingredient_lot_id": w["mcc"].id, "quantity_used": "12.6"}])
    single = _verified(w, {"first_name": "Ana", "last_name": "Silva", "email": "ana@example.com"})
    lots = [{"ingredient_lot_id": w["ntx"].id}, {"ingredient_lot_id": w["mcc"].id}]
    order_flow.transition(w["technician"], single.id, "plan_batch", {"lots": lots})
    order_flow.transition(w["technician"], single.id, "compounding", {"quantity_made": single.quantity, "lots": [
        {"ingredient_lot_id": w["ntx"].id, "quantity_used": "135"}, {"ingredient_lot_id": w["mcc"].id,
                                                                      "quantity_used": "4.2"}]})
    lot, found = inventory_flow.recall_lot(w["technician"], w["ntx"].id, "Supplier recall notice 2026-114")
    assert lot.quarantined_at is not None
    assert {r.order_id for r in found.orders} == {*(o.id for o in three), single.id}
    assert found.patient_count == 4
    assert {r.order_lot.split("/")[0] for r in found.orders} == {batch.lot_number,
                                                                 db.session.get(Order, single.id).lot_number}
    # Quarantined: never offered, and refused if chosen anyway.
    fresh = _verified(w, {"first_name": "Lee", "last_name": "Park", "email": "lee@example.com"})
    with pytest.raises(ValidationFailed, match="not planned") as err:
        orders.plan_batch(w["technician"], fresh.id, lots=lots)
    assert "quarantined" in " ".join(err.value.fields["lots"])
    assert w["ntx"].id not in {x.id for x in batches.candidates(w["technician"], w["formula"].id)
                               .lot_choices["Naltrexone hydrochloride USP"]}
    # The batch's own lot number reaches every order in it.
    by_batch = recall.find(w["pharmacist"], order_lot=batch.lot_number)
    assert {r.order_id for r in by_batch.orders} == {o.id for o in three}


def test_formula_versions_need_another_pharmacists_approval_and_orders_keep_theirs(world: dict, staff: dict) -> None:
    w = _stocked_world(staff)
    f = w["formula"]
    order = _verified(w)
    orders.plan_batch(w["technician"], order.id, lots=[{"ingredient_lot_id": w["ntx"].id},
                                                       {"ingredient_lot_id": w["mcc"].id}])
    assert db.session.get(Order, order.id).formula_version == 1
    values = formulas.form_values_of(f)
    values["ingredients"][1]["amount"] = "13.5"
    values["change_note"] = "Less filler for the new capsule size"
    version = formulas.propose_change(w["pharmacist"], f.id, values)
    assert (version.version, version.status.value, f.version) == (2, "pending", 1)
    assert f.ingredients[1].amount == Decimal(14)  # not in use until approved
    with pytest.raises(Conflict):
        formulas.propose_change(w["pharmacist2"], f.id, {**values, "method": "Other"})
    with pytest.raises(Forbidden):
        formulas.approve(w["pharmacist"], version.id)
    with pytest.raises(Forbidden):
        formulas.approve(w["technician"], version.id)
    formulas.approve(w["pharmacist2"], version.id)
    assert (f.version, f.ingredients[1].amount) == (2, Decimal("13.5"))
    assert db.session.get(Order, order.id).formula_version == 1
    history = formulas.history(w["pharmacist"], f.id)
    assert [r.version.version for r in history.versions] == [2, 1]
    assert history.versions[0].changes == ["Microcrystalline cellulose NF: 14 g → 13.5 g per 100 capsules"]


def test_a_new_formula_waits_for_approval_and_a_retired_one_cannot_be_ordered(world: dict, staff: dict) -> None:
    w = world
    values = {**formulas.form_values_of(w["formula"]), "code": "LDN-CAP-2.5", "strength_mg": "2.5",
              "form": "capsule", "name": "Naltrexone 2.5 mg capsules", "change_note": "New strength"}
    version = formulas.create_formula(w["pharmacist"], values)
    new = db.session.get(Formula, version.formula_id)
    assert new.active is False
    formulas.approve(w["pharmacist2"], version.id)
    assert new.active is True
    formulas.retire(w["pharmacist"], w["formula"].id, "Replaced by the 2.5 mg strength")
    with pytest.raises(Conflict, match="retired"):
        order_flow.start_fill(w["pharmacist"], w["rx"].id)


def test_the_plan_puts_orders_requests_and_expected_refills_on_their_bench_days(world: dict, staff: dict) -> None:
    w = _stocked_world(staff)
    order = order_flow.start_fill(w["pharmacist"], w["rx"].id)  # first fill: nothing on hand, due today
    # A second patient with 14 days' supply from today: expected, on its order-by date.
    p = factories.patient(w["pharmacist"], first_name="Ruth", last_name="Okafor", email="ruth@example.com")
    rx = factories.prescription(w["pharmacist"], p.id, w["formula"].id, w["prescriber"].id, days_supply=14)
    first = order_flow.start_fill(w["pharmacist"], rx.id)
    factories.run_order_to(w, first.id, "dispensed", lots=[
        {"ingredient_lot_id": w["ntx"].id, "quantity_used": "135"},
        {"ingredient_lot_id": w["mcc"].id, "quantity_used": "4.2"}])
    plan = production.build()
    assert len(plan.days) == 14 and plan.days[0].day == today()
    today_line = plan.days[0].lines[0]
    assert today_line.by_source == {Source.ORDER: 1} and today_line.units == order.quantity
    expected = [(d.day, ln.by_source) for d in plan.days for ln in d.lines if Source.EXPECTED in ln.by_source]
    assert len(expected) == 1 and expected[0][0] > today()
    needs = {n.name: n for n in plan.ingredients}
    assert needs["Naltrexone hydrochloride USP"].needed == Decimal("0.198")  # (30 + 14) capsules × 4.5 mg, in g
    assert not needs["Naltrexone hydrochloride USP"].short
    csv_text = production.to_csv(plan)
    assert csv_text.count("\r\n") >= 15 and "LDN-CAP-4.5" in csv_text


def test_flask_inventory_check_finds_a_lot_that_disagrees_with_its_ledger(app, world: dict, staff: dict) -> None:
    w = _stocked_world(staff)
    db.session.commit()
    runner = app.test_cli_runner()
    assert runner.invoke(args=["inventory", "check"]).exit_code == 0
    db.session.get(LotStock, w["ntx"].id).on_hand = Decimal(3)
    db.session.commit()
    result = runner.invoke(args=["inventory", "check"])
    assert result.exit_code == 1 and "on hand 3" in result.output
