"""Routes of inventory, production (the plan, batches) and formula versions: staff by role; admins see none of it
(clinical records); a technician keeps stock and compounds, a pharmacist checks, releases lots and manages formulas.

Lots 1 and 2 are the world formula's; this module receives lot 3 and quarantines it (never the formula's own lots,
which later modules compound from).
"""
from __future__ import annotations

from datetime import timedelta
from typing import Any

from tests.conftest import T0
from tests.web.route_matrix import Route, api_route, staff_page

NO_ADMIN: dict[str, str] = {"admin": "forbidden"}
PHARMACIST_ONLY: dict[str, str] = {"technician": "forbidden", "admin": "forbidden"}
EXPIRY = (T0.date() + timedelta(days=300)).isoformat()


def _receive(w: dict[str, Any]) -> dict[str, Any]:
    return {"ingredient_name": "Naltrexone hydrochloride USP", "supplier": "Matrix", "lot_number": "MX-1",
            "expiry_date": EXPIRY, "quantity": "25", "unit": "g"}


ROUTES: list[Route] = [
    staff_page("production.plan", lambda w: "/production", **NO_ADMIN),
    staff_page("production.plan_csv", lambda w: "/production.csv", **NO_ADMIN),
    staff_page("production.today_fragment", lambda w: "/production/today", **NO_ADMIN),
    staff_page("production.new_batch", lambda w: f"/production/batches/new?formula_id={w['formula'].id}", **NO_ADMIN),
    staff_page("production.batch", lambda w: "/production/batches/999999", technician="missing",
               pharmacist="missing", admin="forbidden"),
    staff_page("inventory.index", lambda w: "/inventory", **NO_ADMIN),
    staff_page("inventory.lot", lambda w: "/inventory/lots/1", **NO_ADMIN),
    staff_page("formulas.versions", lambda w: f"/formulas/{w['formula'].id}/versions", **NO_ADMIN),
    staff_page("formulas.new", lambda w: "/formulas/new", **PHARMACIST_ONLY),
    staff_page("formulas.change", lambda w: f"/formulas/{w['formula'].id}/change", **PHARMACIST_ONLY),
    # ---- changes ------------------------------------------------------------------------------------------
    staff_page("inventory.receive", lambda w: "/inventory/receive", method="POST", **NO_ADMIN, data=_receive),
    staff_page("inventory.reorder_point", lambda w: "/inventory/reorder-points", method="POST", **NO_ADMIN,
               data=lambda w: {"ingredient_name": "Naltrexone hydrochloride USP", "reorder_point": "5", "unit": "g"}),
    staff_page("inventory.record", lambda w: "/inventory/lots/3/records", method="POST", **NO_ADMIN,
               data=lambda w: {"kind": "count", "quantity": "24.5"}),
    staff_page("inventory.quarantine", lambda w: "/inventory/lots/3/quarantine", method="POST", **NO_ADMIN,
               data=lambda w: {"reason": "Supplier recall (matrix)"}),
    staff_page("inventory.release", lambda w: "/inventory/lots/3/release", method="POST", **PHARMACIST_ONLY,
               data=lambda w: {"reason": "Recall withdrawn (matrix)"}),
    staff_page("production.create_batch", lambda w: "/production/batches", method="POST", **NO_ADMIN,
               data=lambda w: {"order_ids": [str(w["order"].id)], "lot_id": ["1", "2"]}),
    staff_page("production.record", lambda w: "/production/batches/999999/record", method="POST",
               technician="missing", pharmacist="missing", admin="forbidden",
               data=lambda w: {"lot_id": ["1"], "lot_qty": ["1"], "quantity_made": "30"}),
    staff_page("production.check", lambda w: "/production/batches/999999/check", method="POST",
               technician="forbidden", pharmacist="missing", admin="forbidden", data=lambda w: {}),
    staff_page("production.release", lambda w: "/production/batches/999999/release", method="POST",
               technician="forbidden", pharmacist="missing", admin="forbidden", data=lambda w: {}),
    staff_page("formulas.create", lambda w: "/formulas/new", method="POST", **PHARMACIST_ONLY,
               data=lambda w: {"code": "X"}),
    staff_page("formulas.save_change", lambda w: f"/formulas/{w['formula'].id}/change", method="POST",
               **PHARMACIST_ONLY, data=lambda w: {"name": "x"}),
    staff_page("formulas.approve", lambda w: "/formulas/versions/999999/approve", method="POST",
               technician="forbidden", pharmacist="missing", admin="forbidden", data=lambda w: {}),
    staff_page("formulas.reject", lambda w: "/formulas/versions/999999/reject", method="POST",
               technician="forbidden", pharmacist="missing", admin="forbidden", data=lambda w: {"decision_note": "no"}),
    # ---- the JSON API -------------------------------------------------------------------------------------
    api_route("production-api.plan", lambda w: "/api/v1/production/plan?days=5", **NO_ADMIN),
    api_route("inventory-api.inventory", lambda w: "/api/v1/inventory", **NO_ADMIN),
    api_route("inventory-api.receive", lambda w: "/api/v1/inventory/lots", method="POST", **NO_ADMIN,
              data=lambda w: {**_receive(w), "lot_number": "MX-API"}),
    api_route("inventory-api.record", lambda w: "/api/v1/inventory/lots/3/records", method="POST", **NO_ADMIN,
              data=lambda w: {"kind": "count", "quantity": "24"}),
    staff_page("formulas.retire", lambda w: "/formulas/999999/retire", method="POST",
               technician="forbidden", pharmacist="missing", admin="forbidden", data=lambda w: {"reason": "matrix"}),
]
