"""One mapping from domain errors (and HTTP errors) to a clear HTML page or a stable JSON error."""
from __future__ import annotations

import logging
import traceback

from flask import Flask, Response, g, jsonify, render_template, request
from sqlalchemy.exc import DataError, OperationalError
from werkzeug.exceptions import HTTPException

from pharmacy.core.errors import DomainError

log = logging.getLogger("pharmacy.errors")


def wants_json() -> bool:
    return request.path.startswith("/api/") or (
        request.accept_mimetypes.best == "application/json" and not request.accept_mimetypes.accept_html
    )


def json_error(status: int, code: str, message: str, errors: dict | None = None) -> Response:
    body = {"code": code, "status": status, "message": message}
    if errors:
        body["errors"] = errors
    response = jsonify(body)
    response.status_code = status
    return response


def html_error(status: int, title: str, message: str) -> Response:
    response = Response(render_template("core/error.html", status=status, title=title, message=message))
    response.status_code = status
    return response


def is_busy(exc: OperationalError) -> bool:
    """SQLite's "database is locked" / "busy": the one writer waited past the busy timeout (not a broken query)."""
    text = str(exc.orig).lower()
    return "locked" in text or "busy" in text


def busy_response() -> Response:
    """SQLite's one writer was busy for longer than the busy timeout: 503, try again in a moment."""
    message = "The pharmacy system is busy for a moment; nothing was saved. Please try again."
    response = json_error(503, "busy", message) if wants_json() else html_error(503, "Busy", message)
    response.headers["Retry-After"] = "2"
    return response


def conflict_response(message: str) -> Response:
    if wants_json():
        return json_error(409, "conflict", message)
    return html_error(409, "Not saved", message)


def refused_value(exc: DataError) -> str:
    """Log a value the database refused (its kind only: the value may be patient data) and say so for the caller;
    shared with the blueprints that answer in their own format (FHIR's OperationOutcome)."""
    log.warning("database refused a value: %s (request %s)", type(exc.orig).__name__, g.get("request_id", "-"))
    return "A value is out of the range this system accepts; nothing was saved."


TITLES = {
    400: "Bad request", 401: "Please sign in", 403: "Not allowed", 404: "Not found", 405: "Not allowed",
    409: "Cannot do that now", 413: "Too large", 422: "Please check the form", 429: "Too many attempts",
    500: "Something went wrong",
}


def register(app: Flask) -> None:
    @app.errorhandler(DomainError)
    def _domain(exc: DomainError) -> Response:
        if wants_json():
            response = json_error(exc.status, exc.code, exc.message, {"json": exc.fields} if exc.fields else None)
            if exc.status == 401 and request.path.startswith("/api/"):
                # RFC 9110 15.5.2: a 401 says how to authenticate (RFC 6750 for bearer tokens).
                sent = request.headers.get("Authorization", "").lower().startswith("bearer ")
                response.headers["WWW-Authenticate"] = (
                    'Bearer realm="api", error="invalid_token"' if sent else 'Bearer realm="api"')
            return response
        return html_error(exc.status, TITLES.get(exc.status, "Cannot do that"), exc.message)

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> Response:
        status = exc.code or 500
        if wants_json():
            data = getattr(exc, "data", None) or {}
            messages = data.get("messages") if isinstance(data, dict) else None
            code = "validation_failed" if status == 422 else (exc.name or "error").lower().replace(" ", "_")
            response = json_error(status, code, exc.description or exc.name, messages)
        else:
            response = html_error(status, TITLES.get(status, exc.name or "Error"), exc.description or "")
        # The exception's own headers (a 405's Allow, a 401's WWW-Authenticate, a 429's Retry-After) go out too.
        for name, value in exc.get_headers():
            if name.lower() != "content-type":
                response.headers[name] = value
        return response

    @app.errorhandler(OperationalError)
    def _busy(exc: OperationalError) -> Response:
        """SQLite allows one writer at a time: a write that waited too long is "try again", not a crash."""
        if not is_busy(exc):
            return _unexpected(exc)
        log.warning("database busy (request %s)", g.get("request_id", "-"))
        return busy_response()

    @app.errorhandler(DataError)
    def _out_of_range(exc: DataError) -> Response:
        """A value the database cannot hold (a number beyond its column, text it cannot encode) is the caller's
        error: schemas bound every value, so this is the backstop that keeps it a 400, never a 500."""
        message = refused_value(exc)
        return json_error(400, "out_of_range", message) if wants_json() else html_error(400, TITLES[400], message)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        # Only the type and where it happened: exception text can carry patient data.
        frames = traceback.extract_tb(exc.__traceback__)
        where = " <- ".join(f"{f.filename.rsplit('/', 2)[-1]}:{f.lineno}" for f in reversed(frames[-6:]))
        log.error("unhandled %s at %s (request %s)", type(exc).__name__, where, g.get("request_id", "-"))
        message = "An unexpected error occurred; nothing was saved. The error has been logged."
        if wants_json():
            return json_error(500, "internal_error", message)
        return html_error(500, TITLES[500], message)
