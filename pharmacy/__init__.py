"""The LDN compounding pharmacy service: `create_app()` builds the web app (and the CLI's app)."""
from __future__ import annotations

import importlib
import importlib.util
import os
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

from flask import Flask

from pharmacy import models  # noqa: F401 - every feature's tables in the one metadata, before any use
from pharmacy.config import load_settings
from pharmacy.core import db_events, error_handlers, logging_setup, request_guard, security, uow
from pharmacy.core.clock import Clock, SystemClock
from pharmacy.core.routing import Id32Converter, LazyBuilderRule
from pharmacy.core.schemas import DecimalString
from pharmacy.extensions import api, csrf, db, limiter, migrate
from pharmacy.paths import ROOT
from pharmacy.workflows import listeners

FEATURES = (
    "core", "patients", "prescriptions", "compounding", "refills", "reminders", "billing", "dashboard", "seeding",
    "bench", "ops", "prescriber_links", "portal", "sms", "autorefill", "documents", "eprescribing", "fhir",
    "inventory", "production", "formulas", "supply",
)


def create_app(config: Mapping[str, Any] | None = None, *, clock: Clock | None = None) -> Flask:
    """Build the app from the environment, overridden by `config` (same names as the env vars).

    Raises ConfigError (one readable line) when a setting is wrong. Never runs migrations
    and never starts the scheduler: those are explicit commands.
    """
    app = Flask(
        __name__,
        instance_relative_config=True,
        instance_path=str(Path(os.environ.get("PHARMACY_INSTANCE_PATH", ROOT / "instance")).resolve()),
        template_folder=str(ROOT / "templates"),
        static_folder=str(ROOT / "static"),
    )
    overrides = dict(config or {})
    env = {**os.environ, **{k: str(v) for k, v in overrides.items() if isinstance(v, str | int) and k.isupper()}}
    settings = load_settings(env, Path(app.instance_path))


    logging_setup.configure(settings.log_format)

    secure = settings.production
    app.config.update(
        SECRET_KEY=settings.secret_key,
        SQLALCHEMY_DATABASE_URI=settings.database_url,
        SQLALCHEMY_ENGINE_OPTIONS=_engine_options(settings.database_url, settings.sqlite_busy_timeout_ms),
        SESSION_COOKIE_NAME="__Host-session" if secure else "session",
        SESSION_COOKIE_SECURE=secure,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        REMEMBER_COOKIE_DURATION=timedelta(seconds=0),
        PERMANENT_SESSION_LIFETIME=timedelta(minutes=settings.session_idle_minutes),
        SESSION_REFRESH_EACH_REQUEST=True,
        WTF_CSRF_TIME_LIMIT=None,  # the token lives as long as the session does
        RATELIMIT_STORAGE_URI=settings.ratelimit_storage_uri,
        RATELIMIT_HEADERS_ENABLED=True,
        API_TITLE="LDN Compounding Pharmacy API",
        API_VERSION="v1",
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/api/v1",
        OPENAPI_JSON_PATH="openapi.json",
        MAX_CONTENT_LENGTH=1024 * 1024,
        JSON_SORT_KEYS=False,
    )
    for key, value in overrides.items():
        # Non-string values and Flask/extension settings go to app.config as given (tests use this).
        flask_setting = key in app.config or key.startswith(("WTF_", "RATELIMIT_", "TESTING", "SERVER_NAME"))
        if flask_setting or not isinstance(value, str | int):
            app.config[key] = value
    app.testing = settings.env == "testing" or bool(overrides.get("TESTING"))
    app.extensions["pharmacy.settings"] = settings
    # The environment as the settings saw it (with `config` applied): features with settings of their own (e.g.
    # e-prescribing's intermediary URL) read and check them from here when they are registered.
    app.extensions["pharmacy.env"] = env
    app.extensions["pharmacy.clock"] = clock or SystemClock()

    app.url_map.converters["int"] = Id32Converter
    app.url_rule_class = LazyBuilderRule
    _init_extensions(app)
    _register_features(app)
    listeners.connect()
    return app


def _engine_options(url: str, busy_timeout_ms: int = 15000) -> dict[str, Any]:
    # hide_parameters: SQL errors must not echo patient data into logs.
    options: dict[str, Any] = {"hide_parameters": True, "pool_pre_ping": True}
    if url.startswith("sqlite"):
        options["connect_args"] = {"timeout": busy_timeout_ms / 1000}  # read again by db_events' busy_timeout
    return options


def _init_extensions(app: Flask) -> None:
    db.init_app(app)
    with app.app_context():
        settings = app.extensions["pharmacy.settings"]
        db_events.install(db.engine, busy_timeout_ms=settings.sqlite_busy_timeout_ms,
                          wal_autocheckpoint=settings.sqlite_wal_autocheckpoint)
    migrate.init_app(app, db, directory=str(ROOT / "migrations"), render_as_batch=True, compare_type=True)
    csrf.init_app(app)
    limiter.init_app(app)
    api.init_app(app, spec_kwargs={
        "info": {"description": "JSON API over the same services as the dashboard. Authenticate with "
                                "`Authorization: Bearer <token>` (API tokens page); the refill-request "
                                "endpoint also accepts a patient's signed link with their date of birth."},
        "security": [{"bearerAuth": []}],
    })

    api.spec.components.security_scheme("bearerAuth", {"type": "http", "scheme": "bearer"})
    api.register_field(DecimalString, "string", "decimal")
    security.init_app(app)
    request_guard.init_app(app)
    uow.init_app(app)
    error_handlers.register(app)


def _register_features(app: Flask) -> None:
    """Each feature may bring `views.bp` (HTML), `api.blp` (JSON, flask-smorest) and `cli.register(app)`."""

    for feature in FEATURES:
        if importlib.util.find_spec(f"pharmacy.{feature}") is None:
            continue
        for module_name, attr in (("views", "bp"), ("api", "blp"), ("cli", "register")):
            full = f"pharmacy.{feature}.{module_name}"
            if importlib.util.find_spec(full) is None:
                continue
            module = importlib.import_module(full)
            target = getattr(module, attr, None)
            if target is None:
                continue
            if module_name == "views":
                app.register_blueprint(target)
                if hasattr(module, "init_app"):
                    module.init_app(app)
            elif module_name == "api":
                csrf.exempt(target)  # the API authenticates with bearer tokens, never cookies
                api.register_blueprint(target)
            else:
                target(app)
