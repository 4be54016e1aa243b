"""Backups that restore: the demo database is backed up *while* a writer keeps committing through the app,
restored somewhere else, and every row committed before the backup started is found there.

The writer creates patients through the patients service, one transaction each (a patient and its
"patient.create" audit event), so a torn copy would show up as a patient without its audit event.
Tables the writer does not touch must come back identical (row counts and a checksum of their rows).
SQLite uses the online backup API; PostgreSQL pg_dump/pg_restore (skipped when pg_dump is not installed).
"""
from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from pharmacy.core.context import now
from pharmacy.core.models import AuditEvent
from pharmacy.core.uow import unit_of_work
from pharmacy.extensions import db
from pharmacy.ops import backup as backups
from pharmacy.ops.models import BACKUP, OpsEvent
from pharmacy.workflows import orders as order_flow
from tests.conftest import USE_PG, scratch_pg_database
from tests.factories import actor, patient, prescription, run_order_to, world

# Tables the writer never touches: they must come back row for row.
UNTOUCHED = ("users", "formulas", "formula_ingredients", "ingredient_lots", "prescribers", "prescriptions", "orders",
             "price_list", "outbox")


class Writer(threading.Thread):
    """Commits one new patient (and its audit event) after another, through the app, until stopped."""

    def __init__(self, app: Flask, who: Any) -> None:
        super().__init__(daemon=True)
        self.app = app
        self.who = actor(who)
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.committed: list[int] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        n = 0
        try:
            while not self.stop.is_set():
                n += 1
                with self.app.test_request_context("/"):
                    with unit_of_work():
                        row = patient(self.who, first_name=f"Writer{n}", last_name="Loop",
                                      email=f"writer{n}@example.com")
                    with self.lock:
                        self.committed.append(row.id)  # appended only once the commit has returned
                    db.session.remove()
        except BaseException as exc:  # reported by the test
            self.error = exc

    def snapshot(self) -> set[int]:
        with self.lock:
            return set(self.committed)

    def wait_for(self, count: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while len(self.snapshot()) < count:
            assert self.error is None, self.error
            assert time.monotonic() < deadline, "the writer is not committing"
            time.sleep(0.01)


def cli(app: Flask, *args: str) -> Any:
    with app.app_context():  # as `flask` does for every command
        return app.test_cli_runner().invoke(args=list(args))


def seed_demo(app: Flask, staff: dict) -> None:
    """A small pharmacy made through the services: formulas, lots, prices, patients, prescriptions, orders in
    several states (one dispensed, so its reminders sit in the outbox), audit events."""

    with app.test_request_context("/"), unit_of_work():
        w = world(staff)
        dispensed = order_flow.start_fill(w["pharmacist"], w["rx"].id)
        run_order_to(w, dispensed.id, "dispensed")
        for i in range(3):
            p = patient(w["pharmacist"], first_name=f"Demo{i}", last_name="Patient", email=f"demo{i}@example.com")
            rx = prescription(w["pharmacist"], p.id, w["formula"].id, w["prescriber"].id)
            order = order_flow.start_fill(w["pharmacist"], rx.id)
            if i:
                run_order_to(w, order.id, ["verified", "checked"][i - 1])


def table_counts(url: str) -> dict[str, int]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            names = sorted(sa.inspect(conn).get_table_names())
            return {n: conn.execute(sa.text(f'SELECT COUNT(*) FROM "{n}"')).scalar_one() for n in names}
    finally:
        engine.dispose()


def checksum(url: str, table: str) -> str:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            t = sa.Table(table, sa.MetaData(), autoload_with=conn)
            rows = conn.execute(sa.select(t).order_by(*t.primary_key.columns)).all()
    finally:
        engine.dispose()
    return hashlib.sha256(repr([tuple(r) for r in rows]).encode()).hexdigest()


def writer_rows(url: str) -> tuple[set[int], set[int]]:
    """(ids of writer patients, ids of writer patients that have their patient.create audit event)."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            ids = set(conn.execute(sa.text("SELECT id FROM patients WHERE last_name = 'Loop'")).scalars())
            audited = set(conn.execute(sa.text(
                "SELECT patient_id FROM audit_events WHERE action = 'patient.create' AND patient_id IN "
                "(SELECT id FROM patients WHERE last_name = 'Loop')")).scalars())
    finally:
        engine.dispose()
    return ids, audited


def backup_while_writing(app: Flask, staff: dict, output: Path) -> tuple[Writer, set[int], set[int], str]:
    """Start the writer, let it commit, back up, keep writing a little, stop. Returns what was committed when."""
    writer = Writer(app, staff["pharmacist"])
    writer.start()
    try:
        writer.wait_for(20)
        before = writer.snapshot()  # every one of these was committed before the backup started
        result = cli(app, "backup", "create", "--output", str(output))
        at_end = writer.snapshot()
        writer.wait_for(len(at_end) + 5)  # it was never blocked: it keeps committing after the backup, too
    finally:
        writer.stop.set()
        writer.join(timeout=30)
    assert writer.error is None, writer.error
    assert result.exit_code == 0, result.output
    return writer, before, at_end, result.output


def check_restored(source_url: str, restored_url: str, before: set[int], at_end: set[int]) -> None:
    restored_ids, audited = writer_rows(restored_url)
    assert before <= restored_ids, f"rows committed before the backup are missing: {sorted(before - restored_ids)}"
    assert restored_ids <= at_end, "the backup holds rows committed after it finished"
    assert audited == restored_ids, "a patient without its audit event: the copy is torn"
    source, restored = table_counts(source_url), table_counts(restored_url)
    assert set(restored) == set(source)
    for table in UNTOUCHED:
        assert restored[table] == source[table], table
        assert checksum(restored_url, table) == checksum(source_url, table), table
    grew = {"patients", "audit_events"}
    for table in set(source) - grew - {"ops_events"}:  # the backup itself is noted in the live database only
        assert restored[table] == source[table], table
    for table in grew:
        assert restored[table] <= source[table]


# ---- SQLite --------------------------------------------------------------------------------------------------


@pytest.mark.skipif(USE_PG, reason="the SQLite backup path (this pass runs on PostgreSQL)")
def test_sqlite_backup_while_writing_restores_every_committed_row(app, staff, database_url, tmp_path) -> None:
    seed_demo(app, staff)
    output = tmp_path / "backups" / "during-writes.db"
    writer, before, at_end, out = backup_while_writing(app, staff, output)
    assert "Backup written and verified" in out and "sqlite" in out
    assert stat.S_IMODE(output.stat().st_mode) == 0o600  # it is full of patient data
    assert not output.with_name(output.name + ".partial").exists()
    assert backups.verify_sqlite(output)  # integrity_check ok on the file as written

    restored = tmp_path / "elsewhere" / "restored.db"
    result = cli(app, "backup", "restore", str(output), "--to", str(restored))
    assert result.exit_code == 0, result.output
    assert "integrity ok" in result.output
    check_restored(database_url, f"sqlite:///{restored}", before, at_end)
    assert len(writer.snapshot()) > len(at_end)

    # The backup is noted in the operations log with the file's checksum (doctor and /metrics read it).
    with app.app_context():
        event = db.session.execute(sa.select(OpsEvent).where(OpsEvent.kind == BACKUP)).scalar_one()
        assert event.outcome == "ok" and event.details["file"] == str(output)
        assert event.details["sha256"] == hashlib.sha256(output.read_bytes()).hexdigest()
        db.session.rollback()


@pytest.mark.skipif(USE_PG, reason="the SQLite backup path (this pass runs on PostgreSQL)")
def test_sqlite_restore_refuses_to_overwrite_without_force(app, staff, database_url, tmp_path) -> None:
    seed_demo(app, staff)
    first = tmp_path / "first.db"
    assert cli(app, "backup", "create", "--output", str(first)).exit_code == 0
    with app.test_request_context("/"), unit_of_work():
        patient(actor(staff["pharmacist"]), first_name="After", last_name="Backup", email="after@example.com")
    live = Path(sa.make_url(database_url).database)
    patients_now = table_counts(database_url)["patients"]

    # Over the app's own database: refused without --force, and nothing changed.
    refused = cli(app, "backup", "restore", str(first))
    assert refused.exit_code == 1 and "add --force" in refused.output
    assert table_counts(database_url)["patients"] == patients_now
    # With --force the database is the backup again (the patient added after it is gone), and the app works on it.
    forced = cli(app, "backup", "restore", str(first), "--force")
    assert forced.exit_code == 0, forced.output
    assert table_counts(database_url)["patients"] == patients_now - 1
    assert live.exists()
    client = app.test_client()
    assert client.get("/readyz").get_json()["checks"]["database"]["status"] == "ok"

    # An existing file elsewhere is refused too; an empty file is fine.
    target = tmp_path / "other.db"
    shutil.copyfile(first, target)
    assert cli(app, "backup", "restore", str(first), "--to", str(target)).exit_code == 1
    empty = tmp_path / "empty.db"
    empty.touch()
    assert cli(app, "backup", "restore", str(first), "--to", f"sqlite:///{empty}").exit_code == 0


def test_a_damaged_backup_is_refused(app, tmp_path) -> None:
    good = tmp_path / "good.db"

    conn = sqlite3.connect(good)
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    conn.executemany("INSERT INTO t (v) VALUES (?)", [("x" * 500,) for _ in range(200)])
    conn.execute("CREATE INDEX ix_t_v ON t (v)")
    conn.commit()
    conn.close()
    damaged = tmp_path / "damaged.db"
    data = bytearray(good.read_bytes())
    for offset in range(4096 * 3, len(data), 4096):  # scribble over the start of every page after the third
        data[offset:offset + 64] = os.urandom(64)
    damaged.write_bytes(bytes(data))
    result = cli(app, "backup", "verify", str(damaged))
    assert result.exit_code == 1
    assert "integrity_check" in result.output or "not a readable SQLite database" in result.output
    restored = tmp_path / "restored.db"
    assert cli(app, "backup", "restore", str(damaged), "--to", str(restored)).exit_code == 1
    assert not restored.exists()
    assert cli(app, "backup", "verify", str(good)).exit_code == 0
    not_a_backup = tmp_path / "notes.txt"
    not_a_backup.write_text("hello")
    result = cli(app, "backup", "verify", str(not_a_backup))
    assert result.exit_code == 1 and "neither a SQLite database nor a pg_dump" in result.output


def test_default_backup_location_is_instance_backups(app, tmp_path) -> None:
    if USE_PG and shutil.which("pg_dump") is None:
        pytest.skip("pg_dump is not installed")
    result = cli(app, "backup", "create")
    assert result.exit_code == 0, result.output
    directory = Path(app.instance_path) / "backups"
    files = sorted(f for f in directory.iterdir() if f.suffix != ".sha256")
    assert len(files) == 1 and files[0].name.startswith("pharmacy-20261123-150000")
    assert backups.checksum_path(files[0]).is_file()  # its SHA-256 beside it
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    again = cli(app, "backup", "create")  # same second: a new name, never an overwrite
    assert again.exit_code == 0 and len(list(directory.iterdir())) == 4


# ---- PostgreSQL ------------------------------------------------------------------------------------------------


@pytest.fixture
def other_pg_database() -> Iterator[str]:
    with scratch_pg_database("ldn_restore") as url:
        yield url


@pytest.mark.skipif(not USE_PG, reason="PostgreSQL pass only: DATABASE_URL does not point at PostgreSQL")
@pytest.mark.skipif(shutil.which("pg_dump") is None or shutil.which("pg_restore") is None,
                    reason="pg_dump/pg_restore are not installed (apt install postgresql-client)")
def test_postgres_backup_while_writing_restores_every_committed_row(app, staff, database_url, tmp_path,
                                                                    other_pg_database) -> None:
    seed_demo(app, staff)
    output = tmp_path / "during-writes.dump"
    _, before, at_end, out = backup_while_writing(app, staff, output)
    assert "pg_dump" in out and stat.S_IMODE(output.stat().st_mode) == 0o600
    assert output.read_bytes().startswith(b"PGDMP")

    result = cli(app, "backup", "restore", str(output), "--to", other_pg_database)
    assert result.exit_code == 0, result.output
    check_restored(database_url, other_pg_database, before, at_end)
    # The append-only guard on the audit trail came back with the data.
    engine = sa.create_engine(other_pg_database)
    try:
        with pytest.raises(sa.exc.DatabaseError, match="append-only"), engine.begin() as conn:
            conn.execute(sa.text("DELETE FROM audit_events"))
    finally:
        engine.dispose()
    # A second restore into the now-full database is refused without --force, and allowed with it.
    refused = cli(app, "backup", "restore", str(output), "--to", other_pg_database)
    assert refused.exit_code == 1 and "add --force" in refused.output
    forced = cli(app, "backup", "restore", str(output), "--to", other_pg_database, "--force")
    assert forced.exit_code == 0, forced.output
    check_restored(database_url, other_pg_database, before, at_end)


def test_postgres_commands_never_show_the_password() -> None:
    commands = backups.postgres_commands("postgresql+psycopg://pharmacy:s3cr3t@db.internal:5433/pharmacy")
    text = "\n".join(commands)
    assert "s3cr3t" not in text and "'postgresql://pharmacy@db.internal:5433/pharmacy'" in text
    assert commands[0].startswith("pg_dump --format=custom")
    env = backups.libpq_environment("postgresql+psycopg://pharmacy:s3cr3t@db.internal:5433/pharmacy?sslmode=require")
    assert env == {"PGHOST": "db.internal", "PGPORT": "5433", "PGUSER": "pharmacy", "PGPASSWORD": "s3cr3t",
                   "PGDATABASE": "pharmacy", "PGSSLMODE": "require"}


def test_missing_pg_dump_is_explained(monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(backups.shutil, "which", lambda name: None)
    with pytest.raises(backups.BackupError, match=r"pg_dump is not installed here.*postgresql-client") as err:
        backups.create("postgresql+psycopg://pharmacy:s3cr3t@127.0.0.1/pharmacy", tmp_path / "x.dump")
    assert "pg_dump --format=custom --no-owner" in str(err.value) and "pg_restore --clean" in str(err.value)
    assert "'postgresql://pharmacy@127.0.0.1/pharmacy'" in str(err.value) and "s3cr3t" not in str(err.value)
    assert not (tmp_path / "x.dump").exists() and not (tmp_path / "x.dump.partial").exists()


# ---- verify reads what a restore reads -----------------------------------------------------------------------


def _bulk_history(app: Flask, rows: int = 3000) -> None:
    """Enough audit history that the backup's data blocks, not its header, fill the middle of the file."""
    with app.app_context():
        at = now()
        db.session.execute(sa.insert(AuditEvent), [
            {"at": at, "actor_kind": "system", "action": f"bulk.event.{i % 7}", "outcome": "ok", "entity_type": "order",
             "entity_id": i, "patient_id": i % 50 + 1, "details": {"n": i, "pad": hashlib.sha256(str(i).encode()).hexdigest()}}
            for i in range(rows)])
        db.session.commit()


def _overwrite_middle(path: Path, size: int = 64) -> None:
    """64 bytes damaged three quarters in: past a PostgreSQL archive's table of contents (which grows with the
    schema and fills its first part when the data is small), in its data blocks."""
    data = bytearray(path.read_bytes())
    middle = len(data) * 3 // 4
    for i in range(middle, middle + size):
        data[i] ^= 0xA5  # every one of the 64 bytes changes
    path.write_bytes(bytes(data))


def test_verify_refuses_a_backup_with_64_bytes_overwritten_in_the_middle(app, staff, tmp_path) -> None:
    if USE_PG and shutil.which("pg_restore") is None:
        pytest.skip("pg_dump/pg_restore are not installed")
    seed_demo(app, staff)
    _bulk_history(app)
    output = tmp_path / ("nightly.dump" if USE_PG else "nightly.db")
    assert cli(app, "backup", "create", "--output", str(output)).exit_code == 0
    sidecar = backups.checksum_path(output)
    assert sidecar.read_text() == f"{hashlib.sha256(output.read_bytes()).hexdigest()}  {output.name}\n"
    assert stat.S_IMODE(sidecar.stat().st_mode) == 0o600
    good = cli(app, "backup", "verify", str(output))
    assert good.exit_code == 0 and "checksum ok" in good.output, good.output

    _overwrite_middle(output)
    damaged = cli(app, "backup", "verify", str(output))
    assert damaged.exit_code == 1 and "does not match the SHA-256 written when it was made" in damaged.output
    target = str(tmp_path / "restored.db") if not USE_PG else None
    if target is not None:
        assert cli(app, "backup", "restore", str(output), "--to", target).exit_code == 1
        assert not Path(target).exists()

    if USE_PG:
        # Without the checksum file, verify still reads every block: the table of contents alone (what verify
        # used to read) does not see the damage; decompressing every block does.
        sidecar.unlink()
        assert backups.verify_pg_dump(output, {}, read_all=False)
        blind = cli(app, "backup", "verify", str(output))
        assert blind.exit_code == 1 and "reading every block" in blind.output, blind.output


def test_verify_reads_a_sqlite_backup_through_a_restored_copy(app, tmp_path) -> None:
    good = tmp_path / "plain.db"
    conn = sqlite3.connect(good)
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    conn.executemany("INSERT INTO t (v) VALUES (?)", [("x" * 300,) for _ in range(400)])
    conn.commit()
    conn.close()
    result = backups.verify(good)
    # A file from elsewhere (or from before checksums) has no checksum: said so, and still read in full.
    assert (result.kind, result.checksum, result.tables) == ("sqlite", False, {"t": 400})
    out = cli(app, "backup", "verify", str(good)).output
    assert "no checksum file" in out and "restored copy" in out
