"""The inventory, production, batch and formula pages over HTTP: they render with realistic data (no Python reprs),
their forms work, Today shows the blocks, and the plan's statement count does not grow with the data."""
from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from flask import Flask, url_for
from flask.testing import FlaskClient

from pharmacy.bench.generator import generate
from pharmacy.compounding.models import Batch, Formula, IngredientLot
from pharmacy.core.actor import Actor
from pharmacy.core.context import today
from pharmacy.core.roles import Role
from pharmacy.extensions import db
from pharmacy.inventory import services as inventory
from pharmacy.inventory.models import LotStock
from pharmacy.paths import ROOT
from pharmacy.production import services as production
from pharmacy.seeding.loader import load
from pharmacy.workflows import batches as batch_flow
from pharmacy.workflows import inventory as inventory_flow
from pharmacy.workflows import orders as order_flow
from tests import factories
from tests.conftest import counted_statements, login
from tests.web.test_query_counts import lazy_load_guard

REPR = re.compile(r"Decimal\(|datetime\.date\(|Row\(|\bNone\b|[A-Z][a-zA-Z]+\(\w+=")


def _no_repr(html: str) -> None:
    text = re.sub(r"<[^>]+>", " ", html).replace("None waiting.", "").replace("None.", "")  # the Today page's words
    found = REPR.findall(text)
    assert not found, f"Python reprs in the page: {found}"


def _stocked(app: Flask, staff: dict) -> dict[str, Any]:
    """Two received lots, three patients' verified orders made into a batch (recorded), a low reorder point."""
    with app.test_request_context("/"):
        w = factories.world(staff)
        db.session.execute(sa.update(IngredientLot).values(expiry_date=today() - timedelta(days=1)))
        lots = {}
        for name, number, qty in (("Naltrexone hydrochloride USP", "NTX-1", "1"),
                                  ("Microcrystalline cellulose NF", "MCC-1", "500")):
            lots[name] = inventory_flow.receive(w["technician"], {
                "ingredient_name": name, "supplier": "PCCA", "lot_number": number,
                "expiry_date": today() + timedelta(days=40), "quantity": Decimal(qty), "unit": "g"}).id
        inventory.set_reorder_point(w["technician"], "Naltrexone hydrochloride USP", "0.8", unit="g")
        ids = []
        for i, rx in enumerate([w["rx"], *(
                factories.prescription(w["pharmacist"], factories.patient(
                    w["pharmacist"], first_name=f"Pat{n}", last_name=f"Batch{n}", email=f"p{n}@example.com").id,
                    w["formula"].id, w["prescriber"].id) for n in range(2))]):
            order = order_flow.start_fill(w["pharmacist"], rx.id)
            order_flow.transition(w["pharmacist"], order.id, "verified")
            ids.append(order.id)
            assert i < 3
        batch = batch_flow.plan(w["technician"], ids, lots=[{"ingredient_lot_id": x} for x in lots.values()])
        batch_flow.record(w["technician"], batch.id, quantity_made=batch.expected_quantity, lots=[
            {"ingredient_lot_id": lots["Naltrexone hydrochloride USP"], "quantity_used": "405"},
            {"ingredient_lot_id": lots["Microcrystalline cellulose NF"], "quantity_used": "12.6"}])
        db.session.commit()
        return {"batch_id": batch.id, "lot_id": lots["Naltrexone hydrochloride USP"], "formula_id": w["formula"].id,
                "order_ids": ids}


def test_the_pages_render_with_data_and_today_shows_low_stock(app: Flask, client: FlaskClient, staff: dict) -> None:
    w = _stocked(app, staff)
    login(client, staff["pharmacist"])
    pages = ["/production", "/inventory", f"/inventory/lots/{w['lot_id']}", f"/production/batches/{w['batch_id']}",
             f"/production/batches/new?formula_id={w['formula_id']}", f"/formulas/{w['formula_id']}/versions",
             "/formulas/new", f"/formulas/{w['formula_id']}/change", "/", "/production/today"]
    bodies = {}
    for path in pages:
        response = client.get(path)
        assert response.status_code == 200, path
        bodies[path] = response.get_data(as_text=True)
        _no_repr(bodies[path])
    home = bodies["/"]
    assert "Low stock: Naltrexone hydrochloride USP" in home  # 1 g − 0.405 g = 0.595 g, reorder at 0.8 g
    # Today leaves the block to be fetched after the page (the plan is the slow part), with a link for no script;
    # the fragment is the block alone, the page without the header the whole page around it.
    assert 'data-fragment="/production/today"' in home and "preparation" not in home
    fetched = client.get("/production/today", headers={"X-Fragment": "1"})
    fragment = fetched.get_data(as_text=True)
    # Fetched after Today is shown, perhaps while the pharmacist submits a form: it sets no cookie that could land
    # after the form's answer and put back the session as it was (losing that answer's message).
    assert "Set-Cookie" not in fetched.headers
    assert "Set-Cookie" in client.get("/production/today").headers  # the page itself refreshes the session
    assert fragment.lstrip().startswith("<section") and "Production: what the bench makes" in fragment
    assert "preparation" in fragment and "<html" not in fragment
    assert "<html" in bodies["/production/today"] and "preparation" in bodies["/production/today"]
    batch = bodies[f"/production/batches/{w['batch_id']}"]
    assert batch.count("Batch1") == 1 and "Pat0" in batch and "Final check" in batch
    assert "0.595 g" in bodies["/inventory"]
    csv_text = client.get("/production.csv").get_data(as_text=True)
    assert csv_text.startswith("day,formula,product,units")


def test_forms_receive_count_and_quarantine(app: Flask, client: FlaskClient, staff: dict) -> None:
    with app.test_request_context("/"):
        factories.world(staff)
        db.session.commit()
    login(client, staff["technician"])
    expiry = (today_in(app) + timedelta(days=200)).isoformat()
    bad = client.post("/inventory/receive", data={"ingredient_name": "Naltrexone hydrochloride USP",
                                                  "supplier": "PCCA", "lot_number": "NTX-7", "expiry_date": expiry})
    assert bad.status_code == 422 and "quantity" in bad.get_data(as_text=True).lower()
    ok = client.post("/inventory/receive", data={"ingredient_name": "Naltrexone hydrochloride USP",
                                                 "supplier": "PCCA", "lot_number": "NTX-7", "expiry_date": expiry,
                                                 "quantity": "25", "unit": "g"})
    assert ok.status_code == 302
    with app.app_context():
        lot_id = db.session.execute(sa.select(IngredientLot.id).where(IngredientLot.lot_number == "NTX-7")).scalar_one()
    counted = client.post(f"/inventory/lots/{lot_id}/records", data={"kind": "count", "quantity": "24.75"})
    assert counted.status_code == 302
    quarantined = client.post(f"/inventory/lots/{lot_id}/quarantine", data={"reason": "Supplier recall 114"})
    assert quarantined.status_code == 302 and "/recall?ingredient_lot=NTX-7" in quarantined.headers["Location"]
    with app.app_context():
        stock = db.session.get(LotStock, lot_id)
        assert stock.on_hand == Decimal("24.75") and db.session.get(IngredientLot, lot_id).quarantined_at
    assert client.post(f"/inventory/lots/{lot_id}/release", data={"reason": "withdrawn"}).status_code == 403


def test_a_formula_change_through_the_pages(app: Flask, client: FlaskClient, staff: dict) -> None:
    with app.test_request_context("/"):
        f_id = factories.world(staff)["formula"].id
        db.session.commit()
    login(client, staff["pharmacist"])
    page = client.get(f"/formulas/{f_id}/change").get_data(as_text=True)
    assert 'name="ing-1-amount" value="14"' in page
    form = {"name": "Naltrexone 4.5 mg capsules", "usp_category": "other_nonaqueous", "lead_time_business_days": "2",
            "storage": "Room temperature", "container": "Amber vial", "method": "Mix, then fill size 3 capsules.",
            "change_note": "Capsule filling step spelled out", "active": "0",
            "ing-0-name": "Naltrexone hydrochloride USP", "ing-0-amount": "450", "ing-0-unit": "mg",
            "ing-0-per": "100 capsules", "ing-1-name": "Microcrystalline cellulose NF", "ing-1-amount": "14",
            "ing-1-unit": "g", "ing-1-per": "100 capsules"}
    assert client.post(f"/formulas/{f_id}/change", data={**form, "active": ""}).status_code == 422
    assert client.post(f"/formulas/{f_id}/change", data=form).status_code == 302
    versions = client.get(f"/formulas/{f_id}/versions").get_data(as_text=True)
    assert "Version 2" in versions and "Method" in versions
    with app.app_context():
        assert db.session.get(Formula, f_id).version == 1


def today_in(app: Flask) -> Any:
    with app.app_context():
        return today()


# ---- statements: the same count with 3 patients as with 30 -------------------------------------------------

PAGES = [("production.plan", {}), ("production.plan_csv", {}), ("inventory.index", {}),
         ("production.new_batch", {"formula_id": 1}), ("dashboard.home", {}), ("production.today_fragment", {})]


def _counts(app: Flask, client: FlaskClient) -> dict[str, int]:
    out = {}
    for endpoint, values in PAGES:
        with app.test_request_context("/"):
            url = url_for(endpoint, **values)
        assert client.get(url).status_code == 200  # warm-up
        with app.app_context():
            engine = db.engine
        with counted_statements(engine) as statements, lazy_load_guard() as caught:
            response = client.get(url)
        assert response.status_code == 200 and not caught, (endpoint, caught)
        out[endpoint] = len(statements)
    return out


def _stock_every_lot() -> None:
    """Receive a quantity for every lot the generator wrote (it keeps no stock), so the plan reads real levels."""
    tech = Actor(kind="staff", role=Role.TECHNICIAN)
    amounts = {"mg": 50_000, "g": 2000, "each": 20_000, "mL": 20_000}
    for lot_id, name in db.session.execute(sa.select(IngredientLot.id, IngredientLot.ingredient_name).where(
            IngredientLot.id.not_in(sa.select(LotStock.ingredient_lot_id)))).all():
        unit = inventory.ingredient_unit(name) or "g"
        inventory.receive(tech, lot_id, Decimal(amounts[unit]), unit)


def test_the_plan_sends_the_same_statements_whatever_the_data(app: Flask, client: FlaskClient) -> None:
    with app.test_request_context("/"):
        generate(patients=3, seed=31, password="bench password 123")
        _stock_every_lot()
        db.session.commit()
    assert client.post("/login", data={"email": "bench-pharmacist@pharmacy.example",
                                       "password": "bench password 123"}).status_code == 302
    small = _counts(app, client)
    with app.test_request_context("/"):
        generate(patients=27, seed=32, password="bench password 123")
        _stock_every_lot()
        db.session.commit()
        assert db.session.execute(sa.select(sa.func.count()).select_from(Batch)).scalar_one() == 0
    large = _counts(app, client)
    assert small == large


def test_the_demo_seeds_give_lot_quantities_reorder_points_and_alerts(app: Flask, client: FlaskClient,
                                                                       staff: dict) -> None:
    with app.test_request_context("/"):
        load(ROOT / "seeds")
        db.session.commit()
        assert inventory.ledger_mismatches() == []
    login(client, staff["pharmacist"])
    home = client.get("/").get_data(as_text=True)
    assert "Low stock: Transdermal cream base (preserved)" in home  # 1200 mL, reorder at 1500 mL
    assert "P-558201" in home  # naltrexone expiring within 60 days
    page = client.get("/inventory").get_data(as_text=True)
    assert "18.5 g" in page and "expired" in page
    assert client.get("/production").status_code == 200


def _bearer(app: Flask, who: Any) -> dict[str, str]:
    from pharmacy.core import services

    with app.test_request_context("/"):
        _, raw = services.issue_token(factories.actor(who), who.id, "bench display")
        db.session.commit()
    return {"Authorization": f"Bearer {raw}"}


def test_the_plan_and_stock_over_the_json_api(app: Flask, client: FlaskClient, staff: dict) -> None:
    """The same plan and stock as the pages, as JSON; a lot received and stock recorded through the API land in the
    lot's ledger (audited), and bad input is a field error that writes nothing."""
    w = _stocked(app, staff)
    tech = _bearer(app, staff["technician"])
    with app.test_request_context("/"):
        page_plan = production.build(days=5)
        expiry = (today() + timedelta(days=300)).isoformat()

    plan = client.get("/api/v1/production/plan?days=5", headers=tech)
    assert plan.status_code == 200, plan.get_json()
    body = plan.get_json()
    assert len(body["days"]) == 5 and body["capacity"] == page_plan.capacity
    assert [d["load"] for d in body["days"]] == [d.load for d in page_plan.days]
    assert {n["name"] for n in body["ingredients"]} == {n.name for n in page_plan.ingredients}
    assert client.get("/api/v1/production/plan?days=0", headers=tech).status_code == 422

    stock = client.get("/api/v1/inventory", headers=tech).get_json()
    ntx = next(i for i in stock["ingredients"] if i["name"] == "Naltrexone hydrochloride USP")
    lot = next(lot for lot in ntx["lots"] if lot["id"] == w["lot_id"])
    assert Decimal(lot["on_hand"]) == Decimal("0.595") and ntx["low"] is True  # 1 g − 0.405 g, reorder at 0.8 g

    received = client.post("/api/v1/inventory/lots", headers=tech, json={
        "ingredient_name": "Naltrexone hydrochloride USP", "supplier": "Medisca", "lot_number": "NTX-API-2",
        "expiry_date": expiry, "quantity": "25", "unit": "g"})
    assert received.status_code == 201, received.get_json()
    new_lot = received.get_json()
    assert Decimal(new_lot["on_hand"]) == 25 and new_lot["unit"] == "g"
    stock = client.get("/api/v1/inventory", headers=tech).get_json()
    assert next(i for i in stock["ingredients"] if i["name"] == "Naltrexone hydrochloride USP")["low"] is False

    moves_before = _count_moves(app)
    refused = client.post(f"/api/v1/inventory/lots/{new_lot['id']}/records", headers=tech,
                          json={"kind": "waste", "quantity": "0.5"})
    assert refused.status_code == 422 and "reason" in refused.get_json()["errors"]["json"]
    assert client.post(f"/api/v1/inventory/lots/{new_lot['id']}/records", headers=tech,
                       json={"kind": "spill", "quantity": "1"}).status_code == 422
    assert _count_moves(app) == moves_before  # nothing half-written

    wasted = client.post(f"/api/v1/inventory/lots/{new_lot['id']}/records", headers=tech,
                         json={"kind": "waste", "quantity": "0.5", "reason": "Spilled at the balance"})
    assert wasted.status_code == 201, wasted.get_json()
    assert Decimal(wasted.get_json()["quantity"]) == Decimal("-0.5")
    assert Decimal(wasted.get_json()["on_hand"]) == Decimal("24.5")
    counted = client.post(f"/api/v1/inventory/lots/{new_lot['id']}/records", headers=tech,
                          json={"kind": "count", "quantity": "24.4"})
    assert counted.status_code == 201 and Decimal(counted.get_json()["on_hand"]) == Decimal("24.4")
    assert client.get("/api/v1/inventory", headers=_bearer(app, staff["admin"])).status_code == 403
    with app.app_context():
        from pharmacy.core.models import AuditEvent

        actions = db.session.execute(sa.select(AuditEvent.action).where(AuditEvent.entity_type == "ingredient_lot",
                                                                       AuditEvent.entity_id == new_lot["id"])).scalars()
        assert {"stock.waste", "stock.count"} <= set(actions)


def _count_moves(app: Flask) -> int:
    from pharmacy.inventory.models import StockMove

    with app.app_context():
        return db.session.execute(sa.select(sa.func.count()).select_from(StockMove)).scalar_one()
