"""The pharmacist's home page and cross-feature views (search)."""
from __future__ import annotations

from typing import Any

from flask import Blueprint, render_template, request

from pharmacy.core.auth import current_actor, staff_required
from pharmacy.dashboard import services

bp = Blueprint("dashboard", __name__)


@bp.get("/")
@staff_required
def home() -> Any:
    return render_template("dashboard/home.html", today=services.today_view(current_actor()))


@bp.get("/search")
@staff_required
def search() -> Any:
    q = request.args.get("q", "")
    page = request.args.get("page", 1, type=int)
    return render_template("dashboard/search.html", q=q, results=services.search(current_actor(), q, page=page))
