"""Read models for the home page and search: a bounded number of queries whatever the data size."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import joinedload

from pharmacy.compounding.models import Order
from pharmacy.core import audit
from pharmacy.core.actor import Actor
from pharmacy.core.roles import Permission
from pharmacy.extensions import db
from pharmacy.patients.models import Patient
from pharmacy.prescriptions.models import Prescription

PAGE_SIZE = 25


@dataclass
class Page:
    items: list[Any]
    page: int
    has_next: bool
    total_hint: str = ""


@dataclass
class TodayView:
    patients: list[Patient] = field(default_factory=list)
    prescriptions_by_patient: dict[int, list[Prescription]] = field(default_factory=dict)


def today_view(actor: Actor) -> TodayView:
    view = TodayView()
    if not actor.can(Permission.VIEW_CLINICAL):
        return view
    view.patients = list(db.session.execute(sa.select(Patient).order_by(Patient.name_key).limit(50)).scalars())
    ids = [p.id for p in view.patients]
    if ids:
        rxs = db.session.execute(
            sa.select(Prescription).where(Prescription.patient_id.in_(ids)).options(joinedload(Prescription.formula))
            .order_by(Prescription.written_date.desc())
        ).scalars()
        for rx in rxs:
            view.prescriptions_by_patient.setdefault(rx.patient_id, []).append(rx)
    return view


_DOB = re.compile(r"^(\d{4})-(\d{2})-(\d{2})$|^(\d{1,2})/(\d{1,2})/(\d{4})$")


def _parse_dob(q: str) -> date | None:
    m = _DOB.match(q)
    if not m:
        return None
    try:
        if m.group(1):
            return date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
        return date(int(m.group(6)), int(m.group(4)), int(m.group(5)))
    except ValueError:
        return None


def name_key(last: str, first: str) -> str:
    return f"{last.strip()}, {first.strip()}".lower()


def search(actor: Actor, q: str, *, page: int = 1) -> Page:
    """Patients by name prefix ("smith" or "smith, jo"), date of birth, Rx number or order lot."""
    audit.require(actor, Permission.VIEW_CLINICAL, what="search patient records")
    q = q.strip()
    page = max(page, 1)
    if not q:
        return Page([], page, False)
    stmt = sa.select(Patient)
    dob = _parse_dob(q)
    if dob:
        stmt = stmt.where(Patient.date_of_birth == dob)
    elif q.upper().startswith("RX"):
        stmt = stmt.join(Prescription, Prescription.patient_id == Patient.id).where(
            Prescription.rx_number == q.upper()
        )
    elif q.upper().startswith("L") and any(ch.isdigit() for ch in q):
        stmt = stmt.join(Order, Order.patient_id == Patient.id).where(Order.lot_number == q.upper())
    else:
        prefix = q.lower()
        # A prefix range on the lower-cased key: served by its B-tree index on SQLite and PostgreSQL.
        stmt = stmt.where(Patient.name_key >= prefix, Patient.name_key < prefix + "\uffff")
    rows = list(
        db.session.execute(
            stmt.distinct().order_by(Patient.name_key, Patient.id).offset((page - 1) * PAGE_SIZE).limit(PAGE_SIZE + 1)
        ).scalars()
    )
    audit.record(actor, "patient.search", details={"results": min(len(rows), PAGE_SIZE)})
    return Page(rows[:PAGE_SIZE], page, len(rows) > PAGE_SIZE)
