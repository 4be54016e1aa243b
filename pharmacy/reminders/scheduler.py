"""The scheduler process (`flask scheduler`): a few periodic jobs over the outbox, nothing more.

Reminders are rows with a due time, not scheduler jobs, so APScheduler only runs a few
periodic jobs — deliver (every 30 s), plan/sweep (every 10 min), a heartbeat, and the nightly
adherence refresh (at ADHERENCE_REFRESH_HOUR, pharmacy time, default 02:00) — from its own
in-memory job store, never shared with another process. A process that was down simply finds
the rows that fell due meanwhile on its first run, and refreshes the adherence snapshot at
start-up when the last nightly refresh was missed; coalescing, one instance per job and a long
misfire grace make sure a late or stalled run is merged rather than skipped (APScheduler's
default grace of one second would silently drop it).

It refuses to start inside a web worker or the reloader, and on SQLite it takes a file lock so
only one runs (SQLite has no SKIP LOCKED; on PostgreSQL any number may run side by side).
SIGTERM and SIGINT stop it cleanly: the delivery in progress finishes its current message,
hands back the rest of its claim, and the process exits.
"""
from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from flask import Flask, has_request_context
from sqlalchemy.exc import IntegrityError

from pharmacy.autorefill import services as autorefill
from pharmacy.billing import adherence
from pharmacy.billing.models import AdherenceSnapshot
from pharmacy.core.context import now, settings
from pharmacy.core.errors import ConfigError
from pharmacy.core.models import SCHEDULER_HEARTBEAT, Heartbeat
from pharmacy.core.uow import unit_of_work
from pharmacy.extensions import db
from pharmacy.reminders import claims, delivery, services
from pharmacy.sms import delivery as sms_delivery

log = logging.getLogger(__name__)

HEARTBEAT_NAME = SCHEDULER_HEARTBEAT
DELIVER_SECONDS = 30
SWEEP_SECONDS = 600
HEARTBEAT_SECONDS = 30
MISFIRE_GRACE_SECONDS = 3600
#: The nightly adherence refresh (billing.adherence.refresh_adherence), pharmacy-local hour; ADHERENCE_REFRESH_HOUR.
ADHERENCE_REFRESH_HOUR = 2


class SchedulerRefused(RuntimeError):
    """The scheduler may not start here (a web worker, or a second one on SQLite)."""


def in_web_worker() -> bool:
    """True inside a request, under gunicorn, or in the dev server's reloader child."""
    return (
        has_request_context()
        or os.environ.get("WERKZEUG_RUN_MAIN") == "true"
        or "gunicorn" in os.environ.get("SERVER_SOFTWARE", "")
        or "gunicorn.arbiter" in sys.modules
    )


# ---- jobs (each in its own app context and unit of work) ---------------------------------------------------


def beat(detail: str) -> None:
    """Record that the scheduler is alive (read by /readyz); the caller commits."""
    row = db.session.get(Heartbeat, HEARTBEAT_NAME)
    if row is None:
        db.session.add(Heartbeat(name=HEARTBEAT_NAME, beat_at=now(), detail=detail[:200]))
    else:
        row.beat_at, row.detail = now(), detail[:200]


def job_heartbeat(app: Flask, worker: str) -> None:
    with app.app_context():
        try:
            with unit_of_work():
                beat(f"worker {worker}")
        except IntegrityError:  # two schedulers wrote the first beat at once: the other one's is as good
            pass
        except Exception as exc:
            log.error("heartbeat failed (%s)", type(exc).__name__)


def job_deliver(app: Flask, worker: str, stop: threading.Event) -> None:
    with app.app_context():
        try:
            delivery.deliver_due(worker=worker, should_stop=stop.is_set)
        except Exception as exc:  # the next run retries; claimed rows come back when their lease expires
            db.session.rollback()
            log.error("delivery run failed (%s)", type(exc).__name__)


def job_deliver_texts(app: Flask, worker: str, stop: threading.Event) -> None:
    """Texts (pharmacy/sms): the same outbox and claims as email, their own channel and transport."""
    with app.app_context():
        try:
            sms_delivery.deliver_due(worker=worker, should_stop=stop.is_set)
        except Exception as exc:
            db.session.rollback()
            log.error("text delivery run failed (%s)", type(exc).__name__)


def job_autorefill(app: Flask) -> None:
    """Auto-refill (pharmacy/autorefill): each enrolled prescription's refill on its order-by date, once."""
    with app.app_context():
        try:
            report = autorefill.run_due()
            if report.requested or report.renewals:
                log.info("auto-refill: %s", report.line())
        except Exception as exc:
            db.session.rollback()
            log.error("auto-refill run failed (%s)", type(exc).__name__)


def job_plan_sweep(app: Flask) -> None:
    """Re-plan fills whose reminders are missing, and release leases of crashed workers."""
    with app.app_context():
        try:
            with unit_of_work():
                added = services.plan_missing_reminders()
            released = claims.release_expired_leases()
            if added or released:
                log.info("plan sweep: %d reminder(s) planned, %d lease(s) released", added, released)
        except Exception as exc:
            db.session.rollback()
            log.error("plan sweep failed (%s)", type(exc).__name__)


def adherence_refresh_hour(app: Flask) -> int:
    """ADHERENCE_REFRESH_HOUR (0–23, pharmacy time; app config first, then the environment); 2 when unset."""
    raw = app.config.get("ADHERENCE_REFRESH_HOUR", os.environ.get("ADHERENCE_REFRESH_HOUR", ""))
    if raw is None or raw == "":
        return ADHERENCE_REFRESH_HOUR
    try:
        hour = int(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"ADHERENCE_REFRESH_HOUR={raw!r} is not a whole number") from None
    if not 0 <= hour <= 23:
        raise ConfigError(f"ADHERENCE_REFRESH_HOUR={hour} is outside 0..23")
    return hour


def adherence_refresh_due(hour: int) -> bool:
    """Was the last nightly refresh missed? True when the snapshot is empty or older than today's (or, before
    the hour, yesterday's) scheduled refresh. Needs an app context."""

    tz = settings().timezone
    local = now().astimezone(tz)
    scheduled = datetime.combine(local.date(), time(hour), tzinfo=tz)
    if scheduled > local:
        scheduled -= timedelta(days=1)
    oldest = db.session.execute(sa.select(sa.func.min(AdherenceSnapshot.computed_at))).scalar_one_or_none()
    db.session.rollback()
    if oldest is None:
        return True
    if isinstance(oldest, str):  # min() may bypass the column type on SQLite
        oldest = datetime.fromisoformat(oldest)
    if oldest.tzinfo is None:
        oldest = oldest.replace(tzinfo=UTC)
    return bool(oldest < scheduled)


def job_refresh_adherence(app: Flask, *, only_if_missed: bool = False) -> None:
    """The adherence snapshot (commits batch by batch); at start-up only when the nightly run was missed."""

    with app.app_context():
        try:
            if only_if_missed and not adherence_refresh_due(adherence_refresh_hour(app)):
                return
            done = adherence.refresh_adherence()
            log.info("adherence refreshed: %d patient(s) measured", done.measured)
        except Exception as exc:  # tomorrow's run (or `flask reports refresh-adherence`) tries again
            db.session.rollback()
            log.error("adherence refresh failed (%s)", type(exc).__name__)


def build(app: Flask, *, worker: str, stop: threading.Event, deliver_seconds: float = DELIVER_SECONDS,
          sweep_seconds: float = SWEEP_SECONDS, heartbeat_seconds: float = HEARTBEAT_SECONDS) -> BackgroundScheduler:
    """The configured (not started) scheduler: its own memory job store, coalescing, one instance per job."""
    hour = adherence_refresh_hour(app)
    tz = app.extensions["pharmacy.settings"].timezone
    scheduler = BackgroundScheduler(
        jobstores={"default": MemoryJobStore()},
        executors={"default": ThreadPoolExecutor(max_workers=3)},
        job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": MISFIRE_GRACE_SECONDS},
        timezone=UTC,
    )
    start = datetime.now(UTC)  # every job runs once at start-up: what fell due while we were down goes now
    scheduler.add_job(job_heartbeat, "interval", seconds=heartbeat_seconds, args=[app, worker], id="heartbeat",
                      name="heartbeat", next_run_time=start)
    scheduler.add_job(job_deliver, "interval", seconds=deliver_seconds, args=[app, worker, stop], id="deliver",
                      name="deliver", next_run_time=start)
    scheduler.add_job(job_deliver_texts, "interval", seconds=deliver_seconds, args=[app, worker, stop],
                      id="deliver_texts", name="deliver texts", next_run_time=start)
    autorefill_hour = app.extensions["pharmacy.settings"].autorefill_hour
    scheduler.add_job(job_autorefill, "cron", hour=autorefill_hour, minute=0, timezone=tz, args=[app], id="autorefill",
                      name="auto-refill")
    scheduler.add_job(job_autorefill, "date", run_date=start, args=[app], id="autorefill_catch_up",
                      name="auto-refill (at start-up)")
    scheduler.add_job(job_plan_sweep, "interval", seconds=sweep_seconds, args=[app], id="plan_sweep",
                      name="plan/sweep", next_run_time=start)
    scheduler.add_job(job_refresh_adherence, "cron", hour=hour, minute=0, timezone=tz, args=[app],
                      id="adherence", name="adherence refresh")
    # Once at start-up, when the snapshot is missing or last night's refresh did not happen (the process was down).
    scheduler.add_job(job_refresh_adherence, "date", run_date=start, args=[app], kwargs={"only_if_missed": True},
                      id="adherence_catch_up", name="adherence refresh (missed)")
    # Jobs other features add when they are registered (e-prescribing delivery, the fax folder import).
    for add_jobs in app.extensions.get("pharmacy.scheduler_jobs", ()):
        add_jobs(scheduler, app, worker, stop)
    return scheduler


@contextlib.contextmanager
def _single_on_sqlite(app: Flask) -> Iterator[None]:
    """On SQLite only one scheduler may run: an exclusive lock on a file beside the instance data.

    A file lock (not a row) because the operating system drops it when the process dies, so a
    crashed scheduler never blocks the next one.
    """
    if not app.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite"):
        yield
        return

    path = Path(app.instance_path) / "scheduler.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SchedulerRefused(
                "Another scheduler is already running on this SQLite database; on SQLite exactly one runs "
                "(use PostgreSQL to run several)."
            ) from None
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def run(app: Flask, *, stop: threading.Event | None = None, install_signals: bool = True,
        **intervals: Any) -> None:
    """Run the scheduler until SIGTERM/SIGINT (or `stop` is set); blocks the calling thread."""
    if in_web_worker():
        raise SchedulerRefused("The scheduler runs as its own process (`flask scheduler`), never in a web worker.")
    stop = stop or threading.Event()
    worker = claims.worker_id()
    # APScheduler logs every run of every job at INFO (a line every few seconds); failures still show.
    logging.getLogger("apscheduler.executors").setLevel(logging.WARNING)
    with _single_on_sqlite(app):
        if install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: stop.set())
        scheduler = build(app, worker=worker, stop=stop, **intervals)
        scheduler.start()
        log.info("scheduler started (worker %s)", worker)
        try:
            while not stop.wait(0.5):
                pass
        finally:
            stop.set()
            scheduler.shutdown(wait=True)  # running jobs finish their current message first
            log.info("scheduler stopped (worker %s)", worker)
