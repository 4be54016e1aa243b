"""The audit trail: one append-only row per read of a patient record, per write, per refusal.

Events ride in the same transaction as the change they describe, so a rolled-back change
leaves no event — except refusals and failed logins, which must survive the rollback of the
request that was refused (the unit of work re-adds them after rolling back).

In a web request they are written when its transaction commits, not when they are recorded (`_write_at_commit`):
on SQLite the first write of a transaction takes the database's one write lock until the commit, and a page that
recorded its reads before rendering held it through the rendering — every other worker's request waited for it
(the refill page under load: 111 → 143 pages/s). A savepoint rolled back takes the events recorded inside it with
it, as it takes its rows; `pending()` writes them early for a reader of the trail in the same transaction.
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any

import sqlalchemy as sa
from flask import g, has_request_context, request
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session, SessionTransaction

from pharmacy.core.actor import Actor
from pharmacy.core.context import now
from pharmacy.core.db import UTCDateTime
from pharmacy.core.errors import Forbidden
from pharmacy.core.models import AuditEvent
from pharmacy.core.roles import Permission
from pharmacy.extensions import db

_KEEP = "_audit_keep_after_rollback"
_REDO = "_audit_redo_after_rollback"
_PENDING = "pharmacy.audit.pending"  # session.info: (statement, parameters) to write when the transaction commits
_MARKS = "pharmacy.audit.savepoints"  # session.info: {savepoint: how many were pending when it began}
_AT_COMMIT = "_audit_at_commit"  # g: this web request's events are written when its unit of work commits


def write_at_commit() -> None:
    """Called by the unit of work as a web request begins: this request's events wait for its commit."""
    g.setdefault(_AT_COMMIT, True)


def _write_at_commit(statement: Any, parameters: Any) -> None:
    """In a web request, whose unit of work commits at its end (core/uow.py marks it): at that commit. Elsewhere
    (jobs, CLI commands, code calling the services directly): now, in the caller's transaction."""
    if has_request_context() and g.get(_AT_COMMIT):
        session = db.session()
        if not session.in_transaction():
            session.begin()  # so that rolling this request back ends a transaction, which drops these
        session.info.setdefault(_PENDING, []).append((statement, parameters))
    else:
        db.session.execute(statement, parameters)


def pending(session: Session | None = None) -> None:
    """Write the events recorded so far in this transaction now (still uncommitted): for the audit trail's own
    pages, which read it in the transaction that records their view. Not inside a savepoint: those written would
    go with it if it rolled back, and the events recorded before it belong to the transaction."""
    session = session or db.session()
    if session.in_nested_transaction():
        raise RuntimeError("audit.pending() inside a savepoint")
    for statement, parameters in session.info.pop(_PENDING, None) or ():
        session.execute(statement, parameters)


@sa.event.listens_for(Session, "before_commit")
def _before_commit(session: Session) -> None:
    if not session.in_nested_transaction():  # a savepoint released: its events wait for the transaction's commit
        pending(session)


@sa.event.listens_for(Session, "after_transaction_create")
def _savepoint_begins(session: Session, transaction: SessionTransaction) -> None:
    if transaction.nested:
        session.info.setdefault(_MARKS, {})[transaction] = len(session.info.get(_PENDING, ()))


@sa.event.listens_for(Session, "after_soft_rollback")
def _rolled_back(session: Session, previous: SessionTransaction) -> None:
    if previous.nested:  # a savepoint rolled back: only what was recorded inside it goes
        kept = session.info.get(_MARKS, {}).pop(previous, None)
        if kept is not None and _PENDING in session.info:
            del session.info[_PENDING][kept:]


@sa.event.listens_for(Session, "after_transaction_end")
def _transaction_ends(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None:  # committed (all written by then) or rolled back (none of it happened)
        session.info.pop(_PENDING, None)
        session.info.pop(_MARKS, None)


def _ip() -> str | None:
    return request.remote_addr if has_request_context() else None


#: Actions that record a read (of one record, or of the patients a list or export shows). A read happened even
#: when the request then fails — a page re-shown with an error still showed the record — so reads survive the
#: rollback of a refused request, like refusals do.
READ_SUFFIXES = (".view", ".list", ".search", ".queue", ".export")


def is_read(action: str) -> bool:
    return action.endswith(READ_SUFFIXES)


def _values(actor: Actor, action: str, *, patient_id: int | None, entity: tuple[str, int | None] | None,
            outcome: str, details: dict[str, Any] | None) -> dict[str, Any]:
    return dict(
        at=now(),
        actor_user_id=actor.user_id,
        actor_kind=actor.kind,
        action=action,
        outcome=outcome,
        entity_type=entity[0] if entity else None,
        entity_id=entity[1] if entity else None,
        patient_id=patient_id if patient_id is not None else actor.patient_id,
        ip_address=_ip(),
        details=details,
    )


def record(
    actor: Actor,
    action: str,
    *,
    patient_id: int | None = None,
    entity: tuple[str, int | None] | None = None,
    outcome: str = "ok",
    details: dict[str, Any] | None = None,
    survive_rollback: bool = False,
) -> None:
    values = _values(actor, action, patient_id=patient_id, entity=entity, outcome=outcome, details=details)
    _write_at_commit(_insert(), values)
    if survive_rollback or is_read(action):
        keep_after_rollback(AuditEvent, values)


def patient_ids_in(*groups: Iterable[Any]) -> list[int]:
    """The patients that lists of rows show, in order of first appearance: a patient row, anything that carries
    a `patient_id` (an order, a prescription, a request, a report line), or a result row (tuple) of those."""
    found: dict[int, None] = {}
    for group in groups:
        for item in group or ():
            pid = _patient_id_of(item)  # a line that names its patient (a NamedTuple of columns too) is read as one
            if pid is not None:
                found[pid] = None
            elif isinstance(item, tuple | sa.Row):
                for part in item:
                    pid = _patient_id_of(part)
                    if pid is not None:
                        found[pid] = None
    return list(found)


def _patient_id_of(obj: Any) -> int | None:
    if getattr(type(obj), "__tablename__", None) == "patients":
        return obj.id
    pid = getattr(obj, "patient_id", None)
    if isinstance(pid, int) and not isinstance(pid, bool):
        return pid
    patient = obj.__dict__.get("patient") if hasattr(obj, "__dict__") else None  # only if already loaded
    return patient.id if getattr(type(patient), "__tablename__", None) == "patients" else None


def record_reads(actor: Actor, action: str, patient_ids: Iterable[int], *, details: dict[str, Any] | None = None
                 ) -> None:
    """A page or an answer that lists several patients: one read event per patient shown, so "who saw this
    patient" (the audit filter by patient) finds list pages, queues and reports too. One INSERT for all of them;
    a list that shows nobody still leaves one event (without a patient), so the page costs the same either way."""
    base = _values(actor, action, patient_id=None, entity=None, outcome="ok", details=details)
    # The same event for each patient (one time, one address): built once and copied, not rebuilt per patient.
    ids = list(dict.fromkeys(patient_ids))
    rows = [{**base, "patient_id": pid} for pid in ids] or [base]
    if len(ids) > 1 and db.session.get_bind().dialect.name == "postgresql":
        # One statement with the ids as an array: PostgreSQL ran an executemany as one INSERT per patient (Today's
        # 50 rows: 3.5 ms; this: 1.6 ms).
        _write_at_commit(_insert_each_patient(), {**base, "b_ids": ids})
    else:
        # One executemany (SQLite runs it in-process) — on the table, not the ORM bulk path, whose per-row
        # bookkeeping cost a 300-row queue ~5 ms for rows nobody reads back in the request.
        _write_at_commit(_insert(), rows)
    keep_after_rollback(AuditEvent, *rows)


@functools.cache
def _insert() -> sa.Insert:
    """An event's INSERT (one row, or an executemany of rows) on the table, not through the ORM's unit of work,
    whose bookkeeping cost a page with one event ~0.3 ms for a row nobody reads back in the request."""
    return AuditEvent.__table__.insert()


@functools.cache
def _insert_each_patient() -> sa.Insert:
    """INSERT … SELECT one event's values with unnest(:b_ids) as the patient (PostgreSQL), built once."""
    t = AuditEvent.__table__
    same = [c for c in t.c if c.name not in ("id", "patient_id")]
    return t.insert().from_select(
        [*(c.name for c in same), "patient_id"],
        sa.select(*(sa.bindparam(c.name, type_=c.type) for c in same),
                  sa.func.unnest(sa.bindparam("b_ids", type_=postgresql.ARRAY(sa.Integer)))))


def record_reads_from(actor: Actor, action: str, patient_ids: sa.Select[Any], *,
                      details: dict[str, Any] | None = None) -> None:
    """An export that streams more patients than a page holds: one read event per patient, written by one
    INSERT … SELECT over the export's own query of patient ids, before the rows stream out."""
    listed = patient_ids.subquery("listed")
    shown = sa.select(listed.c[0].label("pid")).where(listed.c[0].is_not(None)).distinct().subquery("shown")
    values = sa.select(
        sa.literal(now(), UTCDateTime()), sa.literal(actor.user_id, sa.Integer()), sa.literal(actor.kind),
        sa.literal(action), sa.literal("ok"), sa.literal(_ip(), sa.String()),
        sa.null() if details is None else sa.literal(details, sa.JSON()), shown.c.pid,
    )
    t = AuditEvent.__table__
    _write_at_commit(t.insert().from_select(
        [t.c.at, t.c.actor_user_id, t.c.actor_kind, t.c.action, t.c.outcome, t.c.ip_address, t.c.details,
         t.c.patient_id], values), {})


def keep_after_rollback(model: type, *rows: dict[str, Any]) -> None:
    """Rows (refusals, failed logins, wrong birth dates, a list page's reads) that must be written even if the
    request rolls back."""
    if has_request_context():
        g.setdefault(_KEEP, []).extend((model, values) for values in rows)


def kept_after_rollback() -> list[tuple[type, dict[str, Any]]]:
    return g.pop(_KEEP, []) if has_request_context() else []


def redo_after_rollback(step: Callable[[], object]) -> None:
    """A write (not a new row) to do again after the request rolls back, e.g. a counter raised in place."""
    if has_request_context():
        g.setdefault(_REDO, []).append(step)


def redone_after_rollback() -> list[Callable[[], object]]:
    return g.pop(_REDO, []) if has_request_context() else []


def require(actor: Actor, permission: Permission, *, patient_id: int | None = None, what: str = "") -> None:
    """Refuse (403) and record the refusal unless the actor's role grants the permission."""
    if actor.can(permission):
        return
    record(
        actor,
        f"denied.{permission.value}",
        patient_id=patient_id,
        outcome="denied",
        details={"what": what} if what else None,
        survive_rollback=True,
    )
    role = actor.role.value if actor.role else actor.kind
    raise Forbidden(f"Your role ({role}) may not {what or permission.value.replace('_', ' ')}.")
