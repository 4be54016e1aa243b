"""Health, readiness, metrics, `flask doctor` and the gunicorn configuration, against real databases and servers.

The gunicorn test starts the production server as an operator would (gunicorn -c gunicorn.conf.py
'pharmacy.entry:create_app()', two workers) and reads its access log and its /metrics.
"""
from __future__ import annotations

import json
import os
import runpy
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from prometheus_client.parser import text_string_to_metric_families

from pharmacy import create_app
from pharmacy.core.clock import FixedClock
from pharmacy.core.models import Heartbeat
from pharmacy.extensions import db, limiter
from pharmacy.ops.models import BACKUP, OpsEvent
from pharmacy.reminders.models import DeliveryAttempt, OutboxMessage
from pharmacy.reminders.rules import MessageKind, OutboxState
from pharmacy.workflows import orders as order_flow
from tests.conftest import PASSWORD, login
from tests.factories import world

ROOT = Path(__file__).resolve().parents[2]


def beat(app: Flask, at: Any) -> None:
    with app.app_context():
        row = db.session.get(Heartbeat, "scheduler")
        if row is None:
            db.session.add(Heartbeat(name="scheduler", beat_at=at, detail="test"))
        else:
            row.beat_at = at
        db.session.commit()


def _write_revision(app: Flask, revision: str | None) -> None:
    with app.app_context(), db.engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM alembic_version"))
        if revision:
            conn.execute(sa.text("INSERT INTO alembic_version (version_num) VALUES (:r)"), {"r": revision})


@pytest.fixture
def set_revision(app: Flask) -> Iterator[Any]:
    """Pretend the schema is at another revision; back at head afterwards (the PostgreSQL test database is shared)."""
    yield _write_revision
    from pharmacy.ops.health import script_directory

    _write_revision(app, script_directory().get_current_head())


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def metric(text_or_samples: Any, name: str, **labels: str) -> float:
    found = samples(text_or_samples) if isinstance(text_or_samples, str) else text_or_samples
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


def dispose(app: Flask) -> None:
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


# ---- /healthz and /readyz --------------------------------------------------------------------------------------


def test_healthz_is_up_and_touches_no_session(client, staff) -> None:
    login(client, staff["pharmacist"])
    page = client.get("/")
    assert page.status_code == 200 and "Set-Cookie" in page.headers  # pages refresh the session cookie …
    for path in ("/healthz", "/readyz", "/metrics"):
        response = client.get(path)
        assert response.status_code == 200, path
        assert "Set-Cookie" not in response.headers, path  # … the probes never do
        assert response.headers["X-Request-ID"]
    response = client.get("/healthz")
    assert response.get_json() == {"status": "ok"}
    assert response.headers["Cache-Control"] == "no-store"


def test_readyz_reports_each_check(app, client, clock) -> None:
    beat(app, clock.now() - timedelta(seconds=30))
    response = client.get("/readyz")
    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "ok"
    assert body["checks"]["database"] == {"status": "ok"}
    assert body["checks"]["migrations"]["status"] == "ok"
    assert body["checks"]["migrations"]["current"] == body["checks"]["migrations"]["head"]
    assert body["checks"]["scheduler"] == {"status": "ok", "age_seconds": 30.0, "required": False}


def test_a_stale_scheduler_is_degraded_in_development_and_not_ready_in_production(app, app_config, clock) -> None:
    beat(app, clock.now() - timedelta(minutes=6))
    testing = app.test_client().get("/readyz")
    assert testing.status_code == 200
    assert testing.get_json()["status"] == "degraded"
    assert testing.get_json()["checks"]["scheduler"]["status"] == "stale"

    production = create_app({**app_config, "PHARMACY_ENV": "production"}, clock=clock)
    try:
        response = production.test_client().get("/readyz")
        assert response.status_code == 503
        assert response.get_json()["checks"]["scheduler"] == {"status": "stale", "age_seconds": 360.0,
                                                              "required": True}
        production.config["READYZ_REQUIRE_SCHEDULER"] = "0"  # several web servers behind a balancer
        assert production.test_client().get("/readyz").status_code == 200
        production.config["READYZ_REQUIRE_SCHEDULER"] = None
        beat(production, clock.now())
        assert production.test_client().get("/readyz").status_code == 200
        with production.app_context(), db.engine.begin() as conn:
            conn.execute(sa.text("DELETE FROM heartbeats"))
        missing = production.test_client().get("/readyz")
        assert missing.status_code == 503 and missing.get_json()["checks"]["scheduler"]["status"] == "missing"
    finally:
        dispose(production)


def test_readyz_is_not_ready_while_migrations_are_pending(app, client, clock, set_revision) -> None:
    beat(app, clock.now())
    set_revision(app, "0002")
    response = client.get("/readyz")
    assert response.status_code == 503
    migrations = response.get_json()["checks"]["migrations"]
    assert migrations["status"] == "pending" and migrations["current"] == ["0002"]
    set_revision(app, None)
    assert client.get("/readyz").get_json()["checks"]["migrations"]["status"] == "empty"
    set_revision(app, "9999")  # a database upgraded by newer code than this
    assert client.get("/readyz").get_json()["checks"]["migrations"]["status"] == "unknown"


UNREACHABLE = {
    "sqlite": "sqlite:////nonexistent-directory-for-readyz/pharmacy.db",
    "postgresql": "postgresql+psycopg://pharmacy:secret-password@127.0.0.1:1/pharmacy?connect_timeout=2",
}


@pytest.mark.parametrize("kind", sorted(UNREACHABLE))
def test_readyz_and_metrics_when_the_database_is_unreachable(kind, app_config, clock) -> None:
    down = create_app({**app_config, "DATABASE_URL": UNREACHABLE[kind]}, clock=clock)
    try:
        client = down.test_client()
        assert client.get("/healthz").status_code == 200  # the process is still up
        response = client.get("/readyz")
        assert response.status_code == 503
        body = response.get_json()
        assert body["status"] == "fail"
        assert body["checks"]["database"] == {"status": "fail", "error": "OperationalError"}
        assert "secret-password" not in response.get_data(as_text=True)
        scrape = client.get("/metrics")
        assert scrape.status_code == 200
        assert metric(scrape.get_data(as_text=True), "pharmacy_database_up") == 0.0
    finally:
        dispose(down)


def test_probes_are_exempt_from_rate_limits(app_config, clock, monkeypatch) -> None:
    # A tight default limit for every route (restored afterwards: the limiter object is shared by all apps).
    monkeypatch.setattr(limiter.limit_manager, "_default_limits", [])
    limited = create_app({**app_config, "RATELIMIT_DEFAULT": "3 per minute"}, clock=clock)
    try:
        client = limited.test_client()
        control = [client.get("/api/v1/openapi.json").status_code for _ in range(5)]
        assert control[-1] == 429  # the limit is really on …
        for path in ("/healthz", "/readyz", "/metrics"):
            assert {client.get(path).status_code for _ in range(10)} == {200}, path  # … but not for the probes
    finally:
        dispose(limited)


# ---- /metrics ------------------------------------------------------------------------------------------------


def test_request_latency_is_labelled_by_endpoint_name_and_status_class(app, client, staff) -> None:
    with app.test_request_context("/"):
        w = world(staff)
        db.session.commit()
        patient_id = w["patient"].id
    before = samples(client.get("/metrics").get_data(as_text=True))
    login(client, staff["pharmacist"])
    for _ in range(3):
        assert client.get(f"/patients/{patient_id}").status_code == 200
    assert client.get("/patients/999999").status_code == 404
    assert client.get("/no/such/page").status_code == 404
    client.post("/login", data={"email": "x@example.com", "password": PASSWORD})
    after_text = client.get("/metrics").get_data(as_text=True)
    after = samples(after_text)

    def delta(**labels: str) -> float:
        name = "pharmacy_http_request_duration_seconds_count"
        return metric(after, name, **labels) - metric(before, name, **labels)

    assert delta(endpoint="patients.detail", method="GET", status_class="2xx") == 3
    assert delta(endpoint="patients.detail", method="GET", status_class="4xx") == 1
    assert delta(endpoint="unmatched", method="GET", status_class="4xx") == 1
    assert delta(endpoint="auth.login", method="POST", status_class="3xx") == 2  # signing in, then redirected
    endpoints = {dict(labels).get("endpoint") for (name, labels) in after if name.startswith("pharmacy_http_")}
    assert not any("/" in (e or "") for e in endpoints)  # endpoint names, never raw paths
    assert str(patient_id) not in {dict(labels).get("endpoint") for (_, labels) in after}


def test_work_gauges_come_from_the_database(app, client, staff, clock) -> None:
    t = clock.now()
    with app.test_request_context("/"):
        w = world(staff)
        order_flow.start_fill(w["pharmacist"], w["rx"].id)
        db.session.commit()
    before = samples(client.get("/metrics").get_data(as_text=True))
    with app.app_context():

        def row(n: int, state: OutboxState, due_minutes: int) -> OutboxMessage:
            due = t + timedelta(minutes=due_minutes)
            return OutboxMessage(dedupe_key=f"metrics-test:{n}", kind=MessageKind.ORDER_READY, to_address=None,
                                 due_at=due, next_attempt_at=due, state=state, message_id=f"<metrics-{n}@test>",
                                 created_at=t - timedelta(days=1))

        rows = [row(1, OutboxState.PENDING, -20), row(2, OutboxState.PENDING, +60), row(3, OutboxState.FAILED, -90),
                row(4, OutboxState.SENT, -120)]
        db.session.add_all(rows)
        db.session.flush()
        db.session.add_all([
            DeliveryAttempt(message_id=rows[3].id, at=t - timedelta(minutes=5), result="sent"),
            DeliveryAttempt(message_id=rows[2].id, at=t - timedelta(minutes=30), result="permanent"),
            DeliveryAttempt(message_id=rows[2].id, at=t - timedelta(hours=3), result="transient"),
        ])
        db.session.add(Heartbeat(name="scheduler", beat_at=t - timedelta(seconds=90)))
        db.session.add(OpsEvent(at=t - timedelta(hours=2), kind=BACKUP, outcome="ok", details={"kind": "sqlite"}))
        db.session.add(OpsEvent(at=t - timedelta(minutes=1), kind=BACKUP, outcome="failed", details={}))
        db.session.commit()
    after = samples(client.get("/metrics").get_data(as_text=True))

    def delta(name: str, **labels: str) -> float:
        return metric(after, name, **labels) - metric(before, name, **labels)

    assert metric(after, "pharmacy_database_up") == 1
    assert delta("pharmacy_outbox_messages", state="pending") == 2
    assert delta("pharmacy_outbox_messages", state="failed") == 1
    assert delta("pharmacy_outbox_messages", state="sent") == 1
    assert delta("pharmacy_outbox_messages", state="sending") == 0
    assert metric(after, "pharmacy_outbox_oldest_due_pending_age_seconds") == 20 * 60
    assert delta("pharmacy_email_delivery_attempts_total", result="permanent") == 1
    assert delta("pharmacy_email_delivery_attempts_total", result="transient") == 1
    assert delta("pharmacy_email_delivery_attempts_last_hour", result="permanent") == 1
    assert delta("pharmacy_email_delivery_attempts_last_hour", result="transient") == 0  # three hours ago
    assert delta("pharmacy_email_delivery_attempts_last_hour", result="sent") == 1
    assert metric(after, "pharmacy_orders", state="requested") == 1
    assert metric(after, "pharmacy_orders", state="dispensed") == 0
    assert metric(after, "pharmacy_scheduler_heartbeat_age_seconds") == 90
    assert metric(after, "pharmacy_schema_at_head") == 1
    assert metric(after, "pharmacy_last_backup_age_seconds") == 2 * 3600  # the failed one does not count


def test_metrics_without_scheduler_or_backup_are_infinitely_old(client) -> None:
    found = samples(client.get("/metrics").get_data(as_text=True))
    assert metric(found, "pharmacy_scheduler_heartbeat_age_seconds") == float("inf")
    assert metric(found, "pharmacy_last_backup_age_seconds") == float("inf")
    assert metric(found, "pharmacy_outbox_oldest_due_pending_age_seconds") == 0


def test_metrics_token_when_configured(app, client) -> None:
    app.config["METRICS_TOKEN"] = "a-long-random-metrics-token"
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    ok = client.get("/metrics", headers={"Authorization": "Bearer a-long-random-metrics-token"})
    assert ok.status_code == 200 and "pharmacy_database_up" in ok.get_data(as_text=True)
    assert client.get("/healthz").status_code == 200  # the token guards /metrics only


# ---- flask doctor --------------------------------------------------------------------------------------------


def doctor(app: Flask) -> tuple[int, list[str]]:
    result = app.test_cli_runner().invoke(args=["doctor"])
    assert "Traceback" not in result.output
    return result.exit_code, result.output.splitlines()


def line(lines: list[str], name: str) -> str:
    found = [entry for entry in lines if entry[2:].startswith(name + ":")]
    assert found, f"no {name} line in {lines}"
    return found[0]


def test_doctor_in_development_warns_but_passes(app, clock) -> None:
    beat(app, clock.now())
    code, lines = doctor(app)
    assert code == 0, lines
    assert line(lines, "Database").startswith("✓")
    assert line(lines, "Migrations").startswith("✓ Migrations: schema at")
    assert line(lines, "Scheduler").startswith("✓")
    assert line(lines, "SMTP").startswith("!")
    assert line(lines, "BASE_URL").startswith("!")
    assert lines[-1].startswith("Ready.")


def test_doctor_in_production_says_plainly_what_is_wrong(app_config, clock) -> None:
    prod = create_app({**app_config, "PHARMACY_ENV": "production", "SECRET_KEY": "f3b1c9e07a5d4e2b8c6a1f0e9d7b5a3c"},
                      clock=clock)
    try:
        code, lines = doctor(prod)
    finally:
        dispose(prod)
    assert code == 1
    assert line(lines, "SECRET_KEY").startswith("✓")  # a weak key no longer starts in production at all
    assert line(lines, "BASE_URL").startswith("✗ BASE_URL: http://pharmacy.test is not https://")
    assert line(lines, "Cookies").startswith("✓")  # production turns the secure cookie on
    assert line(lines, "SMTP").startswith("✗ SMTP: SMTP_URL is not set")
    assert line(lines, "Scheduler").startswith("✗ Scheduler: no heartbeat ever")
    assert line(lines, "Rate limits").startswith("!")
    assert "problem(s) to fix" in lines[-1]


def test_doctor_finds_pending_migrations_and_an_unreachable_database(app, app_config, clock, set_revision) -> None:
    set_revision(app, "0002")
    code, lines = doctor(app)
    assert code == 1
    assert "schema at 0002, this code needs" in line(lines, "Migrations")
    assert "run `flask db upgrade`" in line(lines, "Migrations")
    down = create_app({**app_config, "DATABASE_URL": UNREACHABLE["postgresql"]}, clock=clock)
    try:
        code, lines = doctor(down)
    finally:
        dispose(down)
    assert code == 1
    assert line(lines, "Database").startswith("✗ Database: PostgreSQL 127.0.0.1:1/pharmacy is not reachable")
    assert "secret-password" not in "\n".join(lines)


class _SmtpLogin:
    """A real SMTP server on loopback that only checks logins (and counts any mail, which must stay 0)."""

    def __init__(self) -> None:
        from aiosmtpd.controller import Controller
        from aiosmtpd.smtp import AuthResult, LoginPassword

        self.messages = 0
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]

        def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
            ok = isinstance(data, LoginPassword) and data.login == b"relay" and data.password == b"right password"
            return AuthResult(success=ok, handled=False)

        outer = self

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                outer.messages += 1
                return "250 OK"

        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port, authenticator=authenticator,
                                     auth_require_tls=False, auth_exclude_mechanism=["LOGIN"])


@pytest.fixture
def smtp_login() -> Iterator[_SmtpLogin]:
    server = _SmtpLogin()
    server.controller.start()
    yield server
    server.controller.stop()


def test_doctor_logs_in_to_smtp_without_sending(app_config, clock, smtp_login) -> None:
    base = f"127.0.0.1:{smtp_login.port}?security=none&timeout=5"
    found = {}
    for password in ("right%20password", "wrong"):
        checked = create_app({**app_config, "SMTP_URL": f"smtp://relay:{password}@{base}"}, clock=clock)
        try:
            found[password] = doctor(checked)
        finally:
            dispose(checked)
    good, bad = line(found["right%20password"][1], "SMTP"), line(found["wrong"][1], "SMTP")
    assert good.startswith(f"✓ SMTP: 127.0.0.1:{smtp_login.port} (none): connected and logged in as relay"), good
    assert bad.startswith(f"✗ SMTP: 127.0.0.1:{smtp_login.port} (none): login refused for relay (535)"), bad
    assert found["wrong"][0] == 1
    assert not any("right password" in x or "wrong" in x for x in (good, bad))  # passwords are never printed
    assert smtp_login.messages == 0
    down = create_app({**app_config, "SMTP_URL": "smtp://relay:pw@127.0.0.1:1?security=none&timeout=2"}, clock=clock)
    try:
        code, lines = doctor(down)
    finally:
        dispose(down)
    assert code == 1 and line(lines, "SMTP").startswith("✗ SMTP: cannot connect to 127.0.0.1:1")


def _redis_up() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=0.5):
            return True
    except OSError:
        return False


def test_doctor_checks_redis(app_config, clock) -> None:
    down = create_app({**app_config, "RATELIMIT_STORAGE_URI": "redis://127.0.0.1:1/0"}, clock=clock)
    try:
        code, lines = doctor(down)
    finally:
        dispose(down)
    assert code == 1 and line(lines, "Redis").startswith("✗ Redis: redis://127.0.0.1:1/0 does not answer")
    if not _redis_up():
        pytest.skip("no Redis at 127.0.0.1:6379 for the reachable case")
    up = create_app({**app_config, "RATELIMIT_STORAGE_URI": "redis://127.0.0.1:6379/0"}, clock=clock)
    try:
        _, lines = doctor(up)
    finally:
        dispose(up)
    assert line(lines, "Redis").startswith("✓ Redis: redis://127.0.0.1:6379/0 answers PING")


@pytest.mark.parametrize(("key", "weak"), [
    ("short", True), ("a" * 40, True), ("changeme" * 5, True), ("0123456789abcdef" * 4, False),
    ("f3b1c9e07a5d4e2b8c6a1f0e9d7b5a3c2e4f6a8b0c1d3e5f7a9b2c4d6e8f0a1b", False),
])
def test_secret_key_strength(key: str, weak: bool) -> None:
    from pharmacy.ops.doctor import secret_key_problem

    assert (secret_key_problem(key) is not None) is weak


# ---- gunicorn --------------------------------------------------------------------------------------------------


def load_gunicorn_conf(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, **env: str) -> dict[str, Any]:
    for name in ("BIND", "PORT", "WEB_CONCURRENCY", "LOG_FORMAT", "PHARMACY_ENV"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "metrics"))  # no temporary directory made
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return runpy.run_path(str(ROOT / "gunicorn.conf.py"))


def test_gunicorn_settings(monkeypatch, tmp_path) -> None:
    conf = load_gunicorn_conf(monkeypatch, tmp_path)
    assert conf["bind"] == ["127.0.0.1:8000"]
    assert conf["workers"] == min(2 * os.cpu_count() + 1, 9)  # type: ignore[operator]
    assert conf["timeout"] == 30 and conf["graceful_timeout"] == 30
    # Recycled by memory (tests/integration/test_gunicorn_workers.py), never by count; a new worker is a fork.
    assert conf["max_requests"] == 0 and conf["preload_app"] is True
    fmt = conf["access_log_format"]
    assert "%(U)s" in fmt
    assert not any(atom in fmt for atom in ("%(r)s", "%(q)s", "%(f)s", "{referer}", "{cookie}", "{authorization}"))
    assert load_gunicorn_conf(monkeypatch, tmp_path, PORT="9100")["bind"] == ["127.0.0.1:9100"]
    conf = load_gunicorn_conf(monkeypatch, tmp_path, PORT="9100", BIND="0.0.0.0:8080", WEB_CONCURRENCY="3")
    assert conf["bind"] == ["0.0.0.0:8080"] and conf["workers"] == 3
    mask = conf["mask_path"]
    assert mask("/r/eyJwIjoxfQ.aBc.dEf") == "/r/[token]"
    assert mask("/preferences/abc/unsubscribe") == "/preferences/[token]/unsubscribe"
    assert mask("/renewal-request/eyJwIjoxfQ.aBc") == "/renewal-request/[token]"  # a prescriber's link
    assert mask("/api/v1/refill/" + "x" * 48) == "/api/v1/refill/[token]"
    assert mask("/patients/42") == "/patients/42"
    # A path that matched no route may be anything typed into the address bar: not logged at all.
    assert mask("/patients/Margaret Ellison 1968-04-12", "404") == mask("/x", 404) == "/[path of a 404]"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, headers=headers or {})  # noqa: S310 - loopback only
    opener = urllib.request.build_opener(_NoRedirect())
    try:
        with opener.open(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


@pytest.mark.slow
def test_gunicorn_serves_production_with_a_safe_access_log_and_merged_metrics(database_url, tmp_path) -> None:
    port = free_port()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path),
        "DATABASE_URL": database_url, "PHARMACY_ENV": "production", "SECRET_KEY": "s" + os.urandom(24).hex(),
        "BASE_URL": "https://pharmacy.test", "PHARMACY_INSTANCE_PATH": str(tmp_path / "instance"),
        "BIND": f"127.0.0.1:{port}", "WEB_CONCURRENCY": "2", "LOG_FORMAT": "json",
        "RATELIMIT_STORAGE_URI": "memory://",
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "pharmacy.entry:create_app()"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    out: list[str] = []
    err: list[str] = []
    readers = [threading.Thread(target=lambda s=stream, into=into: into.extend(s), daemon=True)
               for stream, into in ((server.stdout, out), (server.stderr, err))]
    for reader in readers:
        reader.start()
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240  # a loaded machine can take a while to boot two workers
        while True:
            try:
                if get(base + "/healthz")[0] == 200:
                    break
            except OSError:
                pass
            assert server.poll() is None and time.monotonic() < deadline, "".join(err)[-2000:]
            time.sleep(0.2)
        for _ in range(11):  # with the readiness probe above: 12 answers, spread over both workers
            assert get(base + "/healthz")[0] == 200, "".join(err)[-2000:]
        token = "eyJwIjoxLCJyeCI6Miwibi" + "I6InNlY3JldG5vbmNlIn0.Zx9a.Q2hlY2tTaWduYXR1cmVWYWx1ZQ"
        get(f"{base}/r/{token}?dob=1961-07-19")
        get(f"{base}/preferences/{token}?email=quintessa%40mailbox.example")
        status, _ = get(f"{base}/search?q=Vandermolen")
        assert status == 302  # to the sign-in page, with the search in its ?next=
        assert get(f"{base}/patients/Vandermolen-1961-07-19")[0] == 404  # typed into the address bar
        status, body = get(base + "/metrics")
        assert status == 200
        found = samples(body)
        healthz = metric(found, "pharmacy_http_request_duration_seconds_count", endpoint="ops.healthz",
                         method="GET", status_class="2xx")
        assert metric(found, "pharmacy_database_up") == 1
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        for reader in readers:
            reader.join(timeout=5)
        for stream in (server.stdout, server.stderr):
            if stream is not None:
                stream.close()
    access = [json.loads(entry) for entry in out if entry.strip()]
    assert len(access) >= 15, (out, "".join(err)[-2000:])
    paths = [entry["path"] for entry in access]
    workers = {entry["pid"] for entry in access}
    # Every worker's count, added up (PROMETHEUS_MULTIPROC_DIR): what the scrape saw is what the workers served.
    served = [e for e in access if e["path"] == "/healthz" and e["status"] == "200"]
    assert healthz == len(served) >= 12, (healthz, len(served), workers, "".join(err)[-2000:])
    assert "/r/[token]" in paths and "/preferences/[token]" in paths and "/[path of a 404]" in paths
    assert all(entry["request_id"] not in ("", "-") for entry in access)
    everything = "\n".join(out + err)
    # The fields a request chooses; the random request id, the clock and the counts could hold "1961" by chance.
    chosen = "\n".join(
        json.dumps({k: v for k, v in entry.items() if k not in ("request_id", "ts", "pid", "bytes", "duration_ms")})
        for entry in access
    )
    for leak in (token, "1961", "Vandermolen", "quintessa", "mailbox", "?"):
        assert leak not in chosen, leak
    for leak in (token, "1961-07-19", "Vandermolen", "quintessa", "mailbox"):
        assert leak not in everything, leak
    assert "Traceback" not in everything


def test_scrape_counts_are_not_lost_between_scrapes(client) -> None:
    """The histogram is cumulative: a second scrape never shows fewer requests than the first."""
    first = metric(client.get("/metrics").get_data(as_text=True), "pharmacy_http_request_duration_seconds_count",
                   endpoint="ops.metrics", method="GET", status_class="2xx")
    second = metric(client.get("/metrics").get_data(as_text=True), "pharmacy_http_request_duration_seconds_count",
                    endpoint="ops.metrics", method="GET", status_class="2xx")
    assert second == first + 1


def test_clock_for_gauges_is_the_apps(app_config) -> None:
    """Ages use the injected clock (the same one the scheduler's heartbeat uses), not the machine's."""
    from tests.conftest import T0

    clock = FixedClock(T0 + timedelta(days=365))
    later = create_app(app_config, clock=clock)
    try:
        beat(later, clock.now() - timedelta(seconds=42))
        found = samples(later.test_client().get("/metrics").get_data(as_text=True))
        assert metric(found, "pharmacy_scheduler_heartbeat_age_seconds") == 42
    finally:
        dispose(later)


# ---- behind a proxy ----------------------------------------------------------------------------------------------


def _last_login_failure_ip(app: Flask) -> str | None:
    from pharmacy.core.models import AuditEvent

    with app.app_context():
        ip = db.session.execute(sa.select(AuditEvent.ip_address).where(AuditEvent.action == "login.failure")
                                .order_by(AuditEvent.id.desc())).scalars().first()
        db.session.rollback()
    return ip


def test_client_address_comes_from_the_trusted_proxy_only_when_configured(app_config, clock, staff,
                                                                         monkeypatch) -> None:
    forwarded = {"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https"}
    wrong = {"email": staff["pharmacist"].email, "password": "not the password"}
    direct = create_app(app_config, clock=clock)
    try:
        direct.test_client().post("/login", data=wrong, headers=forwarded)
        assert _last_login_failure_ip(direct) == "127.0.0.1"  # a header anyone can send is not believed
    finally:
        dispose(direct)
    monkeypatch.setenv("TRUSTED_PROXY_HOPS", "1")
    proxied = create_app(app_config, clock=clock)
    try:
        proxied.test_client().post("/login", data=wrong, headers=forwarded)
        assert _last_login_failure_ip(proxied) == "203.0.113.9"  # nginx's word for who is asking
    finally:
        dispose(proxied)
    monkeypatch.setenv("TRUSTED_PROXY_HOPS", "nginx")
    from pharmacy.core.errors import ConfigError

    with pytest.raises(ConfigError, match="TRUSTED_PROXY_HOPS='nginx'"):
        create_app(app_config, clock=clock)
