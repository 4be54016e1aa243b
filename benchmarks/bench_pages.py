"""Pages under gunicorn with wrk on loopback, against a trivial hello route on the same server.

    .venv/bin/python benchmarks/bench_pages.py --db sqlite --patients 100000
    .venv/bin/python benchmarks/bench_pages.py --db postgres --patients 100000

Gunicorn serves `benchmarks.bench_app:create_app()` (the product app, the clock pinned to 12:00 on the
data's day, plus /__bench/hello) with --workers 2 (sync; this machine has 2 cores, shared with wrk).
A pharmacist signs in once (the real /login form, CSRF token and all); every request carries that
session cookie. Measured, each for --duration seconds with wrk -t2 -c4:

* hello — the baseline: same server, same middleware (session, request id, headers, unit of work);
* dashboard home (/);
* a patient page (/patients/<id>, a random patient of all of them on every request);
* the order queue (compounding.queue);
* the refill endpoint: the patient's refill page (GET /r/<token>/refill, after the date-of-birth
  check on the link; five links in rotation).

Targets (issue 9): p95 ≤ 50 ms at 100k patients; throughput ≥ 50% of hello for the refill endpoint
and the patient page, ≥ 30% for the dashboard; a web worker's peak RSS ≤ 150 MB. wrk is installed with
apt-get when missing (root) — otherwise the script stops and says so.
"""
from __future__ import annotations

import http.client
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
from datetime import date
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import sqlalchemy as sa

from benchmarks import common

PHARMACIST = "bench-pharmacist@pharmacy.example"
LUA_DONE = """
done = function(summary, latency, requests)
  io.write(string.format("BENCH p50_us=%d p95_us=%d p99_us=%d requests=%d duration_us=%d non2xx=%d errors=%d\\n",
    latency:percentile(50), latency:percentile(95), latency:percentile(99), summary.requests, summary.duration,
    summary.errors.status, summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
"""


def ensure_wrk() -> str:
    path = shutil.which("wrk")
    if path:
        return path
    if os.geteuid() == 0:
        print("wrk is missing: apt-get install -y wrk", flush=True)
        subprocess.run(["apt-get", "install", "-y", "wrk"], check=False, stdout=subprocess.DEVNULL)
        if not shutil.which("wrk"):
            subprocess.run(["apt-get", "update"], check=False, stdout=subprocess.DEVNULL)
            subprocess.run(["apt-get", "install", "-y", "wrk"], check=False, stdout=subprocess.DEVNULL)
    path = shutil.which("wrk")
    if not path:
        raise SystemExit("wrk is needed (apt-get install wrk)")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Client:
    """Just enough HTTP for signing in: cookies kept, CSRF token read from the form."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.cookies: dict[str, str] = {}

    def request(self, method: str, path: str, form: dict[str, Any] | None = None) -> tuple[int, str, dict[str, str]]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=600)
        headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())}
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
        return resp.status, text, dict(resp.getheaders())

    def csrf(self, path: str) -> str:
        _status, text, _ = self.request("GET", path)
        m = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', text) or re.search(
            r'value="([^"]+)"[^>]*name="csrf_token"', text)
        return m.group(1) if m else ""

    def cookie_header(self) -> str:
        return "; ".join(f"{k}={v}" for k, v in self.cookies.items())


def wait_ready(port: int, proc: subprocess.Popen[Any], timeout: float = 60) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            raise SystemExit("gunicorn exited early")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/__bench/hello")
            if conn.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.3)
    raise SystemExit("gunicorn did not answer")


def worker_pids(master: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(master)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def run_wrk(wrk: str, url: str, cookie: str, paths: list[str], duration: int, threads: int, conns: int) -> dict[str, Any]:
    lua = LUA_DONE
    if len(paths) > 1:
        listing = ", ".join(f'"{p}"' for p in paths)
        lua += f"""
paths = {{{listing}}}
counter = 0
request = function()
  counter = counter + 1
  return wrk.format("GET", paths[(counter * 7919) % #paths + 1])
end
"""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as fh:
        fh.write(lua)
        script = fh.name
    try:
        out = subprocess.run([wrk, f"-t{threads}", f"-c{conns}", f"-d{duration}s", "--timeout", "10s", "-s", script,
                              "-H", f"Cookie: {cookie}", url + paths[0]], capture_output=True, text=True, check=True).stdout
    finally:
        os.unlink(script)
    m = re.search(r"BENCH (.*)", out)
    if not m:
        raise SystemExit(f"wrk said:\n{out}")
    v = {k: int(x) for k, x in (kv.split("=") for kv in m.group(1).split())}
    return {"rps": round(v["requests"] / (v["duration_us"] / 1e6), 1), "p50_ms": round(v["p50_us"] / 1000, 1),
            "p95_ms": round(v["p95_us"] / 1000, 1), "p99_ms": round(v["p99_us"] / 1000, 1),
            "requests": v["requests"], "non_2xx": v["non2xx"], "errors": v["errors"]}


def pick(bdb: common.BenchDB) -> dict[str, Any]:
    """Patients for the patient page, and five refill links (active prescriptions, nothing in progress)."""
    app = common.app_for(bdb, bdb.at(12))
    from pharmacy.core import links
    from pharmacy.extensions import db

    with app.test_request_context("/"):
        max_patient = db.session.execute(sa.text("SELECT max(id) FROM patients")).scalar_one()
        rows = db.session.execute(sa.text(
            "SELECT p.id, p.patient_id, pt.date_of_birth FROM prescriptions p JOIN patients pt ON pt.id = p.patient_id "
            "WHERE p.status = 'active' AND NOT EXISTS (SELECT 1 FROM orders o WHERE o.prescription_id = p.id "
            "AND o.state NOT IN ('dispensed', 'cancelled')) AND NOT EXISTS (SELECT 1 FROM refill_requests r "
            "WHERE r.prescription_id = p.id AND r.state IN ('open', 'awaiting_renewal')) "
            "AND EXISTS (SELECT 1 FROM orders o WHERE o.prescription_id = p.id) ORDER BY p.id DESC LIMIT 5")).all()
        tokens = [(links.make_token(links.REFILL, patient, rx), date.fromisoformat(str(dob)[:10]))
                  for rx, patient, dob in rows]
        from flask import url_for

        queue = url_for("compounding.queue") if "compounding.queue" in app.view_functions else None
        db.session.remove()
        db.engine.dispose()
    return {"max_patient": int(max_patient), "tokens": tokens, "queue": queue}


def serve_and_measure(a: Any, wrk: str, bdb: common.BenchDB, chosen: dict[str, Any],
                      results: dict[str, Any]) -> list[float | None]:
    """Start gunicorn on the bench app, sign in, confirm the refill links, run wrk on each page; stop it."""
    port = free_port()
    env = bdb.env(bdb.at(12), PHARMACY_ENV="production", BASE_URL=f"http://127.0.0.1:{port}")
    # --timeout 300: a page slower than gunicorn's default 30 s is measured, not killed (the README says which).
    cmd = [str(Path(sys.executable).with_name("gunicorn")), "--workers", str(a.workers), "--bind", f"127.0.0.1:{port}",
           "--timeout", "300", "--graceful-timeout", "5", "--log-level", "warning", "benchmarks.bench_app:create_app()"]
    log_path = common.DATA / f"gunicorn-{a.db}.log"
    log = log_path.open("a")  # the app's request log (one line a request) goes here, not to the terminal
    proc = subprocess.Popen(cmd, env=env, cwd=common.ROOT, start_new_session=True, stdout=log, stderr=log)
    try:
        wait_ready(port, proc)
        c = Client(port)
        token = c.csrf("/login")
        status, text, _ = c.request("POST", "/login", {"email": PHARMACIST, "password": bdb.password, "csrf_token": token})
        if status not in (302, 303):
            raise SystemExit(f"sign-in failed: {status} {text[:300]}")
        pages: dict[str, list[str]]
        for tok, dob in chosen["tokens"]:
            csrf = c.csrf(f"/r/{tok}")
            status, text, _ = c.request("POST", f"/r/{tok}", {"month": dob.month, "day": dob.day,
                                                             "year": dob.year, "csrf_token": csrf})
            if status not in (302, 303):
                raise SystemExit(f"refill link confirmation failed: {status} {text[:300]}")
        rnd = random.Random(1)
        pages = {
            "hello": ["/__bench/hello"],
            "patient page": [f"/patients/{rnd.randint(1, chosen['max_patient'])}" for _ in range(500)],
            "refill page": [f"/r/{tok}/refill" for tok, _ in chosen["tokens"]],
        }
        if chosen["queue"]:
            pages["order queue"] = [chosen["queue"]]
        pages["dashboard"] = ["/"]  # last: at chain scale it can keep both workers busy for minutes
        cookie = c.cookie_header()
        base = f"http://127.0.0.1:{port}"
        run_wrk(wrk, base, cookie, ["/__bench/hello"], 2, 2, a.connections)  # warm-up
        for name, paths in pages.items():
            check = Client(port)
            check.cookies = dict(c.cookies)
            t0 = time.perf_counter()
            st, body, _ = check.request("GET", paths[0])
            single_ms = round((time.perf_counter() - t0) * 1000, 1)
            if st != 200:
                raise SystemExit(f"{name}: {paths[0]} answered {st}: {body[:300]}")
            if single_ms > 5000:
                # Far too slow for a load test (every wrk connection would time out and the workers would stay
                # busy long after): one request's time is the figure.
                results[name] = {"rps": round(a.workers / (single_ms / 1000), 2), "p50_ms": single_ms,
                                 "p95_ms": single_ms, "p99_ms": single_ms, "requests": 1, "non_2xx": 0, "errors": 0,
                                 "single_request_ms": single_ms, "note": "one request timed; too slow for wrk"}
            else:
                results[name] = run_wrk(wrk, base, cookie, paths, a.duration, 2, a.connections)
                results[name]["single_request_ms"] = single_ms
            print(f"  {name}: {results[name]}", flush=True)
        return [common.process_peak_rss_mb(pid) for pid in worker_pids(proc.pid)]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the process group of the gunicorn started above
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        log.close()


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--duration", type=int, default=10)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--connections", type=int, default=4)
    a = p.parse_args()
    wrk = ensure_wrk()
    bdb = common.prepare(a.db, a.patients, seed=a.seed, fresh=a.fresh)
    chosen = pick(bdb)
    results: dict[str, Any] = {}
    rss = serve_and_measure(a, wrk, bdb, chosen, results)
    hello = results["hello"]["rps"]
    targets = {"patient page": 0.5, "refill page": 0.5, "dashboard": 0.3}
    rows = []
    for name, r in results.items():
        share = r["rps"] / hello if hello else 0
        r["share_of_hello"] = round(share, 3)
        want = targets.get(name)
        verdict = "" if want is None else ("ok" if share >= want and r["p95_ms"] <= 50 else "MISSED")
        if r.get("note"):
            verdict = ("MISSED: " if want else "") + f"one request took {r['single_request_ms'] / 1000:.1f} s"
        rows.append([name, r["rps"], f"{share:.0%}", f"≥{want:.0%}" if want else "", r["p50_ms"], r["p95_ms"],
                     r["p99_ms"], r["non_2xx"], r["errors"], verdict])
    print(f"\nPages under gunicorn ({a.workers} sync workers), wrk -t2 -c{a.connections} -d{a.duration}s, "
          f"{a.db}, {a.patients:,} patients")
    print(common.table(["page", "req/s", "of hello", "target", "p50 ms", "p95 ms", "p99 ms", "non-2xx", "errors", ""],
                       rows))
    worker_rss = [round(x, 1) for x in rss if x]
    print(f"web worker peak RSS: {worker_rss} MB (target ≤ 150 MB)")
    path = common.save("pages", a.db, {"patients": a.patients, "workers": a.workers, "connections": a.connections,
                                       "duration_s": a.duration, "results": results, "worker_peak_rss_mb": worker_rss})
    print(f"results in {path.relative_to(common.ROOT)}")


if __name__ == "__main__":
    main()
