"""Admin pages: staff accounts, API tokens, the audit trail (with CSV export)."""
from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, abort, flash, redirect, render_template, request, stream_with_context, url_for
from marshmallow import fields, validate

from pharmacy.core import audit_queries, services
from pharmacy.core.auth import current_actor, staff_required
from pharmacy.core.context import today
from pharmacy.core.errors import ValidationFailed
from pharmacy.core.forms import form_values, load
from pharmacy.core.roles import MATRIX, Permission, Role
from pharmacy.core.schemas import MAX_ID, BaseSchema, BoundedDate, TrimmedString
from pharmacy.extensions import limiter

bp = Blueprint("admin", __name__, url_prefix="/admin")


class NewUserSchema(BaseSchema):
    email = fields.Email(required=True, validate=validate.Length(max=254))
    full_name = TrimmedString(required=True, validate=validate.Length(min=1, max=120))
    role = fields.Enum(Role, by_value=True, required=True)
    password = fields.String(required=True, validate=validate.Length(min=1, max=256))


class PasswordSchema(BaseSchema):
    password = fields.String(required=True, validate=validate.Length(min=1, max=256))


class TokenSchema(BaseSchema):
    name = TrimmedString(required=True, validate=validate.Length(min=1, max=80))
    current_password = fields.String(required=True, validate=validate.Length(min=1, max=256))


class AuditFilterSchema(BaseSchema):
    patient_id = fields.Integer(load_default=None, validate=validate.Range(min=1, max=MAX_ID))
    user_id = fields.Integer(load_default=None, validate=validate.Range(min=1, max=MAX_ID))
    action = TrimmedString(load_default=None, validate=validate.Length(max=64))
    outcome = fields.String(load_default=None, validate=validate.OneOf(["ok", "denied", "failed"]))
    since = BoundedDate(load_default=None)
    until = BoundedDate(load_default=None)
    page = fields.Integer(load_default=1, validate=validate.Range(min=1, max=100000))


@bp.get("/users")
@staff_required
def users() -> Any:
    return render_template("core/users.html", users=services.staff_accounts(current_actor()), roles=list(Role),
                           errors={}, form={},
                           matrix=MATRIX, permissions=list(Permission))


@bp.post("/users")
@staff_required
def create_user() -> Any:
    data, errors = load(NewUserSchema(), form_values(request.form))
    if data is not None:
        try:
            user = services.create_user(current_actor(), **data)
        except ValidationFailed as exc:
            errors = exc.fields
        else:
            flash(f"Account created for {user.full_name} ({user.role.value}).", "success")
            return redirect(url_for("admin.users"))

    form = {k: v for k, v in request.form.items() if k != "password"}
    return render_template("core/users.html", users=services.staff_accounts(current_actor()), roles=list(Role),
                           errors=errors,
                           form=form, matrix=MATRIX, permissions=list(Permission)), 422


@bp.post("/users/<int:user_id>/active")
@staff_required
def set_active(user_id: int) -> Any:
    active = request.form.get("active") == "1"
    user = services.set_active(current_actor(), user_id, active)
    flash(f"{user.full_name} is now {'active' if active else 'deactivated (signed out everywhere)'}.", "success")
    return redirect(url_for("admin.users"))


@bp.post("/users/<int:user_id>/password")
@staff_required
def reset_password(user_id: int) -> Any:
    data, errors = load(PasswordSchema(), form_values(request.form))
    if data is None:
        raise ValidationFailed("The password was not changed.", fields=errors)
    user = services.set_password(current_actor(), user_id, data["password"])
    flash(f"Password changed for {user.full_name}; their sessions have ended.", "success")
    return redirect(url_for("admin.users"))


@bp.get("/tokens")
@staff_required
def tokens() -> Any:
    actor = current_actor()
    return render_template("core/tokens.html", tokens=services.tokens_for(actor.user_id or 0), new_token=None,
                           errors={})


@bp.post("/tokens")
@staff_required
@limiter.limit("10 per minute; 50 per hour")
def issue_token() -> Any:
    """A new token for the signed-in person, with their current password (core/services.issue_own_token)."""
    actor = current_actor()
    data, errors = load(TokenSchema(), form_values(request.form))
    if data is not None:
        try:
            _, raw = services.issue_own_token(actor, data["name"], data["current_password"])
        except ValidationFailed as exc:
            errors = exc.fields
    if data is None or errors:  # what was typed stays (the name; never the password)
        return render_template("core/tokens.html", tokens=services.tokens_for(actor.user_id or 0), new_token=None,
                               errors=errors, typed_name=request.form.get("name", "")[:80]), 422
    flash("Token created. Copy it now: it will not be shown again.", "warning")
    return render_template("core/tokens.html", tokens=services.tokens_for(actor.user_id or 0), new_token=raw,
                           errors={})


@bp.post("/tokens/<int:token_id>/revoke")
@staff_required
def revoke_token(token_id: int) -> Any:
    services.revoke_token(current_actor(), token_id)
    flash("Token revoked.", "success")
    return redirect(url_for("admin.tokens"))


def _filter() -> tuple[audit_queries.AuditFilter, int, dict[str, list[str]]]:
    data, errors = load(AuditFilterSchema(), form_values(request.args))
    if data is None:
        return audit_queries.AuditFilter(), 1, errors
    page = data.pop("page")
    return audit_queries.AuditFilter(**data), page, {}


@bp.get("/audit")
@staff_required
def audit() -> Any:
    f, page, errors = _filter()
    rows, has_next = audit_queries.search(current_actor(), f, page=page)
    staff_names = {u.id: u.full_name for u in services.list_users()}
    return render_template("core/audit.html", rows=rows, has_next=has_next, page=page, f=f, errors=errors,
                           staff_names=staff_names, action_groups=audit_queries.ACTION_GROUPS,
                           args={k: v for k, v in request.args.items() if k != "page"}), (422 if errors else 200)


@bp.get("/audit.csv")
@staff_required
def audit_csv() -> Any:
    f, _page, errors = _filter()
    if errors:
        abort(422)
    stream = audit_queries.export_csv(current_actor(), f)
    filename = f"audit-{today().isoformat()}.csv"
    return Response(stream_with_context(stream), mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{filename}"'})
