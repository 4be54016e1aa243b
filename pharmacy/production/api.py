"""JSON API for the production plan: what the bench makes on each of the next business days, and what it uses —
the same plan as /production, for a bench display or the pharmacy's own scheduling tools."""
from __future__ import annotations

from typing import Any

from flask_smorest import Blueprint

from pharmacy.core.auth import api_auth, current_actor
from pharmacy.production import services
from pharmacy.production.schemas import PlanOutSchema, PlanQuerySchema

blp = Blueprint("production-api", __name__, url_prefix="/api/v1",
                description="The production plan: preparations per business day by formula, bench capacity and "
                            "the ingredients they need against usable stock. Names no patient.")


def _plan(result: services.Plan) -> dict[str, Any]:
    return {
        "today": result.today, "capacity": result.capacity, "total": result.total, "unplanned": result.unplanned,
        "warnings": result.warnings,
        "days": [{"day": d.day, "load": d.load, "capacity": d.capacity, "overloaded": d.overloaded,
                  "moved_in": d.moved_in, "moved_out": d.moved_out, "over": d.over,
                  "lines": [{"formula_id": ln.formula.id, "product": ln.product, "units": ln.units,
                             "units_text": ln.units_text, "preparations": ln.preparations, "late": ln.late,
                             "by_source": {s.value: n for s, n in ln.by_source.items()}} for ln in d.lines]}
                 for d in result.days],
        "ingredients": [{"name": n.name, "unit": n.unit, "needed": n.needed, "on_hand": n.on_hand,
                         "short_on": n.projection.short_on, "shortfall": n.projection.shortfall,
                         "reorder_point": n.reorder_point, "first_lot_id": n.first_lot.lot_id if n.first_lot else None,
                         "uncounted_lot_ids": [lot.lot_id for lot in n.uncounted]}
                        for n in result.ingredients],
    }


@blp.route("/production/plan", methods=["GET"])
@api_auth()
@blp.arguments(PlanQuerySchema, location="query")
@blp.response(200, PlanOutSchema)
def plan(query: dict[str, Any]) -> Any:
    """The plan for the next business days (clinical roles; audited as the page is)."""
    return _plan(services.plan(current_actor(), days=query.get("days")))
