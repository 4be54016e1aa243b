"""Who is asking: staff sessions (Flask-Login), API bearer tokens, and the decorators that demand them."""
from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from datetime import timedelta
from functools import wraps
from typing import Any, TypeVar

import sqlalchemy as sa
from flask import Flask, Response, current_app, g, redirect, request, session, url_for
from flask_login import current_user, logout_user

from pharmacy.core import audit, query_params, sessions
from pharmacy.core.actor import ANONYMOUS, Actor, staff
from pharmacy.core.context import now, settings
from pharmacy.core.errors import NotAuthenticated, UnsupportedMediaType
from pharmacy.core.models import ApiToken, User
from pharmacy.extensions import db, login_manager

F = TypeVar("F", bound=Callable[..., Any])

#: What an API token may call. "api" is every token issued before scopes existed (the JSON API, and FHIR reads);
#: the others are refused everywhere but their own endpoints.
TOKEN_SCOPES = {
    "api": "the JSON API and the FHIR API",
    "fhir": "the FHIR API only",
    "ncpdp": "the NCPDP SCRIPT endpoint only (the e-prescribing intermediary)",
}


def token_hash(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def current_actor() -> Actor:
    actor = g.get("actor")
    if actor is not None:
        return actor
    if current_user and current_user.is_authenticated:
        return staff(current_user.id, current_user.role)
    return ANONYMOUS


def staff_required(view: F) -> F:
    """HTML pages: anonymous visitors go to the sign-in page (and the attempt is audited)."""

    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not (current_user and current_user.is_authenticated):
            audit.record(ANONYMOUS, "denied.anonymous", outcome="denied",
                         details={"endpoint": request.endpoint}, survive_rollback=True)
            return redirect(url_for("auth.login", next=request.full_path if request.method == "GET" else None))
        return view(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


# "Last used" on the API tokens page is to the minute: a client calling many times a minute does not also write to
# its token row every time.
LAST_USED_PRECISION = timedelta(minutes=1)


def _actor_from_bearer() -> Actor | None:
    return actor_from_bearer(("api",))


def actor_from_bearer(scopes: Iterable[str]) -> Actor | None:
    """The actor of a valid, unrevoked bearer token whose scope is one of `scopes`; None otherwise (a token of
    another scope is treated exactly like a wrong token, so it reveals nothing about itself)."""
    header = request.headers.get("Authorization", "")
    if not header.lower().startswith("bearer "):
        return None
    raw = header[7:].strip()
    if not raw:
        return None
    token = db.session.execute(
        sa.select(ApiToken).where(ApiToken.token_hash == token_hash(raw), ApiToken.revoked_at.is_(None))
    ).scalar_one_or_none()
    if token is None or not token.user.active or token.scope not in set(scopes):
        return None
    at = now()
    if token.last_used_at is None or at - token.last_used_at >= LAST_USED_PRECISION:
        token.last_used_at = at
    return Actor(kind="token", user_id=token.user_id, role=token.user.role, scope=token.scope)


def api_auth(optional: bool = False) -> Callable[[F], F]:
    """JSON endpoints: a bearer token (or, with optional=True, whatever the body proves, e.g. a refill link)."""

    def decorator(view: F) -> F:
        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            actor = _actor_from_bearer()
            if actor is None and not optional:
                audit.record(ANONYMOUS, "denied.api_token", outcome="denied",
                             details={"endpoint": request.endpoint}, survive_rollback=True)
                raise NotAuthenticated("A valid API token is required (Authorization: Bearer <token>).")
            g.actor = actor or ANONYMOUS
            query_params.refuse_unknown()
            if request.method in ("POST", "PUT", "PATCH") and request.content_length and not request.is_json:
                # A form-encoded body would be read as no body at all: "nothing to change", answered 200.
                raise UnsupportedMediaType("Send the body as JSON (Content-Type: application/json).")
            return view(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorator


@login_manager.user_loader
def _load_user(user_key: str) -> User | None:
    return sessions.load_user(user_key)


def _clear_remember_cookie(response: Response) -> None:
    """Flask-Login clears its remember-me cookie (never set by this app) whenever its session protection trips —
    any anonymous request after the first — and clears it with no flags at all: a bare `remember_token=; Path=/`
    in production beside the `__Host-` session cookie. Cleared here with the session cookie's flags."""
    config = current_app.config
    response.delete_cookie(config.get("REMEMBER_COOKIE_NAME", "remember_token"),
                           domain=config.get("REMEMBER_COOKIE_DOMAIN"), path=config.get("REMEMBER_COOKIE_PATH", "/"),
                           secure=bool(config.get("SESSION_COOKIE_SECURE")), httponly=True,
                           samesite=config.get("SESSION_COOKIE_SAMESITE") or "Lax")


def init_app(app: Flask) -> None:
    login_manager.init_app(app)
    login_manager._clear_cookie = _clear_remember_cookie  # type: ignore[method-assign]
    login_manager.login_view = "auth.login"
    login_manager.session_protection = "strong"

    @app.before_request
    def _expire_sessions() -> None:
        """Idle and absolute session limits, checked on the server (a cookie's own expiry is advisory)."""
        if request.path.startswith(("/static/", "/api/")) or "login_at" not in session:
            return
        cfg = settings()
        t = now().timestamp()
        idle = t - session.get("seen_at", t)
        age = t - session["login_at"]
        if idle > cfg.session_idle_minutes * 60 or age > cfg.session_max_hours * 3600:
            sessions.end_current("expired")
            logout_user()
            session.clear()
            session["expired"] = True
            return
        session["seen_at"] = t


def start_session(user: User) -> None:
    """A fresh cookie for a user who just signed in, tied to a new server-side session row."""
    session.clear()
    session.permanent = True
    t = now().timestamp()
    session["login_at"] = t
    session["seen_at"] = t
    sessions.open_session(user)


def end_session() -> None:
    """Sign out: the server-side session ends first, so a copy of the cookie is refused from now on."""
    sessions.end_current("logout")
    logout_user()
    session.clear()

