"""/fhir: a small FHIR R4 server (JSON). Reads and searches for API-token clients, POST MedicationRequest into the
intake queue, GET /fhir/metadata for anyone. Errors are OperationOutcomes."""
from __future__ import annotations

import hashlib
import json
from typing import Any
from urllib.parse import urlencode

from flask import Blueprint, Flask, Response, request
from sqlalchemy.exc import DataError
from werkzeug.exceptions import HTTPException

from pharmacy.core import audit, error_handlers
from pharmacy.core.actor import ANONYMOUS, Actor
from pharmacy.core.auth import actor_from_bearer
from pharmacy.core.context import now, settings
from pharmacy.core.errors import DomainError, NotAuthenticated
from pharmacy.eprescribing.rules import WrittenPatient, WrittenPrescriber
from pharmacy.extensions import csrf
from pharmacy.fhir import rules, services
from pharmacy.workflows import eprescribing as workflow

bp = Blueprint("fhir", __name__, url_prefix="/fhir")

FHIR_JSON = "application/fhir+json"
RESOURCES = "any(Patient,Practitioner,MedicationRequest,MedicationDispense)"
ISSUE_CODES = {400: "structure", 401: "login", 403: "forbidden", 404: "not-found", 405: "not-supported",
               409: "conflict", 413: "too-costly", 415: "not-supported", 422: "invalid", 429: "throttled"}


def init_app(app: Flask) -> None:
    csrf.exempt(bp)  # bearer tokens, never cookies


def _json(data: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(data, separators=(",", ":")), status=status, mimetype=FHIR_JSON, headers=headers)


def _outcome(status: int, text: str, fields: dict[str, list[str]] | None = None) -> Response:
    severity = "information" if status < 400 else "error"
    body = rules.operation_outcome(severity, ISSUE_CODES.get(status, "processing"), text,
                                   [f"{k}: {'; '.join(v)}" for k, v in (fields or {}).items()] or None)
    response = _json(body, status)
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="fhir"'
    return response


@bp.errorhandler(DomainError)
def _domain_error(exc: DomainError) -> Response:
    return _outcome(exc.status, exc.message, exc.fields)


@bp.errorhandler(HTTPException)
def _http_error(exc: HTTPException) -> Response:
    return _outcome(exc.code or 500, exc.description or exc.name)


@bp.errorhandler(DataError)
def _data_error(exc: DataError) -> Response:
    """The backstop for a value the database cannot hold (core/error_handlers.py), answered as FHIR answers."""
    return _outcome(400, error_handlers.refused_value(exc))


def _actor() -> Actor:
    actor = actor_from_bearer(("api", "fhir"))
    if actor is None:
        audit.record(ANONYMOUS, "denied.api_token", outcome="denied", details={"endpoint": request.endpoint},
                     survive_rollback=True)
        raise NotAuthenticated("A valid API token is required (Authorization: Bearer <token>).")
    return actor


def _base() -> str:
    return request.host_url.rstrip("/") + "/fhir"


@bp.get("/metadata")
def metadata() -> Any:
    """The CapabilityStatement (public: it says what is served, never whose data)."""
    return _json(rules.capability_statement(base=_base(), software=f"{settings().pharmacy_name} FHIR API", now=now()))


@bp.get(f"/<{RESOURCES}:resource>/<raw_id>")
def read(resource: str, raw_id: str) -> Any:
    return _json(services.read(_actor(), resource, raw_id))


@bp.get(f"/<{RESOURCES}:resource>")
def search(resource: str) -> Any:
    actor = _actor()
    args = request.args  # a MultiDict: a date parameter may be repeated for a range (birthdate=ge…&birthdate=le…)
    found = services.search(actor, resource, args)
    links = {"self": _page_url(resource, args, found.page)}
    if found.count and found.page * found.count < found.total and found.page < services.MAX_PAGE:
        links["next"] = _page_url(resource, args, found.page + 1)
    if found.page > 1:
        links["previous"] = _page_url(resource, args, found.page - 1)
    return _json(rules.bundle(found.resources, base=_base(), total=found.total, links=links))


def _page_url(resource: str, args: Any, page: int) -> str:
    pairs = [(k, v) for k, v in args.items(multi=True) if k != "_page"]
    return f"{_base()}/{resource}?" + urlencode([*pairs, ("_page", page)])


@bp.post("/MedicationRequest")
def create_medication_request() -> Any:
    """A prescription from another system: into the intake queue (a pharmacist reviews it before it is one)."""
    actor = _actor()
    services.require_submitter(actor)
    if not request.is_json:
        return _outcome(415, "Send the MedicationRequest as application/fhir+json.")
    raw = request.get_data(cache=True)
    body = request.get_json(silent=True)
    posted = rules.read_medication_request(body)
    written = posted.written
    if posted.patient_id is not None:
        p = services.patient_written(posted.patient_id)
        written.patient = WrittenPatient(first_name=p.first_name, last_name=p.last_name, date_of_birth=p.date_of_birth,
                                         postal_code=p.postal_code or "", phone=p.phone or "")
    if posted.prescriber_id is not None:
        d = services.prescriber_written(posted.prescriber_id)
        written.prescriber = WrittenPrescriber(npi=d.npi, first_name=d.first_name, last_name=d.last_name,
                                               suffix=d.credentials or "")
    key = posted.key or "sha256:" + hashlib.sha256(raw).hexdigest()[:57]
    intake, new = workflow.receive_fhir(actor, raw, key=key, written=written, patient_id=posted.patient_id,
                                        prescriber_id=posted.prescriber_id)
    text = (f"Received into the pharmacy's intake queue (entry {intake.id}); a pharmacist will review it."
            if new else f"Already received (entry {intake.id}).")
    return _outcome(202 if new else 200, text)
