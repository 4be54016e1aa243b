"""Reminders at chain scale: claiming today's due rows, and a full re-plan of every fill.

    .venv/bin/python benchmarks/bench_reminders.py --db sqlite --patients 100000
    .venv/bin/python benchmarks/bench_reminders.py --db postgres --patients 100000

1. Claiming. The clock is set to 12:00 pharmacy time on the data's day (today's 10:00 reminders are
   due) and then a day later (about twice as many are due); the outbox table is the same
   size both times. For each: the baseline is the bare indexed query selecting the same rows
   (`state = 'pending' AND next_attempt_at <= now ORDER BY next_attempt_at, id`, raw DBAPI, all rows);
   the measured path is the real `claims.claim_batch` called until nothing is due (claims are then
   put back, so every repetition claims the same rows). A second baseline does the same claim work in
   hand-written SQL (select 50 due ids, one UPDATE … WHERE id IN (…) AND state = 'pending', commit),
   to separate the cost of claiming (writes, commits) from the cost of the function; and the claim as it
   was before (`legacy_claim_batch`: one UPDATE per row on SQLite, SELECT … FOR UPDATE then UPDATE on
   PostgreSQL) is timed in the same run for the before/after comparison.
2. Re-planning. The real command, `flask reminders replan` (bulk_planning.replan_all, batches of 5,000,
   a progress bar), run as its own process under a settings change that moves every pending reminder
   (send hour 10 → 11), then back; its wall time and peak RSS. The baseline is the per-fill path
   (`planning.plan_for_order`, what the command ran before) timed on a sample and scaled to all fills.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import sqlalchemy as sa

from benchmarks import common

WORKER = "bench-claim"


def due_sql(pg: bool) -> str:
    now = "%(now)s" if pg else "?"
    return ("SELECT id FROM outbox WHERE state = 'pending' AND next_attempt_at <= " + now
            + " ORDER BY next_attempt_at, id")


def _param(pg: bool, value: Any) -> Any:
    return {"now": value} if pg else (value,)


def _now_param(pg: bool, at: Any) -> Any:
    naive = at.astimezone(common.UTC).replace(tzinfo=None)
    return naive if pg else f"{naive:%Y-%m-%d %H:%M:%S}.{naive.microsecond:06d}"


def bare_select(db: Any, pg: bool, at: Any) -> int:
    conn = db.session.connection()
    rows = conn.exec_driver_sql(due_sql(pg), _param(pg, _now_param(pg, at))).fetchall()
    db.session.rollback()
    return len(rows)


def raw_claim(db: Any, pg: bool, at: Any, batch: int) -> int:
    """The same claim in hand-written SQL: 50 due ids, one conditional UPDATE, commit; until none are due."""
    claimed = 0
    now = _now_param(pg, at)
    lease = _now_param(pg, at + timedelta(minutes=5))
    while True:
        conn = db.session.connection()
        select = due_sql(pg) + f" LIMIT {batch}" + (" FOR UPDATE SKIP LOCKED" if pg else "")
        ids = [r[0] for r in conn.exec_driver_sql(select, _param(pg, now)).fetchall()]
        if not ids:
            db.session.commit()
            return claimed
        marks = ", ".join(["%s" if pg else "?"] * len(ids))
        p = "%s" if pg else "?"
        result = conn.exec_driver_sql(
            f"UPDATE outbox SET state = 'sending', lease_until = {p}, claimed_by = {p} "
            f"WHERE id IN ({marks}) AND state = 'pending'", (lease, WORKER, *ids))
        claimed += result.rowcount
        db.session.commit()


def legacy_claim_batch(worker: str, *, limit: int = 50, lease: timedelta = timedelta(minutes=5)) -> list[int]:
    """claims.claim_batch as it was before (kept here for the before/after figure): select the due ids, then
    one UPDATE per row on SQLite (the row count says who won it), or SELECT … FOR UPDATE SKIP LOCKED then one
    UPDATE … WHERE id IN (…) on PostgreSQL; commit."""
    from pharmacy.core.context import now
    from pharmacy.extensions import db
    from pharmacy.reminders.models import OutboxMessage
    from pharmacy.reminders.rules import OutboxState

    t = now()
    due = (sa.select(OutboxMessage.id)
           .where(OutboxMessage.state == OutboxState.PENDING, OutboxMessage.next_attempt_at <= t)
           .order_by(OutboxMessage.next_attempt_at, OutboxMessage.id).limit(limit))
    claim = {"state": OutboxState.SENDING, "lease_until": t + lease, "claimed_by": worker}
    if db.session.get_bind().dialect.name == "postgresql":
        ids = list(db.session.execute(due.with_for_update(skip_locked=True)).scalars())
        if ids:
            db.session.execute(sa.update(OutboxMessage).where(OutboxMessage.id.in_(ids)).values(**claim)
                               .execution_options(synchronize_session=False))
    else:
        ids = []
        for row_id in db.session.execute(due).scalars().all():
            result = db.session.execute(
                sa.update(OutboxMessage).where(OutboxMessage.id == row_id, OutboxMessage.state == OutboxState.PENDING)
                .values(**claim).execution_options(synchronize_session=False))
            if result.rowcount == 1:
                ids.append(row_id)
    db.session.commit()
    return ids


def release(db: Any) -> int:
    n = db.session.execute(sa.text(
        "UPDATE outbox SET state = 'pending', lease_until = NULL, claimed_by = NULL "
        "WHERE claimed_by = :w AND state = 'sending'"), {"w": WORKER}).rowcount
    db.session.commit()
    return n


def explain(db: Any, pg: bool, at: Any) -> list[str]:
    conn = db.session.connection()
    if pg:
        sql = "EXPLAIN " + due_sql(pg)
        plan = [r[0] for r in conn.exec_driver_sql(sql, _param(pg, _now_param(pg, at)))]
    else:
        plan = [r[3] for r in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + due_sql(pg), _param(pg, _now_param(pg, at)))]
    db.session.rollback()
    return plan


def claim_round(app: Any, clock: Any, at: Any, repeat: int) -> dict[str, Any]:
    from pharmacy.extensions import db
    from pharmacy.reminders import claims

    clock.set(at)
    with app.app_context():
        pg = db.engine.dialect.name == "postgresql"
        release(db)
        stored = db.session.execute(sa.text("SELECT count(*) FROM outbox")).scalar_one()
        db.session.rollback()
        bare_t, due = common.timed(lambda: bare_select(db, pg, at), repeat=repeat)

        def product() -> int:
            n = 0
            while True:
                ids = claims.claim_batch(WORKER, limit=claims.BATCH_SIZE)
                if not ids:
                    break
                n += len(ids)
            return n

        def product_then_release() -> int:
            t0 = time.perf_counter()
            n = product()
            product_then_release.elapsed.append(time.perf_counter() - t0)  # type: ignore[attr-defined]
            release(db)
            return n

        product_then_release.elapsed = []  # type: ignore[attr-defined]
        common.timed(product_then_release, repeat=repeat)
        claim_t = sorted(product_then_release.elapsed[1:])[len(product_then_release.elapsed[1:]) // 2]  # type: ignore[attr-defined]
        claimed = product()
        release(db)

        def legacy_then_release() -> int:
            t0 = time.perf_counter()
            n = 0
            while True:
                ids = legacy_claim_batch(WORKER, limit=claims.BATCH_SIZE)
                if not ids:
                    break
                n += len(ids)
            legacy_then_release.elapsed.append(time.perf_counter() - t0)  # type: ignore[attr-defined]
            release(db)
            return n

        legacy_then_release.elapsed = []  # type: ignore[attr-defined]
        common.timed(legacy_then_release, repeat=repeat)
        prop = legacy_then_release.elapsed[1:]  # type: ignore[attr-defined]
        legacy_t = sorted(prop)[len(prop) // 2]

        def raw_then_release() -> int:
            t0 = time.perf_counter()
            n = raw_claim(db, pg, at, claims.BATCH_SIZE)
            raw_then_release.elapsed.append(time.perf_counter() - t0)  # type: ignore[attr-defined]
            release(db)
            return n

        raw_then_release.elapsed = []  # type: ignore[attr-defined]
        common.timed(raw_then_release, repeat=repeat)
        raw_t = sorted(raw_then_release.elapsed[1:])[len(raw_then_release.elapsed[1:]) // 2]  # type: ignore[attr-defined]
        plan = explain(db, pg, at)
    return {"at": at.isoformat(), "stored_rows": stored, "due": due, "claimed": claimed,
            "bare_select_ms": round(bare_t * 1000, 2), "claim_batch_ms": round(claim_t * 1000, 2),
            "raw_sql_claim_ms": round(raw_t * 1000, 2),
            "ratio_vs_bare_select": round(claim_t / bare_t, 2) if bare_t else None,
            "ratio_vs_raw_sql_claim": round(claim_t / raw_t, 2) if raw_t else None,
            "legacy_claim_ms": round(legacy_t * 1000, 2),
            "legacy_ratio_vs_bare_select": round(legacy_t / bare_t, 2) if bare_t else None,
            "legacy_us_per_due_row": round(legacy_t / due * 1e6, 1) if due else None,
            "claim_us_per_due_row": round(claim_t / due * 1e6, 1) if due else None,
            "batches": -(-claimed // claims.BATCH_SIZE),
            "query_plan": plan}


REPLAN_LINE = re.compile(
    r"(?P<prescriptions>\d+) prescription\(s\), (?P<fills>\d+) fill\(s\) re-planned \((?P<blocked>\d+) left alone.*?"
    r"(?P<added>\d+) added, (?P<moved>\d+) moved, (?P<revived>\d+) restored, (?P<cancelled>\d+) cancelled; "
    r"(?P<renewal_tasks>\d+) renewal task")


def replan_round(bdb: common.BenchDB, hour: int, batch_size: int) -> dict[str, Any]:
    """One full re-plan: `flask reminders replan` as its own process, under settings that send at `hour`."""
    cmd = [common.PY, "-m", "flask", "--app", "benchmarks.bench_app:create_app", "reminders", "replan",
           "--batch-size", str(batch_size)]
    env = bdb.env(bdb.at(12), REMINDER_SEND_HOUR=str(hour))
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=common.ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    out = proc.stdout.read()  # until the command exits
    _, status, usage = os.wait4(proc.pid, 0)  # reaped here, for its own peak RSS
    seconds = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    proc.stdout.close()
    if proc.returncode != 0:
        raise SystemExit(f"flask reminders replan failed ({proc.returncode}):\n{out}")
    found = REPLAN_LINE.search(out)
    if found is None:
        raise SystemExit(f"flask reminders replan said:\n{out}")
    print(out.strip().splitlines()[-1], file=sys.stderr)
    return {"send_hour": hour, "seconds": round(seconds, 1), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
            "batch_size": batch_size, "command": " ".join(cmd[2:]), **{k: int(v) for k, v in found.groupdict().items()}}


def per_fill_baseline(bdb: common.BenchDB, sample: int = 1000) -> dict[str, Any]:
    """The per-fill path on a sample of fills (rolled back), scaled to every fill."""
    os.environ["REMINDER_SEND_HOUR"] = "11"
    app = common.app_for(bdb)
    from pharmacy.extensions import db
    from pharmacy.reminders import bulk_planning, planning

    with app.app_context():
        total = bulk_planning.active_prescriptions()
        ids = []
        for batch in planning.latest_fill_facts(sample):
            ids = [f.order_id for f in batch]
            break
        t0 = time.perf_counter()
        for order_id in ids:
            planning.plan_for_order(order_id)
        seconds = time.perf_counter() - t0
        db.session.rollback()
        db.session.remove()
        db.engine.dispose()
    os.environ.pop("REMINDER_SEND_HOUR", None)
    return {"sample_fills": len(ids), "sample_seconds": round(seconds, 2),
            "estimated_seconds_for_all": round(seconds / max(len(ids), 1) * total, 1)}


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--skip-replan", action="store_true")
    p.add_argument("--skip-claims", action="store_true", help="only the re-plan (keeps the claims of the last run)")
    p.add_argument("--batch-size", type=int, default=5000, help="flask reminders replan --batch-size")
    a = p.parse_args()
    bdb = common.prepare(a.db, a.patients, seed=a.seed, fresh=a.fresh)
    from pharmacy.core.clock import FixedClock

    noon = bdb.at(12)
    clock = FixedClock(noon)
    app = common.app_for(bdb, noon)
    app.extensions["pharmacy.clock"] = clock
    previous = common.RESULTS / f"reminders-{a.db}.json"
    if a.skip_claims and previous.exists():
        import json

        claims = json.loads(previous.read_text())["claims"]
    else:
        claims = [claim_round(app, clock, noon, a.repeat), claim_round(app, clock, noon + timedelta(days=1), a.repeat)]
    from pharmacy.extensions import db

    with app.app_context():
        if db.engine.dialect.name == "postgresql":
            # Claims and releases leave dead row versions behind; clean them before anything else is measured.
            with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.exec_driver_sql("VACUUM ANALYZE outbox")
        db.session.remove()
        db.engine.dispose()
    rows = [[c["at"][:16], f"{c['stored_rows']:,}", f"{c['due']:,}", c["bare_select_ms"], c["raw_sql_claim_ms"],
             c["claim_batch_ms"], c["ratio_vs_bare_select"], c["claim_us_per_due_row"], c["legacy_claim_ms"],
             c["legacy_ratio_vs_bare_select"], c["legacy_us_per_due_row"]]
            for c in claims]
    print(f"\nClaiming due reminders ({a.db}, {a.patients:,} patients; target: claim ≤ 1.5× the bare select)")
    print(common.table(["now (UTC)", "outbox rows", "due", "bare select ms", "raw-SQL claim ms", "claim_batch ms",
                        "× bare", "µs/due row", "before: claim ms", "× bare", "µs/due row"], rows))
    print("query plan of the due scan:", " | ".join(claims[0]["query_plan"]))
    result: dict[str, Any] = {"patients": a.patients, "generator": bdb.meta.get("generator"), "claims": claims}
    common.save("reminders", a.db, result)  # the claims are kept even if the re-plan fails
    if not a.skip_replan:
        moved = replan_round(bdb, 11, a.batch_size)
        back = replan_round(bdb, 10, a.batch_size)
        baseline = per_fill_baseline(bdb)
        result["replan"] = {"changed": moved, "restored": back, "per_fill_baseline": baseline}
        print(f"\nFull re-plan ({a.db}; target ≤ 60 s)")
        print(common.table(
            ["run", "prescriptions", "fills", "blocked", "added", "moved", "revived", "cancelled", "seconds",
             "peak RSS MB"],
            [["send hour 10→11", moved["prescriptions"], moved["fills"], moved["blocked"], moved["added"],
              moved["moved"], moved["revived"], moved["cancelled"], moved["seconds"], moved["peak_rss_mb"]],
             ["back to 10", back["prescriptions"], back["fills"], back["blocked"], back["added"], back["moved"],
              back["revived"], back["cancelled"], back["seconds"], back["peak_rss_mb"]],
             [f"per-fill path, {baseline['sample_fills']} fills", "", "", "", "", "", "", "",
              f"{baseline['sample_seconds']} (≈{baseline['estimated_seconds_for_all']} for all)", ""]]))
    result["peak_rss_mb"] = round(common.peak_rss_mb(), 1)
    path = common.save("reminders", a.db, result)
    print(f"\npeak RSS {result['peak_rss_mb']} MB; results in {path.relative_to(common.ROOT)}")


if __name__ == "__main__":
    main()
