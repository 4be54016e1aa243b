"""E-prescribing rules (pure): what an incoming prescription says, which patient and prescriber it is about, and
which formula it maps to — with everything that did not map written down for the pharmacist.

Nothing here touches the database or Flask: the services hand in the candidates (patients with the same date of
birth, the active formulas) and store what comes back. The pharmacist always decides: a match is a suggestion, an
ambiguous one is a choice to make, and nothing is ever merged into an existing patient's record.
"""
from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import date, datetime, timedelta
from enum import StrEnum
from typing import Any

from pharmacy.core.npi import npi_is_valid
from pharmacy.core.numbers import digits_only


class Source(StrEnum):
    """How a prescription arrived."""

    NCPDP = "ncpdp"  # NCPDP SCRIPT from the intermediary
    FHIR = "fhir"  # POST /fhir/MedicationRequest
    FAX = "fax"  # a faxed or scanned page (documents/)


class IntakeKind(StrEnum):
    """What the queue entry asks of the pharmacist."""

    NEW_RX = "new_rx"  # a new prescription to review, correct and accept (or reject)
    RENEWAL = "renewal"  # a prescriber approved a renewal: review and accept it as the replacement
    RENEWAL_DENIED = "renewal_denied"  # a prescriber denied a renewal: make sure the patient knows
    CANCEL_RX = "cancel_rx"  # a prescriber cancelled a prescription: what was done, what is left to do


class IntakeState(StrEnum):
    WAITING = "waiting"
    ACCEPTED = "accepted"  # became a prescription
    REJECTED = "rejected"  # refused with a reason (the sender is told)
    DONE = "done"  # a notice the pharmacist has dealt with


class Direction(StrEnum):
    INBOUND = "in"
    OUTBOUND = "out"


class MessageState(StrEnum):
    """Inbound: received (answered with Status) or refused (answered with Error). Outbound: the outbox states."""

    RECEIVED = "received"
    REFUSED = "refused"
    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
    CANCELLED = "cancelled"


class MatchStatus(StrEnum):
    MATCHED = "matched"  # exactly one patient with this name, date of birth and postal code
    AMBIGUOUS = "ambiguous"  # more than one, or a near match: the pharmacist chooses
    NONE = "none"  # nobody: a new patient (created from the message by the pharmacist)
    CHOSEN = "chosen"  # the pharmacist picked (or created) the patient


OPEN_OUTBOUND = (MessageState.PENDING, MessageState.SENDING)

# ---------------------------------------------------------------------------------------------------------------
# What a prescription says, as written (the same shape for NCPDP NewRx, FHIR MedicationRequest and a typed fax)
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class WrittenPatient:
    first_name: str = ""
    last_name: str = ""
    middle_name: str = ""
    date_of_birth: date | None = None
    gender: str = ""  # M, F, N (non-binary), U (unknown): NCPDP's codes; FHIR's are mapped to these
    address_line1: str = ""
    address_line2: str = ""
    city: str = ""
    state: str = ""
    postal_code: str = ""
    phone: str = ""
    email: str = ""

    @property
    def full_name(self) -> str:
        return " ".join(x for x in (self.first_name, self.last_name) if x)


@dataclass
class WrittenPrescriber:
    npi: str = ""
    dea: str = ""
    first_name: str = ""
    last_name: str = ""
    suffix: str = ""  # MD, DO, NP …
    clinic_name: str = ""
    address_line1: str = ""
    city: str = ""
    state: str = ""
    postal_code: str = ""
    phone: str = ""
    fax: str = ""
    email: str = ""

    @property
    def display_name(self) -> str:
        name = " ".join(x for x in (self.first_name, self.last_name) if x)
        return f"Dr. {name}{', ' + self.suffix if self.suffix else ''}" if name else ""


@dataclass
class WrittenMedication:
    description: str = ""
    strength_value: str = ""
    strength_unit: str = ""  # the unit as written ("mg", "mg/mL") or its NCI code
    form_text: str = ""  # the dose form as written ("capsule") or its NCI code
    quantity: str = ""
    quantity_unit: str = ""  # NCI code (C48480 capsule, C28254 mL) or text
    days_supply: str = ""
    refills: str = ""  # NumberOfRefills; blank when not given (which means none)
    sig: str = ""
    substitutions: str = ""  # NCPDP 0 = substitution allowed, 1 = dispense as written
    note: str = ""
    diagnoses: list[str] = field(default_factory=list)  # ICD-10 codes
    written_date: date | None = None
    drug_codes: list[str] = field(default_factory=list)  # "ND:00000000000", "RXCUI:…": shown, never used to map
    # What the reader of the message could not turn into a field (a supply duration in hours, an approval that did
    # not restate the medication …): listed under *What did not map* with the rest.
    unread: list[str] = field(default_factory=list)


@dataclass
class WrittenPrescription:
    """One prescription as it arrived, before anything is matched or mapped."""

    patient: WrittenPatient = field(default_factory=WrittenPatient)
    prescriber: WrittenPrescriber = field(default_factory=WrittenPrescriber)
    medication: WrittenMedication = field(default_factory=WrittenMedication)
    prescriber_order_number: str = ""

    def to_json(self) -> dict[str, Any]:
        return _jsonable(asdict(self))

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> WrittenPrescription:
        data = data or {}
        return cls(
            patient=_load(WrittenPatient, data.get("patient")),
            prescriber=_load(WrittenPrescriber, data.get("prescriber")),
            medication=_load(WrittenMedication, data.get("medication")),
            prescriber_order_number=str(data.get("prescriber_order_number") or ""),
        )


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, date):
        return value.isoformat()
    return value


def _load(cls: type, data: Any) -> Any:
    data = data if isinstance(data, dict) else {}
    values: dict[str, Any] = {}
    for f in fields(cls):
        if f.name not in data:
            continue
        raw = data[f.name]
        if f.name in ("date_of_birth", "written_date"):
            values[f.name] = parse_date(raw)
        elif f.name in ("diagnoses", "drug_codes", "unread"):
            values[f.name] = [str(x) for x in raw] if isinstance(raw, list) else []
        else:
            values[f.name] = "" if raw is None else str(raw)
    return cls(**values)


def message_key(text: str, *, limit: int = 64) -> str:
    """A message's duplicate key as stored (erx_messages.message_id, at most 64 characters).

    A key that fits is kept as it is (the keys already stored keep matching); a longer one — an EHR's identifier
    system is often a long URL — becomes a SHA-256 of the whole key, never its first 64 characters: cut, every
    order under that system would share one key and the second prescription would be dropped as "already
    received". (Those stored are "system|value" or "sha256:…", so a hashed key, "key-sha256:…", is never one.)"""
    if len(text) <= limit:
        return text
    prefix = "key-sha256:"
    return prefix + hashlib.sha256(text.encode("utf-8")).hexdigest()[:limit - len(prefix)]


def parse_date(value: Any) -> date | None:
    """YYYY-MM-DD (or the date part of a date-time); None for anything else."""
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if not isinstance(value, str):
        return None
    text = value.strip()[:10]
    try:
        return date.fromisoformat(text)
    except ValueError:
        return None


# ---------------------------------------------------------------------------------------------------------------
# Matching the patient: name + date of birth + postal code, never merged
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PatientCandidate:
    id: int
    first_name: str
    last_name: str
    date_of_birth: date
    postal_code: str | None


@dataclass(frozen=True)
class PatientMatch:
    status: MatchStatus
    patient_id: int | None
    candidate_ids: tuple[int, ...]
    note: str


def name_token(name: str | None) -> str:
    """A name for comparison: accents dropped, case folded, only letters kept ("O'Brien-Smith" → "obriensmith")."""
    decomposed = unicodedata.normalize("NFKD", name or "")
    letters = "".join(c for c in decomposed if c.isalpha() and not unicodedata.combining(c))
    return letters.casefold()


def zip5(postal_code: str | None) -> str:
    digits = "".join(c for c in (postal_code or "") if digits_only(c))
    return digits[:5] if len(digits) >= 5 else ""


def match_patient(written: WrittenPatient, candidates: Sequence[PatientCandidate]) -> PatientMatch:
    """Which existing patient the prescription is for.

    Candidates are the patients born on the written date of birth. A match needs the same last and first name and
    the same 5-digit ZIP code, and exactly one such patient: then it is suggested as matched. Anyone else born that
    day with the same last name or the same first name (a nickname, a married name, a moved house) makes the match
    ambiguous: the pharmacist chooses. Nobody: a new patient. Nothing is ever merged into a record automatically.
    """
    if written.date_of_birth is None:
        return PatientMatch(MatchStatus.NONE, None, (), "No date of birth in the prescription: choose the patient.")
    first, last, code = name_token(written.first_name), name_token(written.last_name), zip5(written.postal_code)
    same_day = [c for c in candidates if c.date_of_birth == written.date_of_birth]
    full = [c for c in same_day if name_token(c.first_name) == first and name_token(c.last_name) == last
            and code and zip5(c.postal_code) == code]
    near = [c for c in same_day if c not in full
            and (name_token(c.last_name) == last or name_token(c.first_name) == first)]
    if len(full) == 1 and not near:
        return PatientMatch(MatchStatus.MATCHED, full[0].id, (full[0].id,),
                            "Same name, date of birth and ZIP code as a patient on file.")
    ids = tuple(sorted(c.id for c in [*full, *near]))
    if ids:
        why = ("Several patients share this name, date of birth and ZIP code" if len(full) > 1 else
               "A patient on file has the same date of birth and a similar name or another ZIP code")
        return PatientMatch(MatchStatus.AMBIGUOUS, None, ids, f"{why}: choose the right one, or add a new patient.")
    return PatientMatch(MatchStatus.NONE, None, (), "No patient on file with this name and date of birth: a new patient.")


def same_name_and_birth(written: WrittenPatient, candidates: Sequence[PatientCandidate]) -> tuple[int, ...]:
    """The patients on file with the written first and last name and date of birth, whatever their ZIP code (people
    move): adding the written patient as new would make a second record of one of them."""
    if written.date_of_birth is None:
        return ()
    first, last = name_token(written.first_name), name_token(written.last_name)
    return tuple(c.id for c in candidates if c.date_of_birth == written.date_of_birth
                 and name_token(c.first_name) == first and name_token(c.last_name) == last)


def same_patient(a: WrittenPatient, b: WrittenPatient) -> bool:
    """Whether two messages can be about the same patient (a CancelRx and the NewRx it cancels): the same date of
    birth, and the same last or first name (a married name may change one of them), where both give them.

    A CancelRx stops a prescription: one naming somebody else must not reach it, whatever its ids say."""
    if a.date_of_birth and b.date_of_birth and a.date_of_birth != b.date_of_birth:
        return False
    pairs = [(name_token(x), name_token(y)) for x, y in ((a.last_name, b.last_name), (a.first_name, b.first_name))]
    given = [(x, y) for x, y in pairs if x and y]
    return not given or any(x == y for x, y in given)


# ---------------------------------------------------------------------------------------------------------------
# The prescriber: NPI with its check digit
# ---------------------------------------------------------------------------------------------------------------


def npi_problem(npi: str | None) -> str | None:
    """Why an NPI cannot identify a prescriber (missing, malformed, wrong check digit), or None when it can."""
    value = (npi or "").strip()
    if not value:
        return "The prescriber's NPI is missing."
    if not npi_is_valid(value):
        return "The prescriber's NPI is not valid (10 digits starting with 1 or 2, with a correct check digit)."
    return None


# ---------------------------------------------------------------------------------------------------------------
# Outbound delivery: retries
# ---------------------------------------------------------------------------------------------------------------


def next_attempt_delay(attempts: int, *, base_seconds: int = 60, cap_seconds: int = 3600) -> timedelta:
    """Backoff after the n-th failed attempt: 60 s, doubling, at most an hour (as for emails)."""
    exponent = max(min(attempts - 1, 16), 0)
    return timedelta(seconds=min(base_seconds * 2**exponent, cap_seconds))


def classify_answer(http_status: int | None, answer_kind: str | None, code: str | None) -> str:
    """What a delivery attempt's outcome means: "sent", "transient" (try again later) or "permanent" (give up).

    The intermediary answers a SCRIPT post with Status (delivered), Error or Verify. Error 600 (communication
    problem) and 601/602 (the receiver cannot process now, or its system failed) are worth another try; 900
    (transaction rejected) is not. Without an answer: 5xx, 429 and no connection are transient, other 4xx permanent.
    """
    if answer_kind in ("Status", "Verify") and (http_status is None or 200 <= http_status < 300):
        return "sent"
    if answer_kind == "Error":
        return "transient" if (code or "").strip() in ("600", "601", "602") else "permanent"
    if http_status is None or http_status >= 500 or http_status in (408, 429):
        return "transient"
    return "permanent"
