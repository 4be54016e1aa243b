"""Running totals behind the money reports, kept in the same transaction as the orders and payments they sum.

Why: at chain scale (100,000 patients, ~1,000,000 fills) the Money page summed every payment and fill on each view
and took seconds. The reports (billing/reports.py) now read small tables instead, each bounded by the report's
period: a balance per patient (PatientBalance), revenue per month (RevenueMonth), fills per month and form
(FillMonth, with PatientLastFill for "how many patients"), and each patient's fills from every possible report
start on (CostWindow) for the average monthly cost, with each start's count and sum of those (CostWindowTotal).

Where they are written: a session flush hook, so every change of an order or a payment made through the ORM keeps
them, whoever makes it — a payment or refund (services._save), an order becoming a charge (released: ready), held,
resumed, dispensed (its shipping fee and days may change then), cancelled; histories that tests and the seeders
insert directly — in the flush that writes the change, never later. Bulk loads that bypass the ORM (the chain-scale
generator's COPY) call rebuild() at their end. The increments are atomic upserts (INSERT … ON CONFLICT DO UPDATE
SET x = x + excluded.x), so two transactions never lose each other's amounts; the one read-modify-write (a patient's
latest month of a form) locks its row first.

recomputed(): the one definition of every total from the rows, in SQL — used by rebuild() (`flask reports
rebuild-totals`, the generator) and by verify() (`flask reports verify`).
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event, orm

from pharmacy.billing import rules
from pharmacy.billing.models import (
    CostWindow,
    CostWindowTotal,
    FillMonth,
    PatientBalance,
    PatientLastFill,
    Payment,
    RevenueMonth,
)
from pharmacy.billing.rules import PaymentKind
from pharmacy.billing.services import charged_clause, is_charged_state, local_date_of, local_day_start
from pharmacy.compounding.models import Formula, Order
from pharmacy.compounding.rules import OrderState
from pharmacy.core import audit
from pharmacy.core.actor import Actor
from pharmacy.core.context import today
from pharmacy.core.db import UTCDateTime, upsert_insert
from pharmacy.extensions import db
from pharmacy.prescriptions.models import Prescription
from pharmacy.prescriptions.rules import Form

ORDER_FIELDS = ("state", "held_from", "price_cents", "shipping_cents", "days_supply", "dispensed_on", "patient_id",
                "prescription_id")
PAYMENT_FIELDS = ("kind", "amount_cents", "received_at", "patient_id")
_PENDING = "billing_totals_pending"


# ---------------------------------------------------------------------------------------------
# What one order or payment adds to the totals
# ---------------------------------------------------------------------------------------------


@dataclass
class Changes:
    """Signed amounts to add, gathered over one flush and written in one statement per table."""

    balances: defaultdict[int, list[int]] = field(default_factory=lambda: defaultdict(lambda: [0, 0, 0]))
    revenue: defaultdict[date, list[int]] = field(default_factory=lambda: defaultdict(lambda: [0, 0]))
    fills: defaultdict[tuple[date, int], list[int]] = field(default_factory=lambda: defaultdict(lambda: [0, 0, 0]))
    windows: defaultdict[tuple[date, int], list[int]] = field(default_factory=lambda: defaultdict(lambda: [0, 0, 0]))
    latest: set[tuple[int, int]] = field(default_factory=set)  # (patient, prescription) whose latest fill may move

    def order(self, v: Mapping[str, Any], sign: int) -> None:
        price, shipping, days = int(v["price_cents"] or 0), int(v["shipping_cents"] or 0), int(v["days_supply"] or 0)
        if is_charged_state(v["state"], v["held_from"]):
            self.balances[v["patient_id"]][0] += sign * (price + shipping)
        if v["state"] == OrderState.DISPENSED and v["dispensed_on"] is not None:
            month = rules.month_of(v["dispensed_on"])
            _add(self.fills[(month, v["prescription_id"])], sign, (1, price, days))
            for start in rules.window_starts(month):
                _add(self.windows[(start, v["patient_id"])], sign, (1, price, days))
            self.latest.add((v["patient_id"], v["prescription_id"]))

    def payment(self, v: Mapping[str, Any], sign: int) -> None:
        amount = int(v["amount_cents"] or 0)
        refund = PaymentKind(v["kind"] or PaymentKind.PAYMENT) == PaymentKind.REFUND  # the column's default: payment
        self.balances[v["patient_id"]][2 if refund else 1] += sign * amount
        self.revenue[rules.month_of(local_date_of(v["received_at"]))][1 if refund else 0] += sign * amount

    def empty(self) -> bool:
        return not (any(any(x) for x in self.balances.values()) or any(any(x) for x in self.revenue.values())
                    or any(any(x) for x in self.fills.values()) or self.latest)


def _add(totals: list[int], sign: int, amounts: tuple[int, ...]) -> None:
    for i, amount in enumerate(amounts):
        totals[i] += sign * amount


# ---------------------------------------------------------------------------------------------
# The flush hook: old values before the flush, new ones after it, the difference written in the same transaction
# ---------------------------------------------------------------------------------------------


def install() -> None:
    """Connect the hook to the application's session (once, however many apps are created)."""
    if not event.contains(db.session, "before_flush", _before_flush):
        event.listen(db.session, "before_flush", _before_flush)
        event.listen(db.session, "after_flush", _after_flush)


def _fields(obj: object) -> tuple[str, ...]:
    return ORDER_FIELDS if isinstance(obj, Order) else PAYMENT_FIELDS


def _before_flush(session: orm.Session, _context: Any, _instances: Any) -> None:
    """What each order or payment about to change counted for before (None for a new one)."""
    pending: list[tuple[object, dict[str, Any] | None]] = []
    unknown: dict[type, list[tuple[object, int]]] = defaultdict(list)
    for obj in session.new:
        if isinstance(obj, Order | Payment):
            pending.append((obj, None))
    for obj in list(session.dirty) + list(session.deleted):
        if not isinstance(obj, Order | Payment):
            continue
        state = sa.inspect(obj)
        if obj not in session.deleted and not any(state.attrs[f].history.has_changes() for f in _fields(obj)):
            continue
        old: dict[str, Any] = {}
        for f in _fields(obj):
            history = state.attrs[f].history
            if history.deleted:
                old[f] = history.deleted[0]
            elif history.unchanged:
                old[f] = history.unchanged[0]
            else:  # set without its old value ever loaded (or never loaded): the database still has it
                old = {}
                unknown[type(obj)].append((obj, len(pending)))
                break
        pending.append((obj, old))
    for model, items in unknown.items():
        table = model.__table__
        ids = [state_id for state_id in (sa.inspect(o).identity[0] for o, _ in items)]
        found = {row.id: row._mapping for row in session.connection().execute(
            sa.select(table.c.id, *(getattr(model, f) for f in _fields(items[0][0]))).where(table.c.id.in_(ids)))}
        for obj, index in items:
            row = found[sa.inspect(obj).identity[0]]
            pending[index] = (obj, {f: row[f] for f in _fields(obj)})
    session.info[_PENDING] = pending


def _after_flush(session: orm.Session, _context: Any) -> None:
    pending = session.info.pop(_PENDING, [])
    if not pending:
        return
    changes = Changes()
    for obj, old in pending:
        new = None if (obj in session.deleted or sa.inspect(obj).was_deleted) else {f: getattr(obj, f) for f in _fields(obj)}
        if old == new:
            continue
        add = changes.order if isinstance(obj, Order) else changes.payment
        if old is not None:
            add(old, -1)
        if new is not None:
            add(new, +1)
    if not changes.empty():
        apply(session.connection(), changes)


# ---------------------------------------------------------------------------------------------
# Writing the differences
# ---------------------------------------------------------------------------------------------


def apply(conn: sa.Connection, changes: Changes) -> None:
    """Add the changes to the totals (atomic upserts), in a fixed table order."""
    balances = [{"patient_id": pid, "charged_cents": c, "paid_cents": p, "refunded_cents": r, "owed_cents": c - p + r}
                for pid, (c, p, r) in sorted(changes.balances.items()) if c or p or r]
    _upsert(conn, PatientBalance.__table__, balances, ["patient_id"])
    revenue = [{"month": m, "paid_cents": p, "refunded_cents": r} for m, (p, r) in sorted(changes.revenue.items()) if p or r]
    _upsert(conn, RevenueMonth.__table__, revenue, ["month"])
    forms = _forms(conn, {rx for _, rx in changes.fills} | {rx for _, rx in changes.latest})
    by_form: defaultdict[tuple[date, Form], list[int]] = defaultdict(lambda: [0, 0, 0])
    for (month, rx), amounts in changes.fills.items():
        _add(by_form[(month, forms[rx])], 1, tuple(amounts))
    fills = [{"month": m, "form": f, "fills": n, "price_cents": p, "days_supply": d, "patients_last": 0}
             for (m, f), (n, p, d) in sorted(by_form.items()) if n or p or d]
    _upsert(conn, FillMonth.__table__, fills, ["month", "form"])
    _windows(conn, changes.windows)
    for pid, form in sorted({(pid, forms[rx]) for pid, rx in changes.latest}):
        _latest(conn, pid, form)


def _upsert(conn: sa.Connection, table: sa.Table, rows: list[dict[str, Any]], keys: list[str],
            extra: Mapping[str, Any] | None = None) -> None:
    """INSERT the rows, or add each amount to the row already there (both dialects: ON CONFLICT DO UPDATE).

    One statement with its values bound per row (executemany): its compiled form is cached, where a multi-row
    VALUES was compiled again for every payment and dispensing (most of the cost of keeping the totals).
    """
    if not rows:
        return
    insert = upsert_insert(table, conn.dialect.name)
    amounts = [c for c in rows[0] if c not in keys and c not in (extra or {})]
    set_ = {c: table.c[c] + insert.excluded[c] for c in amounts}
    set_.update({k: v(table.c, insert.excluded) for k, v in (extra or {}).items()})
    conn.execute(insert.on_conflict_do_update(index_elements=keys, set_=set_), rows)


def _monthly(price: Any, days: Any) -> Any:
    """rules.monthly_equivalent_cents in integer SQL (price × 30 / days, half-up); 0 for a row about to go."""
    return sa.case((days > 0, (60 * price + days) // (2 * days)), else_=0)


def _windows(conn: sa.Connection, windows: Mapping[tuple[date, int], list[int]]) -> None:
    """Add the fills to the patients' cost windows, and move each start's count and sum (CostWindowTotal) by what
    its windows did. The windows are locked first (the missing ones created empty), so the totals move by exactly
    the difference their rows make, whoever else dispenses at the same time."""
    rows = [{"start_month": s, "patient_id": pid, "fills": n, "price_cents": p, "days_supply": d,
             "monthly_cents": (60 * p + d) // (2 * d) if d > 0 else 0}
            for (s, pid), (n, p, d) in sorted(windows.items()) if n or p or d]
    if not rows:
        return
    t = CostWindow.__table__
    empty = [{"start_month": r["start_month"], "patient_id": r["patient_id"], "fills": 0, "price_cents": 0,
              "days_supply": 0, "monthly_cents": 0} for r in rows]
    conn.execute(upsert_insert(t, conn.dialect.name).on_conflict_do_nothing(
        index_elements=["start_month", "patient_id"]), empty)
    keys = [(r["start_month"], r["patient_id"]) for r in rows]
    before = {(s, pid): (n, m) for s, pid, n, m in conn.execute(
        sa.select(t.c.start_month, t.c.patient_id, t.c.fills, t.c.monthly_cents)
        .where(sa.tuple_(t.c.start_month, t.c.patient_id).in_(keys)).with_for_update())}
    monthly = {"monthly_cents": lambda c, x: _monthly(c.price_cents + x.price_cents, c.days_supply + x.days_supply)}
    _upsert(conn, t, rows, ["start_month", "patient_id"], extra=monthly)
    after = {(s, pid): (n, m) for s, pid, n, m in conn.execute(
        sa.select(t.c.start_month, t.c.patient_id, t.c.fills, t.c.monthly_cents)
        .where(sa.tuple_(t.c.start_month, t.c.patient_id).in_(keys)))}
    moves: defaultdict[date, list[int]] = defaultdict(lambda: [0, 0])
    for key in keys:
        (n0, m0), (n1, m1) = _as_window(before.get(key)), _as_window(after.get(key))
        moves[key[0]][0] += n1 - n0
        moves[key[0]][1] += m1 - m0
    _upsert(conn, CostWindowTotal.__table__, [{"start_month": s, "patients": n, "monthly_cents": m}
                                              for s, (n, m) in sorted(moves.items()) if n or m], ["start_month"])
    if any(r["fills"] < 0 for r in rows):  # a dispensed fill taken back: a window left empty goes
        conn.execute(t.delete().where(t.c.fills <= 0, t.c.patient_id.in_({r["patient_id"] for r in rows})))


def _as_window(found: tuple[int, int] | None) -> tuple[int, int]:
    """(1, its monthly equivalent) for a window with fills, (0, 0) for an empty one: what it adds to its start's
    count and sum."""
    if found is None or found[0] <= 0:
        return 0, 0
    return 1, int(found[1])


def _forms(conn: sa.Connection, rx_ids: Iterable[int]) -> dict[int, Form]:
    ids = sorted(set(rx_ids))
    if not ids:
        return {}
    rows = conn.execute(sa.select(Prescription.id, Formula.form).join(Formula, Formula.id == Prescription.formula_id)
                        .where(Prescription.id.in_(ids))).all()
    return {rx: Form(form) for rx, form in rows}


def _latest(conn: sa.Connection, patient_id: int, form: Form) -> None:
    """Move the patient's latest month of this form, and FillMonth.patients_last with it. Read from the orders (the
    flush has written them) under the row's lock, so two dispensings for one patient at once cannot both miss."""
    t = PatientLastFill.__table__
    key = sa.and_(t.c.patient_id == patient_id, t.c.form == form)
    conn.execute(upsert_insert(t, conn.dialect.name).values(patient_id=patient_id, form=form, last_month=None)
                 .on_conflict_do_nothing(index_elements=["patient_id", "form"]))
    before = _as_date(conn.execute(sa.select(t.c.last_month).where(key).with_for_update()).scalar())
    newest = _as_date(conn.execute(
        sa.select(sa.func.max(Order.dispensed_on)).join(Prescription, Prescription.id == Order.prescription_id)
        .join(Formula, Formula.id == Prescription.formula_id)
        .where(Order.patient_id == patient_id, Order.state == OrderState.DISPENSED, Formula.form == form)).scalar())
    after = rules.month_of(newest) if newest is not None else None
    if after is None:
        conn.execute(t.delete().where(key))
    elif after != before:
        conn.execute(t.update().where(key).values(last_month=after))
    if after == before:
        return
    moves = [{"month": m, "form": form, "fills": 0, "price_cents": 0, "days_supply": 0, "patients_last": n}
             for m, n in sorted({before: -1, after: 1}.items(), key=lambda kv: kv[0] or date.min) if m is not None]
    _upsert(conn, FillMonth.__table__, moves, ["month", "form"])


def _as_date(value: Any) -> date | None:
    """max() on SQLite may hand back the stored text rather than a date."""
    if value is None or isinstance(value, date):
        return value
    return date.fromisoformat(str(value)[:10])


# ---------------------------------------------------------------------------------------------
# Every total recomputed from the rows (the one definition), rebuild and verify
# ---------------------------------------------------------------------------------------------


def _months(first: date, last: date) -> sa.CTE:
    """Each local month from `first`'s to `last`'s: its first day, its day range and its UTC instants (a month at the
    pharmacy begins at local midnight; SQLite has no time zones, so the bounds are computed here)."""
    arms, month = [], rules.month_of(first)
    while month <= last:
        after = rules.add_months(month, 1)
        arms.append(sa.select(sa.literal(month, sa.Date).label("month"), sa.literal(after, sa.Date).label("next_day"),
                              sa.literal(local_day_start(month), UTCDateTime()).label("lo_at"),
                              sa.literal(local_day_start(after), UTCDateTime()).label("hi_at")))
        month = after
    return sa.union_all(*arms).cte("months") if len(arms) > 1 else arms[0].cte("months")


def _span() -> tuple[date, date] | None:
    """The local days of the first and last payment and dispensing (None when there are none)."""
    first_paid, last_paid = db.session.execute(sa.select(sa.func.min(Payment.received_at),
                                                         sa.func.max(Payment.received_at))).one()
    first_fill, last_fill = db.session.execute(sa.select(sa.func.min(Order.dispensed_on),
                                                         sa.func.max(Order.dispensed_on))).one()
    days = [_as_date(d) for d in (first_fill, last_fill) if d is not None]
    days += [local_date_of(_as_utc(t)) for t in (first_paid, last_paid) if t is not None]
    return (min(days), max(days)) if days else None


def _as_utc(value: Any) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def live_starts(current: date) -> list[date]:
    """The month starts a report can begin at today: CostWindow's rows for these are compared and rebuilt."""
    month = rules.month_of(current)
    return [rules.add_months(month, -i) for i in range(rules.MAX_REPORT_MONTHS - 1, -1, -1)]


def _zero(n: int = 0) -> sa.ColumnElement[int]:
    return sa.literal(n, sa.BigInteger)


def recomputed() -> dict[str, sa.Select]:
    """Every total from the orders and payments, as one SELECT per table (its columns in the table's order)."""
    span = _span()
    dispensed = sa.and_(Order.state == OrderState.DISPENSED, Order.dispensed_on.is_not(None))
    signed = {kind: sa.case((Payment.kind == kind, Payment.amount_cents), else_=0) for kind in PaymentKind}
    charged = sa.select(Order.patient_id.label("pid"), (Order.price_cents + Order.shipping_cents).label("c"),
                        _zero().label("p"), _zero().label("r")).where(charged_clause())
    paid = sa.select(Payment.patient_id, _zero(), signed[PaymentKind.PAYMENT], signed[PaymentKind.REFUND])
    parts = sa.union_all(charged, paid).subquery("parts")
    c, p, r = sa.func.sum(parts.c.c), sa.func.sum(parts.c.p), sa.func.sum(parts.c.r)
    out: dict[str, sa.Select] = {
        "patient_balances": sa.select(parts.c.pid, c, p, r, c - p + r).group_by(parts.c.pid),
    }
    starts = sa.union_all(*(sa.select(sa.literal(s, sa.Date).label("s")) for s in live_starts(today()))).cte("starts")
    price, days = sa.func.sum(Order.price_cents), sa.func.sum(Order.days_supply)
    out["cost_windows"] = (
        sa.select(starts.c.s, Order.patient_id, sa.func.count(), price, days, _monthly(price, days))
        .select_from(Order).join(starts, Order.dispensed_on >= starts.c.s).where(dispensed)
        .group_by(starts.c.s, Order.patient_id))
    windows = out["cost_windows"].subquery("windows")
    out["cost_window_totals"] = (sa.select(windows.c.s, sa.func.count(), sa.func.sum(windows.c[5]))
                                 .group_by(windows.c.s))
    if span is None:  # nothing paid or dispensed: no months
        nothing = sa.false()
        out["revenue_months"] = sa.select(RevenueMonth).where(nothing)
        out["fill_months"] = sa.select(FillMonth).where(nothing)
        out["patient_last_fills"] = sa.select(PatientLastFill).where(nothing)
        return out
    months = _months(*span)
    out["revenue_months"] = (
        sa.select(months.c.month, sa.func.sum(signed[PaymentKind.PAYMENT]), sa.func.sum(signed[PaymentKind.REFUND]))
        .select_from(Payment).join(months, sa.and_(Payment.received_at >= months.c.lo_at,
                                                   Payment.received_at < months.c.hi_at))
        .group_by(months.c.month))
    in_month = sa.and_(Order.dispensed_on >= months.c.month, Order.dispensed_on < months.c.next_day)
    latest = (sa.select(Order.patient_id.label("pid"), Formula.form.label("form"),
                        sa.func.max(Order.dispensed_on).label("last"))
              .join(Prescription, Prescription.id == Order.prescription_id)
              .join(Formula, Formula.id == Prescription.formula_id).where(dispensed)
              .group_by(Order.patient_id, Formula.form).subquery("latest"))
    last_month = (sa.select(latest.c.pid, latest.c.form, months.c.month.label("month")).select_from(latest)
                  .join(months, sa.and_(latest.c.last >= months.c.month, latest.c.last < months.c.next_day)))
    out["patient_last_fills"] = last_month
    lm = last_month.subquery("lm")
    per_form = (sa.select(months.c.month, Formula.form, sa.func.count().label("n"), price.label("price"),
                          days.label("days"), _zero().label("last"))
                .select_from(Order).join(months, in_month)
                .join(Prescription, Prescription.id == Order.prescription_id)
                .join(Formula, Formula.id == Prescription.formula_id).where(dispensed)
                .group_by(months.c.month, Formula.form))
    lasts = sa.select(lm.c.month, lm.c.form, _zero(), _zero(), _zero(), sa.func.count()).group_by(lm.c.month, lm.c.form)
    both = sa.union_all(per_form, lasts).subquery("both_parts")
    out["fill_months"] = (sa.select(both.c.month, both.c.form, sa.func.sum(both.c.n), sa.func.sum(both.c.price),
                                    sa.func.sum(both.c.days), sa.func.sum(both.c.last))
                          .group_by(both.c.month, both.c.form))
    return out


TABLES: dict[str, sa.Table] = {t.name: t for t in (PatientBalance.__table__, RevenueMonth.__table__,
                                                   FillMonth.__table__, PatientLastFill.__table__,
                                                   CostWindow.__table__, CostWindowTotal.__table__)}


def _kept(name: str) -> sa.Select:
    """The rows kept that mean something: all-zero rows (a charge cancelled, a fill taken back) are no rows, and only
    the cost windows a report can begin at today are compared."""
    t = TABLES[name]
    c = t.c
    meaning = {
        "patient_balances": lambda: sa.or_(c.charged_cents != 0, c.paid_cents != 0, c.refunded_cents != 0),
        "revenue_months": lambda: sa.or_(c.paid_cents != 0, c.refunded_cents != 0),
        "fill_months": lambda: sa.or_(c.fills != 0, c.price_cents != 0, c.days_supply != 0, c.patients_last != 0),
        "patient_last_fills": lambda: c.last_month.is_not(None),
        "cost_windows": lambda: c.start_month >= live_starts(today())[0],
        "cost_window_totals": lambda: sa.and_(c.start_month >= live_starts(today())[0],
                                              sa.or_(c.patients != 0, c.monthly_cents != 0)),
    }[name]()
    return sa.select(*t.c).where(meaning)


@dataclass
class Mismatch:
    table: str
    kept_only: list[tuple[Any, ...]]  # rows kept that the recomputation does not give (wrong or extra)
    recomputed_only: list[tuple[Any, ...]]  # rows the recomputation gives that are not kept (wrong or missing)
    count: int


SHOWN = 10


def verify() -> list[Mismatch]:
    """Each total recomputed from the rows and compared with what is kept, in SQL (EXCEPT both ways)."""
    found = []
    for name, fresh in recomputed().items():
        kept = _kept(name)
        kept_only = sa.except_(kept, fresh).subquery("kept_only")
        fresh_only = sa.except_(fresh, kept).subquery("fresh_only")
        counts = [db.session.execute(sa.select(sa.func.count()).select_from(q)).scalar_one()
                  for q in (kept_only, fresh_only)]
        if any(counts):
            found.append(Mismatch(name, [tuple(r) for r in db.session.execute(sa.select(kept_only).limit(SHOWN))],
                                  [tuple(r) for r in db.session.execute(sa.select(fresh_only).limit(SHOWN))],
                                  sum(counts)))
    return found


def rebuild() -> dict[str, int]:
    """Replace every total with its recomputation (in the caller's transaction): rows written per table."""
    written = {}
    for name, fresh in recomputed().items():
        t = TABLES[name]
        db.session.execute(t.delete())
        db.session.execute(t.insert().from_select([c.name for c in t.c], fresh))
        written[name] = db.session.execute(sa.select(sa.func.count()).select_from(t)).scalar_one()
    for name in TABLES:  # the planners learn the new sizes (or a partial index goes unused for a scan of patients)
        db.session.execute(sa.text(f"ANALYZE {name}"))
    return written


def rebuild_audited(actor: Actor) -> dict[str, int]:
    """`flask reports rebuild-totals`: the rebuild, and an audit event saying how many rows each table got."""
    written = rebuild()
    audit.record(actor, "reports.rebuild_totals", details=written)
    return written
