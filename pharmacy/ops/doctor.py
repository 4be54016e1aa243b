"""`flask doctor` (and `make prod-check`): a deployment's settings and connections, checked and said plainly.

Each check gives one line: ✓ fine, ! worth a look (does not fail), ✗ wrong (exit code 1).
A setting so wrong that the app cannot start (a missing SECRET_KEY in production, an unknown
time zone…) never reaches here: the command stops before with one line naming it.
Nothing is sent: SMTP is checked up to the login, Redis with a PING.
"""
from __future__ import annotations

import smtplib
import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import redis
import sqlalchemy as sa
from flask import current_app

from pharmacy.config import Settings, secret_key_problem
from pharmacy.core.context import now, settings
from pharmacy.extensions import db
from pharmacy.ops import health
from pharmacy.ops.models import BACKUP, OpsEvent
from pharmacy.supply import services as supply

OK, WARN, FAIL = "ok", "warn", "fail"
MARK = {OK: "✓", WARN: "!", FAIL: "✗"}
BACKUP_MAX_AGE = timedelta(hours=26)


@dataclass(frozen=True)
class Result:
    name: str
    status: str
    message: str

    def line(self) -> str:
        return f"{MARK[self.status]} {self.name}: {self.message}"


def _redacted_url(url: str) -> str:
    u = sa.make_url(url)
    if u.get_backend_name() == "sqlite":
        return f"SQLite file {u.database}"
    return f"PostgreSQL {u.host or 'local socket'}:{u.port or 5432}/{u.database}"


# ---- the checks (each yields one or more results) ----------------------------------------------------------


def check_environment(cfg: Settings) -> Iterator[Result]:
    if cfg.production:
        yield Result("Environment", OK, "PHARMACY_ENV=production")
    else:
        yield Result("Environment", WARN, f"PHARMACY_ENV={cfg.env}: fine for trying it out; set "
                     "PHARMACY_ENV=production on a real server (the checks marked ! become ✗ there)")


def check_secret_key(cfg: Settings) -> Iterator[Result]:
    problem = secret_key_problem(cfg.secret_key)
    hint = "generate one with: python -c 'import secrets; print(secrets.token_hex(32))'"
    if problem is None:
        yield Result("SECRET_KEY", OK, "set and strong")
    elif cfg.production:
        yield Result("SECRET_KEY", FAIL, f"{problem}; {hint}")
    else:
        yield Result("SECRET_KEY", WARN, f"{problem} (not production); {hint}")


def check_https(cfg: Settings) -> Iterator[Result]:
    config = current_app.config
    scheme = urlsplit(cfg.base_url).scheme
    level = FAIL if cfg.production else WARN
    if scheme == "https":
        yield Result("BASE_URL", OK, f"{cfg.base_url} (links in emails use HTTPS)")
    else:
        yield Result("BASE_URL", level, f"{cfg.base_url} is not https://: refill links in emails would travel in "
                     "clear; set BASE_URL=https://your.pharmacy.domain")
    problems = []
    if not config.get("SESSION_COOKIE_SECURE"):
        problems.append("SESSION_COOKIE_SECURE is off (sessions would be sent over plain HTTP)")
    if not config.get("SESSION_COOKIE_HTTPONLY"):
        problems.append("SESSION_COOKIE_HTTPONLY is off")
    if config.get("SESSION_COOKIE_SAMESITE") not in ("Lax", "Strict"):
        problems.append("SESSION_COOKIE_SAMESITE is not Lax or Strict")
    if problems:
        yield Result("Cookies", level, "; ".join(problems) + (" — PHARMACY_ENV=production turns these on"
                                                             if not cfg.production else ""))
    else:
        yield Result("Cookies", OK, f"secure, HTTP-only, SameSite={config['SESSION_COOKIE_SAMESITE']} "
                     f"({config['SESSION_COOKIE_NAME']})")


def check_database(cfg: Settings) -> Iterator[Result]:
    where = _redacted_url(cfg.database_url)
    try:
        with db.engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
            state = health.migration_state(conn)
    except Exception as exc:
        yield Result("Database", FAIL, f"{where} is not reachable ({type(exc).__name__}: "
                     f"{_first_line(exc)}); check DATABASE_URL and that the server is running")
        yield Result("Migrations", FAIL, "not checked: no database")
        return
    yield Result("Database", OK, f"{where} answers")
    if cfg.production and db.engine.dialect.name == "sqlite":
        yield Result("Database", WARN, "SQLite in production: fine for one server with one scheduler; back it up "
                     "daily with `flask backup create` (PostgreSQL for more than one server)")
    yield Result("Migrations", OK if state.at_head else FAIL, state.describe())


def check_refill_order(cfg: Settings) -> Iterator[Result]:
    """The refill queue orders open requests by a copy of their prescription's run-out: it must agree."""
    try:
        found = supply.open_requests_out_of_step()
    except Exception as exc:
        yield Result("Refill queue order", FAIL, f"not checked ({type(exc).__name__})")
        return
    if found:
        yield Result("Refill queue order", WARN, f"{found} open request(s) carry a run-out that is not their "
                     "prescription's and are listed out of order: run `flask refills verify --fix`")
    else:
        yield Result("Refill queue order", OK, "every open request carries its prescription's run-out")


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]


def check_smtp(cfg: Settings) -> Iterator[Result]:
    smtp = cfg.smtp
    if smtp is None:
        yield Result("SMTP", FAIL if cfg.production else WARN,
                     "SMTP_URL is not set: reminder emails stay in the dashboard's outbox and never reach patients; "
                     "set SMTP_URL=smtp://user:password@mail.example.com:587")
        return
    where = f"{smtp.host}:{smtp.port} ({smtp.security})"
    context = ssl.create_default_context()
    try:
        if smtp.security == "tls":
            client: smtplib.SMTP = smtplib.SMTP_SSL(smtp.host, smtp.port, timeout=smtp.timeout, context=context)
        else:
            client = smtplib.SMTP(smtp.host, smtp.port, timeout=smtp.timeout)
    except (OSError, smtplib.SMTPException) as exc:
        yield Result("SMTP", FAIL, f"cannot connect to {where}: {type(exc).__name__} {exc}".strip())
        return
    try:
        client.ehlo()
        if smtp.security == "starttls":
            if not client.has_extn("starttls"):
                yield Result("SMTP", FAIL, f"{where} does not offer STARTTLS; use smtps:// (port 465) or ask the "
                             "mail provider for the submission port")
                return
            client.starttls(context=context)
            client.ehlo()
        elif smtp.security == "none" and cfg.production:
            yield Result("SMTP", WARN, f"{where}: security=none sends mail unencrypted (only for a relay on this host)")
        if smtp.username:
            client.login(smtp.username, smtp.password or "")
            yield Result("SMTP", OK, f"{where}: connected and logged in as {smtp.username} (no mail sent)")
        else:
            yield Result("SMTP", OK, f"{where}: connected (no login configured; no mail sent)")
    except smtplib.SMTPAuthenticationError as exc:
        yield Result("SMTP", FAIL, f"{where}: login refused for {smtp.username} ({exc.smtp_code}); check the user "
                     "and password in SMTP_URL (special characters must be %-encoded)")
    except (OSError, smtplib.SMTPException, ssl.SSLError) as exc:
        yield Result("SMTP", FAIL, f"{where}: {type(exc).__name__} {exc}".strip())
    finally:
        try:
            client.quit()
        except (OSError, smtplib.SMTPException):
            client.close()


def check_redis(cfg: Settings) -> Iterator[Result]:
    uri = cfg.ratelimit_storage_uri
    if uri.startswith("memory"):
        yield Result("Rate limits", WARN if cfg.production else OK,
                     "kept in each worker's memory: limits count per process and reset on restart"
                     + ("; set RATELIMIT_STORAGE_URI=redis://localhost:6379/0" if cfg.production else ""))
        return
    if not uri.startswith(("redis://", "rediss://", "unix://")):
        yield Result("Rate limits", OK, f"stored in {urlsplit(uri).scheme} (not checked)")
        return

    where = _redis_where(uri)
    try:
        client = redis.Redis.from_url(uri, socket_timeout=3, socket_connect_timeout=3)
        try:
            client.ping()
        finally:
            client.close()
    except Exception as exc:
        yield Result("Redis", FAIL, f"{where} does not answer ({type(exc).__name__}); login rate limits fail open "
                     "or error without it: check RATELIMIT_STORAGE_URI and that redis-server runs")
        return
    yield Result("Redis", OK, f"{where} answers PING (rate limits shared by all workers)")


def _redis_where(uri: str) -> str:
    parts = urlsplit(uri)
    return f"{parts.scheme}://{parts.hostname or ''}:{parts.port or 6379}{parts.path}"


def check_scheduler(cfg: Settings) -> Iterator[Result]:
    try:
        with db.engine.connect() as conn:
            beat = health.heartbeat_at(conn)
    except Exception:
        yield Result("Scheduler", FAIL, "heartbeat not readable (see the database line)")
        return
    report = health.heartbeat_report(beat, now())
    level = FAIL if cfg.production else WARN
    if report["status"] == "ok":
        yield Result("Scheduler", OK, f"heartbeat {report['age_seconds']:.0f} s ago")
    elif report["status"] == "missing":
        yield Result("Scheduler", level, "no heartbeat ever: start it (systemctl start pharmacy-scheduler, or "
                     "`flask scheduler`); without it no reminder email goes out")
    else:
        yield Result("Scheduler", level, f"last heartbeat {_ago(report['age_seconds'])} ago (stale after "
                     f"{health.HEARTBEAT_STALE_AFTER.seconds // 60} min): is the scheduler process running? "
                     "(journalctl -u pharmacy-scheduler)")


def _ago(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.0f} days"


def check_timezone(cfg: Settings) -> Iterator[Result]:
    local = now().astimezone(cfg.timezone)
    yield Result("Time zone", OK, f"{cfg.timezone.key}; it is {local:%Y-%m-%d %H:%M %Z} at the pharmacy")
    if db.engine.dialect.name == "postgresql":
        try:
            with db.engine.connect() as conn:
                server = conn.execute(sa.text("SELECT EXTRACT(EPOCH FROM clock_timestamp())")).scalar_one()
            skew = abs(float(server) - datetime.now(UTC).timestamp())
        except Exception:
            return
        if skew > 60:
            yield Result("Clock", WARN, f"the database server's clock is {skew:.0f} s away from this one: "
                         "enable NTP (timedatectl set-ntp true) on both")


def check_backups(cfg: Settings) -> Iterator[Result]:

    try:
        with db.engine.connect() as conn:
            last = conn.execute(
                sa.select(sa.func.max(OpsEvent.at)).where(OpsEvent.kind == BACKUP, OpsEvent.outcome == "ok")
            ).scalar()
    except Exception:
        return  # the schema line already says what is wrong
    level = WARN
    if last is None:
        yield Result("Backups", level, "no `flask backup create` recorded yet: schedule it (deploy/pharmacy-backup.timer)")
        return
    age = (now() - last).total_seconds()
    if age > BACKUP_MAX_AGE.total_seconds():
        yield Result("Backups", level, f"last verified backup {_ago(age)} ago: is the backup timer running? "
                     "(systemctl list-timers pharmacy-backup.timer)")
    else:
        yield Result("Backups", OK, f"last verified backup {_ago(age)} ago")
    if db.engine.dialect.name == "sqlite":
        directory = Path(current_app.instance_path) / "backups"
        if directory.exists() and directory.stat().st_mode & 0o077:
            yield Result("Backups", WARN, f"{directory} is readable by other users: chmod 700 it (backups hold PHI)")


def check_logging_and_metrics(cfg: Settings) -> Iterator[Result]:
    if cfg.production and cfg.log_format != "json":
        yield Result("Logs", WARN, "LOG_FORMAT=plain in production: JSON lines are easier to search and ship")
    else:
        yield Result("Logs", OK, f"{cfg.log_format} lines on stderr, request ids, patient data masked")
    if cfg.production and not current_app.config.get("METRICS_TOKEN"):
        yield Result("Metrics", WARN, "/metrics is open (METRICS_TOKEN unset): make sure the proxy serves it only "
                     "to your network (the example nginx site does)")


CHECKS: tuple[Callable[[Settings], Iterator[Result]], ...] = (
    check_environment, check_secret_key, check_https, check_database, check_refill_order, check_smtp, check_redis,
    check_scheduler, check_timezone, check_backups, check_logging_and_metrics,
)


def run() -> list[Result]:
    cfg = settings()
    results: list[Result] = []
    for check in CHECKS:
        try:
            results.extend(check(cfg))
        except Exception as exc:  # a check that crashes is itself a finding, never a traceback
            results.append(Result(check.__name__.removeprefix("check_").replace("_", " ").capitalize(), FAIL,
                                  f"the check itself failed ({type(exc).__name__})"))
    return results
