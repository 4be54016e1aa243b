"""FHIR R4 resources (pure): our records as Patient, Practitioner, MedicationRequest and MedicationDispense, a posted
MedicationRequest read back as a prescription as written, and the search parameters.

Every resource is validated with the `fhir.resources` models before it leaves (R4B, 4.3.0: the current release of
the R4 line in that library; these four resources are unchanged between R4 4.0.1 and R4B, so what is served is valid
R4 as well). Values are plain data here; the services hand in the rows' fields.
"""
from __future__ import annotations

import calendar
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.capabilitystatement import CapabilityStatement
from fhir.resources.R4B.medicationdispense import MedicationDispense
from fhir.resources.R4B.medicationrequest import MedicationRequest
from fhir.resources.R4B.operationoutcome import OperationOutcome
from fhir.resources.R4B.patient import Patient
from fhir.resources.R4B.practitioner import Practitioner
from pydantic import ValidationError

from pharmacy.core.errors import ValidationFailed
from pharmacy.core.numbers import digits_only
from pharmacy.eprescribing.rules import (
    WrittenMedication,
    WrittenPatient,
    WrittenPrescriber,
    WrittenPrescription,
    message_key,
)

FHIR_VERSION = "4.0.1"
NPI_SYSTEM = "http://hl7.org/fhir/sid/us-npi"
ICD10_SYSTEM = "http://hl7.org/fhir/sid/icd-10-cm"
UCUM = "http://unitsofmeasure.org"
RX_SYSTEM = "urn:ldn-pharmacy:rx-number"
PATIENT_SYSTEM = "urn:ldn-pharmacy:patient"
LOT_SYSTEM = "urn:ldn-pharmacy:lot"
MODELS = {"Patient": Patient, "Practitioner": Practitioner, "MedicationRequest": MedicationRequest,
          "MedicationDispense": MedicationDispense}
#: Our prescription status → MedicationRequest.status.
RX_STATUS = {"active": "active", "on_hold": "on-hold", "discontinued": "stopped", "replaced": "completed"}
#: Our order state → MedicationDispense.status.
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"


def dispense_type(authorized_fill: int, *, partial: bool) -> dict[str, Any]:
    """MedicationDispense.type from which authorized fill the dispensing draws (not how many came before it):
    the parts of a fill cut short by its beyond-use date are that fill's part fills (HL7 v3 FFP / RFP)."""
    first = authorized_fill == 0
    code = ("FFP" if partial else "FF") if first else ("RFP" if partial else "RF")
    text = ("first fill" if first else f"refill {authorized_fill}") + (" (part fill)" if partial else "")
    return {"coding": [{"system": ACT_CODE, "code": code}], "text": text}


ORDER_STATUS = {"requested": "preparation", "verified": "preparation", "compounding": "in-progress",
                "checked": "in-progress", "ready": "in-progress", "on_hold": "on-hold", "dispensed": "completed",
                "cancelled": "cancelled"}
#: Searches and their parameters (shown in the CapabilityStatement).
SEARCH_PARAMS = {
    "Patient": (("_id", "token"), ("identifier", "token"), ("name", "string"), ("family", "string"),
                ("given", "string"), ("birthdate", "date")),
    "Practitioner": (("_id", "token"), ("identifier", "token"), ("name", "string")),
    "MedicationRequest": (("_id", "token"), ("patient", "reference"), ("subject", "reference"), ("status", "token"),
                          ("authoredon", "date"), ("date", "date"), ("identifier", "token")),
    "MedicationDispense": (("_id", "token"), ("patient", "reference"), ("subject", "reference"), ("status", "token"),
                           ("whenhandedover", "date"), ("date", "date"), ("prescription", "reference")),
}


def validated(resource_type: str, data: dict[str, Any]) -> dict[str, Any]:
    """The resource after validation by fhir.resources, as JSON-ready data (a programming error if it fails)."""
    model = MODELS[resource_type].model_validate(data)
    return model.model_dump(mode="json", exclude_none=True)


def _telecom(phone: str | None, email: str | None, fax: str | None = None) -> list[dict[str, str]]:
    out = []
    if phone:
        out.append({"system": "phone", "value": phone, "use": "work"})
    if fax:
        out.append({"system": "fax", "value": fax, "use": "work"})
    if email:
        out.append({"system": "email", "value": email})
    return out


def patient_resource(p: Mapping[str, Any]) -> dict[str, Any]:
    address = {k: v for k, v in {
        "line": [x for x in (p.get("address_line1"), p.get("address_line2")) if x] or None, "city": p.get("city"),
        "state": p.get("state"), "postalCode": p.get("postal_code"), "country": "US"}.items() if v}
    data = {
        "resourceType": "Patient", "id": str(p["id"]), "active": True,
        "identifier": [{"system": PATIENT_SYSTEM, "value": str(p["id"])}],
        "name": [{"use": "official", "family": p["last_name"], "given": [p["first_name"]]}],
        "birthDate": p["date_of_birth"].isoformat(),
        "telecom": _telecom(p.get("phone"), p.get("email")) or None,
        "address": [address] if len(address) > 1 else None,
    }
    return validated("Patient", data)


def practitioner_resource(d: Mapping[str, Any]) -> dict[str, Any]:
    name = {"family": d["last_name"], "given": [d["first_name"]], "prefix": ["Dr."]}
    if d.get("credentials"):
        name["suffix"] = [d["credentials"]]
    data = {
        "resourceType": "Practitioner", "id": str(d["id"]), "active": True,
        "identifier": [{"system": NPI_SYSTEM, "value": d["npi"]}], "name": [name],
        "telecom": _telecom(d.get("phone"), d.get("email"), d.get("fax")) or None,
    }
    return validated("Practitioner", data)


def _quantity(value: Decimal, form: str) -> dict[str, Any]:
    if form == "capsule":
        return {"value": value, "unit": "capsule", "system": "http://terminology.hl7.org/CodeSystem/v3-orderableDrugForm",
                "code": "CAP"}
    return {"value": value, "unit": "mL", "system": UCUM, "code": "mL"}


def medication_request_resource(rx: Mapping[str, Any]) -> dict[str, Any]:
    """A prescription: what, for whom, by whom, how much, how often, how many refills, valid until when."""
    data = {
        "resourceType": "MedicationRequest", "id": str(rx["id"]),
        "identifier": [{"system": RX_SYSTEM, "value": rx["rx_number"]}],
        "status": RX_STATUS[rx["status"]], "intent": "order",
        "statusReason": {"text": rx["status_reason"]} if rx.get("status_reason") else None,
        "medicationCodeableConcept": {"text": rx["product"]},
        "subject": {"reference": f"Patient/{rx['patient_id']}"},
        "requester": {"reference": f"Practitioner/{rx['prescriber_id']}"},
        "authoredOn": rx["written_date"].isoformat(),
        "reasonCode": [{"coding": [{"system": ICD10_SYSTEM, "code": rx["indication_code"]}], "text": rx["indication"]}],
        "dosageInstruction": [{
            "text": rx["directions"],
            "timing": {"repeat": {"frequency": 1, "period": 1, "periodUnit": "d",
                                  "when": ["HS"] if rx["dosing_time"] == "bedtime" else ["MORN"]}},
            "doseAndRate": [{"doseQuantity": {"value": rx["dose_mg"], "unit": "mg", "system": UCUM, "code": "mg"}}],
        }],
        "dispenseRequest": {
            "validityPeriod": {"start": rx["written_date"].isoformat(), "end": rx["expiry_date"].isoformat()},
            "numberOfRepeatsAllowed": rx["refills_authorized"],
            "quantity": _quantity(rx["quantity"], rx["form"]),
            "expectedSupplyDuration": {"value": rx["days_supply"], "unit": "days", "system": UCUM, "code": "d"},
        },
        "substitution": {"allowedBoolean": False, "reason": {"text": "Compounded to the prescription"}},
        "priorPrescription": {"reference": f"MedicationRequest/{rx['replaces_id']}"} if rx.get("replaces_id") else None,
    }
    return validated("MedicationRequest", data)


def _instant(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def medication_dispense_resource(o: Mapping[str, Any]) -> dict[str, Any]:
    """A fill (a compounding order): what was (or is being) dispensed, how much, for how many days, when."""
    data = {
        "resourceType": "MedicationDispense", "id": str(o["id"]),
        "identifier": [{"system": LOT_SYSTEM, "value": o["lot_number"]}] if o.get("lot_number") else None,
        "status": ORDER_STATUS[o["state"]],
        # A fill handed over and then returned (compounding/returns.py): cancelled — it no longer counts — with the
        # reason, and its handover kept, because it did leave the pharmacy.
        "statusReasonCodeableConcept": {"text": o["returned"]} if o.get("returned") else None,
        "medicationCodeableConcept": {"text": o["product"]},
        "subject": {"reference": f"Patient/{o['patient_id']}"},
        "authorizingPrescription": [{"reference": f"MedicationRequest/{o['prescription_id']}"}],
        "type": dispense_type(o.get("authorized_fill", o["fill_number"]), partial=bool(o.get("partial"))),
        "quantity": _quantity(o["quantity"], o["form"]),
        "daysSupply": {"value": o["days_supply"], "unit": "days", "system": UCUM, "code": "d"},
        "whenPrepared": _instant(o.get("compounded_at")),
        "whenHandedOver": _instant(o.get("dispensed_at")),
        "dosageInstruction": [{"text": o["directions"]}],
        "note": [{"text": o["cap_note"]}] if o.get("cap_note") else None,
    }
    return validated("MedicationDispense", data)


def bundle(entries: list[dict[str, Any]], *, base: str, total: int, links: dict[str, str]) -> dict[str, Any]:
    data = {
        "resourceType": "Bundle", "type": "searchset", "total": total,
        "link": [{"relation": rel, "url": url} for rel, url in links.items()],
        "entry": [{"fullUrl": f"{base}/{e['resourceType']}/{e['id']}", "resource": e, "search": {"mode": "match"}}
                  for e in entries] or None,
    }
    return Bundle.model_validate(data).model_dump(mode="json", exclude_none=True)


def operation_outcome(severity: str, code: str, text: str, expression: list[str] | None = None) -> dict[str, Any]:
    issue: dict[str, Any] = {"severity": severity, "code": code, "diagnostics": text}
    if expression:
        issue["expression"] = expression[:20]
    return OperationOutcome.model_validate({"resourceType": "OperationOutcome", "issue": [issue]}).model_dump(
        mode="json", exclude_none=True)


def capability_statement(*, base: str, software: str, now: datetime) -> dict[str, Any]:
    resources = []
    for name, params in SEARCH_PARAMS.items():
        interactions = [{"code": "read"}, {"code": "search-type"}]
        if name == "MedicationRequest":
            interactions.append({"code": "create"})
        resources.append({
            "type": name, "interaction": interactions, "versioning": "no-version", "readHistory": False,
            "searchParam": [{"name": n, "type": t} for n, t in params] +
                           [{"name": "_count", "type": "number"}, {"name": "_page", "type": "number"}],
        })
    data = {
        "resourceType": "CapabilityStatement", "status": "active", "date": now.isoformat(), "kind": "instance",
        "software": {"name": software}, "implementation": {"description": software, "url": base},
        "fhirVersion": FHIR_VERSION, "format": ["json"],
        "rest": [{"mode": "server", "security": {
            "description": "Bearer API token (Authorization: Bearer <token>) of scope api or fhir; every read of "
                           "patient data is audited. POST MedicationRequest adds to the pharmacy's intake queue: a "
                           "pharmacist reviews it before it becomes a prescription."},
            "resource": resources}],
    }
    return CapabilityStatement.model_validate(data).model_dump(mode="json", exclude_none=True)


# ---- search parameters ------------------------------------------------------------------------------------------

_DATE = re.compile(r"^(eq|ne|gt|lt|ge|le|sa|eb)?(\d{4}(-\d{2}(-\d{2})?)?)$")


@dataclass(frozen=True)
class DateFilter:
    op: str  # eq, gt, lt, ge, le
    start: date  # the first day the value covers
    end: date  # the last day it covers


def parse_date_param(value: str, name: str) -> DateFilter:
    """`ge2026-01-01`, `2026-11`, `lt2027` … as the days they cover (FHIR date search, to the day)."""
    m = _DATE.match(value.strip())
    if not m:
        raise ValidationFailed(f"{name}: use a date like 2026-11-23, optionally prefixed ge, le, gt, lt or eq.",
                               fields={name: "Not a FHIR date."})
    op = {"sa": "gt", "eb": "lt"}.get(m.group(1) or "eq", m.group(1) or "eq")
    if op == "ne":
        raise ValidationFailed(f"{name}: ne is not supported.", fields={name: "Use eq, gt, lt, ge or le."})
    text = m.group(2)
    try:
        if len(text) == 4:
            start, end = date(int(text), 1, 1), date(int(text), 12, 31)
        elif len(text) == 7:
            year, month = int(text[:4]), int(text[5:7])
            start, end = date(year, month, 1), date(year, month, calendar.monthrange(year, month)[1])
        else:
            start = end = date.fromisoformat(text)
    except ValueError:
        raise ValidationFailed(f"{name}: not a real date.", fields={name: "Not a real date."}) from None
    return DateFilter(op=op, start=start, end=end)


def reference_id(value: str, resource_type: str, name: str) -> int:
    """`Patient/12` or `12` → 12; anything else is a 422 naming the parameter."""
    text = value.strip()
    if text.startswith(f"{resource_type}/"):
        text = text[len(resource_type) + 1:]
    if not digits_only(text) or len(text) > 10 or not 1 <= int(text) <= 2**31 - 1:
        raise ValidationFailed(f"{name}: use {resource_type}/<id>.", fields={name: "Not a reference to a known id."})
    return int(text)


def token_value(value: str) -> tuple[str | None, str]:
    """`system|value`, `|value` or `value`."""
    if "|" in value:
        system, _, code = value.partition("|")
        return (system or None), code
    return None, value


# ---- a posted MedicationRequest, read as a prescription as written ---------------------------------------------


@dataclass
class PostedRequest:
    written: WrittenPrescription
    patient_id: int | None  # a reference to a patient of ours (Patient/12) rather than a contained one
    prescriber_id: int | None
    key: str  # what makes the same request posted twice the same: its identifier


def _contained(mr: dict[str, Any], reference: str | None, kind: str) -> dict[str, Any] | None:
    if not reference or not reference.startswith("#"):
        return None
    return next((c for c in mr.get("contained") or [] if c.get("resourceType") == kind
                 and c.get("id") == reference[1:]), None)


def _first(items: Any) -> Any:
    return items[0] if isinstance(items, list) and items else None


def _telecom_value(resource: dict[str, Any], system: str) -> str:
    found = next((t for t in resource.get("telecom") or [] if t.get("system") == system), None)
    return str(found.get("value", ""))[:254] if found else ""


def _written_patient(p: dict[str, Any]) -> WrittenPatient:
    name = _first(p.get("name")) or {}
    address = _first(p.get("address")) or {}
    lines = address.get("line") or []
    gender = {"male": "M", "female": "F", "other": "N", "unknown": "U"}.get(p.get("gender") or "", "U")
    birth = p.get("birthDate")
    return WrittenPatient(
        first_name=str(_first(name.get("given")) or "")[:80], last_name=str(name.get("family") or "")[:80],
        date_of_birth=date.fromisoformat(str(birth)) if birth and len(str(birth)) == 10 else None, gender=gender,
        address_line1=str(_first(lines) or "")[:120], address_line2=str(lines[1] if len(lines) > 1 else "")[:120],
        city=str(address.get("city") or "")[:80], state=str(address.get("state") or "")[:2],
        postal_code=str(address.get("postalCode") or "")[:10], phone=_telecom_value(p, "phone")[:32],
        email=_telecom_value(p, "email"),
    )


def _written_prescriber(d: dict[str, Any]) -> WrittenPrescriber:
    name = _first(d.get("name")) or {}
    npi = next((i.get("value") for i in d.get("identifier") or [] if i.get("system") == NPI_SYSTEM), "")
    return WrittenPrescriber(
        # The NPI whole (bounded): one that is not 10 digits is refused, never cut into somebody else's.
        npi=str(npi or "").strip()[:20], first_name=str(_first(name.get("given")) or "")[:80],
        last_name=str(name.get("family") or "")[:80], suffix=str(_first(name.get("suffix")) or "")[:20],
        phone=_telecom_value(d, "phone")[:32], fax=_telecom_value(d, "fax")[:32], email=_telecom_value(d, "email"),
    )


def _plain(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float | Decimal):
        d = Decimal(str(value))
        return format(d.normalize(), "f") if d == d.to_integral() else format(d, "f")
    return str(value)[:40]


def read_medication_request(body: Any) -> PostedRequest:
    """A posted MedicationRequest (validated with fhir.resources) as a prescription as written, with its Patient
    and Practitioner contained (`#id`) or referenced (`Patient/12`, `Practitioner/3`: ours)."""
    mr = _validated(body)
    patient_id, patient = _subject(mr)
    prescriber_id, prescriber = _requester(mr)
    identifier = _first(mr.get("identifier")) or {}
    key = f"{identifier.get('system', '')}|{identifier.get('value', '')}" if identifier.get("value") else ""
    return PostedRequest(written=WrittenPrescription(patient=patient, prescriber=prescriber, medication=_medication(mr)),
                         patient_id=patient_id, prescriber_id=prescriber_id, key=message_key(key) if key else "")


def _validated(body: Any) -> dict[str, Any]:
    """The request as plain JSON once fhir.resources accepts it, and only an active (or draft) order."""
    if not isinstance(body, dict) or body.get("resourceType") != "MedicationRequest":
        raise ValidationFailed("Post a MedicationRequest resource.", fields={"resourceType": "Must be MedicationRequest."})
    try:
        model = MedicationRequest.model_validate(body)
    except ValidationError as exc:
        fields: dict[str, list[str]] = {}
        for err in exc.errors()[:20]:
            where = ".".join(str(x) for x in err.get("loc", ())) or "body"
            fields.setdefault(where, []).append(str(err.get("msg", "invalid"))[:200])
        raise ValidationFailed("The MedicationRequest is not valid FHIR R4.", fields=fields) from None
    mr = model.model_dump(mode="json", exclude_none=True)
    if mr.get("status") not in ("active", "draft"):
        raise ValidationFailed("Only an active (or draft) MedicationRequest can be sent to the pharmacy.",
                               fields={"status": "Use active."})
    if mr.get("intent") not in ("order", "original-order", "instance-order"):
        raise ValidationFailed("Only an order can be sent to the pharmacy.", fields={"intent": "Use order."})
    return mr


def _subject(mr: dict[str, Any]) -> tuple[int | None, WrittenPatient]:
    subject_ref = (mr.get("subject") or {}).get("reference")
    contained_patient = _contained(mr, subject_ref, "Patient")
    if contained_patient is not None:
        return None, _written_patient(contained_patient)
    if subject_ref and subject_ref.startswith("Patient/"):
        return reference_id(subject_ref, "Patient", "subject"), WrittenPatient()
    raise ValidationFailed("The subject must be a contained Patient (#id) or Patient/<id>.",
                           fields={"subject": "Contained or Patient/<id>."})


def _requester(mr: dict[str, Any]) -> tuple[int | None, WrittenPrescriber]:
    requester_ref = (mr.get("requester") or {}).get("reference")
    contained_doc = _contained(mr, requester_ref, "Practitioner")
    if contained_doc is not None:
        return None, _written_prescriber(contained_doc)
    if requester_ref and requester_ref.startswith("Practitioner/"):
        return reference_id(requester_ref, "Practitioner", "requester"), WrittenPrescriber()
    raise ValidationFailed("The requester must be a contained Practitioner (#id) or Practitioner/<id>.",
                           fields={"requester": "Contained or Practitioner/<id>."})


#: Units of a Duration (UCUM codes, and the words clients put in `unit`) in days. A month is 30 days, as a
#: pharmacy counts a month's supply (UCUM's `mo` is 30.44 days, which no days supply is).
DAYS_PER_UNIT = {"d": 1, "day": 1, "days": 1, "wk": 7, "week": 7, "weeks": 7, "mo": 30, "month": 30, "months": 30}


def supply_days(duration: Any) -> tuple[str, list[str]]:
    """`dispenseRequest.expectedSupplyDuration` as a days supply (text, as SCRIPT's DaysSupply), and what could not
    be read. Its unit matters: "4 wk" is 28 days, never 4. A unit that is not days, weeks or months (hours, years, none
    at all) leaves the days supply empty, with the reason."""
    if not isinstance(duration, dict) or duration.get("value") is None:
        return "", []
    try:
        value = Decimal(str(duration["value"]))
    except InvalidOperation:
        return "", ["The expected supply duration is not a number: enter the days supply."]
    code = str(duration.get("code") or "").strip()
    word = str(duration.get("unit") or "").strip().lower()
    factor = DAYS_PER_UNIT.get(code) or DAYS_PER_UNIT.get(word)
    if factor is None:
        unit = f"in “{(code or word)[:20]}”" if code or word else "without a unit"
        return "", [f"The expected supply duration is {_plain(value)} {unit}: enter the days supply (days, weeks or "
                    "months are read)."]
    days = value * factor
    notes = ([f"The expected supply duration of {_plain(value)} month(s) is read as {_plain(days)} days (30 a month)."]
             if factor == 30 else [])
    return _plain(days), notes


def _medication(mr: dict[str, Any]) -> WrittenMedication:
    """The medication as SCRIPT would carry it: the dose in the sig, quantities in NCI units, ICD-10 reasons."""
    concept = mr.get("medicationCodeableConcept") or {}
    description = concept.get("text") or (_first(concept.get("coding")) or {}).get("display") or ""
    dosage = _first(mr.get("dosageInstruction")) or {}
    sig = str(dosage.get("text") or "")
    dose = ((_first(dosage.get("doseAndRate")) or {}).get("doseQuantity") or {})
    if dose.get("value") is not None and (dose.get("unit") or dose.get("code")) == "mg" and "mg" not in sig:
        sig = f"{sig} ({_plain(dose['value'])} mg)".strip()
    dispense = mr.get("dispenseRequest") or {}
    quantity = dispense.get("quantity") or {}
    unit = str(quantity.get("unit") or quantity.get("code") or "").lower()
    diagnoses = [c.get("code") for r in mr.get("reasonCode") or [] for c in r.get("coding") or []
                 if c.get("system") == ICD10_SYSTEM and c.get("code")]
    days_supply, unread = supply_days(dispense.get("expectedSupplyDuration"))
    return WrittenMedication(
        description=str(description)[:200], quantity=_plain(quantity.get("value")), unread=unread,
        quantity_unit="C48480" if unit in ("capsule", "cap", "capsules") else ("C28254" if unit == "ml" else unit[:20]),
        days_supply=days_supply,
        refills=_plain(dispense.get("numberOfRepeatsAllowed")), sig=sig[:1000],
        note=" ".join(str(n.get("text", "")) for n in mr.get("note") or [])[:1000], diagnoses=diagnoses[:5],
        written_date=date.fromisoformat(str(mr["authoredOn"])[:10]) if mr.get("authoredOn") else None,
        substitutions="1" if (mr.get("substitution") or {}).get("allowedBoolean") is False else "0",
    )
