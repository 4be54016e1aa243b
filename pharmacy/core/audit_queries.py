"""Reading the audit trail (admins only): filtered, paginated, and exported as CSV in a stream.

Admins run the business, not the pharmacy's clinical work ("minimum necessary"): they see who did what to which
patient id and when, never a clinical value (shown_details).
"""
from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any

import sqlalchemy as sa

from pharmacy.core import audit
from pharmacy.core.actor import Actor
from pharmacy.core.context import settings
from pharmacy.core.models import AuditEvent, User
from pharmacy.core.roles import Permission
from pharmacy.extensions import db

PAGE_SIZE = 100

# The audit page's "What" filter: families of actions by their prefix, in words.
ACTION_GROUPS = [
    ("patient.", "Patient records"), ("prescription.", "Prescriptions"), ("alert.", "Safety alert overrides"),
    ("order.", "Orders and compounding"), ("refill.", "Refill requests"), ("renewal.", "Renewals"),
    ("billing.", "Money: balances"), ("receipt.", "Receipts"), ("price.", "Prices"), ("report.", "Reports"),
    ("outbox.", "Emails"), ("login.", "Sign-ins"), ("user.", "Staff accounts"), ("token.", "API tokens"),
    ("portal.", "Patient portal"), ("erx.", "E-prescriptions"), ("audit.", "Audit trail reads"),
    ("denied.", "Refused actions"),
]


@dataclass(frozen=True)
class AuditFilter:
    patient_id: int | None = None
    user_id: int | None = None
    action: str | None = None
    outcome: str | None = None
    since: date | None = None
    until: date | None = None


def _local_start(d: date) -> datetime:
    return datetime.combine(d, time(0), tzinfo=settings().timezone)


def _query(f: AuditFilter) -> sa.Select:
    stmt = sa.select(AuditEvent, User.email).outerjoin(User, User.id == AuditEvent.actor_user_id)
    if f.patient_id is not None:
        stmt = stmt.where(AuditEvent.patient_id == f.patient_id)
    if f.user_id is not None:
        stmt = stmt.where(AuditEvent.actor_user_id == f.user_id)
    if f.action:
        stmt = stmt.where(AuditEvent.action.startswith(f.action, autoescape=True))
    if f.outcome:
        stmt = stmt.where(AuditEvent.outcome == f.outcome)
    if f.since:
        stmt = stmt.where(AuditEvent.at >= _local_start(f.since))
    if f.until:
        stmt = stmt.where(AuditEvent.at < _local_start(f.until + timedelta(days=1)))
    return stmt


def search(actor: Actor, f: AuditFilter, *, page: int = 1) -> tuple[list[tuple[AuditEvent, str | None]], bool]:
    audit.require(actor, Permission.VIEW_AUDIT, what="read the audit trail")
    audit.pending()  # the trail as it stands, this request's own events included
    page = max(page, 1)
    rows = db.session.execute(
        _query(f).order_by(AuditEvent.at.desc(), AuditEvent.id.desc())
        .offset((page - 1) * PAGE_SIZE).limit(PAGE_SIZE + 1)
    ).all()
    audit.record(actor, "audit.view", details={"page": page})
    return [(r[0], r[1]) for r in rows[:PAGE_SIZE]], len(rows) > PAGE_SIZE


CSV_COLUMNS = ["id", "at_utc", "actor_kind", "actor_user_id", "actor_email", "action", "outcome", "entity_type",
               "entity_id", "patient_id", "ip_address", "details"]


def export_csv(actor: Actor, f: AuditFilter) -> Iterator[str]:
    """The whole filtered trail as CSV, streamed in batches (the export itself is audited)."""
    audit.require(actor, Permission.VIEW_AUDIT, what="export the audit trail")
    audit.record(actor, "audit.export")
    audit.pending()  # the export lists itself
    stmt = _query(f).order_by(AuditEvent.id).execution_options(yield_per=1000)

    def generate() -> Iterator[str]:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(CSV_COLUMNS)
        for event, email in db.session.execute(stmt):
            writer.writerow([
                event.id, event.at.isoformat(), event.actor_kind, event.actor_user_id or "", email or "",
                event.action, event.outcome, event.entity_type or "", event.entity_id or "", event.patient_id or "",
                event.ip_address or "", "" if event.details is None else _compact(shown_details(event) or {}),
            ])
            if buffer.tell() > 64_000:
                yield buffer.getvalue()
                buffer.seek(0)
                buffer.truncate()
        yield buffer.getvalue()

    return generate()


#: Keys whose values say how the work went (workflow words, counts, ids), never what is wrong with a patient.
#: In an event about a patient every other key keeps its name and loses its value: an alert code, a side
#: effect, a yield, a lot are clinical or identify a batch given to that patient. Default deny: a key added
#: later is withheld until someone decides it is operational and adds it here.
OPERATIONAL_KEYS = frozenset({
    "attempt", "attempts", "changed", "content", "endpoint", "fields", "fill", "from", "kind", "method", "new",
    "order", "page", "prescription", "replaces", "report", "results", "source", "state", "to", "via", "what", "year",
})
WITHHELD = "[withheld]"


def shown_details(event: AuditEvent) -> dict[str, Any] | None:
    """The details of an event as the audit page and its CSV show them: for an event about a patient, ids and
    field names only — a value stays only under an operational key, or when it is a number (an id, a count)."""
    details = event.details
    if not isinstance(details, dict) or event.patient_id is None:
        return details
    return {key: value if key in OPERATIONAL_KEYS or _is_number(value) else WITHHELD for key, value in details.items()}


def _is_number(value: Any) -> bool:
    if isinstance(value, list):
        return all(_is_number(v) for v in value)
    return value is None or (isinstance(value, int) and not isinstance(value, bool))


def _compact(details: dict) -> str:
    return json.dumps(details, sort_keys=True, separators=(",", ":"))
