"""Reading the audit trail (admins only): filtered, paginated, and exported as CSV in a stream."""
from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

import sqlalchemy as sa

from pharmacy.core import audit
from pharmacy.core.actor import Actor
from pharmacy.core.context import settings
from pharmacy.core.models import AuditEvent, User
from pharmacy.core.roles import Permission
from pharmacy.extensions import db

PAGE_SIZE = 100


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
    stmt = _query(f).order_by(AuditEvent.id).execution_options(yield_per=1000)

    def generate() -> Iterator[str]:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(CSV_COLUMNS)
        for event, email in db.session.execute(stmt):
            writer.writerow([
                event.id, event.at.isoformat(), event.actor_kind, event.actor_user_id or "", email or "",
                event.action, event.outcome, event.entity_type or "", event.entity_id or "", event.patient_id or "",
                event.ip_address or "", "" if event.details is None else _compact(event.details),
            ])
            if buffer.tell() > 64_000:
                yield buffer.getvalue()
                buffer.seek(0)
                buffer.truncate()
        yield buffer.getvalue()

    return generate()


def _compact(details: dict) -> str:

    return json.dumps(details, sort_keys=True, separators=(",", ":"))
