"""Extension objects, created unbound: models and services import these, never the app."""
from __future__ import annotations

from typing import Any

from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_login import LoginManager
from flask_migrate import Migrate
from flask_smorest import Api
from flask_smorest.pagination import PaginationMetadataSchema
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
    """flask-smorest's Api, writing the OpenAPI document when it is first read rather than at start-up.

    Registering a blueprint's routes is cheap; documenting them (every schema turned into JSON Schema) was two
    thirds of `create_app` — paid by every web worker, every `flask` command and every test's app, though only
    /api/v1/openapi.json and `flask openapi` read the document. The routes are registered at once; the
    documentation of each blueprint is written, in registration order, on the first read of `spec`.
    """

    ERROR_SCHEMA = ErrorSchema

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._pending_docs: list[tuple[Any, str, Any]] = []
        self._responses_pending = False
        self._documenting = False
        super().__init__(*args, **kwargs)

    @property
    def spec(self) -> Any:
        if self._pending_docs and not self._documenting:
            self._document_pending()
        return self._spec

    @spec.setter
    def spec(self, value: Any) -> None:
        self._spec = value

    def init_app(self, app: Any, *, spec_kwargs: dict[str, Any] | None = None) -> None:
        self._pending_docs = []  # a new app (tests build many): its own document
        super().init_app(app, spec_kwargs=spec_kwargs)

    def _register_responses(self) -> None:
        # The ~60 standard responses (each an error schema resolved) are written with the rest of the document.
        self._responses_pending = True

    def register_blueprint(self, blp: Any, *, parameters: Any = None, **options: Any) -> None:
        name = options.get("name", blp.name)
        self._app.extensions["flask-smorest"]["blp_name_to_api"][name] = self
        self._app.register_blueprint(blp, **options)
        self._pending_docs.append((blp, name, parameters))

    def _register_pagination_header(self) -> None:
        # X-Pagination's value is JSON text (`{"total": 53, "total_pages": 3, …}`). flask-smorest documents it with a
        # `schema` of type object, which OpenAPI reads as the "simple" style — `total,53,total_pages,3` — so a client
        # (and schemathesis, which caught it) parsed the real header wrongly. A header whose value is a media type
        # is documented with `content`.
        self.spec.components.header("PAGINATION", {
            "description": "Pagination metadata, as JSON: total, total_pages, first_page, last_page, page, "
                           "previous_page, next_page.",
            "content": {"application/json": {"schema": PaginationMetadataSchema}},
        }, lazy=True)

    def _document_pending(self) -> None:
        self._documenting = True
        try:
            if self._responses_pending:
                self._responses_pending = False
                super()._register_responses()
            while self._pending_docs:
                blp, name, parameters = self._pending_docs.pop(0)
                blp.register_views_in_doc(self, self._app, self._spec, name=name, parameters=parameters)
                self._spec.tag({"name": name, "description": blp.description})
        finally:
            self._documenting = False


api = PharmacyApi()
