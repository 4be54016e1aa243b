"""FHIR reads and searches over patients, prescribers, prescriptions and fills, every one audited.

Each read of patient data is an audit event naming the patient (a search: one per patient on the page), like every
page of the dashboard. Searches page with `_count` and `_page` and run a count plus one page query whatever the data
size (the filters are indexed columns: patient, status, dates).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import joinedload

from pharmacy.compounding.models import Formula, Order
from pharmacy.core import audit
from pharmacy.core.actor import Actor
from pharmacy.core.context import settings
from pharmacy.core.errors import NotFound, ValidationFailed
from pharmacy.core.numbers import digits_only
from pharmacy.core.roles import Permission
from pharmacy.core.schemas import text_problem
from pharmacy.eprescribing.settings import erx_settings
from pharmacy.extensions import db
from pharmacy.fhir import rules
from pharmacy.patients.models import Patient
from pharmacy.prescriptions import rules as rx_rules
from pharmacy.prescriptions.models import Prescriber, Prescription

MAX_ID = 2**31 - 1
MAX_COUNT = 100
MAX_PAGE = 10_000
_REVERSE_RX = {}
for _ours, _theirs in rules.RX_STATUS.items():
    _REVERSE_RX.setdefault(_theirs, []).append(_ours)
_REVERSE_ORDER: dict[str, list[str]] = {}
for _ours, _theirs in rules.ORDER_STATUS.items():
    _REVERSE_ORDER.setdefault(_theirs, []).append(_ours)


@dataclass
class SearchResult:
    resources: list[dict[str, Any]]
    total: int
    page: int
    count: int


def require_submitter(actor: Actor) -> None:
    """A MedicationRequest joins the intake queue: only a client whose user may enter prescriptions sends one."""
    audit.require(actor, Permission.ENTER_PRESCRIPTION, what="send prescriptions to the intake queue")


def _id(value: Any) -> int:
    text = str(value)
    if not digits_only(text) or len(text) > 10 or not 1 <= int(text) <= MAX_ID:
        raise NotFound("No such resource.")
    return int(text)


def _paging(args: Mapping[str, str], default_count: int) -> tuple[int, int]:
    def number(name: str, default: int, hi: int) -> int:
        raw = args.get(name)
        if raw is None or raw == "":
            return default
        if not digits_only(raw) or len(raw) > 6:
            raise ValidationFailed(f"{name} must be a whole number.", fields={name: "Not a number."})
        return min(int(raw), hi)

    count = number("_count", default_count, MAX_COUNT)
    page = max(number("_page", 1, MAX_PAGE), 1)
    return max(count, 0), page


KNOWN = {name: {n for n, _t in params} | {"_count", "_page", "_format"} for name, params in rules.SEARCH_PARAMS.items()}


def _check_params(resource: str, args: Mapping[str, str]) -> None:
    """Every parameter known, every value text a database can hold: a NUL in `name` reached PostgreSQL, which
    refuses it (found by `make fuzz`); now it is a 422 naming the parameter, like any other bad value."""
    unknown = sorted(set(args) - KNOWN[resource])
    if unknown:
        raise ValidationFailed(f"Unsupported search parameter: {', '.join(unknown[:5])}.",
                               fields={u: "Not supported." for u in unknown[:5]})
    bad = {name: problem for name, value in args.items() if (problem := text_problem(value))}
    if bad:
        raise ValidationFailed(f"A search value has a character that is not allowed: {', '.join(sorted(bad))}.",
                               fields=bad)


def _day_range(f: rules.DateFilter, column: Any, *, instants: bool) -> Any:
    """A date filter on a date column, or (instants) on a UTC timestamp column by the pharmacy's local days."""
    def at(d: date) -> Any:
        if not instants:
            return d
        return datetime.combine(d, time(0), tzinfo=settings().timezone).astimezone(UTC)

    first, after_last = at(f.start), at(f.end + timedelta(days=1)) if instants else f.end
    if f.op == "eq":
        return sa.and_(column >= first, column < after_last) if instants else sa.and_(column >= first, column <= f.end)
    if f.op in ("gt",):
        return column >= after_last if instants else column > f.end
    if f.op == "ge":
        return column >= first
    if f.op == "lt":
        return column < first
    return column < after_last if instants else column <= f.end  # le


def _page(stmt: Any, order: tuple[Any, ...], count: int, page: int) -> tuple[list[Any], int]:
    total = int(db.session.execute(sa.select(sa.func.count()).select_from(stmt.order_by(None).subquery())).scalar_one())
    rows = list(db.session.execute(stmt.order_by(*order).offset((page - 1) * count).limit(count)).unique().scalars()) \
        if count else []
    return rows, total


def _audit_reads(actor: Actor, action: str, patient_ids: list[int], entity: str, ids: list[int]) -> None:
    for patient_id, row_id in zip(patient_ids, ids, strict=True):
        audit.record(actor, action, patient_id=patient_id, entity=(entity, row_id), details={"via": "fhir"})


# ---- row → resource ----------------------------------------------------------------------------------------------


def _patient_data(p: Patient) -> dict[str, Any]:
    return {k: getattr(p, k) for k in ("id", "first_name", "last_name", "date_of_birth", "phone", "email",
                                       "address_line1", "address_line2", "city", "state", "postal_code")}


def _prescriber_data(d: Prescriber) -> dict[str, Any]:
    return {k: getattr(d, k) for k in ("id", "first_name", "last_name", "credentials", "npi", "phone", "fax", "email")}


def _rx_data(rx: Prescription) -> dict[str, Any]:
    formula: Formula = rx.formula
    return {
        "id": rx.id, "rx_number": rx.rx_number, "status": rx.status.value, "status_reason": rx.status_reason,
        "product": rx_rules.product_name(formula.form, formula.strength_mg), "form": formula.form.value,
        "patient_id": rx.patient_id, "prescriber_id": rx.prescriber_id, "written_date": rx.written_date,
        "expiry_date": rx.expiry_date, "indication_code": rx.indication_code, "indication": rx.indication,
        "directions": rx.directions, "dosing_time": rx.dosing_time.value, "dose_mg": rx.dose_mg,
        "refills_authorized": rx.refills_authorized or 0, "quantity": rx.quantity, "days_supply": rx.days_supply,
        "replaces_id": rx.replaces_id,
    }


def _order_data(o: Order) -> dict[str, Any]:
    rx = o.prescription
    formula: Formula = rx.formula
    return {
        "id": o.id, "state": o.state.value, "lot_number": o.lot_number, "patient_id": o.patient_id,
        "prescription_id": o.prescription_id, "fill_number": o.fill_number,
        "authorized_fill": o.authorized_fill, "partial": o.days_supply < rx.days_supply, "quantity": o.quantity,
        "days_supply": o.days_supply, "compounded_at": o.compounded_at, "dispensed_at": o.dispensed_at,
        "product": rx_rules.product_name(formula.form, formula.strength_mg), "form": formula.form.value,
        "directions": rx.directions, "cap_note": o.cap_note,
        "returned": o.cancel_reason if o.returned_at else None,
    }


# ---- reads -------------------------------------------------------------------------------------------------------


def read(actor: Actor, resource: str, raw_id: str) -> dict[str, Any]:
    """One resource by id (a 404 for anything else), audited with its patient."""
    audit.require(actor, Permission.VIEW_CLINICAL, what="read patient data over FHIR")
    row_id = _id(raw_id)
    if resource == "Patient":
        p = db.session.get(Patient, row_id)
        if p is None:
            raise NotFound("No such Patient.")
        audit.record(actor, "fhir.read", patient_id=p.id, entity=("patient", p.id), details={"via": "fhir"})
        return rules.patient_resource(_patient_data(p))
    if resource == "Practitioner":
        d = db.session.get(Prescriber, row_id)
        if d is None:
            raise NotFound("No such Practitioner.")
        audit.record(actor, "fhir.read", entity=("prescriber", d.id), details={"via": "fhir"})
        return rules.practitioner_resource(_prescriber_data(d))
    if resource == "MedicationRequest":
        rx = db.session.execute(sa.select(Prescription).where(Prescription.id == row_id)
                                .options(joinedload(Prescription.formula))).scalar_one_or_none()
        if rx is None:
            raise NotFound("No such MedicationRequest.")
        audit.record(actor, "fhir.read", patient_id=rx.patient_id, entity=("prescription", rx.id), details={"via": "fhir"})
        return rules.medication_request_resource(_rx_data(rx))
    if resource == "MedicationDispense":
        o = db.session.execute(sa.select(Order).where(Order.id == row_id).options(
            joinedload(Order.prescription).joinedload(Prescription.formula))).scalar_one_or_none()
        if o is None:
            raise NotFound("No such MedicationDispense.")
        audit.record(actor, "fhir.read", patient_id=o.patient_id, entity=("order", o.id), details={"via": "fhir"})
        return rules.medication_dispense_resource(_order_data(o))
    raise NotFound(f"{resource} is not served here.")


def _status_filter(value: str, mapping: dict[str, list[str]], column: Any) -> Any:
    wanted = [ours for code in value.split(",") for ours in mapping.get(code.strip(), [])]
    if not wanted and value:
        known = ", ".join(sorted(mapping))
        raise ValidationFailed(f"status: use one of {known}.", fields={"status": "Unknown status."})
    return column.in_(wanted)


def search(actor: Actor, resource: str, args: Mapping[str, str]) -> SearchResult:
    """A search of one resource type by the parameters the CapabilityStatement lists; a page of it."""
    audit.require(actor, Permission.VIEW_CLINICAL, what="search patient data over FHIR")
    if resource not in rules.SEARCH_PARAMS:
        raise NotFound(f"{resource} is not served here.")
    _check_params(resource, args)
    count, page = _paging(args, _page_size())
    handler = {"Patient": _search_patients, "Practitioner": _search_prescribers,
               "MedicationRequest": _search_prescriptions, "MedicationDispense": _search_dispenses}[resource]
    return handler(actor, args, count, page)


def _all(args: Mapping[str, str], name: str) -> list[str]:
    """Every non-empty value of a parameter: a date may be given twice for a range (ge… and le…), each applied."""
    values = args.getlist(name) if hasattr(args, "getlist") else [args.get(name, "")]
    return [v for v in values if v]


def _page_size() -> int:

    return erx_settings().fhir_page_size


def _search_patients(actor: Actor, args: Mapping[str, str], count: int, page: int) -> SearchResult:
    stmt = sa.select(Patient)
    if args.get("_id"):
        stmt = stmt.where(Patient.id == rules.reference_id(args["_id"], "Patient", "_id"))
    if args.get("identifier"):
        system, value = rules.token_value(args["identifier"])
        if system not in (None, rules.PATIENT_SYSTEM) or not digits_only(value) or len(value) > 10:
            stmt = stmt.where(sa.false())
        else:
            stmt = stmt.where(Patient.id == int(value))
    for name in ("name", "family"):
        if args.get(name):
            prefix = args[name].strip().lower()
            stmt = stmt.where(Patient.name_key >= prefix, Patient.name_key < prefix + "\uffff")
    if args.get("given"):
        stmt = stmt.where(sa.func.lower(Patient.first_name).startswith(args["given"].strip().lower(), autoescape=True))
    for value in _all(args, "birthdate"):
        stmt = stmt.where(_day_range(rules.parse_date_param(value, "birthdate"), Patient.date_of_birth,
                                     instants=False))
    rows, total = _page(stmt, (Patient.name_key, Patient.id), count, page)
    _audit_reads(actor, "fhir.search", [p.id for p in rows], "patient", [p.id for p in rows])
    return SearchResult([rules.patient_resource(_patient_data(p)) for p in rows], total, page, count)


def _search_prescribers(actor: Actor, args: Mapping[str, str], count: int, page: int) -> SearchResult:
    stmt = sa.select(Prescriber)
    if args.get("_id"):
        stmt = stmt.where(Prescriber.id == rules.reference_id(args["_id"], "Practitioner", "_id"))
    if args.get("identifier"):
        system, value = rules.token_value(args["identifier"])
        stmt = stmt.where(Prescriber.npi == value[:10]) if system in (None, rules.NPI_SYSTEM) else stmt.where(sa.false())
    if args.get("name"):
        prefix = args["name"].strip().lower()
        stmt = stmt.where(sa.or_(sa.func.lower(Prescriber.last_name).startswith(prefix, autoescape=True),
                                 sa.func.lower(Prescriber.first_name).startswith(prefix, autoescape=True)))
    rows, total = _page(stmt, (Prescriber.last_name, Prescriber.id), count, page)
    audit.record(actor, "fhir.search", details={"via": "fhir", "type": "Practitioner", "results": len(rows)})
    return SearchResult([rules.practitioner_resource(_prescriber_data(d)) for d in rows], total, page, count)


def _patient_param(args: Mapping[str, str]) -> int | None:
    for name in ("patient", "subject"):
        if args.get(name):
            return rules.reference_id(args[name], "Patient", name)
    return None


def _search_prescriptions(actor: Actor, args: Mapping[str, str], count: int, page: int) -> SearchResult:
    stmt = sa.select(Prescription).options(joinedload(Prescription.formula))
    if args.get("_id"):
        stmt = stmt.where(Prescription.id == rules.reference_id(args["_id"], "MedicationRequest", "_id"))
    patient_id = _patient_param(args)
    if patient_id is not None:
        stmt = stmt.where(Prescription.patient_id == patient_id)
    if args.get("status"):
        stmt = stmt.where(_status_filter(args["status"], _REVERSE_RX, Prescription.status))
    if args.get("identifier"):
        _system, value = rules.token_value(args["identifier"])
        stmt = stmt.where(Prescription.rx_number == value[:20])
    for name in ("authoredon", "date"):
        for value in _all(args, name):
            stmt = stmt.where(_day_range(rules.parse_date_param(value, name), Prescription.written_date,
                                         instants=False))
    rows, total = _page(stmt, (Prescription.written_date.desc(), Prescription.id.desc()), count, page)
    _audit_reads(actor, "fhir.search", [r.patient_id for r in rows], "prescription", [r.id for r in rows])
    return SearchResult([rules.medication_request_resource(_rx_data(r)) for r in rows], total, page, count)


def _search_dispenses(actor: Actor, args: Mapping[str, str], count: int, page: int) -> SearchResult:
    stmt = sa.select(Order).options(joinedload(Order.prescription).joinedload(Prescription.formula))
    if args.get("_id"):
        stmt = stmt.where(Order.id == rules.reference_id(args["_id"], "MedicationDispense", "_id"))
    patient_id = _patient_param(args)
    if patient_id is not None:
        stmt = stmt.where(Order.patient_id == patient_id)
    if args.get("prescription"):
        stmt = stmt.where(Order.prescription_id == rules.reference_id(args["prescription"], "MedicationRequest",
                                                                      "prescription"))
    if args.get("status"):
        stmt = stmt.where(_status_filter(args["status"], _REVERSE_ORDER, Order.state))
    for name in ("whenhandedover", "date"):
        for value in _all(args, name):
            stmt = stmt.where(_day_range(rules.parse_date_param(value, name), Order.dispensed_at, instants=True))
    rows, total = _page(stmt, (Order.created_at.desc(), Order.id.desc()), count, page)
    _audit_reads(actor, "fhir.search", [o.patient_id for o in rows], "order", [o.id for o in rows])
    return SearchResult([rules.medication_dispense_resource(_order_data(o)) for o in rows], total, page, count)


def patient_written(patient_id: int) -> Patient:
    patient = db.session.get(Patient, patient_id)
    if patient is None:
        raise ValidationFailed("The subject is not a patient of this pharmacy.", fields={"subject": "Unknown Patient."})
    return patient


def prescriber_written(prescriber_id: int) -> Prescriber:
    doc = db.session.get(Prescriber, prescriber_id)
    if doc is None:
        raise ValidationFailed("The requester is not a prescriber on file.", fields={"requester": "Unknown Practitioner."})
    return doc
