"""NCPDP SCRIPT 2017071 messages: read (with defusedxml) and write (the pharmacy's side of the conversation). Pure.

The shape follows the publicly documented SCRIPT 2017071 structure: a `Message` with a `Header` (To, From,
MessageID, RelatesToMessageID, SentTime, SenderSoftware, PrescriberOrderNumber, RxReferenceNumber) and a `Body`
holding exactly one transaction — NewRx, CancelRx, RxRenewalRequest/Response, RxChangeRequest/Response,
CancelRxResponse, Status, Error, Verify — whose Patient/HumanPatient, Prescriber/NonVeterinarian, Pharmacy and
MedicationPrescribed elements are read here. Namespaces and the version attributes' two spellings ("2017071",
"20170715") are accepted; other versions are refused.

Reading never trusts the document: no DTD, no entity, no external reference (defusedxml refuses them before any
expansion), a size limit enforced by the caller, and every value read as bounded text. A message that cannot be
read raises ScriptError with the SCRIPT Error code and a description the sender can act on — never a traceback.
"""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET  # only to *build* documents: every parse goes through defusedxml
from dataclasses import dataclass, field

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import ParseError
from defusedxml.ElementTree import fromstring as safe_fromstring

from pharmacy.eprescribing.rules import (
    WrittenMedication,
    WrittenPatient,
    WrittenPrescriber,
    WrittenPrescription,
    parse_date,
)

VERSION = "20170715"  # the 2017071 release's schema version, as its messages carry it
ACCEPTED_VERSIONS = ("2017071", "v2017071", "20170715")
VERSION_ATTRIBUTES = ("TransportVersion", "TransactionVersion", "version", "Version")
MAX_MESSAGE_BYTES = 512 * 1024
MAX_TEXT = 1000

#: Inbound transactions this pharmacy acts on; anything else is answered with Error 900 ("not supported").
INBOUND_KINDS = ("NewRx", "CancelRx", "RxRenewalResponse", "RxChangeResponse", "Status", "Error", "Verify")
#: What the pharmacy sends.
OUTBOUND_KINDS = ("RxRenewalRequest", "RxChangeRequest", "CancelRxResponse", "Status", "Error", "Verify")
RESPONSE_OUTCOMES = (  # fail-safe order: a denial is never read as an approval
    ("Denied", "denied"), ("DeniedNewPrescriptionToFollow", "denied_new_to_follow"),
    ("DenyNewToFollow", "denied_new_to_follow"), ("ApprovedWithChanges", "approved_with_changes"),
    ("Approved", "approved"), ("Validated", "validated"), ("Replace", "replace"),
)
#: SCRIPT Error codes (the Error transaction's Code).
ERROR_COMMUNICATION = "600"  # communication problem: try again later
ERROR_UNABLE = "601"  # receiver unable to process
ERROR_SYSTEM = "602"  # receiver system error
ERROR_REJECTED = "900"  # transaction rejected
STATUS_ACCEPTED = "010"  # successful: accepted by the ultimate receiver
STATUS_OK = "000"  # transmission successful


class ScriptError(Exception):
    """A message that cannot be accepted: answered with a SCRIPT Error carrying `code` and `description`."""

    def __init__(self, description: str, *, code: str = ERROR_REJECTED, header: Header | None = None,
                 kind: str | None = None) -> None:
        super().__init__(description)
        self.description = description[:MAX_TEXT]
        self.code = code
        self.header = header
        self.kind = kind


@dataclass
class Header:
    to: str = ""
    to_qualifier: str = ""
    sender: str = ""  # From
    sender_qualifier: str = ""
    message_id: str = ""
    relates_to: str = ""
    sent_time: str = ""
    prescriber_order_number: str = ""
    rx_reference_number: str = ""


@dataclass
class Answer:
    """Status, Error or Verify: a code, an optional description code, a description."""

    code: str = ""
    description_code: str = ""
    description: str = ""


@dataclass
class PrescriberResponse:
    """The Response of an RxRenewalResponse, RxChangeResponse or CancelRxResponse."""

    outcome: str = "unknown"  # approved, approved_with_changes, denied, denied_new_to_follow, validated, replace
    reason_code: str = ""
    denial_reason: str = ""
    note: str = ""

    @property
    def approved(self) -> bool:
        return self.outcome in ("approved", "approved_with_changes")

    @property
    def denied(self) -> bool:
        return self.outcome in ("denied", "denied_new_to_follow")


@dataclass
class Pharmacy:
    ncpdp_id: str
    npi: str
    name: str
    address_line1: str = ""
    city: str = ""
    state: str = ""
    postal_code: str = ""
    phone: str = ""


@dataclass
class ScriptMessage:
    header: Header
    kind: str
    prescription: WrittenPrescription | None = None  # NewRx, CancelRx, the requests; a response's medication
    dispensed: WrittenMedication | None = None  # RxRenewalRequest's MedicationDispensed
    response: PrescriberResponse | None = None
    answer: Answer | None = None  # Status, Error, Verify
    request_code: str = ""  # RxChangeRequest's MessageRequestCode
    missing: list[str] = field(default_factory=list)


# ---- reading -----------------------------------------------------------------------------------------------------


def _local(tag: object) -> str:
    text = tag if isinstance(tag, str) else ""
    return text.rsplit("}", 1)[-1]


def _child(el: ET.Element | None, *path: str) -> ET.Element | None:
    for name in path:
        if el is None:
            return None
        el = next((c for c in el if _local(c.tag) == name), None)
    return el


def _text(el: ET.Element | None, *path: str, limit: int = 200) -> str:
    node = _child(el, *path) if path else el
    if node is None or node.text is None:
        return ""
    return " ".join(node.text.split())[:limit]


def _attr(el: ET.Element | None, name: str, limit: int = 40) -> str:
    if el is None:
        return ""
    return " ".join(str(el.attrib.get(name, "")).split())[:limit]


def parse(raw: bytes) -> ScriptMessage:
    """Read one SCRIPT message. Raises ScriptError (with what could be read of the header) when it cannot."""
    if not raw or not raw.strip():
        raise ScriptError("The message is empty.")
    if len(raw) > MAX_MESSAGE_BYTES:
        raise ScriptError(f"The message is larger than {MAX_MESSAGE_BYTES // 1024} KiB.")
    try:
        root = safe_fromstring(raw, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException:
        raise ScriptError("The message declares a DTD, entities or external references, which are refused.") from None
    except (ParseError, ValueError, UnicodeError):
        raise ScriptError("The message is not well-formed XML.") from None
    if _local(root.tag) != "Message":
        raise ScriptError("The document is not a SCRIPT Message (its root element must be Message).")
    header = _header(_child(root, "Header"))
    versions = [_attr(root, a) for a in VERSION_ATTRIBUTES if _attr(root, a)]
    if versions and not any(v in ACCEPTED_VERSIONS for v in versions):
        raise ScriptError(f"SCRIPT version {versions[0]} is not supported; this pharmacy reads 2017071.",
                          header=header)
    if not header.message_id:
        raise ScriptError("The Header has no MessageID.", header=header)
    body = _child(root, "Body")
    transactions = [c for c in body] if body is not None else []
    if len(transactions) != 1:
        raise ScriptError("The Body must hold exactly one transaction.", header=header)
    tx = transactions[0]
    kind = _local(tx.tag)[:40]
    if kind not in INBOUND_KINDS and kind not in OUTBOUND_KINDS and kind != "RxRenewalRequest":
        raise ScriptError(f"{kind or 'This'} messages are not supported by this pharmacy.", header=header, kind=kind)
    message = ScriptMessage(header=header, kind=kind)
    if kind in ("Status", "Error"):
        message.answer = _answer(tx)
    elif kind == "Verify":
        message.answer = _answer(_child(tx, "VerifyStatus"))
    elif kind.endswith("Response"):
        message.response = _response(_child(tx, "Response"))
        med = _child(tx, "MedicationPrescribed")
        if med is None and message.response is not None:
            med = _child(_outcome_element(_child(tx, "Response")), "MedicationPrescribed")
        if med is not None:
            message.prescription = WrittenPrescription(medication=_medication(med))
    else:  # NewRx, CancelRx, RxRenewalRequest, RxChangeRequest
        message.prescription = WrittenPrescription(
            patient=_patient(_child(tx, "Patient", "HumanPatient")),
            prescriber=_prescriber(_child(tx, "Prescriber", "NonVeterinarian")),
            medication=_medication(_child(tx, "MedicationPrescribed")),
            prescriber_order_number=header.prescriber_order_number,
        )
        dispensed = _child(tx, "MedicationDispensed")
        if dispensed is not None:
            message.dispensed = _medication(dispensed)
        message.request_code = _text(tx, "MessageRequestCode", limit=8)
    message.missing = _missing(message)
    if message.missing:
        raise ScriptError(f"The {kind} is missing required fields: {', '.join(message.missing)}.", header=header,
                          kind=kind)
    return message


def _header(el: ET.Element | None) -> Header:
    return Header(
        to=_text(el, "To", limit=64), to_qualifier=_attr(_child(el, "To"), "Qualifier", 4),
        sender=_text(el, "From", limit=64), sender_qualifier=_attr(_child(el, "From"), "Qualifier", 4),
        message_id=_text(el, "MessageID", limit=64), relates_to=_text(el, "RelatesToMessageID", limit=64),
        sent_time=_text(el, "SentTime", limit=40),
        prescriber_order_number=_text(el, "PrescriberOrderNumber", limit=64),
        rx_reference_number=_text(el, "RxReferenceNumber", limit=64),
    )


def _answer(el: ET.Element | None) -> Answer:
    return Answer(code=_text(el, "Code", limit=8), description_code=_text(el, "DescriptionCode", limit=8),
                  description=_text(el, "Description", limit=MAX_TEXT))


def _outcome_element(response: ET.Element | None) -> ET.Element | None:
    for name, _outcome in RESPONSE_OUTCOMES:
        found = _child(response, name)
        if found is not None:
            return found
    return None


def _response(el: ET.Element | None) -> PrescriberResponse | None:
    if el is None:
        return None
    for name, outcome in RESPONSE_OUTCOMES:  # the first in fail-safe order wins: Denied before Approved
        found = _child(el, name)
        if found is not None:
            return PrescriberResponse(outcome=outcome, reason_code=_text(found, "ReasonCode", limit=8),
                                      denial_reason=_text(found, "DenialReason", limit=MAX_TEXT),
                                      note=_text(found, "Note", limit=MAX_TEXT))
    return PrescriberResponse()


def _date_of(el: ET.Element | None) -> str:
    return _text(el, "Date", limit=40) or _text(el, "DateTime", limit=40)


def _patient(el: ET.Element | None) -> WrittenPatient:
    address = _child(el, "Address")
    return WrittenPatient(
        first_name=_text(el, "Name", "FirstName", limit=80), last_name=_text(el, "Name", "LastName", limit=80),
        middle_name=_text(el, "Name", "MiddleName", limit=80), gender=_text(el, "Gender", limit=1),
        date_of_birth=parse_date(_date_of(_child(el, "DateOfBirth"))),
        address_line1=_text(address, "AddressLine1", limit=120), address_line2=_text(address, "AddressLine2", limit=120),
        city=_text(address, "City", limit=80), state=_text(address, "StateProvince", limit=2),
        postal_code=_text(address, "PostalCode", limit=10),
        phone=_text(el, "CommunicationNumbers", "PrimaryTelephone", "Number", limit=32),
        email=_text(el, "CommunicationNumbers", "ElectronicMail", limit=254),
    )


def _prescriber(el: ET.Element | None) -> WrittenPrescriber:
    address = _child(el, "Address")
    numbers = _child(el, "CommunicationNumbers")
    return WrittenPrescriber(
        # Read whole (bounded), never cut to 10: "19876543281" must be refused by the NPI check, not read as the
        # valid NPI of another prescriber.
        npi=_text(el, "Identification", "NPI", limit=20), dea=_text(el, "Identification", "DEANumber", limit=12),
        first_name=_text(el, "Name", "FirstName", limit=80), last_name=_text(el, "Name", "LastName", limit=80),
        suffix=_text(el, "Name", "Suffix", limit=20),
        clinic_name=_text(el, "PracticeLocation", "BusinessName", limit=120) or _text(el, "BusinessName", limit=120),
        address_line1=_text(address, "AddressLine1", limit=120), city=_text(address, "City", limit=80),
        state=_text(address, "StateProvince", limit=2), postal_code=_text(address, "PostalCode", limit=10),
        phone=_text(numbers, "PrimaryTelephone", "Number", limit=32), fax=_text(numbers, "Fax", "Number", limit=32),
        email=_text(numbers, "ElectronicMail", limit=254),
    )


def _medication(el: ET.Element | None) -> WrittenMedication:
    if el is None:
        return WrittenMedication()
    coded = _child(el, "DrugCoded")
    codes = []
    for product in (c for c in (coded if coded is not None else []) if _local(c.tag) == "ProductCode"):
        code = _text(product, "Code", limit=40)
        if code:
            codes.append(f"{_text(product, 'Qualifier', limit=8) or '?'}:{code}")
    diagnoses = []
    for dx in (c for c in el if _local(c.tag) == "Diagnosis"):
        for which in ("Primary", "Secondary"):
            code = _text(dx, which, "Code", limit=10)
            if code:
                diagnoses.append(code)
    return WrittenMedication(
        description=_text(el, "DrugDescription", limit=200),
        strength_value=_text(coded, "Strength", "StrengthValue", limit=20),
        strength_unit=_text(coded, "Strength", "StrengthUnitOfMeasure", "Code", limit=20),
        form_text=_text(coded, "Strength", "StrengthForm", "Code", limit=20),
        quantity=_text(el, "Quantity", "Value", limit=20),
        quantity_unit=_text(el, "Quantity", "QuantityUnitOfMeasure", "Code", limit=20),
        days_supply=_text(el, "DaysSupply", limit=8), refills=_text(el, "NumberOfRefills", limit=8),
        sig=_text(el, "Sig", "SigText", limit=MAX_TEXT), substitutions=_text(el, "Substitutions", limit=2),
        note=_text(el, "Note", limit=MAX_TEXT), diagnoses=diagnoses[:5],
        written_date=parse_date(_date_of(_child(el, "WrittenDate"))), drug_codes=codes[:5],
    )


def _missing(message: ScriptMessage) -> list[str]:
    """Fields a transaction cannot be acted on without (as paths, so the sender knows what to fix)."""
    out: list[str] = []
    if not message.header.sender:
        out.append("Header/From")
    if message.kind in ("RxRenewalResponse", "RxChangeResponse", "Status", "Error", "Verify"):
        if not message.header.relates_to and message.kind != "Error":  # an Error may answer an unreadable message
            out.append("Header/RelatesToMessageID")
        if message.kind.endswith("Response") and (message.response is None or message.response.outcome == "unknown"):
            out.append("Response (Approved, Denied …)")
        if message.answer is not None and not message.answer.code:
            out.append(f"{message.kind}/Code")
        return out
    rx = message.prescription
    if rx is None:
        return out
    p, doc, med = rx.patient, rx.prescriber, rx.medication
    for value, path in ((p.last_name, "Patient/HumanPatient/Name/LastName"),
                        (p.first_name, "Patient/HumanPatient/Name/FirstName"),
                        (p.date_of_birth, "Patient/HumanPatient/DateOfBirth/Date"),
                        (doc.npi, "Prescriber/NonVeterinarian/Identification/NPI"),
                        (doc.last_name, "Prescriber/NonVeterinarian/Name/LastName"),
                        (med.description, "MedicationPrescribed/DrugDescription")):
        if not value:
            out.append(path)
    if message.kind == "NewRx":
        for value, path in ((med.quantity, "MedicationPrescribed/Quantity/Value"),
                            (med.written_date, "MedicationPrescribed/WrittenDate/Date"),
                            (med.sig, "MedicationPrescribed/Sig/SigText")):
            if not value:
                out.append(path)
    return out


# ---- writing -----------------------------------------------------------------------------------------------------

SENDER_SOFTWARE = ("LDN Compounding Pharmacy", "ldn-pharmacy", "0.1.0")


# Characters XML 1.0 cannot carry (control characters but tab and newlines, surrogates, U+FFFE and U+FFFF): a
# message holding one is not well-formed, and the intermediary would refuse it whole.
_NOT_XML = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _el(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    node = ET.SubElement(parent, tag, {k: _NOT_XML.sub("", v) for k, v in attrs.items() if v})
    if text is not None:
        node.text = _NOT_XML.sub("", text)
    return node


def _opt(parent: ET.Element, tag: str, text: str | None) -> None:
    if text:
        _el(parent, tag, text)


def _envelope(header: Header) -> tuple[ET.Element, ET.Element]:
    root = ET.Element("Message", {"DatatypesVersion": VERSION, "TransportVersion": VERSION,
                                  "TransactionDomain": "SCRIPT", "TransactionVersion": VERSION,
                                  "StructuresVersion": VERSION, "ECLVersion": VERSION})
    h = _el(root, "Header")
    _el(h, "To", header.to, Qualifier=header.to_qualifier)
    _el(h, "From", header.sender, Qualifier=header.sender_qualifier)
    _el(h, "MessageID", header.message_id)
    _opt(h, "RelatesToMessageID", header.relates_to)
    _el(h, "SentTime", header.sent_time)
    software = _el(h, "SenderSoftware")
    for tag, value in zip(("SenderSoftwareDeveloper", "SenderSoftwareProduct", "SenderSoftwareVersionRelease"),
                          SENDER_SOFTWARE, strict=True):
        _el(software, tag, value)
    _opt(h, "RxReferenceNumber", header.rx_reference_number)
    _opt(h, "PrescriberOrderNumber", header.prescriber_order_number)
    return root, _el(root, "Body")


def _serialise(root: ET.Element) -> bytes:
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def _address(parent: ET.Element, line1: str, city: str, state: str, postal: str, line2: str = "") -> None:
    if not (line1 or city or postal):
        return
    a = _el(parent, "Address")
    _opt(a, "AddressLine1", line1)
    _opt(a, "AddressLine2", line2)
    _opt(a, "City", city)
    _opt(a, "StateProvince", state)
    _opt(a, "PostalCode", postal)
    _el(a, "CountryCode", "US")


def _write_patient(parent: ET.Element, p: WrittenPatient) -> None:
    hp = _el(_el(parent, "Patient"), "HumanPatient")
    name = _el(hp, "Name")
    _el(name, "LastName", p.last_name)
    _el(name, "FirstName", p.first_name)
    _opt(name, "MiddleName", p.middle_name)
    _el(hp, "Gender", p.gender or "U")
    _el(_el(hp, "DateOfBirth"), "Date", p.date_of_birth.isoformat() if p.date_of_birth else "")
    _address(hp, p.address_line1, p.city, p.state, p.postal_code, p.address_line2)
    if p.phone or p.email:
        numbers = _el(hp, "CommunicationNumbers")
        if p.phone:
            _el(_el(numbers, "PrimaryTelephone"), "Number", p.phone)
        _opt(numbers, "ElectronicMail", p.email)


def _write_pharmacy(parent: ET.Element, ph: Pharmacy) -> None:
    el = _el(parent, "Pharmacy")
    ident = _el(el, "Identification")
    _el(ident, "NCPDPID", ph.ncpdp_id)
    _el(ident, "NPI", ph.npi)
    _el(el, "BusinessName", ph.name)
    _address(el, ph.address_line1, ph.city, ph.state, ph.postal_code)
    if ph.phone:
        _el(_el(_el(el, "CommunicationNumbers"), "PrimaryTelephone"), "Number", ph.phone)


def _write_prescriber(parent: ET.Element, doc: WrittenPrescriber, tag: str = "Prescriber") -> None:
    nv = _el(_el(parent, tag), "NonVeterinarian")
    ident = _el(nv, "Identification")
    _el(ident, "NPI", doc.npi)
    _opt(ident, "DEANumber", doc.dea)
    if doc.clinic_name:
        _el(_el(nv, "PracticeLocation"), "BusinessName", doc.clinic_name)
    name = _el(nv, "Name")
    _el(name, "LastName", doc.last_name)
    _opt(name, "FirstName", doc.first_name)
    _opt(name, "Suffix", doc.suffix)
    _address(nv, doc.address_line1, doc.city, doc.state, doc.postal_code)
    if doc.phone or doc.fax or doc.email:
        numbers = _el(nv, "CommunicationNumbers")
        if doc.phone:
            _el(_el(numbers, "PrimaryTelephone"), "Number", doc.phone)
        _opt(numbers, "ElectronicMail", doc.email)
        if doc.fax:
            _el(_el(numbers, "Fax"), "Number", doc.fax)


def _write_medication(parent: ET.Element, med: WrittenMedication, tag: str = "MedicationPrescribed",
                      last_fill: str = "") -> None:
    m = _el(parent, tag)
    _el(m, "DrugDescription", med.description)
    codes = [c.split(":", 1) for c in med.drug_codes if ":" in c]
    if codes or med.strength_value:
        coded = _el(m, "DrugCoded")
        for qualifier, code in codes:
            pc = _el(coded, "ProductCode")
            _el(pc, "Code", code)
            _el(pc, "Qualifier", qualifier)
        if med.strength_value:
            strength = _el(coded, "Strength")
            _el(strength, "StrengthValue", med.strength_value)
            if med.form_text:
                _el(_el(strength, "StrengthForm"), "Code", med.form_text)
            if med.strength_unit:
                _el(_el(strength, "StrengthUnitOfMeasure"), "Code", med.strength_unit)
    if med.quantity:
        q = _el(m, "Quantity")
        _el(q, "Value", med.quantity)
        _el(q, "CodeListQualifier", "38")  # original quantity
        _el(_el(q, "QuantityUnitOfMeasure"), "Code", med.quantity_unit or "C38046")
    _opt(m, "DaysSupply", med.days_supply)
    if med.written_date:
        _el(_el(m, "WrittenDate"), "Date", med.written_date.isoformat())
    if last_fill:
        _el(_el(m, "LastFillDate"), "Date", last_fill)
    _opt(m, "Substitutions", med.substitutions or "0")
    _opt(m, "NumberOfRefills", med.refills)
    for code in med.diagnoses:
        dx = _el(m, "Diagnosis")
        _el(dx, "ClinicalInformationQualifier", "1")
        primary = _el(dx, "Primary")
        _el(primary, "Code", code)
        _el(primary, "Qualifier", "ABF")  # ICD-10-CM
    _opt(m, "Note", med.note)
    _el(_el(m, "Sig"), "SigText", med.sig)


def new_rx(header: Header, rx: WrittenPrescription, pharmacy: Pharmacy | None = None) -> bytes:
    """A NewRx (what a prescriber's system sends): used by the tests' intermediary and the round-trip checks."""
    root, body = _envelope(header)
    tx = _el(body, "NewRx")
    _write_patient(tx, rx.patient)
    if pharmacy is not None:
        _write_pharmacy(tx, pharmacy)
    _write_prescriber(tx, rx.prescriber)
    _write_medication(tx, rx.medication)
    return _serialise(root)


def cancel_rx(header: Header, rx: WrittenPrescription) -> bytes:
    root, body = _envelope(header)
    tx = _el(body, "CancelRx")
    _write_patient(tx, rx.patient)
    _write_prescriber(tx, rx.prescriber)
    _write_medication(tx, rx.medication)
    return _serialise(root)


def rx_renewal_request(header: Header, *, patient: WrittenPatient, pharmacy: Pharmacy, prescriber: WrittenPrescriber,
                       dispensed: WrittenMedication, prescribed: WrittenMedication, last_fill: str = "") -> bytes:
    root, body = _envelope(header)
    tx = _el(body, "RxRenewalRequest")
    _write_patient(tx, patient)
    _write_pharmacy(tx, pharmacy)
    _write_prescriber(tx, prescriber)
    _write_medication(tx, dispensed, "MedicationDispensed", last_fill=last_fill)
    _write_medication(tx, prescribed)
    return _serialise(root)


def rx_change_request(header: Header, *, request_code: str, patient: WrittenPatient, pharmacy: Pharmacy,
                      prescriber: WrittenPrescriber, prescribed: WrittenMedication) -> bytes:
    root, body = _envelope(header)
    tx = _el(body, "RxChangeRequest")
    _el(tx, "MessageRequestCode", request_code)
    _write_patient(tx, patient)
    _write_pharmacy(tx, pharmacy)
    _write_prescriber(tx, prescriber)
    _write_medication(tx, prescribed)
    return _serialise(root)


_OUTCOME_TAGS = {"approved": "Approved", "approved_with_changes": "ApprovedWithChanges", "denied": "Denied",
                 "denied_new_to_follow": "DeniedNewPrescriptionToFollow", "validated": "Validated", "replace": "Replace"}


def _write_response(tx: ET.Element, response: PrescriberResponse) -> None:
    outcome = _el(_el(tx, "Response"), _OUTCOME_TAGS[response.outcome])
    _opt(outcome, "ReasonCode", response.reason_code)
    _opt(outcome, "DenialReason", response.denial_reason)
    _opt(outcome, "Note", response.note)


def response_message(kind: str, header: Header, response: PrescriberResponse,
                     medication: WrittenMedication | None = None) -> bytes:
    """RxRenewalResponse / RxChangeResponse (the prescriber's side, for tests) or CancelRxResponse (ours)."""
    if kind not in ("RxRenewalResponse", "RxChangeResponse", "CancelRxResponse"):
        raise ValueError(kind)
    root, body = _envelope(header)
    tx = _el(body, kind)
    _write_response(tx, response)
    if medication is not None:
        _write_medication(tx, medication)
    return _serialise(root)


def answer_message(kind: str, header: Header, answer: Answer) -> bytes:
    """Status, Error or Verify (Verify carries its code in VerifyStatus)."""
    if kind not in ("Status", "Error", "Verify"):
        raise ValueError(kind)
    root, body = _envelope(header)
    tx = _el(body, kind)
    target = _el(tx, "VerifyStatus") if kind == "Verify" else tx
    _el(target, "Code", answer.code)
    _opt(target, "DescriptionCode", answer.description_code)
    _opt(target, "Description", answer.description[:MAX_TEXT])
    return _serialise(root)
