"""Search, as a pharmacist types at the counter: a name in either order ("James Whitaker", "whitaker james",
"Whitaker, J"), a date of birth, a phone number, an Rx number, a batch lot or an ingredient lot.

Each result says who it is and what they have: name, date of birth, phone, prescriptions with their status, and why
it matched — so the right patient is picked without opening three records. A fixed number of queries whatever the
data size (the patients, then their prescriptions); names read the name_key index as prefix ranges.
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from datetime import date

import sqlalchemy as sa
from sqlalchemy.orm import joinedload

from pharmacy.compounding.models import IngredientLot, Order, OrderIngredientLot
from pharmacy.core import audit
from pharmacy.core.actor import Actor
from pharmacy.core.numbers import digits_only
from pharmacy.core.roles import Permission
from pharmacy.core.schemas import BIDI_CONTROLS
from pharmacy.extensions import db
from pharmacy.patients.models import Patient
from pharmacy.prescriptions.models import Prescription

PAGE_SIZE = 25
_DOB = re.compile(r"^(\d{4})-(\d{1,2})-(\d{1,2})$|^(\d{1,2})/(\d{1,2})/(\d{4})$")
_RX = re.compile(r"^RX\s*0*(\d{1,9})$", re.IGNORECASE)
_LOT = re.compile(r"^(?=.*\d)[A-Za-z0-9][A-Za-z0-9._/\-]{2,39}$")
_PHONE_JUNK = ("(", ")", " ", "-", ".", "+")


@dataclass
class Result:
    patient: Patient
    prescriptions: list[Prescription] = field(default_factory=list)
    matched: str = ""


@dataclass
class SearchPage:
    items: list[Result]
    page: int
    has_next: bool
    understood: list[str] = field(default_factory=list)  # what the query was read as ("a name", "a phone number")
    q: str = ""  # the text searched for (`searchable`): what the page says it looked for


def parse_dob(q: str) -> date | None:
    m = _DOB.match(q)
    if not m:
        return None
    try:
        if m.group(1):
            return date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
        return date(int(m.group(6)), int(m.group(4)), int(m.group(5)))
    except ValueError:
        return None


def _name_ranges(q: str) -> list[str]:
    """The name_key prefixes ("last, first") a typed name may mean: as typed with a comma, else both word orders."""
    text = " ".join(q.lower().replace(",", " , ").split())
    if "," in text:
        last, _, first = text.partition(",")
        return [f"{last.strip()}, {first.strip()}".rstrip(", ") if first.strip() else last.strip()]
    words = text.split()
    if len(words) == 1:
        return [words[0]]
    # "james whitaker" → "whitaker, james"; "whitaker james" → "whitaker, james"; "mary ann smith" → "smith, mary ann".
    return [f"{words[-1]}, {' '.join(words[:-1])}", f"{words[0]}, {' '.join(words[1:])}"]


def _digits(expr: sa.ColumnElement[str]) -> sa.ColumnElement[str]:
    for ch in _PHONE_JUNK:
        expr = sa.func.replace(expr, ch, "")
    return expr


def _conditions(q: str) -> tuple[list[tuple[str, sa.ColumnElement[bool]]], list[str]]:
    """Every reading of the query that makes sense, each with what it matched on."""
    found: list[tuple[str, sa.ColumnElement[bool]]] = []
    understood: list[str] = []
    dob = parse_dob(q)
    if dob:
        found.append(("date of birth", Patient.date_of_birth == dob))
        understood.append("a date of birth")
        return found, understood
    rx = _RX.match(q.replace(" ", ""))
    if rx:
        number = f"RX{int(rx.group(1)):06d}"
        found.append((f"Rx {number}", Patient.id.in_(
            sa.select(Prescription.patient_id).where(Prescription.rx_number == number))))
        understood.append("an Rx number")
    digits = "".join(ch for ch in q if digits_only(ch))
    if not any(ch.isalpha() for ch in q) and 7 <= len(digits) <= 11:
        tail = digits[-10:] if len(digits) >= 10 else digits
        found.append(("phone", _digits(Patient.phone).like(f"%{tail}")))
        understood.append("a phone number")
    if _LOT.match(q) and any(ch.isalpha() for ch in q):
        lot = q.upper()
        found.append((f"batch lot {lot}", Patient.id.in_(sa.select(Order.patient_id).where(Order.lot_number == lot))))
        found.append((f"ingredient lot {q}", Patient.id.in_(
            sa.select(Order.patient_id)
            .join(OrderIngredientLot, OrderIngredientLot.order_id == Order.id)
            .join(IngredientLot, IngredientLot.id == OrderIngredientLot.ingredient_lot_id)
            .where(sa.func.upper(IngredientLot.lot_number) == lot))))
        understood.append("a lot number")
    if any(ch.isalpha() for ch in q) and not rx:
        words = [w for w in re.split(r"[\s,]+", q.lower()) if w]
        name_conditions = [sa.and_(Patient.name_key >= prefix, Patient.name_key < prefix + "\uffff")
                           for prefix in _name_ranges(q)]
        if len(words) == 1:  # a first name alone ("James") is worth finding too
            name_conditions.append(sa.func.lower(Patient.first_name).startswith(words[0], autoescape=True))
        found.append(("name", sa.or_(*name_conditions)))
        understood.append("a name")
    return found, understood


def searchable(q: str) -> str:
    """The text a search reads, and the page shows back: what text_problem keeps out of stored names cannot be
    searched by. Control characters (PostgreSQL refuses a NUL in a parameter) are spaces; text-direction marks are
    dropped (invisible, possibly inside a word — and echoed as typed, a right-to-left override turned the page's
    "1 patient for …" around). Other invisible characters are part of names — the zero-width non-joiner of a
    Persian surname, a soft hyphen — and stay."""
    return " ".join("".join(" " if unicodedata.category(ch) in ("Cc", "Cs") else "" if ch in BIDI_CONTROLS else ch
                            for ch in q).split())[:100]


def search(actor: Actor, q: str, *, page: int = 1) -> SearchPage:
    """Patients matching any reading of `q`, with their prescriptions; each shown patient's read is audited."""
    audit.require(actor, Permission.VIEW_CLINICAL, what="search patient records")
    q = searchable(q)
    page = min(max(page, 1), 1_000_000)  # a page typed into the address is a number, not an offset that overflows
    if not q:
        return SearchPage([], page, False)
    conditions, understood = _conditions(q)
    if not conditions:
        return SearchPage([], page, False, understood, q)
    reason = sa.case(*[(cond, label) for label, cond in conditions], else_="")
    rows = db.session.execute(
        sa.select(Patient, reason.label("matched")).where(sa.or_(*[c for _, c in conditions]))
        .order_by(Patient.name_key, Patient.id).offset((page - 1) * PAGE_SIZE).limit(PAGE_SIZE + 1)
    ).all()
    shown = rows[:PAGE_SIZE]
    ids = [p.id for p, _ in shown]
    by_patient: dict[int, list[Prescription]] = {}
    if ids:
        for rx in db.session.execute(
            sa.select(Prescription).where(Prescription.patient_id.in_(ids)).options(joinedload(Prescription.formula))
            .order_by(Prescription.written_date.desc(), Prescription.id.desc())
        ).scalars():
            by_patient.setdefault(rx.patient_id, []).append(rx)
    audit.record_reads(actor, "patient.search", ids, details={"results": len(shown)})
    items = [Result(patient=p, prescriptions=by_patient.get(p.id, []), matched=matched) for p, matched in shown]
    return SearchPage(items, page, len(rows) > PAGE_SIZE, understood, q)
