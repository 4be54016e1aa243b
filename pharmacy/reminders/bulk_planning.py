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
from dataclasses import dataclass, fields
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
    rows = db.session.execute(
        planning.facts_query().where(Prescription.id > lo, Prescription.id <= hi)
    ).all()
    if not rows:
        return report
    in_range = sa.and_(Order.prescription_id > lo, Order.prescription_id <= hi)
    blocked = set(db.session.execute(
        sa.select(Order.prescription_id).where(in_range, Order.state.in_(reads.OPEN_ORDER_STATES)).distinct()
    ).scalars())
    blocked |= set(db.session.execute(
        sa.select(RefillRequest.prescription_id).where(
            RefillRequest.prescription_id > lo, RefillRequest.prescription_id <= hi,
            RefillRequest.state.in_(OPEN_REQUEST_STATES)).distinct()
    ).scalars())

    facts: list[planning.FillFacts] = []
    for row in rows:
        f = planning.FillFacts(*row)
        if f.prescription_id in blocked:
            report.blocked += 1
            continue
        facts.append(f)
    report.fills = len(facts)
    if not facts:
        return report

    existing: dict[int, list[Any]] = {}
    for chunk in chunks([f.order_id for f in facts], IN_CHUNK):
        for r in db.session.execute(
            sa.select(OutboxMessage.id, OutboxMessage.order_id, OutboxMessage.dedupe_key, OutboxMessage.state,
                      OutboxMessage.due_at, OutboxMessage.cancelled_reason)
            .where(OutboxMessage.order_id.in_(chunk), OutboxMessage.kind.in_(list(planning.REMINDER_KINDS)))
        ).all():
            existing.setdefault(r.order_id, []).append(r)

    cancel: list[int] = []
    move: list[dict[str, Any]] = []
    revive: list[dict[str, Any]] = []
    new: list[dict[str, Any]] = []
    renewals: dict[int, tuple[int, int]] = {}
    t = now()
    domain = outbox.mail_domain()
    for f in facts:
        planned = planning.plan_messages(f, day=day)
        keys = {f"fill:{f.order_id}:{p.key}": p for p in planned}
        mine = existing.get(f.order_id, [])
        by_key = {r.dedupe_key: r for r in mine}
        for r in mine:
            if r.state == OutboxState.PENDING and r.dedupe_key not in keys:
                cancel.append(r.id)
        for key, p in keys.items():
            r = by_key.get(key)
            if r is None:
                new.append({
                    "dedupe_key": key, "kind": p.kind, "patient_id": f.patient_id, "prescription_id": f.prescription_id,
                    "order_id": f.order_id, "due_at": p.send_at, "next_attempt_at": p.send_at,
                    "state": OutboxState.PENDING, "attempts": 0, "created_at": t,
                    "message_id": f"<pending.{uuid.uuid4().hex}@{domain}>",
                })
            elif r.state == OutboxState.PENDING and r.due_at != p.send_at:
                move.append({"b_id": r.id, "b_due": p.send_at})
            elif r.state == OutboxState.CANCELLED and r.cancelled_reason == "re-planned":
                revive.append({"b_id": r.id, "b_due": p.send_at})
        if any(p.kind == MessageKind.RENEWAL_NEEDED for p in planned):
            renewals[f.prescription_id] = (f.prescriber_id, f.patient_id)

    table = OutboxMessage.__table__
    for chunk in chunks(cancel, IN_CHUNK):
        report.cancelled += _rowcount(db.session.execute(
            sa.update(table).where(table.c.id.in_(chunk), table.c.state == OutboxState.PENDING)
            .values(state=OutboxState.CANCELLED, cancelled_reason="re-planned")))
    if db.session.get_bind().dialect.name == "postgresql":
        # UPDATE … FROM (VALUES …): a thousand rows a statement (SQLite has no column list for a VALUES alias).
        for start in range(0, len(move), VALUES_CHUNK):
            v = _values(move[start:start + VALUES_CHUNK])
            report.moved += _rowcount(db.session.execute(
                sa.update(table).where(table.c.id == v.c.b_id, table.c.state == OutboxState.PENDING)
                .values(due_at=v.c.b_due, next_attempt_at=v.c.b_due)))
        for start in range(0, len(revive), VALUES_CHUNK):
            v = _values(revive[start:start + VALUES_CHUNK])
            report.revived += _rowcount(db.session.execute(
                sa.update(table).where(table.c.id == v.c.b_id, table.c.state == OutboxState.CANCELLED,
                                       table.c.cancelled_reason == "re-planned")
                .values(state=OutboxState.PENDING, cancelled_reason=None, due_at=v.c.b_due,
                        next_attempt_at=v.c.b_due)))
    else:  # SQLite runs in-process: an executemany of one-row UPDATEs costs about the same
        if move:
            report.moved = _rowcount(db.session.execute(
                sa.update(table).where(table.c.id == sa.bindparam("b_id"), table.c.state == OutboxState.PENDING)
                .values(due_at=sa.bindparam("b_due"), next_attempt_at=sa.bindparam("b_due")), move))
        if revive:
            report.revived = _rowcount(db.session.execute(
                sa.update(table).where(table.c.id == sa.bindparam("b_id"), table.c.state == OutboxState.CANCELLED,
                                       table.c.cancelled_reason == "re-planned")
                .values(state=OutboxState.PENDING, cancelled_reason=None, due_at=sa.bindparam("b_due"),
                        next_attempt_at=sa.bindparam("b_due")), revive))
    if new:
        inserted = db.session.execute(
            upsert_insert(table, db.session.get_bind().dialect.name).on_conflict_do_nothing(index_elements=["dedupe_key"])
            .returning(table.c.id, table.c.dedupe_key), new).all()
        if inserted:
            db.session.execute(
                sa.update(table).where(table.c.id == sa.bindparam("b_id")).values(message_id=sa.bindparam("b_mid")),
                [{"b_id": i, "b_mid": rules.message_id(i, key, domain)} for i, key in inserted])
        report.added = len(inserted)
    if renewals:
        answers = signals.renewals_needed.send(None, wanted=renewals)
        report.renewal_tasks = sum(int(n or 0) for _receiver, n in answers)
    return report


def _values(rows: list[dict[str, Any]]) -> Any:
    """(id, new due time) pairs as a VALUES list, so moving thousands of rows is one UPDATE … FROM, not thousands."""
    return sa.values(sa.column("b_id", sa.Integer), sa.column("b_due", UTCDateTime()), name="moved").data(
        [(r["b_id"], r["b_due"]) for r in rows])


def _rowcount(result: Any) -> int:
    return int(result.rowcount or 0) if result.rowcount is not None and result.rowcount >= 0 else 0
