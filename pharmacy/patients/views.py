"""Patient pages (list and record)."""
from __future__ import annotations

from typing import Any

from flask import Blueprint, render_template, request

from pharmacy.core.auth import current_actor, staff_required
from pharmacy.patients import services

bp = Blueprint("patients", __name__, url_prefix="/patients")


@bp.get("/")
@staff_required
def index() -> Any:
    page = request.args.get("page", 1, type=int)
    return render_template("patients/index.html", page=services.list_patients(current_actor(), page=page))


@bp.get("/<int:patient_id>")
@staff_required
def detail(patient_id: int) -> Any:
    return render_template("patients/detail.html", record=services.patient_record(current_actor(), patient_id))
