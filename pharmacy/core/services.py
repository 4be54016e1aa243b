"""Staff accounts and sign-in: the use cases behind the login page, `flask users` and the users admin."""
from __future__ import annotations

import secrets

import sqlalchemy as sa

from pharmacy.core import audit, sessions
from pharmacy.core.actor import ANONYMOUS, Actor, staff
from pharmacy.core.auth import TOKEN_SCOPES, token_hash
from pharmacy.core.context import now
from pharmacy.core.errors import Forbidden, NotFound, ValidationFailed
from pharmacy.core.models import ApiToken, User
from pharmacy.core.passwords import hash_password, password_problem, verify_password
from pharmacy.core.roles import Permission, Role
from pharmacy.extensions import db


def normalise_email(email: str) -> str:
    return email.strip().lower()


def create_user(actor: Actor, *, email: str, full_name: str, role: Role | str, password: str) -> User:
    audit.require(actor, Permission.MANAGE_USERS, what="create staff accounts")
    email = normalise_email(email)
    errors: dict[str, str] = {}
    if "@" not in email or len(email) > 254:
        errors["email"] = "Enter a valid email address."
    if not full_name.strip():
        errors["full_name"] = "Enter the person's name."
    try:
        role = Role(role)
    except ValueError:
        errors["role"] = f"Role must be one of: {', '.join(r.value for r in Role)}."
    problem = password_problem(password)
    if problem:
        errors["password"] = problem
    if not errors and db.session.execute(sa.select(User.id).where(User.email == email)).first():
        errors["email"] = "An account with this email already exists."
    if errors:
        raise ValidationFailed("The account was not created.", fields=errors)
    user = User(
        email=email, full_name=full_name.strip(), role=Role(role), password_hash=hash_password(password),
        active=True, created_at=now(),
    )
    db.session.add(user)
    db.session.flush()
    audit.record(actor, "user.create", entity=("user", user.id), details={"role": user.role.value})
    return user


def authenticate(email: str, password: str) -> User | None:
    """The user when the password matches an active account; every attempt is audited (never the password)."""
    email = normalise_email(email)
    user = db.session.execute(sa.select(User).where(User.email == email)).scalar_one_or_none()
    ok = verify_password(user.password_hash if user else None, password) and user is not None and user.active
    if ok and user is not None:
        user.last_login_at = now()
        audit.record(staff(user.id, user.role), "login.success", entity=("user", user.id))
        return user
    audit.record(
        ANONYMOUS, "login.failure", outcome="failed",
        entity=("user", user.id) if user else None, survive_rollback=True,
    )
    return None


def set_active(actor: Actor, user_id: int, active: bool) -> User:
    audit.require(actor, Permission.MANAGE_USERS, what="change staff accounts")
    user = db.session.get(User, user_id)
    if user is None:
        raise NotFound("No such staff account.")
    if user.id == actor.user_id and not active:
        raise ValidationFailed("You cannot deactivate your own account.", fields={"active": "Ask another admin."})
    user.active = active
    user.session_version += 1  # signs the user out everywhere
    if not active:
        sessions.end_all_for(user.id, "deactivated")
    audit.record(actor, "user.activate" if active else "user.deactivate", entity=("user", user.id))
    return user


def set_password(actor: Actor, user_id: int, password: str) -> User:
    """An admin resets another person's password (a forgotten one, a leaver's).

    Not one's own: a browser left signed in must not be enough to take the account over, so a person changes their
    own password on their account page, with the current one (`change_own_password`)."""
    audit.require(actor, Permission.MANAGE_USERS, what="reset another person's password")
    if actor.user_id == user_id:
        raise ValidationFailed("The password was not changed.", fields={
            "password": "Change your own password on “Your account”, with your current password."})
    user = db.session.get(User, user_id)
    if user is None:
        raise NotFound("No such staff account.")
    _store_password(actor, user, password, field="password")
    return user


def change_own_password(actor: Actor, current_password: str, new_password: str, repeat_password: str) -> User:
    """A person changes their own password, proving the current one; every session of theirs ends (the caller
    opens a new one for the browser that made the change). Every wrong field is named at once; a wrong current
    password is audited as a failure."""
    user = db.session.get(User, actor.user_id) if actor.is_staff and actor.user_id else None
    if user is None or not user.active:
        raise Forbidden("Only a signed-in staff member can change their password.")
    errors: dict[str, str] = {}  # field name -> message (ruff's S105 reads the names as passwords)
    current_ok = verify_password(user.password_hash, current_password)
    if not current_ok:
        errors["current_password"] = "That is not your current password."  # noqa: S105
    if current_ok and new_password == current_password:
        errors["new_password"] = "Choose a new password, not the one you have now."  # noqa: S105
    elif problem := password_problem(new_password):
        errors["new_password"] = problem
    if repeat_password != new_password:
        errors["repeat_password"] = "The two new passwords are not the same."  # noqa: S105
    if not current_ok:
        audit.record(actor, "user.password", outcome="failed", entity=("user", user.id), survive_rollback=True)
    if errors:
        raise ValidationFailed("The password was not changed.", fields=errors)
    _store_password(actor, user, new_password, field="new_password")
    return user


def _store_password(actor: Actor, user: User, password: str, *, field: str) -> None:
    problem = password_problem(password)
    if problem:
        raise ValidationFailed("The password was not changed.", fields={field: problem})
    user.password_hash = hash_password(password)
    user.session_version += 1
    sessions.end_all_for(user.id, "password")
    audit.record(actor, "user.password", entity=("user", user.id))


def list_users() -> list[User]:
    return list(db.session.execute(sa.select(User).order_by(User.full_name)).scalars())


def staff_accounts(actor: Actor) -> list[User]:
    """The staff accounts page: only for those who manage accounts."""
    audit.require(actor, Permission.MANAGE_USERS, what="manage staff accounts")
    return list_users()


def issue_token(actor: Actor, user_id: int, name: str, *, scope: str = "api") -> tuple[ApiToken, str]:
    """Create an API token; the raw value is returned once and only its hash is kept.

    `scope` (core/auth.TOKEN_SCOPES) limits what it may call. An "ncpdp" token speaks for the e-prescribing
    intermediary, whose messages stop prescriptions (CancelRx): it is issued only to a pharmacist's account (a
    service account for the intermediary), so the services it reaches check the same permissions as for a person."""
    if actor.user_id != user_id:
        audit.require(actor, Permission.MANAGE_USERS, what="issue tokens for others")
    if not actor.is_staff:
        audit.require(actor, Permission.MANAGE_USERS, what="issue tokens")
    user = db.session.get(User, user_id)
    if user is None:
        raise NotFound("No such staff account.")
    if not name.strip() or len(name) > 80:
        raise ValidationFailed("The token was not created.", fields={"name": "Name the integration (1–80 characters)."})
    if scope not in TOKEN_SCOPES:
        raise ValidationFailed("The token was not created.",
                               fields={"scope": f"Scope must be one of: {', '.join(TOKEN_SCOPES)}."})
    if scope == "ncpdp" and user.role != Role.PHARMACIST:
        raise ValidationFailed("The token was not created.", fields={
            "scope": "An NCPDP token acts on prescribers' cancellations: issue it to a pharmacist's service account."})
    raw = "ldn_" + secrets.token_urlsafe(32)
    token = ApiToken(user_id=user.id, name=name.strip(), prefix=raw[:10], token_hash=token_hash(raw), created_at=now(),
                     scope=scope)
    db.session.add(token)
    db.session.flush()
    audit.record(actor, "token.issue", entity=("api_token", token.id), details={"scope": scope})
    return token, raw


def issue_own_token(actor: Actor, name: str, current_password: str) -> tuple[ApiToken, str]:
    """A person's own API token, from the tokens page, proving the current password first: a token reads the whole
    API with the person's role and outlives the session, so a browser left signed in (or a stolen session cookie)
    must not be enough to mint one — the rule the password change follows. A wrong password is audited as a failed
    issue; every wrong field is named at once."""
    user = db.session.get(User, actor.user_id) if actor.is_staff and actor.user_id else None
    if user is None or not user.active:
        raise Forbidden("Only a signed-in staff member can create their own token.")
    errors: dict[str, str] = {}
    if not verify_password(user.password_hash, current_password):
        errors["current_password"] = "That is not your current password."  # noqa: S105
        audit.record(actor, "token.issue", outcome="failed", entity=("user", user.id), survive_rollback=True)
    if not name.strip() or len(name) > 80:
        errors["name"] = "Name the integration (1–80 characters)."
    if errors:
        raise ValidationFailed("The token was not created.", fields=errors)
    return issue_token(actor, user.id, name)


def revoke_token(actor: Actor, token_id: int) -> ApiToken:
    token = db.session.get(ApiToken, token_id)
    if token is None:
        raise NotFound("No such token.")
    if token.user_id != actor.user_id:
        audit.require(actor, Permission.MANAGE_USERS, what="revoke another person's token")
    if token.revoked_at is None:
        token.revoked_at = now()
        audit.record(actor, "token.revoke", entity=("api_token", token.id))
    return token


def tokens_for(user_id: int) -> list[ApiToken]:
    return list(
        db.session.execute(
            sa.select(ApiToken).where(ApiToken.user_id == user_id).order_by(ApiToken.created_at.desc())
        ).scalars()
    )
