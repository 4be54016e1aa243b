"""Formula pages beside compounding's list and record (/formulas, /formulas/<id>): a new formula, a change (a new
version), the versions with their approval, and retiring a formula. Pharmacists only ("manage formulas")."""
from __future__ import annotations

from typing import Any

from flask import Blueprint, flash, redirect, render_template, request, url_for

from pharmacy.compounding.rules import CATEGORY_LABELS, UspCategory
from pharmacy.core import uow
from pharmacy.core.auth import current_actor, staff_required
from pharmacy.core.errors import ValidationFailed
from pharmacy.formulas import services
from pharmacy.formulas.rules import INGREDIENT_UNITS
from pharmacy.prescriptions.rules import Form

bp = Blueprint("formulas", __name__)
ID = "int(max=2147483647)"
FORM_LABELS = {Form.CAPSULE: "Capsules", Form.SUBLINGUAL_LIQUID: "Sublingual liquid",
               Form.TRANSDERMAL_CREAM: "Transdermal cream"}
ROWS = 6


def _posted() -> dict[str, Any]:
    """The form's fields, and its ingredient lines (ing-N-name …; the active one is the radio "active" = N)."""
    data = {k: v for k, v in request.form.items() if not k.startswith("ing-") and k != "csrf_token"}
    active = request.form.get("active", "")
    data["ingredients"] = [
        {"name": request.form.get(f"ing-{i}-name", ""), "amount": request.form.get(f"ing-{i}-amount", ""),
         "unit": request.form.get(f"ing-{i}-unit", ""), "per": request.form.get(f"ing-{i}-per", ""),
         "salt_form": request.form.get(f"ing-{i}-salt_form", ""), "active": active == str(i)}
        for i in range(ROWS)]
    return data


def _render(template: str, values: dict[str, Any], errors: dict[str, list[str]], status: int = 200,
            **extra: Any) -> Any:
    rows = list(values.get("ingredients") or [])
    rows += [{}] * max(0, ROWS - len(rows))
    return render_template(template, values=values, rows=rows[:ROWS], errors=errors, units=INGREDIENT_UNITS,
                           categories=[(c.value, CATEGORY_LABELS[c]) for c in UspCategory],
                           forms=[(f.value, FORM_LABELS[f]) for f in Form], **extra), status


@bp.get("/formulas/new")
@staff_required
def new() -> Any:
    services.may_manage(current_actor())
    copy = request.args.get("copy", type=int)
    values: dict[str, Any] = {"lead_time_business_days": "2", "bud_reference": "USP <795> (2023) default BUD"}
    if copy:
        history = services.history(current_actor(), copy)
        values = {**services.form_values_of(history.formula), "code": "", "strength_mg": ""}
    return _render("formulas/new.html", values, {})


@bp.post("/formulas/new")
@staff_required
def create() -> Any:
    services.may_manage(current_actor())
    data = _posted()
    try:
        version = services.create_formula(current_actor(), data)
    except ValidationFailed as exc:
        uow.discard()
        return _render("formulas/new.html", data, exc.fields or {"_schema": [exc.message]}, 422)
    flash("New formula saved as version 1: another pharmacist approves it before it can be prescribed.", "success")
    return redirect(url_for("formulas.versions", formula_id=version.formula_id))


@bp.get(f"/formulas/<{ID}:formula_id>/change")
@staff_required
def change(formula_id: int) -> Any:
    services.may_manage(current_actor())
    history = services.history(current_actor(), formula_id)
    return _render("formulas/change.html", services.form_values_of(history.formula), {}, f=history.formula)


@bp.post(f"/formulas/<{ID}:formula_id>/change")
@staff_required
def save_change(formula_id: int) -> Any:
    services.may_manage(current_actor())
    data = _posted()
    try:
        version = services.propose_change(current_actor(), formula_id, data)
    except ValidationFailed as exc:
        uow.discard()
        history = services.history(current_actor(), formula_id)
        return _render("formulas/change.html", data, exc.fields or {"_schema": [exc.message]}, 422, f=history.formula)
    flash(f"Version {version.version} saved: it is used once another pharmacist approves it.", "success")
    return redirect(url_for("formulas.versions", formula_id=formula_id))


@bp.get(f"/formulas/<{ID}:formula_id>/versions")
@staff_required
def versions(formula_id: int) -> Any:
    return render_template("formulas/versions.html", h=services.history(current_actor(), formula_id), errors={})


@bp.post(f"/formulas/versions/<{ID}:version_id>/approve")
@staff_required
def approve(version_id: int) -> Any:
    version = services.approve(current_actor(), version_id, request.form.get("decision_note"))
    flash(f"Version {version.version} approved: it is the formula in use from now on.", "success")
    return redirect(url_for("formulas.versions", formula_id=version.formula_id))


@bp.post(f"/formulas/versions/<{ID}:version_id>/reject")
@staff_required
def reject(version_id: int) -> Any:
    version = services.reject(current_actor(), version_id, request.form.get("decision_note"))
    flash(f"Version {version.version} rejected.", "success")
    return redirect(url_for("formulas.versions", formula_id=version.formula_id))


@bp.post(f"/formulas/<{ID}:formula_id>/retire")
@staff_required
def retire(formula_id: int) -> Any:
    formula = services.retire(current_actor(), formula_id, request.form.get("reason", ""))
    flash(f"{formula.name} is retired: it can no longer be ordered.", "success")
    return redirect(url_for("formulas.versions", formula_id=formula_id))
