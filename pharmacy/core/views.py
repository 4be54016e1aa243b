"""Sign-in and sign-out pages, plus what every template knows (pharmacy identity, navigation)."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, Flask, current_app, flash, redirect, render_template, request, session, url_for
from flask_login import current_user, login_user
from marshmallow import Schema, fields, validate

from pharmacy.core import auth, services
from pharmacy.core.admin_views import bp as admin_bp
from pharmacy.core.context import settings
from pharmacy.core.errors import ValidationFailed
from pharmacy.core.forms import form_values, load
from pharmacy.core.roles import Permission, allows
from pharmacy.extensions import limiter

bp = Blueprint("auth", __name__)


class LoginSchema(Schema):
    email = fields.Email(required=True, validate=validate.Length(max=254))
    password = fields.String(required=True, validate=validate.Length(min=1, max=256))


NAV = [
    ("Today", "dashboard.home", None),
    ("Patients", "patients.index", Permission.VIEW_CLINICAL),
    ("Orders", "compounding.queue", Permission.VIEW_CLINICAL),
    ("Production", "production.plan", Permission.VIEW_CLINICAL),
    ("Inventory", "inventory.index", Permission.VIEW_CLINICAL),
    ("Refills", "refills.queue", Permission.VIEW_CLINICAL),
    ("Arrived", "eprescribing.queue", Permission.VIEW_CLINICAL),
    ("Outbox", "reminders.outbox", Permission.MANAGE_OUTBOX),
    ("Money", "billing.reports", Permission.VIEW_REPORTS),
    ("Prices", "billing.prices", Permission.VIEW_BILLING),
    ("Formulas", "compounding.formulas", Permission.VIEW_CLINICAL),
    ("Audit", "admin.audit", Permission.VIEW_AUDIT),
    ("Users", "admin.users", Permission.MANAGE_USERS),
    ("API tokens", "admin.tokens", None),
]


def _safe_next(target: str | None) -> str:
    if target and urlsplit(target).netloc == "" and target.startswith("/") and not target.startswith("//"):
        return target
    return url_for("dashboard.home")


@bp.route("/login", methods=["GET", "POST"])
@limiter.limit("10 per minute; 50 per hour", methods=["POST"])
def login() -> Any:
    if current_user.is_authenticated:
        return redirect(url_for("dashboard.home"))
    errors: dict[str, list[str]] = {}
    if session.pop("expired", False):
        flash("Your session ended; please sign in again.", "info")
    if request.method == "POST":
        data, errors = load(LoginSchema(), form_values(request.form))
        if data is not None:
            user = services.authenticate(data["email"], data["password"])
            if user is not None:
                auth.start_session(user)
                login_user(user)
                return redirect(_safe_next(request.args.get("next")))
            errors = {"_schema": ["Email or password is not right."]}
        return render_template("core/login.html", errors=errors, email=request.form.get("email", "")), 401
    return render_template("core/login.html", errors=errors, email="")


class OwnPasswordSchema(Schema):
    current_password = fields.String(required=True, validate=validate.Length(min=1, max=256))
    new_password = fields.String(required=True, validate=validate.Length(min=1, max=256))
    repeat_password = fields.String(required=True, validate=validate.Length(min=1, max=256))


@bp.get("/account")
@auth.staff_required
def account() -> Any:
    return render_template("core/account.html", errors={})


@bp.post("/account/password")
@auth.staff_required
@limiter.limit("10 per minute; 50 per hour")
def change_password() -> Any:
    """The person's own password, with the current one; this browser stays signed in, every other one is not."""
    data, errors = load(OwnPasswordSchema(), form_values(request.form))
    if data is not None:
        try:
            user = services.change_own_password(auth.current_actor(), **data)
        except ValidationFailed as exc:
            errors = exc.fields
        else:
            auth.start_session(user)
            login_user(user)
            flash("Your password is changed. Every other browser you were signed in on is signed out.", "success")
            return redirect(url_for("auth.account"), 303)
    return render_template("core/account.html", errors=errors), 422


@bp.route("/logout", methods=["POST"])
def logout() -> Any:
    auth.end_session()
    flash("Signed out.", "info")
    return redirect(url_for("auth.login"))


# Which menu item a page belongs to: the longest matching endpoint (or "blueprint." prefix) wins, so exactly one item
# is current on every page that belongs to the menu, and none on pages that do not (search, sign-in).
SECTION_OF = {
    "dashboard.home": ("dashboard.home",),
    "patients.index": ("patients.", "prescriptions.", "billing.patient_costs", "billing.statement",
                       "billing.record_payment", "billing.record_refund", "billing.receipt", "autorefill."),
    "compounding.queue": ("compounding.queue", "compounding.order", "compounding.record", "compounding.transition",
                          "compounding.label"),
    "refills.queue": ("refills.",),
    "eprescribing.queue": ("eprescribing.", "documents."),
    "reminders.outbox": ("reminders.",),
    "billing.reports": ("billing.reports", "billing.report_csv", "billing.adherence"),
    "billing.prices": ("billing.prices", "billing.quote", "billing.set_price", "billing.retire_price",
                       "billing.set_shipping"),
    "compounding.formulas": ("compounding.formulas", "compounding.formula", "compounding.lots", "compounding.receive_lot",
                             "compounding.recall", "formulas."),
    "admin.audit": ("admin.audit",),
    "admin.users": ("admin.users", "admin.create_user", "admin.reset_password", "admin.set_active"),
    "admin.tokens": ("admin.tokens", "admin.issue_token", "admin.revoke_token"),
}


def current_section(endpoint: str | None) -> str | None:
    """The one menu item (its endpoint) the page `endpoint` belongs to, or None."""
    best, length = None, -1
    for item, patterns in SECTION_OF.items():
        for pattern in patterns:
            hit = endpoint == pattern or (pattern.endswith(".") and (endpoint or "").startswith(pattern))
            if hit and len(pattern) > length:
                best, length = item, len(pattern)
    return best


_SENTINEL = 2147483647  # the largest id a route accepts: never a digit run of a route's fixed text


def url_for_each(endpoint: str, key: str, **values: Any) -> Callable[[int], str]:
    """For a list's links to one kind of page: url_for once, then each row's id set in the built URL.

    Why: a page of 60 orders called url_for 60 times (~15 µs each, a good part of the list's rendering). The id is
    an int and is written with int(), so nothing else can enter the URL."""
    head, found, tail = url_for(endpoint, **{key: _SENTINEL}, **values).partition(str(_SENTINEL))
    if not found:  # the id went into the query string in another form: build each one
        return lambda value: url_for(endpoint, **{key: int(value)}, **values)
    return lambda value: f"{head}{int(value)}{tail}"


def init_app(app: Flask) -> None:

    auth.init_app(app)
    app.register_blueprint(admin_bp)
    app.add_template_global(url_for_each)

    @app.context_processor
    def _globals() -> dict[str, Any]:
        cfg = settings()
        # The signed-in user's role, read once: `current_user` is a proxy that looks the user up again on every
        # attribute, and a page asks `can(...)` a few dozen times.
        user = current_user._get_current_object() if current_user else None
        role = user.role if user is not None and user.is_authenticated else None
        items = []
        if role is not None:
            section = current_section(request.endpoint)
            for label, endpoint, permission in NAV:
                if endpoint.split(".")[0] not in current_app.blueprints:
                    continue
                if permission is None or allows(role, permission):
                    items.append(
                        {"label": label, "url": url_for(endpoint),
                         "active": endpoint == section}
                    )
        return {
            "pharmacy_name": cfg.pharmacy_name,
            "pharmacy_phone": cfg.pharmacy_phone,
            "pharmacy_tz": str(cfg.timezone),
            "nav_items": items,
            "can": lambda p: role is not None and allows(role, Permission(p)),
        }
