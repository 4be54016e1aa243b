"""Outbox delivery to a local aiosmtpd server vs a bare smtplib loop sending the same messages.

    .venv/bin/python benchmarks/bench_smtp.py --db sqlite --patients 100000 --messages 500
    .venv/bin/python benchmarks/bench_smtp.py --db postgres --patients 100000 --messages 500

The SMTP server (aiosmtpd's Sink handler, which accepts and drops every message) runs in its own
process on loopback. The clock is 12:00 on the data's day, so today's 10:00 reminders are due.

* measured: `delivery.deliver_due` with the real SMTP transport — claim, check each message is still
  wanted, render it from the database and the templates, send, record the attempt, commit — for the
  first --messages due rows (batches of 50, one SMTP connection per batch, as the scheduler does);
* baseline: the same messages, rendered beforehand (untimed), sent with smtplib over one connection.

The rows are put back exactly as they were afterwards (state, attempts, bodies; the attempt rows it
wrote are deleted), so every run delivers the same messages. Target: ≥ 80% of the bare loop.
"""
from __future__ import annotations

import smtplib
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import sqlalchemy as sa

from benchmarks import common
from benchmarks.bench_pages import free_port

COLUMNS = ("state", "attempts", "last_error", "sent_at", "cancelled_reason", "subject", "body_text", "body_html",
           "lease_until", "claimed_by", "next_attempt_at")


def start_smtp(port: int) -> subprocess.Popen[Any]:
    proc = subprocess.Popen([sys.executable, "-m", "aiosmtpd", "-n", "-l", f"127.0.0.1:{port}",
                             "-c", "aiosmtpd.handlers.Sink"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=2) as s:
                s.noop()
            return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("aiosmtpd did not start")


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--messages", type=int, default=500)
    p.add_argument("--repeat", type=int, default=2)
    a = p.parse_args()
    bdb = common.prepare(a.db, a.patients, seed=a.seed, fresh=a.fresh)
    noon = bdb.at(12)
    app = common.app_for(bdb, noon)
    from pharmacy.config import SmtpSettings
    from pharmacy.extensions import db
    from pharmacy.reminders import delivery, rendering, transports
    from pharmacy.reminders.models import OutboxMessage
    from pharmacy.reminders.rules import OutboxState

    port = free_port()
    smtp = start_smtp(port)
    config = SmtpSettings(host="127.0.0.1", port=port, username=None, password=None, security="none", timeout=10)
    table = OutboxMessage.__table__
    runs: list[dict[str, Any]] = []
    try:
        with app.test_request_context("/"):
            ids = list(db.session.execute(
                sa.select(table.c.id).where(table.c.state == OutboxState.PENDING, table.c.next_attempt_at <= noon)
                .order_by(table.c.next_attempt_at, table.c.id).limit(a.messages)).scalars())
            if len(ids) < a.messages:
                raise SystemExit(f"only {len(ids)} messages are due; ask for fewer")
            saved = [dict(r._mapping) for r in db.session.execute(
                sa.select(table.c.id, *[table.c[c] for c in COLUMNS]).where(table.c.id.in_(ids))).all()]
            # The baseline's messages: the same rows, rendered now (not timed).
            messages = []
            for row in db.session.execute(sa.select(OutboxMessage).where(OutboxMessage.id.in_(ids))).scalars():
                if delivery.unwanted_reason(row) is None:
                    try:
                        email = rendering.render(row)
                    except rendering.RenderError:
                        continue
                    messages.append((email.to_message(message_id=row.message_id), email.to_address))
            db.session.rollback()
            sender = rendering.sender_address()

            def restore() -> None:
                db.session.execute(sa.delete(common_attempts()).where(
                    common_attempts().c.message_id.in_(ids), common_attempts().c.at >= noon))
                db.session.execute(sa.update(table).where(table.c.id == sa.bindparam("b_id")).values(
                    **{c: sa.bindparam(f"b_{c}") for c in COLUMNS}),
                    [{"b_id": r["id"], **{f"b_{c}": r[c] for c in COLUMNS}} for r in saved])
                db.session.commit()

            for _ in range(a.repeat):
                # Hold back every other due row (restored after) so deliver_due sends exactly these.
                later = noon.replace(year=noon.year + 1)
                hold = db.session.execute(
                    sa.update(table).where(table.c.state == OutboxState.PENDING, table.c.next_attempt_at <= noon,
                                           table.c.id.not_in(ids))
                    .values(next_attempt_at=later).returning(table.c.id, table.c.due_at)).all()
                # …and rows left `sending` by a dead worker: their expired leases would be released and sent too.
                leases = db.session.execute(
                    sa.update(table).where(table.c.state == OutboxState.SENDING, table.c.lease_until < noon)
                    .values(lease_until=later).returning(table.c.id, table.c.due_at)).all()
                db.session.commit()
                t0 = time.perf_counter()
                report = delivery.deliver_due(transport=transports.SmtpTransport(config), batch_size=50)
                seconds = time.perf_counter() - t0
                restore()
                if hold:
                    db.session.execute(sa.update(table).where(table.c.id == sa.bindparam("b_id")).values(
                        next_attempt_at=sa.bindparam("b_due")), [{"b_id": i, "b_due": d} for i, d in hold])
                if leases:  # the generator's dead leases expired 20 minutes before its clock
                    db.session.execute(sa.update(table).where(table.c.id.in_([i for i, _ in leases])).values(
                        lease_until=bdb.clock - timedelta(minutes=20)))
                db.session.commit()
                t0 = time.perf_counter()
                with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
                    for msg, to in messages:
                        s.send_message(msg, from_addr=sender, to_addrs=[to])
                bare = time.perf_counter() - t0
                runs.append({"delivered": report.sent, "cancelled": report.cancelled, "failed": report.failed,
                             "claimed": report.claimed, "deliver_seconds": round(seconds, 3),
                             "deliver_per_s": round(report.sent / seconds, 1),
                             "bare_sent": len(messages), "bare_seconds": round(bare, 3),
                             "bare_per_s": round(len(messages) / bare, 1)})
                print(f"  run: {runs[-1]}", flush=True)
    finally:
        smtp.terminate()
        smtp.wait(timeout=10)
    best = max(runs, key=lambda r: r["deliver_per_s"])
    bare_best = max(r["bare_per_s"] for r in runs)
    share = best["deliver_per_s"] / bare_best if bare_best else 0
    print(f"\nOutbox delivery over SMTP to aiosmtpd on loopback ({a.db}, {a.patients:,} patients; target ≥ 80% of bare)")
    print(common.table(["path", "messages", "seconds", "messages/s", "of bare loop"],
                       [["bare smtplib loop (pre-rendered, 1 connection)", max(r["bare_sent"] for r in runs),
                         min(r["bare_seconds"] for r in runs), bare_best, "100%"],
                        ["delivery.deliver_due (claim, check, render, send, record)", best["delivered"],
                         best["deliver_seconds"], best["deliver_per_s"], f"{share:.0%}"]]))
    path = common.save("smtp", a.db, {"patients": a.patients, "messages": a.messages, "runs": runs,
                                      "share_of_bare": round(share, 3), "peak_rss_mb": round(common.peak_rss_mb(), 1)})
    print(f"peak RSS {common.peak_rss_mb():.0f} MB; results in {path.relative_to(common.ROOT)}")


def common_attempts() -> sa.Table:
    from pharmacy.reminders.models import DeliveryAttempt

    return DeliveryAttempt.__table__


if __name__ == "__main__":
    main()
