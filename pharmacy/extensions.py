"""Extension objects, created unbound: models and services import these, never the app."""
from __future__ import annotations

from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_login import LoginManager
from flask_migrate import Migrate
from flask_smorest import Api
from flask_sqlalchemy import SQLAlchemy
from flask_wtf.csrf import CSRFProtect
from marshmallow import Schema, fields

from pharmacy.core.db import Base

db = SQLAlchemy(model_class=Base)
migrate = Migrate()
login_manager = LoginManager()
csrf = CSRFProtect()
limiter = Limiter(key_func=get_remote_address, default_limits=[], headers_enabled=True)


class ErrorSchema(Schema):
    """The one JSON error shape (core/error_handlers.py): a stable code, the HTTP status, a message."""

    code = fields.String(metadata={"description": "Stable error code, e.g. validation_failed, invalid_transition"})
    status = fields.Integer(metadata={"description": "HTTP status"})
    message = fields.String(metadata={"description": "What went wrong, for a person"})
    errors = fields.Dict(metadata={"description": "Field-level messages, e.g. {\"json\": {\"dose_mg\": [\"…\"]}}"})


class PharmacyApi(Api):
    ERROR_SCHEMA = ErrorSchema


api = PharmacyApi()
