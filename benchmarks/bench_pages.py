"""Pages under gunicorn, measured with wrk (and a plain Python client) against three baselines on the same server.

    .venv/bin/python benchmarks/bench_pages.py --db sqlite --patients 100000
    .venv/bin/python benchmarks/bench_pages.py --db postgres --patients 100000

Gunicorn runs the production configuration (gunicorn.conf.py: preloaded app, no recycling by count, the
access log) with --workers 2 (sync; this machine has 2 cores, shared with the clients) and --max-requests 0,
serving `benchmarks.bench_app:create_app()` (the product app, the clock pinned to 12:00 on the data's day,
plus three baseline routes). A pharmacist signs in once (the real /login form); every request carries that
session cookie; the refill links are confirmed once (date of birth). Before measuring, the adherence snapshot
is filled if it is empty (`flask reports refresh-adherence`: the report and Today read it). On SQLite the write-ahead
log is copied back every few seconds beside the server, as the scheduler does in production (pharmacy/ops/wal.py).

Baselines (benchmarks/bench_app.py): hello (no database, no template), fortunes (one indexed read of 12 rows
and a small Jinja template) and audited fortunes (the same behind the staff sign-in, plus one audit row and the
commit) — the floor for a page that shows patient data and must audit the read.

Order, ABAB: baselines, page, baselines, page, baselines, next page, … — each page run sits between two baseline
runs on the same server, and its share is taken against the mean of those two (so a machine that got busier
halfway does not flatter or punish a page). Every run is --duration seconds of wrk -t2 -c8; the 1-minute load
average is read before each run, and the worker pids before and after (a worker replaced during a run would
make it a measurement of a restart: reported, never expected). After the ABAB rounds each target is requested
once more by the plain Python client (8 threads, 8 connections, same duration): its p50/p95/p99 beside wrk's.
"One request" is the median of 5 sequential requests on the idle server after one warm-up.

Targets (issue 21), printed beside each figure: every staff page and the refill-link page p95 ≤ 50 ms at 8
concurrent clients; patient and refill-link pages ≥ 50% of audited fortunes' req/s; Today, order queue and
adherence report ≥ 25%; money reports ≤ 100 ms for one request. A page whose one request takes longer than
--max-load-ms is timed alone, not loaded (every connection would queue behind it for the whole run).
"""
from __future__ import annotations

import contextlib
import http.client
import json
import random
import re
import statistics
import subprocess
import sys
import threading
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import sqlalchemy as sa

from benchmarks import common, load
from benchmarks.bench_app import AUDITED_FORTUNES, FORTUNES, HELLO

PHARMACIST = "bench-pharmacist@pharmacy.example"
APP = "benchmarks.bench_app:create_app()"
BASELINES = ("hello", "fortunes", "audited fortunes")
REFERENCE = "audited fortunes"


@dataclass
class Page:
    name: str
    target: load.Target
    share: float | None = None  # of audited fortunes' req/s
    p95_ms: float | None = 50.0
    one_request_ms: float | None = None


class Client:
    """Just enough HTTP for signing in: cookies kept, CSRF token read from the form."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.cookies: dict[str, str] = {}

    def request(self, method: str, path: str, form: dict[str, Any] | None = None) -> tuple[int, str]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=600)
        headers = {"Cookie": self.cookie_header()}
        body = None
        if form is not None:
            body = urllib.parse.urlencode(form)
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        text = resp.read().decode("utf-8", "replace")
        for name, value in resp.getheaders():
            if name.lower() == "set-cookie":
                k, _, rest = value.partition("=")
                self.cookies[k] = rest.split(";", 1)[0]
        conn.close()
        return resp.status, text

    def csrf(self, path: str) -> str:
        _status, text = self.request("GET", path)
        m = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', text) or re.search(
            r'value="([^"]+)"[^>]*name="csrf_token"', text)
        return m.group(1) if m else ""

    def cookie_header(self) -> str:
        return "; ".join(f"{k}={v}" for k, v in self.cookies.items())


def pick(bdb: common.BenchDB) -> dict[str, Any]:
    """Patients for the patient page, five refill links (active prescriptions, nothing in progress), another such
    prescription for the repeated API request, an API token, and the URLs of the pages."""
    app = common.app_for(bdb, bdb.at(12))
    from flask import url_for

    from pharmacy.core.actor import staff
    from pharmacy.core.roles import Role
    from pharmacy.core.services import issue_token
    from pharmacy.extensions import db

    with app.test_request_context("/"):
        q = db.session.execute
        max_patient = q(sa.text("SELECT max(id) FROM patients")).scalar_one()
        tokens = common.refill_link_tokens()
        # The API request: a prescription that already has an open request, so every call is the repeat (200).
        post_rx = q(sa.text("SELECT min(prescription_id) FROM refill_requests WHERE state = 'open'")).scalar_one()
        uid = q(sa.text("SELECT id FROM users WHERE email = :e"), {"e": PHARMACIST}).scalar_one()
        _, bearer = issue_token(staff(uid, Role.PHARMACIST), uid, "bench pages")
        db.session.commit()
        urls = {name: url_for(endpoint) for name, endpoint in (
            ("Today (dashboard)", "dashboard.home"), ("order queue", "compounding.queue"),
            ("adherence report", "billing.adherence"), ("money reports", "billing.reports"),
            ("refill queue", "refills.queue"), ("renewals awaited", "refills.renewals_queue"),
            ("refill requests API", "refill-requests.create")) if endpoint in app.view_functions}
        if "order queue" in urls:  # one step's list, 50 a page (the board shows each step's oldest 10)
            urls["order queue, one step"] = url_for("compounding.queue", state="verified")
        db.session.remove()
        db.engine.dispose()
    return {"max_patient": int(max_patient), "tokens": tokens, "post_rx": post_rx, "bearer": bearer, "urls": urls}


def fill_adherence_snapshot(bdb: common.BenchDB) -> dict[str, Any]:
    """The adherence report and Today's call list read the nightly snapshot: fill it when it is empty (a database
    generated before `flask bench seed` filled it) or has no stored distribution (generated before the refresh
    wrote one), as the scheduler's start-up catch-up would."""
    eng = sa.create_engine(bdb.url)
    try:
        with eng.connect() as conn:
            rows = conn.execute(sa.text("SELECT count(*) FROM adherence_snapshots")).scalar_one()
            summaries = conn.execute(sa.text("SELECT count(*) FROM adherence_summary")).scalar_one()
    finally:
        eng.dispose()
    if rows and summaries:
        return {"rows": int(rows), "filled_now": False}
    print("the adherence snapshot is empty or not summarised: flask reports refresh-adherence", flush=True)
    subprocess.run([common.PY, "-m", "flask", "--app", "benchmarks.bench_app:create_app", "reports",
                    "refresh-adherence"], env=bdb.env(bdb.at(2)), cwd=common.ROOT, check=True,
                   stdout=subprocess.DEVNULL)
    eng = sa.create_engine(bdb.url)
    try:
        with eng.connect() as conn:
            rows = conn.execute(sa.text("SELECT count(*) FROM adherence_snapshots")).scalar_one()
    finally:
        eng.dispose()
    return {"rows": int(rows), "filled_now": True}


def sign_in(port: int, bdb: common.BenchDB, chosen: dict[str, Any]) -> Client:
    """The pharmacist's browser (signed in) for the staff pages and the baselines."""
    c = Client(port)
    token = c.csrf("/login")
    status, text = c.request("POST", "/login", {"email": PHARMACIST, "password": bdb.password, "csrf_token": token})
    if status not in (302, 303):
        raise SystemExit(f"sign-in failed: {status} {text[:300]}")
    return c


def patient_browser(port: int, chosen: dict[str, Any]) -> Client:
    """A patient's browser for the refill-link page: the links confirmed (date of birth), no staff session — as a
    patient opens it (with a staff cookie the page also loaded the staff user for the menu)."""
    c = Client(port)
    for tok, dob in chosen["tokens"]:
        csrf = c.csrf(f"/r/{tok}")
        status, text = c.request("POST", f"/r/{tok}", {"month": dob.month, "day": dob.day, "year": dob.year,
                                                       "csrf_token": csrf})
        if status not in (302, 303):
            raise SystemExit(f"refill link confirmation failed: {status} {text[:300]}")
    return c


def targets(chosen: dict[str, Any], cookie: str, only: list[str] | None, patient_cookie: str | None = None,
            ) -> tuple[dict[str, load.Target], list[Page]]:
    rnd = random.Random(1)
    h = {"Cookie": cookie}
    patient_h = {"Cookie": patient_cookie or cookie}
    starts = [rnd.randint(1, max(1, chosen["max_patient"] - 12)) for _ in range(500)]
    baselines = {
        "hello": load.Target([HELLO], headers=h),
        "fortunes": load.Target([f"{FORTUNES}/{s}" for s in starts], headers=h),
        "audited fortunes": load.Target([f"{AUDITED_FORTUNES}/{s}" for s in starts], headers=h),
    }
    urls = chosen["urls"]
    pages = [
        Page("patient page", load.Target([f"/patients/{rnd.randint(1, chosen['max_patient'])}" for _ in range(500)],
                                         headers=h), share=0.5),
        Page("refill-link page", load.Target([f"/r/{tok}/refill" for tok, _ in chosen["tokens"]], headers=patient_h),
             share=0.5),
    ]
    for name in ("Today (dashboard)", "order queue", "order queue, one step", "adherence report"):
        if name in urls:
            pages.append(Page(name, load.Target([urls[name]], headers=h), share=0.25))
    for name in ("refill queue", "renewals awaited"):  # 50 rows a page, each with its forms (no share target)
        if name in urls:
            pages.append(Page(name, load.Target([urls[name]], headers=h)))
    if "money reports" in urls:
        pages.append(Page("money reports", load.Target([urls["money reports"]], headers=h), one_request_ms=100))
    if "refill requests API" in urls and chosen["post_rx"] is not None:
        pages.append(Page("POST refill request (repeat)", load.Target(
            [urls["refill requests API"]], method="POST", body=json.dumps({"prescription_id": chosen["post_rx"]}),
            headers={"Authorization": f"Bearer {chosen['bearer']}", "Content-Type": "application/json"}),
            p95_ms=None))
    if only:
        pages = [p for p in pages if any(o.lower() in p.name.lower() for o in only)]
    return baselines, pages


def measured_run(server: load.Server, wrk: str, target: load.Target, duration: float, conns: int) -> dict[str, Any]:
    """One wrk run on a settled server, with the load average before it and the worker pids before and after it."""
    settled = load.settle(server.port, HELLO)
    before = server.worker_pids()
    la = load.load1()
    r = load.run_wrk(wrk, server.base, target, duration, conns=conns)
    after = server.worker_pids()
    r.update(load1=la, workers_before=before, workers_after=after, workers_replaced=before != after,
             settled_s=settled)
    return r


def _fmt(r: dict[str, Any]) -> str:
    flag = "  WORKER REPLACED" if r["workers_replaced"] else ""
    return (f"{r['rps']:>8} req/s  p50 {r['p50_ms']:>6} p95 {r['p95_ms']:>7} p99 {r['p99_ms']:>7} max {r['max_ms']:>7} ms"
            f"  non-2xx {r['non_2xx']} errors {r['errors']}  load {r['load1']}{flag}")


@contextmanager
def scheduler_checkpoints(bdb: common.BenchDB) -> Iterator[None]:
    """On SQLite, what the scheduler does beside the web server in production: copy the write-ahead log back every
    few seconds (pharmacy/ops/wal.py), so no measured request pays a checkpoint it would not pay there."""
    if bdb.kind != "sqlite":
        yield
        return
    from pharmacy.ops import wal

    engine = sa.create_engine(bdb.url)
    stop = threading.Event()

    def run() -> None:
        while not stop.wait(wal.CHECKPOINT_SECONDS):
            with contextlib.suppress(sa.exc.OperationalError):  # busy: the next run tries again, as the job does
                wal.checkpoint(engine)

    thread = threading.Thread(target=run, name="checkpoints", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        engine.dispose()


def measure(a: Any, wrk: str, bdb: common.BenchDB, chosen: dict[str, Any]) -> dict[str, Any]:
    env = bdb.env(bdb.at(12), PHARMACY_ENV="production", GUNICORN_LOG_LEVEL="warning")
    log_path = common.DATA / f"gunicorn-{a.db}.log"
    server = load.Server(common.ROOT, common.ROOT / "gunicorn.conf.py", APP, env, log_path, workers=a.workers,
                         extra=["--max-requests", "0"])
    server.env["BASE_URL"] = server.base
    baseline_runs: list[dict[str, dict[str, Any]]] = []
    pages_out: dict[str, Any] = {}
    with server, scheduler_checkpoints(bdb):
        client = sign_in(server.port, bdb, chosen)
        patient = patient_browser(server.port, chosen)
        baselines, pages = targets(chosen, client.cookie_header(), a.only, patient.cookie_header())
        for name, t in {**baselines, **{p.name: p.target for p in pages}}.items():
            _ms, status = load.one_request_ms(server.port, t, repeat=1)
            if status >= 400:
                raise SystemExit(f"{name}: {t.method} {t.paths[0]} answered {status}")
        load.run_wrk(wrk, server.base, baselines["hello"], 2, conns=a.connections)  # warm-up

        def baseline_set() -> dict[str, dict[str, Any]]:
            out = {}
            for name, t in baselines.items():
                out[name] = measured_run(server, wrk, t, a.duration, a.connections)
                print(f"    {name:<18} {_fmt(out[name])}", flush=True)
            baseline_runs.append(out)
            return out

        load.settle(server.port, HELLO)
        singles = {name: load.one_request_ms(server.port, t)[0] for name, t in baselines.items()}
        crosscheck: dict[str, Any] = {}

        def python_client(name: str, t: load.Target) -> None:
            load.settle(server.port, HELLO)
            la = load.load1()
            crosscheck[name] = load.run_python_client(server.port, t, a.duration, conns=a.connections)
            crosscheck[name]["load1"] = la
            py = crosscheck[name]
            print(f"    {name:<18} Python client: {py['rps']:>8} req/s  p50 {py['p50_ms']:>6} p95 {py['p95_ms']:>7} "
                  f"p99 {py['p99_ms']:>7} max {py['max_ms']:>7} ms  load {la}", flush=True)

        print("  baselines", flush=True)
        before = baseline_set()
        for name, t in baselines.items():
            python_client(name, t)
        for page in pages:
            load.settle(server.port, HELLO)
            single, _ = load.one_request_ms(server.port, page.target)
            entry: dict[str, Any] = {"one_request_ms": single, "runs": [], "targets": {
                "share_of_audited_fortunes": page.share, "p95_ms": page.p95_ms, "one_request_ms": page.one_request_ms}}
            pages_out[page.name] = entry
            print(f"  {page.name}: one request {single} ms", flush=True)
            if single > a.max_load_ms:
                entry["note"] = f"one request takes {single / 1000:.1f} s: timed alone, not loaded"
                entry["load1"] = load.load1()
                continue
            for _round in range(a.rounds):
                run = measured_run(server, wrk, page.target, a.duration, a.connections)
                print(f"    {page.name:<18} {_fmt(run)}", flush=True)
                after = baseline_set()
                run["adjacent"] = {b: round((before[b]["rps"] + after[b]["rps"]) / 2, 1) for b in BASELINES}
                run["share"] = {b: round(run["rps"] / run["adjacent"][b], 3) if run["adjacent"][b] else 0
                                for b in BASELINES}
                entry["runs"].append(run)
                before = after
            python_client(page.name, page.target)  # right after its wrk runs, on the same settled server
        rss = [common.process_peak_rss_mb(pid) for pid in server.worker_pids()]
        rss_now = [common.process_peak_rss_mb(pid, "VmRSS") for pid in server.worker_pids()]
    replaced = sum(r["workers_replaced"] for s in baseline_runs for r in s.values()) + sum(
        r["workers_replaced"] for e in pages_out.values() for r in e["runs"])
    return {"baselines": {"runs": baseline_runs, "one_request_ms": singles}, "pages": pages_out,
            "python_client": crosscheck, "worker_peak_rss_mb": [round(x, 1) for x in rss if x],
            "worker_rss_after_mb": [round(x, 1) for x in rss_now if x],
            "runs_with_a_worker_replaced": replaced}


def summary_rows(out: dict[str, Any]) -> list[dict[str, Any]]:
    """One line per baseline and page: medians over the runs, shares against the adjacent baselines, verdicts."""
    lines = []
    base_runs = out["baselines"]["runs"]
    for name in BASELINES:
        runs = [s[name] for s in base_runs]
        lines.append(_line(name, runs, out["baselines"]["one_request_ms"][name], out["python_client"].get(name)))
    for name, e in out["pages"].items():
        line = _line(name, e["runs"], e["one_request_ms"], out["python_client"].get(name))
        line["note"] = e.get("note", "")
        if e["runs"]:
            for b in BASELINES:
                line[f"share_{b}"] = round(statistics.median(r["share"][b] for r in e["runs"]), 3)
        else:
            line["load1"] = [e.get("load1")]
        t = e["targets"]
        verdicts = []
        if t["share_of_audited_fortunes"] is not None:
            s = line.get(f"share_{REFERENCE}")
            verdicts.append("share: " + ("—" if s is None else "met" if s >= t["share_of_audited_fortunes"] else "MISSED"))
        if t["p95_ms"] is not None:
            p = line.get("p95_ms")
            verdicts.append("p95: " + ("—" if p is None else "met" if p <= t["p95_ms"] else "MISSED"))
        if t["one_request_ms"] is not None:
            verdicts.append("one request: " + ("met" if e["one_request_ms"] <= t["one_request_ms"] else "MISSED"))
        line["targets"] = t
        line["verdict"] = ", ".join(verdicts)
        lines.append(line)
    return lines


def _line(name: str, runs: list[dict[str, Any]], single: float, py: dict[str, Any] | None) -> dict[str, Any]:
    line: dict[str, Any] = {"name": name, "one_request_ms": single, "runs": len(runs)}
    if runs:
        for k in ("rps", "p50_ms", "p95_ms", "p99_ms", "max_ms"):
            line[k] = round(statistics.median(r[k] for r in runs), 1)
        line["load1"] = [r["load1"] for r in runs]
        line["workers_replaced"] = sum(r["workers_replaced"] for r in runs)
        line["non_2xx"] = sum(r["non_2xx"] for r in runs)
        line["errors"] = sum(r["errors"] for r in runs)
    if py:
        line["python_client"] = {k: py[k] for k in ("rps", "p50_ms", "p95_ms", "p99_ms", "max_ms")}
    return line


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--duration", type=float, default=5, help="seconds per run")
    p.add_argument("--rounds", type=int, default=2, help="page runs per page (each between two baseline sets)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--connections", type=int, default=8)
    p.add_argument("--max-load-ms", type=float, default=1000, help="slower than this for one request: not loaded")
    p.add_argument("--only", nargs="*", help="only the pages whose names contain these words")
    p.add_argument("--note", default="", help="recorded with the results, e.g. 'before the page rewrites'")
    a = p.parse_args()
    wrk = load.ensure_wrk()
    bdb = common.prepare(a.db, a.patients, seed=a.seed, fresh=a.fresh)
    snapshot = fill_adherence_snapshot(bdb)
    chosen = pick(bdb)
    out = measure(a, wrk, bdb, chosen)
    lines = summary_rows(out)
    rows = []
    for x in lines:
        py = x.get("python_client") or {}
        rows.append([x["name"], x.get("rps", ""), *(f"{x[f'share_{b}']:.0%}" if f"share_{b}" in x else ""
                                                     for b in BASELINES),
                     x.get("p50_ms", ""), x.get("p95_ms", ""), x.get("p99_ms", ""),
                     f"{py.get('p50_ms', '')}/{py.get('p95_ms', '')}/{py.get('p99_ms', '')}" if py else "",
                     x["one_request_ms"], load.load_text(x.get("load1", [])), load.target_text(x.get("targets")),
                     x.get("verdict", "") + (f" {x['note']}" if x.get("note") else "")])
    print(f"\nPages under gunicorn ({a.workers} sync workers, gunicorn.conf.py, --max-requests 0), wrk -t2 "
          f"-c{a.connections} -d{a.duration:g}s, {a.rounds} rounds ABAB, {a.db}, {a.patients:,} patients; "
          f"adherence snapshot: {snapshot['rows']:,} rows")
    print(common.table(["page", "req/s", "of hello", "of fortunes", "of AF", "p50 ms", "p95 ms", "p99 ms",
                        "py p50/p95/p99", "one request ms", "load 1m", "target", "verdict"], rows))
    n_runs = sum(len(s) for s in out["baselines"]["runs"]) + sum(len(e["runs"]) for e in out["pages"].values())
    replaced = out["runs_with_a_worker_replaced"]
    print(f"worker pids unchanged across all {n_runs} runs: {'yes' if not replaced else f'NO ({replaced} runs)'}")
    print(f"web worker peak RSS: {out['worker_peak_rss_mb']} MB, after the runs: {out['worker_rss_after_mb']} MB "
          "(target ≤ 150 MB; the worker that signed the pharmacist in peaked during the Argon2 hash, 64 MiB by design)")
    path = common.save("pages", a.db, {
        "patients": a.patients, "workers": a.workers, "connections": a.connections, "duration_s": a.duration,
        "rounds": a.rounds, "note": a.note, "adherence_snapshot": snapshot, "generator": bdb.meta.get("generator"),
        "summary": lines, **out})
    print(f"results in {path.relative_to(common.ROOT)}")


if __name__ == "__main__":
    main()
