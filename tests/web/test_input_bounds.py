"""Every value that reaches the database is bounded in its schema, so out-of-range input is a 422 naming the field.

The schemas are found, not listed: the API's from the URL map (flask-smorest's `@blp.arguments`), the forms' from
the `load(Schema(), …)` calls of every views module. Each field must say its limits: text a maximum length no
longer than its column, whole numbers a range inside a 32-bit integer, decimals a maximum, dates sane years, lists
a maximum length. A new schema or field without limits fails here.
"""
from __future__ import annotations

import importlib
import inspect
import re
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient
from marshmallow import Schema, class_registry, fields, validate

from pharmacy.billing.models import Payment
from pharmacy.compounding.models import IngredientLot
from pharmacy.core import services
from pharmacy.core.models import ApiToken, User
from pharmacy.core.schemas import BoundedDate, DecimalString
from pharmacy.extensions import db
from pharmacy.patients.models import Patient, SideEffectEntry
from pharmacy.prescriptions.models import Prescriber, Prescription
from pharmacy.refills.models import RefillRequest
from tests import factories
from tests.conftest import login

MAX_INT32 = 2**31 - 1
# The model a schema's fields are stored in, to compare text lengths with column lengths (same field names).
STORED_IN = {
    "PatientInSchema": Patient, "PatientPatchSchema": Patient, "PrescriberInSchema": Prescriber,
    "PrescriptionInSchema": Prescription, "PrescriptionCreateSchema": Prescription,
    "PrescriptionReplaceSchema": Prescription, "IngredientLotInSchema": IngredientLot,
    "SideEffectInSchema": SideEffectEntry, "NewUserSchema": User, "TokenSchema": ApiToken,
    "BillingPaymentIn": Payment, "PaymentForm": Payment, "RefillRequestInSchema": RefillRequest,
    "StaffRequestFormSchema": RefillRequest,
}
# Checked by a validator method instead of a field validator (an NPI: ten digits and its check digit).
VALIDATED_BY_METHOD = {("PrescriberInSchema", "npi")}


def input_schemas(app: Flask) -> dict[str, Schema]:
    found: dict[str, Schema] = {}
    for view in app.view_functions.values():
        for param in (getattr(view, "_apidoc", {}).get("arguments", {}) or {}).get("parameters", []):
            schema = param["schema"]
            schema = schema() if isinstance(schema, type) else schema
            found[type(schema).__name__] = schema
    for module_name in {view.__module__ for view in app.view_functions.values()}:
        source = inspect.getsource(importlib.import_module(module_name))
        for name in re.findall(r"\bload\((\w+)\(", source):
            known = class_registry.get_class(name, all=True)  # every Schema class marshmallow knows by that name
            for cls in known if isinstance(known, list) else [known]:
                if cls.__module__.startswith("pharmacy."):
                    found[name] = cls()
    return found


def _validators(field: fields.Field, kind: type) -> list[Any]:
    return [v for v in field.validators if isinstance(v, kind)]


def problems(schema_name: str, field_name: str, field: fields.Field, model: Any = None) -> list[str]:
    where = f"{schema_name}.{field_name}"
    if (schema_name, field_name) in VALIDATED_BY_METHOD or field.dump_only:
        return []
    if isinstance(field, fields.Nested):
        nested = field.schema
        return [p for name, f in nested.load_fields.items() for p in problems(type(nested).__name__, name, f)]
    if isinstance(field, fields.List):
        bounded = any(v.max is not None for v in _validators(field, validate.Length))
        inner = problems(schema_name, f"{field_name}[]", field.inner)
        return ([] if bounded else [f"{where}: list without a maximum length"]) + inner
    if isinstance(field, fields.String):
        if _validators(field, validate.OneOf) or _validators(field, validate.Regexp):
            return []
        lengths = [v.max for v in _validators(field, validate.Length) if v.max is not None]
        if not lengths:
            return [f"{where}: text without a maximum length"]
        column = getattr(model.__table__.c, field_name, None) if model is not None else None
        limit = getattr(getattr(column, "type", None), "length", None)
        if limit is not None and min(lengths) > limit:
            return [f"{where}: up to {min(lengths)} characters, but the column holds {limit}"]
        return []
    if isinstance(field, fields.Integer):
        ranges = _validators(field, validate.Range)
        if not any(r.min is not None and r.max is not None and r.min >= -MAX_INT32 and r.max <= MAX_INT32 for r in ranges):
            return [f"{where}: whole number without a range inside a 32-bit integer"]
        return []
    if isinstance(field, DecimalString):
        return [] if field.max_value is not None and field.min_value is not None else [f"{where}: decimal without bounds"]
    if isinstance(field, fields.Date):
        return [] if isinstance(field, BoundedDate) else [f"{where}: date without sane years (use BoundedDate)"]
    if isinstance(field, fields.Enum | fields.Boolean | fields.Function) or type(field).__name__ == "Money":
        return []
    return [f"{where}: {type(field).__name__} is not known to be bounded"]


def test_every_input_schema_bounds_every_field(app: Flask) -> None:
    schemas = input_schemas(app)
    assert {"PatientInSchema", "PatientPatchSchema", "RefillRequestInSchema", "BirthDateFormSchema",
            "StaffRequestFormSchema", "PaymentForm", "AuditFilterSchema", "SideEffectInSchema"} <= set(schemas)
    found = [p for name, schema in sorted(schemas.items()) for field_name, field in schema.load_fields.items()
             for p in problems(name, field_name, field, STORED_IN.get(name))]
    assert found == []


# ---- what the bounds mean at the door: a 422 naming the field, never a 500, nothing saved --------------------

PATIENT = {"first_name": "Ada", "last_name": "Lovelace", "date_of_birth": "1960-01-02"}


@pytest.fixture
def pharmacist(client: FlaskClient, staff: dict, app: Flask) -> dict[str, Any]:
    login(client, staff["pharmacist"])
    with app.test_request_context("/"):
        _, raw = services.issue_token(factories.actor(staff["pharmacist"]), staff["pharmacist"].id, "bounds")
        db.session.commit()
    return {"Authorization": f"Bearer {raw}"}


def _patients(app: Flask) -> int:
    with app.app_context():
        return db.session.execute(sa.select(sa.func.count()).select_from(Patient)).scalar_one()


@pytest.mark.parametrize(("field", "value", "message"), [
    ("last_name", "Smith\u202eftn", "text-direction"),  # reads "Smithntf" on screen
    ("first_name", "\u2067Ada\u2069", "text-direction"),
    ("first_name", "A\u0007da", "not allowed"),
    ("date_of_birth", "2026-11-24", "cannot be in the future"),  # tomorrow, by the pharmacy's clock
    ("date_of_birth", "1899-12-31", "after 1900"),
    ("date_of_birth", "2999-01-01", "before 2200"),
    ("shipping_days", "\u0663", "digits 0–9"),  # Arabic-Indic three
    ("medications", "Copaxone\u202e", "text-direction"),
    ("last_name", "x" * 81, " 80"),
])
def test_bad_patient_input_is_a_field_error_on_the_form_and_the_api(
        app: Flask, client: FlaskClient, pharmacist: dict, field: str, value: str, message: str) -> None:
    form = client.post("/patients/new", data={**PATIENT, field: value})
    assert form.status_code == 422 and message in form.get_data(as_text=True)
    api = client.post("/api/v1/patients", json={**PATIENT, field: [value] if field == "medications" else value},
                      headers=pharmacist)
    assert api.status_code == 422, api.get_json()
    assert field in api.get_json()["errors"]["json"] and message in str(api.get_json()["errors"]["json"][field])
    assert _patients(app) == 0


@pytest.mark.parametrize("dose", ["\u0664.\u0665", "4\u066b5", "\u0664", "\uff14.5"])
def test_a_dose_in_other_digits_is_refused_not_read_as_a_number(app: Flask, client: FlaskClient, staff: dict,
                                                                pharmacist: dict, dose: str) -> None:
    with app.test_request_context("/"):
        w = factories.world(staff)
        ids = {"patient_id": w["patient"].id, "prescriber_id": w["prescriber"].id, "formula_id": w["formula"].id}
        db.session.commit()
    body = {**ids, "dose_mg": dose, "days_supply": 30, "written_date": "2026-11-20"}
    response = client.post("/api/v1/prescriptions", json=body, headers=pharmacist)
    assert response.status_code == 422, response.get_json()
    assert "digits 0–9" in str(response.get_json()["errors"]["json"]["dose_mg"])
    assert Decimal("4.5") == Decimal("\u0664.\u0665")  # what the old field did with it


@pytest.mark.parametrize("raw", [b"%ED%A0%80", b"\xed\xa0\x80", b"%ED%B0%80abc", b"%00"])
def test_undecodable_or_surrogate_bytes_in_forms_never_reach_the_database(
        app: Flask, client: FlaskClient, staff: dict, pharmacist: dict, raw: bytes) -> None:
    """Werkzeug leaves bytes that are not UTF-8 as %-escapes (no lone surrogate can come out of a form); a NUL is
    refused. Patient create and edit and the staff refill note: each a 4xx or a save of the literal text."""
    with app.test_request_context("/"):
        w = factories.world(staff)
        ids = {"patient": w["patient"].id, "rx": w["rx"].id}
        db.session.commit()
    body = b"first_name=Ada&last_name=L" + raw + b"&date_of_birth=1960-01-02"
    for path in ("/patients/new", f"/patients/{ids['patient']}/edit"):
        response = client.post(path, data=body, content_type="application/x-www-form-urlencoded")
        assert response.status_code in (302, 422), (path, response.status_code)
    note = client.post(f"/prescriptions/{ids['rx']}/refill-requests", data=b"delivery=pickup&note=call" + raw,
                       content_type="application/x-www-form-urlencoded")
    assert note.status_code in (303, 409, 422), note.status_code  # saved as typed, refused, or a NUL refused
    with app.app_context():
        stored = db.session.execute(sa.select(Patient.last_name)).scalars().all() + \
            db.session.execute(sa.select(RefillRequest.note)).scalars().all()
    assert not [t for t in stored if t and any(0xD800 <= ord(c) <= 0xDFFF or c == "\x00" for c in t)]
    patch = client.patch(f"/api/v1/patients/{ids['patient']}", headers={**pharmacist, "Content-Type": "application/json"},
                         data=b'{"last_name": "L\\ud800"}')
    assert patch.status_code == 422
