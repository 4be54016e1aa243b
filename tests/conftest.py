"""Shared fixtures: a real database per test (SQLite file, or PostgreSQL when DATABASE_URL points at one),
a fixed clock, the app, a client, and staff accounts of every role.
"""
from __future__ import annotations

import functools
import os
import re
import secrets
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, Phase, settings

from pharmacy import create_app
from pharmacy.core.clock import FixedClock
from pharmacy.core.roles import Role
from tests.smtp_server import SmtpServer

PG_URL = os.environ.get("DATABASE_URL", "")
USE_PG = PG_URL.startswith(("postgresql", "postgres:"))
# Monday 23 November 2026, 09:00 in Chicago: a normal working morning.
T0 = datetime(2026, 11, 23, 15, 0, tzinfo=UTC)
PASSWORD = "correct horse battery staple"
# Random, as production demands (some tests switch to production), and one per run: rows copied from one test's
# database to another's (tests/demo_seeds.py) may carry values signed with it.
RUN_SECRET_KEY = secrets.token_hex(32)

# `make test` must give the same verdict on every run: every hypothesis and schemathesis test draws the
# same examples each time (derandomize: the seed is a hash of the test), and nothing is replayed from a
# local .hypothesis folder that a fresh clone would not have. Failures found by `make fuzz` (the wide
# random search, profile "fuzz") are kept as explicit cases in the tests, so they run here for ever.
settings.register_profile("deterministic", derandomize=True, database=None, deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("fuzz", derandomize=False, deadline=None, max_examples=500, print_blob=True,
                          phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "deterministic"))


@pytest.fixture(autouse=True)
def _fast_password_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Argon2 at its production cost takes most of a second per hash; tests need the behaviour, not the cost."""
    from argon2 import PasswordHasher

    from pharmacy.core import passwords

    monkeypatch.setattr(passwords, "_hasher", PasswordHasher(time_cost=1, memory_cost=8, parallelism=1))


def pg_url() -> str:
    url = PG_URL
    if url.startswith("postgres://"):
        url = "postgresql+psycopg://" + url[len("postgres://"):]
    elif url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    return url


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    from tests.fuzzing import SENT

    if SENT["cases"]:
        terminalreporter.write_line(f"schemathesis: {SENT['cases']:,} cases sent to the app, "
                                    f"{SENT['server errors']} answered with a server error")


def pytest_report_header(config: pytest.Config) -> str:
    return f"database: {'PostgreSQL ' + re.sub(r'//[^@]*@', '//', pg_url()) if USE_PG else 'SQLite (a file per test)'}"


@pytest.fixture(scope="session")
def _schema(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Build the schema once: a template SQLite file to copy, or the tables of the PostgreSQL test database."""
    from pharmacy import models  # noqa: F401
    from pharmacy.extensions import db

    if USE_PG:
        with _worker_database() as url:
            engine = sa.create_engine(url)
            with engine.begin() as conn:
                conn.execute(sa.text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
            db.metadata.create_all(engine)
            engine.dispose()
            yield url
    else:
        path = tmp_path_factory.mktemp("template") / "template.db"
        engine = sa.create_engine(f"sqlite:///{path}")
        db.metadata.create_all(engine)
        engine.dispose()
        yield str(path)


@contextmanager
def _worker_database() -> Iterator[str]:
    """The PostgreSQL database this process tests on: DATABASE_URL's, or, for each of pytest-xdist's workers
    (`make test` runs two per pass), a database of its own beside it, named after it and dropped afterwards."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if not worker:
        yield pg_url()
        return

    def let_go() -> None:
        for engine in [*_shared_engines.values(), *_cleaners.values()]:
            engine.dispose()

    with _database_beside(f"{sa.make_url(pg_url()).database}_{worker}", before_drop=let_go) as url:
        yield url


@contextmanager
def _database_beside(name: str, *, before_drop: Callable[[], None] = lambda: None) -> Iterator[str]:
    """A new, empty database `name` on the test PostgreSQL server (its URL), dropped afterwards whoever is
    connected (a leftover of that name from a crashed run is dropped first)."""
    base = sa.make_url(pg_url())
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        before_drop()
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


_cleaners: dict[str, sa.Engine] = {}


def _empty_all(url: str) -> None:
    """Every table emptied and every sequence back at 1 between tests.

    DELETE, not TRUNCATE: TRUNCATE makes new files for each of the ~60 tables (about 0.2 s a test), while DELETE
    of the few rows a test wrote costs milliseconds. With `session_replication_role = replica` neither the foreign
    keys nor the audit table's append-only triggers (migration 0002/0008) fire, for this transaction only.
    """
    engine = _cleaners.get(url)
    if engine is None:
        engine = _cleaners[url] = sa.create_engine(url, poolclass=sa.pool.StaticPool)
    with engine.begin() as conn:
        conn.exec_driver_sql(_emptying_script())  # one round trip for the ~50 statements


@functools.cache
def _emptying_script() -> str:
    from pharmacy.extensions import db

    return ";\n".join([
        "SET LOCAL session_replication_role = replica",
        *(f'DELETE FROM "{table.name}"' for table in reversed(db.metadata.sorted_tables)),
        "SELECT setval(c.oid, 1, false) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.relkind = 'S' AND n.nspname = 'public'",
    ])


_shared_engines: dict[str, sa.Engine] = {}


@pytest.fixture(scope="session")
def _test_database_url(_schema: str) -> str:
    """The one URL every test's app connects to: the PostgreSQL test database, or one SQLite file that each test
    starts as a fresh copy of the template."""
    return _schema if USE_PG else f"sqlite:///{Path(_schema).with_name('test.db')}"


@pytest.fixture(scope="session", autouse=True)
def _one_engine_for_the_test_database(_test_database_url: str) -> Iterator[None]:
    """Every app built for the test database gets the same SQLAlchemy engine.

    An engine keeps the SQL it has compiled; a new engine per test compiled every statement again, about a quarter
    of a database test's time. Sharing it also keeps PostgreSQL connections open from test to test rather than
    starting a server process for each. Apps on other databases (migrations, scratch databases) get their own.
    """
    from pharmacy.extensions import db

    make = db._make_engine

    def reuse(bind_key: str | None, options: dict, app: Flask) -> sa.Engine:
        url = options["url"]
        if str(url) != _test_database_url:
            return make(bind_key, options, app)
        key = repr(sorted((k, repr(v)) for k, v in options.items()))
        engine = _shared_engines.get(key)
        if engine is None:
            engine = _shared_engines[key] = make(bind_key, options, app)
        return engine

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(db, "_make_engine", reuse)
        yield
    for engine in _shared_engines.values():
        engine.dispose()
    _shared_engines.clear()


@pytest.fixture
def database_url(_schema: str, _test_database_url: str) -> Iterator[str]:
    if USE_PG:
        yield _schema
        _empty_all(_schema)
    else:
        for engine in _shared_engines.values():
            engine.dispose()  # no connection may outlive the file it was opened on
        path = Path(_test_database_url.removeprefix("sqlite:///"))
        for leftover in (path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            leftover.unlink(missing_ok=True)
        shutil.copyfile(_schema, path)
        yield _test_database_url


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(T0)


@pytest.fixture
def app_config(database_url: str, tmp_path: Path) -> dict:
    instance = tmp_path / "instance"
    instance.mkdir(exist_ok=True)
    os.environ["PHARMACY_INSTANCE_PATH"] = str(instance)
    return {
        "DATABASE_URL": database_url,
        "PHARMACY_ENV": "testing",
        "SECRET_KEY": RUN_SECRET_KEY,
        "RATELIMIT_STORAGE_URI": "memory://",
        "WTF_CSRF_ENABLED": False,
        "PHARMACY_TIMEZONE": "America/Chicago",
        "BASE_URL": "http://pharmacy.test",
    }


@pytest.fixture
def app(app_config: dict, clock: FixedClock) -> Iterator[Flask]:
    app = create_app(app_config, clock=clock)
    yield app
    from pharmacy.extensions import db

    with app.app_context():
        db.session.remove()


@pytest.fixture
def app_ctx(app: Flask) -> Iterator[Flask]:
    with app.test_request_context("/", environ_base={"REMOTE_ADDR": "127.0.0.1"}):
        yield app
        from pharmacy.extensions import db

        db.session.rollback()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@dataclass
class Staff:
    id: int
    email: str
    role: Role
    password: str = PASSWORD


@pytest.fixture
def staff(app: Flask) -> dict[str, Staff]:
    """One account per role (plus a second pharmacist for the independent final check)."""
    from pharmacy.core.actor import Actor
    from pharmacy.core.services import create_user
    from pharmacy.extensions import db

    console = Actor(kind="staff", role=Role.ADMIN)
    people = {
        "admin": ("admin@pharmacy.test", "Ada Admin", Role.ADMIN),
        "pharmacist": ("pharm@pharmacy.test", "Paula Pharmacist", Role.PHARMACIST),
        "pharmacist2": ("pharm2@pharmacy.test", "Peter Pharmacist", Role.PHARMACIST),
        "technician": ("tech@pharmacy.test", "Tom Technician", Role.TECHNICIAN),
    }
    out = {}
    with app.test_request_context("/"):
        for key, (email, name, role) in people.items():
            user = create_user(console, email=email, full_name=name, role=role, password=PASSWORD)
            out[key] = Staff(user.id, email, role)
        db.session.commit()
    return out


def login(client: FlaskClient, who: Staff) -> None:
    response = client.post("/login", data={"email": who.email, "password": who.password})
    assert response.status_code == 302, response.get_data(as_text=True)[:500]


@contextmanager
def scratch_pg_database(prefix: str) -> Iterator[str]:
    """A new, empty database on the test PostgreSQL server (its URL), dropped afterwards whoever is connected."""
    with _database_beside(f"{prefix}_{uuid.uuid4().hex[:8]}") as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database on each engine (PostgreSQL only when DATABASE_URL points at one), for migrations."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    if not USE_PG:
        pytest.skip("PostgreSQL pass only: DATABASE_URL does not point at PostgreSQL")
    with scratch_pg_database("ldn_empty") as url:
        yield url


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    """A real SMTP server on loopback (tests/smtp_server.py), started for the test and stopped after it."""
    server = SmtpServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def world(app_ctx: Flask, staff: dict[str, Staff]) -> dict:
    """A formula, a prescriber, a patient and an active prescription (tests.factories.world), in the test's session."""
    from tests import factories

    return factories.world(staff)


@pytest.fixture
def filled(app: Flask, staff: dict[str, Staff]) -> dict:
    """A patient with a $55.00 fill made and released (ready), committed; plain ids for HTTP tests, a bearer token
    per role, and the world's objects (detached: read their ids only)."""
    from pharmacy.core import services as core_services
    from pharmacy.extensions import db
    from pharmacy.workflows import orders as order_flow
    from tests import factories

    with app.test_request_context("/"):
        w = factories.world(staff)
        order = order_flow.start_fill(w["pharmacist"], w["rx"].id)
        factories.run_order_to(w, order.id, "ready")
        tokens = {}
        for role in ("admin", "pharmacist", "technician"):
            _, raw = core_services.issue_token(w[role], staff[role].id, "tests")
            tokens[role] = {"Authorization": f"Bearer {raw}"}
        db.session.commit()
        return {"patient_id": w["patient"].id, "order_id": order.id, "formula_id": w["formula"].id,
                "rx_id": w["rx"].id, "prescriber_id": w["prescriber"].id, "staff": staff, "world": w, **tokens}


@contextmanager
def counted_statements(engine: sa.engine.Engine) -> Iterator[list[str]]:
    """Every SQL statement sent through `engine` while the block runs (the N+1 and bounded-query checks)."""
    from sqlalchemy import event

    seen: list[str] = []

    def before(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        seen.append(statement)

    event.listen(engine, "before_cursor_execute", before)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", before)
