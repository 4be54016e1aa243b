"""gunicorn settings for the web process:  gunicorn -c gunicorn.conf.py 'pharmacy.entry:create_app()'

Read by the gunicorn master before any worker starts; it imports nothing from the app.
Environment:
  BIND / PORT              where to listen (default 127.0.0.1:8000 — behind nginx on the same host;
                           BIND=0.0.0.0:8000 in a container). BIND wins over PORT.
  WEB_CONCURRENCY          worker processes (default 2 × CPU cores + 1, at most 9).
  FORWARDED_ALLOW_IPS      proxies whose X-Forwarded-Proto gunicorn trusts (default 127.0.0.1).
  PROMETHEUS_MULTIPROC_DIR where workers write their metrics so /metrics adds them up (set here
                           automatically when there is more than one worker).
  WEB_WORKER_MAX_RSS_MB    a worker whose resident memory passes this after a request is replaced
                           (default 400; 0 turns the guard off).
  LOG_FORMAT / PHARMACY_ENV  the access log is JSON when the app logs JSON (production).

Forwarded-for: gunicorn itself never rewrites the client address. The app does, with
TRUSTED_PROXY_HOPS=1 (one nginx in front): werkzeug's ProxyFix then takes the client address
from X-Forwarded-For for rate limits and the audit trail, and https from X-Forwarded-Proto.
Only set it when gunicorn is reachable solely through that proxy (bind to 127.0.0.1 or a
private interface); otherwise anyone could claim any address. The access log records both
the peer (%(h)s) and the X-Forwarded-For header.

The access log never carries a query string (%(U)s, never %(r)s or %(q)s), a referer, cookies
or authorization headers, paths under /r/, /preferences/ and /renewal-request/ (signed links) are
logged as /r/[token] and so on, and the path of a 404 as /[path of a 404].

Workers are recycled by memory, never by count, and a recycle costs a fork, not an app build. Until issue 21
every worker restarted after 1,000 (+0–100) requests and built the app afresh (1–2 s on an idle machine, far
longer on a busy one, no request served meanwhile). Under load the workers reach their count within a fraction of
a second of each other — the jitter is 10% of the count and the load spreads evenly — so the whole server stopped
answering every few seconds at 800 req/s: hello's p95 was 1.2–1.5 s. Now:
  * preload_app: the master builds the app once; a new worker is a fork of it. Each worker drops the database
    pool it inherited (post_fork) and opens its own connections; create_app opens none, starts no thread and no
    scheduler, and prometheus_client reopens its files when the pid changes.
  * max_requests = 0: no recycling by count.
  * the memory guard (post_request): after each request the worker reads its resident set from
    /proc/self/statm (one small read); past WEB_WORKER_MAX_RSS_MB it finishes that request, stops accepting and
    exits, and the master forks a fresh one — the request involved has already been answered. This is what
    max_requests was for (bounded memory growth), without a schedule that lines the workers up.
  * a fast exit (worker_exit): a worker leaving cleanly closes its connections, flushes its logs and calls
    os._exit. The interpreter's teardown in a forked worker touches every object the master built and so copies
    nearly every shared page: 2–4 s on a busy 2-core machine, during which the master has not replaced it yet.
Measured with benchmarks/bench_recycling.py (benchmarks/README.md, "Worker recycling"). The cost: with the app
preloaded, SIGHUP (systemctl reload) forks new workers from the code already loaded — it rereads this file but
not the application; a code upgrade is a restart (systemctl restart pharmacy-web), as the README's upgrade steps
say.
"""
from __future__ import annotations

import contextlib
import gc
import json
import logging
import multiprocessing
import os
import re
import shutil
import sys
import tempfile
from datetime import UTC, datetime
from typing import Any

from gunicorn.glogging import Logger

# ---- where and how many --------------------------------------------------------------------------------------

bind = [os.environ.get("BIND") or f"127.0.0.1:{os.environ.get('PORT', '8000')}"]
workers = int(os.environ.get("WEB_CONCURRENCY") or min(2 * multiprocessing.cpu_count() + 1, 9))
worker_class = "sync"  # one request per process at a time; nginx in front buffers slow clients
proc_name = "pharmacy-web"

# ---- time limits and recycling -------------------------------------------------------------------------------

timeout = 30  # a request still running after 30 s gets its worker killed and restarted
graceful_timeout = 30  # on SIGTERM/SIGHUP, requests in progress get this long to finish
keepalive = 5
max_requests = 0  # never by count: every worker would rebuild at about the same moment (see above) ...
max_requests_jitter = 0
worker_max_rss_mb = int(os.environ.get("WEB_WORKER_MAX_RSS_MB") or 400)  # ... by memory instead (post_request)
preload_app = True  # built once in the master; a new worker is a fork (post_fork: fresh database connections)
if os.path.isdir("/dev/shm"):  # noqa: S108 - gunicorn's recommended place for its worker heartbeat files
    worker_tmp_dir = "/dev/shm"  # noqa: S108

forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")
limit_request_line = 4094
limit_request_fields = 100

# ---- logs ----------------------------------------------------------------------------------------------------

accesslog = "-"  # stdout: journald (or the container runtime) keeps it
errorlog = "-"
loglevel = os.environ.get("GUNICORN_LOG_LEVEL", "info")
# No %(r)s (the request line has the query string), no %(q)s, no %(f)s (referer), no cookies or auth headers.
access_log_format = (
    '%(h)s "%({x-forwarded-for}i)s" %(t)s "%(m)s %(U)s %(H)s" %(s)s %(B)s %(M)sms "%({user-agent}i)s" '
    '%({x-request-id}o)s'
)

_PATIENT_LINK = re.compile(r"^/(r|preferences|renewal-request)/[^/]+")
_LONG_SEGMENT = re.compile(r"/[A-Za-z0-9_\-.]{32,}")
# Header atoms the log may use; every other {…}i / {…}o / {…}e atom is dropped (cookies, authorization,
# referer, location — which can hold a patient link or a search term — and the whole WSGI environ).
_ALLOWED_HEADER_ATOMS = {"{x-forwarded-for}i", "{user-agent}i", "{x-request-id}i", "{x-request-id}o"}


NOT_FOUND_PATH = "/[path of a 404]"


def mask_path(path: str, status: str | int | None = None) -> str:
    """The path as it may be logged: patient-link tokens (and any other long opaque segment) masked, and the
    path of a 404 not at all — it matched no route, so it may be anything typed into the address bar (a
    patient's name, a date of birth), and the status, method and request id say enough."""
    if str(status) == "404":
        return NOT_FOUND_PATH
    path = _PATIENT_LINK.sub(lambda m: f"/{m.group(1)}/[token]", path or "")
    return _LONG_SEGMENT.sub("/[token]", path)


def _json_logs() -> bool:
    fmt = os.environ.get("LOG_FORMAT")
    return fmt == "json" if fmt else os.environ.get("PHARMACY_ENV") == "production"


class SafeAccessLogger(Logger):
    """gunicorn's logger, with the access-log atoms stripped of anything that could carry PHI or a link token."""

    def atoms(self, resp, req, environ, request_time):  # type: ignore[no-untyped-def]
        atoms = super().atoms(resp, req, environ, request_time)
        for key in [k for k in atoms if k.startswith("{") and k not in _ALLOWED_HEADER_ATOMS]:
            del atoms[key]
        path = mask_path(atoms.get("U", ""), atoms.get("s"))
        atoms["U"] = path
        atoms["q"] = ""
        atoms["f"] = "-"
        atoms["r"] = f"{atoms.get('m', '-')} {path} {atoms.get('H', '-')}"
        return atoms

    def access(self, resp, req, environ, request_time):  # type: ignore[no-untyped-def]
        if not _json_logs():
            return super().access(resp, req, environ, request_time)
        if not self.cfg.accesslog:
            return None
        a = self.atoms(resp, req, environ, request_time)
        line = {
            "ts": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "level": "INFO",
            "logger": "gunicorn.access",
            "pid": os.getpid(),
            "request_id": a.get("{x-request-id}o", "-"),
            "remote": a.get("h"),
            "forwarded_for": a.get("{x-forwarded-for}i", "-"),
            "method": a.get("m"),
            "path": a.get("U"),
            "status": a.get("s"),
            "bytes": a.get("B"),
            "duration_ms": a.get("M"),
            "user_agent": a.get("{user-agent}i", "-"),
        }
        try:
            self.access_log.info("%s", json.dumps(line))
        except Exception:
            self.exception("access log line failed")
        return None


logger_class = SafeAccessLogger

# ---- metrics from every worker ---------------------------------------------------------------------------------

_CREATED_METRICS_DIR: str | None = None
if workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    # Must be in the environment before the workers import prometheus_client.
    base = os.environ.get("RUNTIME_DIRECTORY")  # systemd's RuntimeDirectory=, e.g. /run/pharmacy
    if base:
        _CREATED_METRICS_DIR = os.path.join(base.split(":")[0], "metrics")
        os.makedirs(_CREATED_METRICS_DIR, mode=0o700, exist_ok=True)
    else:
        _CREATED_METRICS_DIR = tempfile.mkdtemp(prefix="pharmacy-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = _CREATED_METRICS_DIR


def on_starting(server):  # type: ignore[no-untyped-def]
    """Start with empty metric files: counts from a previous run must not be added to this one's."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        for name in os.listdir(directory):
            if name.endswith(".db"):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(os.path.join(directory, name))


def child_exit(server, worker):  # type: ignore[no-untyped-def]
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess  # noqa: PLC0415 - only when metrics run multi-process

        multiprocess.mark_process_dead(worker.pid)


def on_exit(server):  # type: ignore[no-untyped-def]
    if _CREATED_METRICS_DIR and not os.environ.get("RUNTIME_DIRECTORY"):
        shutil.rmtree(_CREATED_METRICS_DIR, ignore_errors=True)


# ---- a preloaded app, recycled by memory -------------------------------------------------------------------------

_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_mb(statm: str = "/proc/self/statm") -> float | None:
    """This process's resident set in MB, from /proc (None where there is no /proc): one small read, no library."""
    try:
        with open(statm, "rb") as fh:
            return int(fh.read().split()[1]) * _PAGE_SIZE / (1024 * 1024)
    except (OSError, IndexError, ValueError):
        return None


def recycle_if_over(worker: Any, limit_mb: float, current_mb: float | None) -> bool:
    """Past the limit: the worker stops accepting after the request it has just answered (alive = False; the
    sync worker's loop ends, the process exits cleanly and the master forks a fresh one)."""
    if not limit_mb or current_mb is None or current_mb <= limit_mb or not worker.alive:
        return False
    worker.log.info("worker %s: resident memory %.0f MB is over %d MB; replaced after this request",
                    worker.pid, current_mb, limit_mb)
    worker.alive = False
    return True


def post_request(worker, req, environ, resp):  # type: ignore[no-untyped-def]
    recycle_if_over(worker, worker_max_rss_mb, rss_mb())


def _engines(server: Any) -> list[Any]:
    """The SQLAlchemy engines of the loaded app (none when the app is not loaded in this process yet)."""
    app = getattr(server.app, "callable", None)
    sqlalchemy = getattr(app, "extensions", {}).get("sqlalchemy")
    if sqlalchemy is None:
        return []
    with app.app_context():
        return list(sqlalchemy.engines.values())


def pre_fork(server, worker):  # type: ignore[no-untyped-def]
    """Move everything the master has built (the preloaded app: ~250,000 objects) out of the collector's reach
    before forking. Otherwise each worker's full collections walk all of it again — measured in-process, ~17 ms
    on average per order-queue request, and its p95 tail — and touching the objects copies the shared pages
    (Python's gc docs recommend exactly this for a pre-forking server)."""
    gc.freeze()


def post_fork(server, worker):  # type: ignore[no-untyped-def]
    """A worker must not share the master's database connections (two processes on one socket): with the app
    preloaded, drop the inherited pool without closing its sockets (the master still owns them); the worker's
    first request opens its own. create_app opens no connection today, so this is a guard, not a fix."""
    for engine in _engines(server):
        engine.dispose(close=False)


def worker_exit(server, worker):  # type: ignore[no-untyped-def]
    """A worker that served and is leaving cleanly (recycled, or the server stopping) exits at once: its database
    connections closed, its logs flushed, then os._exit — without the interpreter's teardown, which in a forked
    worker decrements every object the master built and so copies nearly every page of it (measured: 2–4 s on a
    busy 2-core machine, during which the master has not yet replaced it). A worker that failed to boot or
    crashed exits the ordinary way, with gunicorn's exit code."""
    exc = sys.exc_info()[1]
    if not worker.booted or not isinstance(exc, SystemExit) or exc.code not in (0, None):
        return
    for engine in _engines(server):
        engine.dispose()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(0)
