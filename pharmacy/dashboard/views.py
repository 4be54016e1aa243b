"""The pharmacist's home page and cross-feature views (search)."""
from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from flask import Blueprint, current_app, render_template, request, url_for

from pharmacy.core.auth import current_actor, staff_required
from pharmacy.core.context import settings, today
from pharmacy.core.views import url_for_each
from pharmacy.dashboard import search as patient_search
from pharmacy.dashboard import services
from pharmacy.eprescribing import services as eprescribing
from pharmacy.patients import self_service

bp = Blueprint("dashboard", __name__)


@bp.get("/")
@staff_required
def home() -> Any:
    actor = current_actor()
    return render_template("dashboard/home.html", today=services.today_view(actor),
                           patient_reports=self_service.unreviewed_reports(actor),
                           erx=eprescribing.today_block(actor),
                           today_date=today())


@bp.app_template_global("url_if_served")
def url_if_served(endpoint: str, **values: Any) -> str:
    """A link to a page of a feature this app serves, '#' when it does not (a feature left out of the app).
    A function rather than a Jinja macro: Today builds some 70 links, and a macro call costs several times more."""
    return url_for(endpoint, **values) if endpoint in current_app.view_functions else "#"


@bp.app_template_global("links_if_served")
def links_if_served(endpoint: str, key: str) -> Callable[[int], str]:
    """A list's links to one kind of page, `links(id)`: url_for once, each id joined in (url_for_each); '#' for every
    id when this app does not serve the page. Today lists some 50 such links."""
    if endpoint not in current_app.view_functions:
        return lambda _value: "#"
    return url_for_each(endpoint, key)


@bp.app_template_filter("localtime")
def localtime(value: datetime | None, fmt: str = "%b %-d, %Y %-I:%M %p") -> str:
    """Instants are stored in UTC and shown in the pharmacy's time zone."""
    if value is None:
        return ""
    return value.astimezone(settings().timezone).strftime(fmt)


@bp.get("/search")
@staff_required
def search() -> Any:
    results = patient_search.search(current_actor(), request.args.get("q", ""), page=request.args.get("page", 1, type=int))
    return render_template("dashboard/search.html", q=results.q, results=results)
