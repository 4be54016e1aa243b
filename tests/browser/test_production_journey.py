"""The bench's day in a real browser: a technician receives a lot of naltrexone, sees the production plan, makes one
batch for three patients' verified orders (planned, then weighed and recorded), sees the stock go down on the
inventory page and a low-stock alert appear on Today. Every page is checked with axe-core at WCAG 2.2 AA (no
violations) and photographed into artifacts/screenshots/."""
from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa

from pharmacy.compounding.models import IngredientLot, Order
from pharmacy.core.context import today
from pharmacy.extensions import db
from pharmacy.inventory import services as inventory
from pharmacy.workflows import inventory as inventory_flow
from pharmacy.workflows import orders as order_flow
from tests import factories
from tests.browser.conftest import shot, shown, sign_in
from tests.browser.portal_checks import axe_violations
from tests.conftest import PASSWORD

pytestmark = pytest.mark.browser
NTX = "Naltrexone hydrochloride USP"


def accessible(page: Any, name: str) -> None:
    shot(page, f"production-{name}")
    problems = axe_violations(page)
    assert problems == [], f"{name}: " + "\n".join(problems)


def _three_verified_orders(app: Any, staff: dict) -> list[int]:
    with app.test_request_context("/"):
        w = factories.world(staff)
        db.session.execute(sa.update(IngredientLot).values(expiry_date=today() - timedelta(days=1)))  # used up
        inventory_flow.receive(w["technician"], {"ingredient_name": "Microcrystalline cellulose NF", "supplier": "PCCA",
                                                 "lot_number": "MCC-7731", "expiry_date": today() + timedelta(days=700),
                                                 "quantity": Decimal(500), "unit": "g"})
        inventory.set_reorder_point(w["technician"], NTX, Decimal("0.3"), unit="g")
        people = [("Ruth", "Okafor"), ("Dev", "Raman")]
        rxs = [w["rx"]] + [factories.prescription(w["pharmacist"], factories.patient(
            w["pharmacist"], first_name=first, last_name=last, email=f"{first.lower()}@example.com").id,
            w["formula"].id, w["prescriber"].id) for first, last in people]
        ids = []
        for rx in rxs:
            order = order_flow.start_fill(w["pharmacist"], rx.id)
            order_flow.transition(w["pharmacist"], order.id, "verified")
            ids.append(order.id)
        db.session.commit()
        return ids


def test_receive_plan_batch_and_see_the_stock_go_down(live_server, live_app, page, staff) -> None:
    base = live_server.url
    order_ids = _three_verified_orders(live_app, staff)
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    sign_in(page, base, staff["technician"].email, PASSWORD)
    assert "Low stock: Naltrexone" in page.locator("main").inner_text()  # nothing usable on the shelf yet

    # Receive a lot of naltrexone with its quantity.
    page.goto(f"{base}/inventory")
    accessible(page, "1-inventory-empty")
    form = page.locator("form[action$='/inventory/receive']")
    form.get_by_label("Ingredient").select_option(NTX)
    form.get_by_label("Supplier").fill("Medisca")
    form.get_by_label("Lot number").fill("NTX-24117")
    form.get_by_label("Quantity received").fill("0.6")
    form.get_by_label("Unit").select_option("g")
    form.get_by_label("Expiry date").fill((today_in(live_app) + timedelta(days=420)).isoformat())
    form.get_by_role("button", name="Receive").click()
    shown(page, "NTX-24117 received: 0.6 g", within="body")
    accessible(page, "2-inventory-received")
    page.goto(f"{base}/")
    assert "Low stock: Naltrexone" not in page.locator("main").inner_text()

    # The plan: three 4.5 mg capsule orders due today, 90 capsules, and the naltrexone they need.
    page.goto(f"{base}/production")
    plan = page.locator("main").inner_text()
    assert "90 capsules" in plan and "Naltrexone hydrochloride USP" in plan
    accessible(page, "3-plan")

    # One batch for the three orders.
    page.get_by_role("link", name="Make a batch").first.click()
    page.wait_for_url(re.compile(r".*/production/batches/new$"))  # the plan links to the same formula's page too
    page.get_by_role("link", name="Naltrexone 4.5 mg capsules").click()
    page.wait_for_url(re.compile(r".*/production/batches/new\?formula_id=\d+$"))
    for order_id in order_ids:
        page.get_by_label(re.compile(rf"^Order {order_id} ")).check()
    accessible(page, "4-batch-new")
    page.get_by_role("button", name="Plan the batch").click()
    shown(page, "Batch planned: 3 orders", within="body")
    accessible(page, "5-batch-planned")
    page.get_by_label(re.compile("^Naltrexone hydrochloride USP · lot NTX-24117")).fill("405")
    page.get_by_label(re.compile("^Microcrystalline cellulose NF · lot MCC-7731")).fill("12.6")
    page.get_by_label("Quantity made for the whole batch").fill("90")
    page.get_by_role("button", name="Record the batch").click()
    body = shown(page, "one lot number and BUD for every order", within="body")  # the batch's address again
    accessible(page, "6-batch-recorded")
    with live_app.app_context():
        lots = {o.lot_number for o in db.session.execute(sa.select(Order).where(Order.id.in_(order_ids))).scalars()}
    batch_lot = {lot.split("/")[0] for lot in lots}
    assert len(lots) == 3 and len(batch_lot) == 1 and f"Batch {batch_lot.pop()}" in body

    # Stock went down by what was weighed, and Today says naltrexone is low.
    page.goto(f"{base}/inventory")
    assert "0.195 g" in page.locator("main").inner_text()
    page.goto(f"{base}/")
    alert = page.locator("#stock-alerts").inner_text()
    assert "Low stock: Naltrexone hydrochloride USP" in alert and "0.195 g usable" in alert
    page.wait_for_selector("#production-today:not([aria-busy])")  # fetched after the page (app.js)
    assert "preparation" in page.locator("#production-today").inner_text()
    accessible(page, "7-today-low-stock")
    assert errors == []


def today_in(app: Any) -> Any:
    with app.app_context():
        return today()

