"""Worker recycling under load: hello under gunicorn with the settings before issue 21 and with today's.

    .venv/bin/python benchmarks/bench_recycling.py            # SQLite, a 100-patient database (hello reads none)

Each configuration serves `benchmarks.bench_app:create_app()` with 2 sync workers and the production config
(gunicorn.conf.py, access log and all), changed only where named:

* before: preload_app = False, max_requests = 1000, max_requests_jitter = 100, no memory guard and gunicorn's own
  worker exit (the settings until issue 21: each worker rebuilt the app after about 1,000 requests);
* now: gunicorn.conf.py as it is (preloaded app, no recycling by count, the memory guard at its default);
* now, recycled by count: preloaded, but max_requests = 1000 / jitter 100 as before — what a recycle costs
  when it is a fork rather than an app build;
* now, guard at 1 MB: the memory guard with a limit every worker is over, so every worker is replaced after
  every request — the guard's worst case.

For each: wrk -t2 -c8 for --duration seconds (req/s, p50/p99/max), then the plain Python client (8 threads) for as
long (p50/p99/max, and every interval over 250 ms in which no response completed: a gap), with the worker pids
polled every 50 ms throughout (workers started during the runs). The 1-minute load average is printed with each.
"""
from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import common, load
from benchmarks.bench_app import HELLO

APP = "benchmarks.bench_app:create_app()"

OVERRIDES = '''
import runpy
globals().update(runpy.run_path({conf!r}))
{settings}
'''

# The settings before issue 21, and gunicorn's own (empty) hooks in place of the memory guard and the fast exit.
BEFORE = """preload_app = False
max_requests = 1000
max_requests_jitter = 100
def post_request(worker, req, environ, resp): pass
def worker_exit(server, worker): pass
"""

CONFIGS: list[tuple[str, str, dict[str, str]]] = [
    ("before: no preload, max_requests 1000", BEFORE, {}),
    ("now: preload, no count, memory guard", "", {}),
    ("now, but max_requests 1000", "max_requests = 1000\nmax_requests_jitter = 100", {}),
    ("now, guard at 1 MB (every request)", "", {"WEB_WORKER_MAX_RSS_MB": "1"}),
]


class PidWatch:
    """Every worker pid seen while running (polled): how many workers were started during a measurement."""

    def __init__(self, server: load.Server) -> None:
        self.server = server
        self.seen: set[int] = set(server.worker_pids())
        self.first = set(self.seen)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.wait(0.05):
            self.seen.update(self.server.worker_pids())

    def __enter__(self) -> PidWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.seen.update(self.server.worker_pids())

    @property
    def started(self) -> int:
        return len(self.seen - self.first)


def run_config(label: str, settings: str, extra_env: dict[str, str], bdb: common.BenchDB, wrk: str,
               duration: float) -> dict[str, Any]:
    conf = common.ROOT / "gunicorn.conf.py"
    if settings:
        path = common.DATA / "gunicorn-recycling.conf.py"
        path.write_text(OVERRIDES.format(conf=str(conf), settings=settings))
        conf = path
    env = bdb.env(bdb.at(12), PHARMACY_ENV="production", GUNICORN_LOG_LEVEL="warning", **extra_env)
    server = load.Server(common.ROOT, conf, APP, env, common.DATA / "gunicorn-recycling.log", workers=2)
    server.env["BASE_URL"] = server.base
    target = load.Target([HELLO])
    out: dict[str, Any] = {"config": label, "settings": settings, "env": extra_env}
    with server:
        load.run_wrk(wrk, server.base, target, 2)  # warm-up
        la = load.load1()
        with PidWatch(server) as watch:
            out["wrk"] = load.run_wrk(wrk, server.base, target, duration)
        out["wrk"].update(load1=la, workers_started=watch.started)
        la = load.load1()
        with PidWatch(server) as watch:
            out["python"] = load.run_python_client(server.port, target, duration)
        out["python"].update(load1=la, workers_started=watch.started)
    return out


def main() -> None:
    p = common.parser(__doc__.splitlines()[0], default_patients=100)
    p.add_argument("--duration", type=float, default=20)
    a = p.parse_args()
    wrk = load.ensure_wrk()
    bdb = common.prepare(a.db, a.patients, seed=a.seed, fresh=a.fresh)
    results = []
    for label, settings, extra_env in CONFIGS:
        print(f"  {label}", flush=True)
        r = run_config(label, settings, extra_env, bdb, wrk, a.duration)
        print(f"    wrk:    {r['wrk']}\n    python: {r['python']}", flush=True)
        results.append(r)
        time.sleep(1)
    rows = [[r["config"], r["wrk"]["rps"], r["wrk"]["p50_ms"], r["wrk"]["p99_ms"], r["wrk"]["max_ms"],
             r["wrk"]["workers_started"], r["python"]["rps"], r["python"]["p50_ms"], r["python"]["p99_ms"],
             r["python"]["max_ms"], r["python"]["gaps"], r["python"]["longest_gap_ms"],
             r["python"]["workers_started"], f"{r['wrk']['load1']}/{r['python']['load1']}"] for r in results]
    print(f"\nhello under gunicorn (2 sync workers), {a.duration:g} s each with wrk -t2 -c8 and the Python client "
          f"(8 threads); gaps: no response for > 250 ms")
    print(common.table(["configuration", "wrk req/s", "p50", "p99", "max ms", "workers started", "py req/s", "p50",
                        "p99", "max ms", "gaps", "longest gap ms", "workers started", "load 1m"], rows))
    path = common.save("recycling", a.db, {"patients": a.patients, "duration_s": a.duration, "results": results})
    print(f"results in {path.relative_to(common.ROOT)}")


if __name__ == "__main__":
    main()
