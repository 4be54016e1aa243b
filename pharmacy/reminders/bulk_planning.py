"""A full re-plan of every active prescription's latest fill, set-based: seconds for a million fills.

`planning.plan_for_order` re-plans one fill with about fifteen statements (its facts, the latest fill,
two "blocked?" probes, refills used, its outbox rows, one savepoint + insert + update per new row).
That is right for one fill and far too slow for all of them (a settings change — reminder hour, offsets,
lead time — asks for a full re-plan). `replan_all` gives the same result for every fill, batch by batch:

* one keyset-paged read of the active prescriptions (bounded memory, safe to commit between batches);
* per batch, a fixed number of statements whatever its size: the facts of the latest dispensed fills,
  refills used, open orders and open requests (grouped over the batch's id range), and the existing
  reminder rows of those fills;
* the plan itself is the same pure `planning.plan_messages`, fill by fill, in memory;
* the writes are set-based: one UPDATE cancelling stale pending rows; UPDATE … FROM (VALUES …) for moved
  due times and revived rows (a thousand rows a statement; executemany on SQLite); one INSERT … ON CONFLICT
  (dedupe_key) DO NOTHING … RETURNING for new rows (a concurrent planner can never make a second row), one executemany UPDATE
  giving them their deterministic Message-IDs; and the renewal tasks planning asks for.

Blocked fills (a refill already ordered or requested) are left alone, exactly as `plan_for_order`
leaves them. tests/integration/test_bulk_planning.py checks the outcome row for row against
`plan_for_order` on the same data.
"""
from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from datetime import date
from typing import Any

import sqlalchemy as sa

from pharmacy.compounding.models import Order
from pharmacy.core import signals, uow
from pharmacy.core.context import now, today
from pharmacy.core.db import IN_CHUNK, UTCDateTime, chunks, upsert_insert
from pharmacy.extensions import db
from pharmacy.prescriptions.models import Prescription
from pharmacy.prescriptions.rules import RxStatus
from pharmacy.refills.models import OPEN_REQUEST_STATES, RefillRequest
from pharmacy.reminders import outbox, planning, rules
from pharmacy.reminders.models import OutboxMessage
from pharmacy.reminders.rules import MessageKind, OutboxState
from pharmacy.supply import reads

VALUES_CHUNK = 1000  # rows per UPDATE … FROM (VALUES …): 2,000 parameters, inside every database's limits


@dataclass
class ReplanReport:
    prescriptions: int = 0
    fills: int = 0
    blocked: int = 0
    added: int = 0
    moved: int = 0
    revived: int = 0
    cancelled: int = 0
    renewal_tasks: int = 0

    def add(self, other: ReplanReport) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def line(self) -> str:
        return ", ".join(f"{f.name.replace('_', ' ')} {getattr(self, f.name)}" for f in fields(self))


def active_prescriptions() -> int:
    """How many prescriptions a full re-plan walks (for a progress bar)."""
    return int(db.session.execute(
        sa.select(sa.func.count()).select_from(Prescription).where(Prescription.status == RxStatus.ACTIVE)
    ).scalar_one())


def replan_all(*, batch_size: int = 5000, day: date | None = None, commit: bool = True,
               on_progress: Callable[[int], None] = lambda _n: None) -> ReplanReport:
    """Re-plan the reminders of every active prescription's latest dispensed fill.

    Commits after each batch when `commit` is true (a CLI command or job is the unit of work; a batch
    is consistent on its own, so an interrupted run leaves every finished batch re-planned).
    `on_progress(n)` is called with the number of prescriptions done in each batch.
    """
    day = day or today()
    report = ReplanReport()
    after = 0
    while True:
        ids = list(db.session.execute(
            sa.select(Prescription.id).where(Prescription.status == RxStatus.ACTIVE, Prescription.id > after)
            .order_by(Prescription.id).limit(batch_size)
        ).scalars())
        if not ids:
            break
        report.add(_replan_range(after, ids[-1], day))
        report.prescriptions += len(ids)
        after = ids[-1]
        if commit:
            uow.commit_step()
        on_progress(len(ids))
    return report


def _replan_range(lo: int, hi: int, day: date) -> ReplanReport:
    """Prescriptions with lo < id <= hi: read in a fixed number of statements, plan in memory, write in sets."""
    report = ReplanReport()
    facts = _unblocked_facts(lo, hi, report)
    if not facts:
        return report
    changes = _diff(facts, _existing_rows(facts), day)
    table = OutboxMessage.__table__
    for chunk in chunks(changes.cancel, IN_CHUNK):
        report.cancelled += _rowcount(db.session.execute(
            sa.update(table).where(table.c.id.in_(chunk), table.c.state == OutboxState.PENDING)
            .values(state=OutboxState.CANCELLED, cancelled_reason="re-planned")))
    report.moved, report.revived = _move_and_revive(changes.move, changes.revive)
    report.added = _insert_new(changes.new)
    if changes.renewals:
        answers = signals.renewals_needed.send(None, wanted=changes.renewals)
        report.renewal_tasks = sum(int(n or 0) for _receiver, n in answers)
    return report


def _unblocked_facts(lo: int, hi: int, report: ReplanReport) -> list[planning.FillFacts]:
    """The range's supply facts, less prescriptions with a refill ordered or requested (left alone, as
    `planning.replan_prescription` leaves them)."""
    rows = db.session.execute(planning.facts_query().where(Prescription.id > lo, Prescription.id <= hi)).all()
    if not rows:
        return []
    in_range = sa.and_(Order.prescription_id > lo, Order.prescription_id <= hi)
    blocked = set(db.session.execute(
        sa.select(Order.prescription_id).where(in_range, Order.state.in_(reads.OPEN_ORDER_STATES)).distinct()
    ).scalars())
    blocked |= set(db.session.execute(
        sa.select(RefillRequest.prescription_id).where(
            RefillRequest.prescription_id > lo, RefillRequest.prescription_id <= hi,
            RefillRequest.state.in_(OPEN_REQUEST_STATES)).distinct()
    ).scalars())
    facts = [f for f in (planning.FillFacts(*row) for row in rows) if f.prescription_id not in blocked]
    report.blocked += len(rows) - len(facts)
    report.fills = len(facts)
    return facts


def _existing_rows(facts: list[planning.FillFacts]) -> dict[int, list[Any]]:
    """The reminder rows already written for these fills, by order id."""
    existing: dict[int, list[Any]] = {}
    for chunk in chunks([f.order_id for f in facts], IN_CHUNK):
        for r in db.session.execute(
            sa.select(OutboxMessage.id, OutboxMessage.order_id, OutboxMessage.dedupe_key, OutboxMessage.state,
                      OutboxMessage.due_at, OutboxMessage.cancelled_reason)
            .where(OutboxMessage.order_id.in_(chunk), OutboxMessage.kind.in_(list(planning.REMINDER_KINDS)))
        ).all():
            existing.setdefault(r.order_id, []).append(r)
    return existing


@dataclass
class _Changes:
    cancel: list[int] = field(default_factory=list)
    move: list[dict[str, Any]] = field(default_factory=list)
    revive: list[dict[str, Any]] = field(default_factory=list)
    new: list[dict[str, Any]] = field(default_factory=list)
    renewals: dict[int, tuple[int, int]] = field(default_factory=dict)


def _diff(facts: list[planning.FillFacts], existing: dict[int, list[Any]], day: date) -> _Changes:
    """The pure plan of each fill (planning.plan_messages) against its rows: what to cancel, move, revive, add."""
    changes = _Changes()
    t = now()
    domain = outbox.mail_domain()
    for f in facts:
        planned = planning.plan_messages(f, day=day)
        keys = {f.dedupe_key(p.key): p for p in planned}
        mine = existing.get(f.order_id, [])
        by_key = {r.dedupe_key: r for r in mine}
        changes.cancel += [r.id for r in mine if r.state == OutboxState.PENDING and r.dedupe_key not in keys]
        for key, p in keys.items():
            r = by_key.get(key)
            if r is None:
                changes.new.append({
                    "dedupe_key": key, "kind": p.kind, "patient_id": f.patient_id, "prescription_id": f.prescription_id,
                    "order_id": f.order_id, "due_at": p.send_at, "next_attempt_at": p.send_at,
                    "state": OutboxState.PENDING, "attempts": 0, "created_at": t,
                    "message_id": f"<pending.{uuid.uuid4().hex}@{domain}>",
                })
            elif r.state == OutboxState.PENDING and r.due_at != p.send_at:
                changes.move.append({"b_id": r.id, "b_due": p.send_at})
            elif r.state == OutboxState.CANCELLED and r.cancelled_reason == "re-planned":
                changes.revive.append({"b_id": r.id, "b_due": p.send_at})
        if any(p.kind == MessageKind.RENEWAL_NEEDED for p in planned):
            changes.renewals[f.prescription_id] = (f.prescriber_id, f.patient_id)
    return changes


def _move_and_revive(move: list[dict[str, Any]], revive: list[dict[str, Any]]) -> tuple[int, int]:
    """New due times for moved rows, pending again for revived ones: UPDATE … FROM (VALUES …) on PostgreSQL, a
    thousand rows a statement (SQLite has no column list for a VALUES alias: an executemany costs the same there)."""
    table = OutboxMessage.__table__
    pending = table.c.state == OutboxState.PENDING
    revivable = sa.and_(table.c.state == OutboxState.CANCELLED, table.c.cancelled_reason == "re-planned")
    moved = revived = 0
    if db.session.get_bind().dialect.name == "postgresql":
        for start in range(0, len(move), VALUES_CHUNK):
            v = _values(move[start:start + VALUES_CHUNK])
            moved += _rowcount(db.session.execute(
                sa.update(table).where(table.c.id == v.c.b_id, pending)
                .values(due_at=v.c.b_due, next_attempt_at=v.c.b_due)))
        for start in range(0, len(revive), VALUES_CHUNK):
            v = _values(revive[start:start + VALUES_CHUNK])
            revived += _rowcount(db.session.execute(
                sa.update(table).where(table.c.id == v.c.b_id, revivable)
                .values(state=OutboxState.PENDING, cancelled_reason=None, due_at=v.c.b_due,
                        next_attempt_at=v.c.b_due)))
        return moved, revived
    if move:
        moved = _rowcount(db.session.execute(
            sa.update(table).where(table.c.id == sa.bindparam("b_id"), pending)
            .values(due_at=sa.bindparam("b_due"), next_attempt_at=sa.bindparam("b_due")), move))
    if revive:
        revived = _rowcount(db.session.execute(
            sa.update(table).where(table.c.id == sa.bindparam("b_id"), revivable)
            .values(state=OutboxState.PENDING, cancelled_reason=None, due_at=sa.bindparam("b_due"),
                    next_attempt_at=sa.bindparam("b_due")), revive))
    return moved, revived


def _insert_new(new: list[dict[str, Any]]) -> int:
    """One INSERT … ON CONFLICT (dedupe_key) DO NOTHING … RETURNING (a concurrent planner never makes a second row),
    then the new rows' deterministic Message-IDs."""
    if not new:
        return 0
    table = OutboxMessage.__table__
    inserted = db.session.execute(
        upsert_insert(table, db.session.get_bind().dialect.name).on_conflict_do_nothing(index_elements=["dedupe_key"])
        .returning(table.c.id, table.c.dedupe_key), new).all()
    if inserted:
        domain = outbox.mail_domain()
        db.session.execute(
            sa.update(table).where(table.c.id == sa.bindparam("b_id")).values(message_id=sa.bindparam("b_mid")),
            [{"b_id": i, "b_mid": rules.message_id(i, key, domain)} for i, key in inserted])
    return len(inserted)


def _values(rows: list[dict[str, Any]]) -> Any:
    """(id, new due time) pairs as a VALUES list, so moving thousands of rows is one UPDATE … FROM, not thousands."""
    return sa.values(sa.column("b_id", sa.Integer), sa.column("b_due", UTCDateTime()), name="moved").data(
        [(r["b_id"], r["b_due"]) for r in rows])


def _rowcount(result: Any) -> int:
    return int(result.rowcount or 0) if result.rowcount is not None and result.rowcount >= 0 else 0
