"""The read pages in-process: Flask test client, a pharmacist signed in, median of N requests per page.

    .venv/bin/python benchmarks/common.py --db sqlite --patients 20000      # the data, once
    .venv/bin/python benchmarks/bench_reads.py --db sqlite --patients 20000

No server and no load generator: what one request of each page costs in Python and SQL (the figure the
column selects and pagination of issue 21 move), beside /__bench/hello in the same process. Each page is
fetched once to warm up, then --repeat times; the table gives the median and the 95th percentile, the SQL
statements of one request, and the page's size; the CPU time of this process (median) is the
steadier figure on a machine busy with other work. To compare two versions of the code, run the same file from
each checkout against the same data (the bench database lives under instance/bench/ of the checkout: link it).
"""
from __future__ import annotations

import gc
import os
import random
import re
import statistics
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import sqlalchemy as sa

from benchmarks import common

PHARMACIST = "bench-pharmacist@pharmacy.example"


def _csrf(text: str) -> str:
    m = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', text) or re.search(
        r'value="([^"]+)"[^>]*name="csrf_token"', text)
    return m.group(1) if m else ""


def _pages(app: Any) -> tuple[dict[str, list[str]], list[tuple[str, date]]]:
    """The URLs of each page (patient pages: random patients) and five refill links to confirm first."""
    from flask import url_for

    from pharmacy.extensions import db

    with app.test_request_context("/"):
        max_patient = int(db.session.execute(sa.text("SELECT max(id) FROM patients")).scalar_one())
        tokens = common.refill_link_tokens()
        rnd = random.Random(1)
        pages = {
            "hello": ["/__bench/hello"],
            "audited fortunes": [f"/__bench/fortunes-audited/{rnd.randint(1, max_patient)}" for _ in range(50)],
            "patient page": [f"/patients/{rnd.randint(1, max_patient)}" for _ in range(50)],
            "refill-link page": [f"/r/{tok}/refill" for tok, _ in tokens],
            "today": [url_for("dashboard.home")],
            "order queue": [url_for("compounding.queue")],
            "adherence report": [url_for("billing.adherence")],
            "refill queue": [url_for("refills.queue")],
            "renewals awaited": [url_for("refills.renewals_queue")],
            "money reports": [url_for("billing.reports")],
        }
        db.session.remove()
    return pages, tokens


def _time_statements(engine: Any, client: Any, url: str) -> None:
    """Each statement of one request with the time from sending it to the next step (its rows fetched): which
    statement of a page grows with the data."""
    timings: list[tuple[float, str]] = []
    started: list[float] = []

    def before(conn: Any, cursor: Any, statement: str, params: Any, context: Any, executemany: bool) -> None:
        started.append(time.perf_counter())

    def after(conn: Any, cursor: Any, statement: str, params: Any, context: Any, executemany: bool) -> None:
        timings.append(((time.perf_counter() - started.pop()) * 1000, " ".join(statement.split())))

    sa.event.listen(engine, "before_cursor_execute", before)
    sa.event.listen(engine, "after_cursor_execute", after)
    try:
        client.get(url)
    finally:
        sa.event.remove(engine, "before_cursor_execute", before)
        sa.event.remove(engine, "after_cursor_execute", after)
    print(f"{url}: {sum(ms for ms, _ in timings):.2f} ms in {len(timings)} statements (execute only)")
    for ms, statement in timings:
        print(f"  {ms:7.2f}  {statement if ms > 1 else statement[:220]}")


def _explain(engine: Any, client: Any, url: str) -> None:
    """PostgreSQL: each SELECT of one request run again under EXPLAIN ANALYZE — planning, execution, and the time
    of the plan's top node. A large gap between the last two is time spent outside the plan's rows: setting up
    memo tables sized for the planner's row estimate (a join before a LIMIT), a JIT compile..."""
    import json

    captured: list[tuple[str, Any]] = []

    def before(conn: Any, cursor: Any, statement: str, params: Any, context: Any, executemany: bool) -> None:
        if statement.lstrip().upper().startswith("SELECT") and not executemany:
            captured.append((statement, params))

    sa.event.listen(engine, "before_cursor_execute", before)
    try:
        client.get(url)
    finally:
        sa.event.remove(engine, "before_cursor_execute", before)
    print(f"{url}: EXPLAIN ANALYZE of {len(captured)} SELECTs (ms: planning, execution, top node)")
    with engine.connect() as conn:
        for statement, params in captured:
            raw = conn.connection.dbapi_connection.cursor()
            raw.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + statement, params)
            plan = raw.fetchone()[0]
            plan = plan[0] if isinstance(plan, list) else json.loads(plan)[0]
            top = plan["Plan"].get("Actual Total Time", 0.0)
            gap = plan["Execution Time"] - top
            flag = "  <-- outside the rows" if gap > 1 else ""
            print(f"  {plan['Planning Time']:6.2f} {plan['Execution Time']:7.2f} {top:7.2f}  "
                  f"{' '.join(statement.split())[:150]}{flag}")
        conn.rollback()


def _profile(client: Any, urls: list[str], repeat: int, callers: str = "") -> None:
    """Where one page's time goes in this process: the functions with the most time of their own, then the most
    time under them (SQLAlchemy, Jinja, the audit...)."""
    import cProfile
    import pstats

    profiler = cProfile.Profile()
    profiler.enable()
    for i in range(repeat):
        client.get(urls[i % len(urls)])
    profiler.disable()
    stats = pstats.Stats(profiler).strip_dirs()
    stats.sort_stats("tottime").print_stats(25)
    stats.sort_stats("cumulative").print_stats(int(os.environ.get("PROFILE_LINES", "45")))
    if callers:
        stats.print_callers(callers)


def main() -> None:
    p = common.parser(__doc__.splitlines()[0], default_patients=20_000)
    p.add_argument("--repeat", type=int, default=20)
    p.add_argument("--only", default="", help="comma-separated page names")
    p.add_argument("--profile", default="", help="a page name: cProfile its requests and print the top functions")
    p.add_argument("--sql", action="store_true", help="print each statement of one request with its time")
    p.add_argument("--explain", action="store_true", help="PostgreSQL: EXPLAIN ANALYZE each SELECT of one request")
    p.add_argument("--callers", default="", help="with --profile: who calls the functions matching this pattern")
    p.add_argument("--dump", default="", help="a folder: write each page's first answer there (<page>.html)")
    a = p.parse_args()
    bdb = common.prepare(a.db, a.patients, seed=a.seed, fresh=a.fresh)
    app = common.app_for(bdb, bdb.at(12))
    gc.freeze()  # as gunicorn.conf.py's pre_fork does: the built app out of the collector's reach
    app.config["WTF_CSRF_ENABLED"] = app.config.get("WTF_CSRF_ENABLED", True)
    pages, tokens = _pages(app)
    client = app.test_client()
    status = client.post("/login", data={"email": PHARMACIST, "password": bdb.password,
                                         "csrf_token": _csrf(client.get("/login").get_data(as_text=True))}).status_code
    if status not in (302, 303):
        raise SystemExit(f"sign-in failed: {status}")
    for tok, dob in tokens:
        csrf = _csrf(client.get(f"/r/{tok}").get_data(as_text=True))
        status = client.post(f"/r/{tok}", data={"month": dob.month, "day": dob.day, "year": dob.year,
                                                "csrf_token": csrf}).status_code
        if status not in (302, 303):
            raise SystemExit(f"refill link confirmation failed: {status}")
    from pharmacy.extensions import db

    with app.app_context():
        engine = db.engine
    only = {x.strip() for x in a.only.split(",") if x.strip()}
    rows = []
    hello_ms = af_ms = None
    for name, urls in pages.items():
        if only and name not in only and name not in ("hello", "audited fortunes"):
            continue
        first = client.get(urls[0])
        if first.status_code != 200:
            raise SystemExit(f"{name}: {urls[0]} answered {first.status_code}")
        if a.dump:
            Path(a.dump).mkdir(parents=True, exist_ok=True)
            (Path(a.dump) / f"{name.replace(' ', '-')}.html").write_bytes(first.get_data())
        with common.count_statements(engine) as statements:
            client.get(urls[0])
        if a.sql and name not in ("hello", "audited fortunes"):
            _time_statements(engine, client, urls[0])
        if a.explain and name not in ("hello", "audited fortunes") and bdb.kind == "postgres":
            _explain(engine, client, urls[0])
        if a.profile == name:
            _profile(client, urls, a.repeat, a.callers)
        times, cpu = [], []
        size = 0
        for i in range(a.repeat):
            t0, c0 = time.perf_counter(), time.process_time()
            response = client.get(urls[i % len(urls)])
            times.append((time.perf_counter() - t0) * 1000)
            cpu.append((time.process_time() - c0) * 1000)
            size = max(size, len(response.get_data()))
            if response.status_code != 200:
                raise SystemExit(f"{name}: {urls[i % len(urls)]} answered {response.status_code}")
        median = statistics.median(times)
        p95 = sorted(times)[max(0, round(0.95 * len(times)) - 1)]
        if name == "hello":
            hello_ms = median
        if name == "audited fortunes":
            af_ms = median
        rows.append([name, round(median, 2), round(p95, 2), round(statistics.median(cpu), 2), len(statements), size,
                     f"{hello_ms / median:.0%}" if hello_ms else "", f"{af_ms / median:.0%}" if af_ms else ""])
    print(common.table(["page", "median ms", "p95 ms", "CPU ms (median)", "statements", "bytes", "of hello",
                        "of audited fortunes"], rows))


if __name__ == "__main__":
    main()
