"""Backups that restore: SQLite through its online backup API, PostgreSQL through pg_dump/pg_restore.

SQLite: `sqlite3.Connection.backup` copies the whole database in one step, inside one read
transaction, so the copy is a consistent snapshot even while the web and the scheduler keep
writing (the database runs in WAL mode, so they are not even paused). The copy is written to
`<name>.partial` (mode 0600: it is full of patient data), switched to a self-contained rollback
journal, fsynced, verified with `PRAGMA integrity_check`, and only then renamed into place, with its
SHA-256 beside it in `<name>.sha256` (what `flask backup verify` and a restore check first).
Restoring goes through the same API into the target, so readers of the target never see a
half-written file and a stale `-wal` file can never be replayed over the restored data.

PostgreSQL: `pg_dump --format=custom` (one repeatable-read snapshot, consistent while the app
runs) and `pg_restore --clean --if-exists --single-transaction` (all or nothing). The password
travels in the child's environment (PGPASSWORD), never on a command line `ps` can show.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import sqlite3
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import sqlalchemy as sa

SQLITE_MAGIC = b"SQLite format 3\x00"
PGDUMP_MAGIC = b"PGDMP"
BACKUP_DIR = "backups"


class BackupError(Exception):
    """A backup or restore that did not happen; the message says what to do."""


@dataclass
class BackupResult:
    path: Path
    kind: str  # "sqlite" or "pg_dump"
    size_bytes: int
    sha256: str
    seconds: float
    tables: dict[str, int] = field(default_factory=dict)  # row counts (SQLite) or table-data entries (pg_dump)

    def summary(self) -> str:
        rows = sum(self.tables.values())
        what = f"{len(self.tables)} tables, {rows} rows" if self.kind == "sqlite" else f"{len(self.tables)} tables"
        return (f"{self.path} ({self.kind}, {self.size_bytes:,} bytes, {what}, verified, "
                f"sha256 {self.sha256[:16]}…, {self.seconds:.1f} s)")


@dataclass
class RestoreResult:
    target: str
    kind: str
    tables: dict[str, int]
    revision: str | None


# ---- where things are ----------------------------------------------------------------------------------------


def dialect_of(url: str) -> str:
    return sa.make_url(url).get_backend_name()


def sqlite_file(url: str) -> Path:
    database = sa.make_url(url).database
    if not database or database == ":memory:" or database.startswith("file::memory:"):
        raise BackupError("an in-memory SQLite database cannot be backed up")
    return Path(database)


def default_backup_path(instance_path: Path, at: datetime, kind: str) -> Path:
    directory = Path(instance_path) / BACKUP_DIR
    stem = f"pharmacy-{at:%Y%m%d-%H%M%S}"
    suffix = ".db" if kind == "sqlite" else ".dump"
    path = directory / f"{stem}{suffix}"
    n = 1
    while path.exists():
        path = directory / f"{stem}-{n}{suffix}"
        n += 1
    return path


def backup_kind(path: Path) -> str:
    with path.open("rb") as fh:
        head = fh.read(16)
    if head.startswith(SQLITE_MAGIC):
        return "sqlite"
    if head.startswith(PGDUMP_MAGIC):
        return "pg_dump"
    raise BackupError(f"{path} is neither a SQLite database nor a pg_dump custom-format archive")


def _prepare_destination(dest: Path) -> Path:
    if dest.exists():
        raise BackupError(f"{dest} already exists; choose another --output")
    dest.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    partial = dest.with_name(dest.name + ".partial")
    with contextlib.suppress(FileNotFoundError):
        partial.unlink()
    os.close(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    return partial


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # not every filesystem lets a directory be fsynced
        _fsync_file(path)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def checksum_path(path: Path) -> Path:
    """Where a backup's SHA-256 is kept: `FILE.sha256`, in `sha256sum` format (`sha256sum -c` checks it too)."""
    return path.with_name(path.name + ".sha256")


def _write_checksum(partial: Path, dest: Path) -> str:
    digest = _sha256(partial)
    sidecar = checksum_path(dest)
    with contextlib.suppress(FileNotFoundError):
        sidecar.unlink()
    fd = os.open(sidecar, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(f"{digest}  {dest.name}\n")
        fh.flush()
        os.fsync(fh.fileno())
    return digest


def check_checksum(path: Path) -> bool:
    """True when the checksum written at backup time matches every byte of the file now; False when there is
    none (a backup made before checksums were written); BackupError when it does not match."""
    sidecar = checksum_path(path)
    if not sidecar.is_file():
        return False
    expected = sidecar.read_text().split()[0].lower() if sidecar.read_text().split() else ""
    if _sha256(path) != expected:
        raise BackupError(f"{path} does not match the SHA-256 written when it was made ({sidecar.name}): "
                          "it was damaged or changed since; restore another backup")
    return True


def _finish(partial: Path, dest: Path) -> str:
    """Fsync, write the checksum beside it, give the file its final name; the SHA-256."""
    _fsync_file(partial)
    digest = _write_checksum(partial, dest)
    os.replace(partial, dest)
    _fsync_dir(dest.parent)
    return digest


# ---- SQLite ----------------------------------------------------------------------------------------------------


def _readonly(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=30)


def _sqlite_tables(conn: sqlite3.Connection) -> dict[str, int]:
    names = [r[0] for r in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")]
    return {name: conn.execute(f'SELECT COUNT(*) FROM "{name}"').fetchone()[0] for name in names}  # noqa: S608


def verify_sqlite_restorable(path: Path) -> dict[str, int]:
    """Everything a restore would read: the file is copied through the backup API (as `restore` does) into a
    private temporary file, and `PRAGMA integrity_check` runs on the file and on that copy. SQLite pages carry no
    checksums, so damage inside a row's bytes shows only against the SHA-256 written at backup time."""
    tables = verify_sqlite(path)
    with tempfile.TemporaryDirectory(prefix="pharmacy-verify-") as scratch:
        copy = Path(scratch) / "restored.db"
        src = _readonly(path)
        dst = sqlite3.connect(str(copy))
        try:
            src.backup(dst, pages=-1)
        except sqlite3.DatabaseError as exc:
            raise BackupError(f"{path} cannot be restored ({exc})") from None
        finally:
            dst.close()
            src.close()
        if verify_sqlite(copy) != tables:
            raise BackupError(f"{path} restores to different contents than it holds")
    return tables


def verify_sqlite(path: Path) -> dict[str, int]:
    """`PRAGMA integrity_check` on a SQLite file, then its row counts; BackupError when it is damaged."""
    if not path.is_file():
        raise BackupError(f"{path} does not exist")
    conn = _readonly(path)
    try:
        try:
            result = [r[0] for r in conn.execute("PRAGMA integrity_check")]
        except sqlite3.DatabaseError as exc:
            raise BackupError(f"{path} is not a readable SQLite database ({exc})") from None
        if result != ["ok"]:
            raise BackupError(f"{path} failed PRAGMA integrity_check: {'; '.join(result[:5])}")
        return _sqlite_tables(conn)
    finally:
        conn.close()


def backup_sqlite(source: Path, dest: Path) -> BackupResult:
    if not source.is_file():
        raise BackupError(f"the database file {source} does not exist")
    started = time.monotonic()
    partial = _prepare_destination(dest)
    try:
        src = sqlite3.connect(str(source), timeout=30)
        dst = sqlite3.connect(str(partial))
        try:
            # pages=-1: the whole database in one step, i.e. one consistent snapshot.
            src.backup(dst, pages=-1)
            # The copy inherits WAL mode from the source; a backup file should stand alone.
            dst.execute("PRAGMA journal_mode=DELETE")
        finally:
            dst.close()
            src.close()
        _fsync_file(partial)
        tables = verify_sqlite(partial)
        digest = _finish(partial, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
        raise
    return BackupResult(path=dest, kind="sqlite", size_bytes=dest.stat().st_size, sha256=digest,
                        seconds=time.monotonic() - started, tables=tables)


def _sqlite_has_tables(path: Path) -> bool:
    if not path.exists() or path.stat().st_size == 0:
        return False
    conn = _readonly(path)
    try:
        return conn.execute("SELECT COUNT(*) FROM sqlite_master WHERE type = 'table'").fetchone()[0] > 0
    except sqlite3.DatabaseError:
        return True  # something is there that is not an empty database: do not overwrite it silently
    finally:
        conn.close()


def restore_sqlite(backup: Path, target: Path, *, force: bool = False) -> RestoreResult:
    check_checksum(backup)
    verify_sqlite(backup)
    if _sqlite_has_tables(target) and not force:
        raise BackupError(f"{target} already holds a database; add --force to overwrite it "
                          "(stop the web and scheduler services first)")
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.exists():
        os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    src = _readonly(backup)
    dst = sqlite3.connect(str(target), timeout=30)
    try:
        src.backup(dst, pages=-1)
    finally:
        dst.close()
        src.close()
    tables = verify_sqlite(target)
    conn = _readonly(target)
    try:
        revision = _sqlite_revision(conn)
    finally:
        conn.close()
    return RestoreResult(target=str(target), kind="sqlite", tables=tables, revision=revision)


def _sqlite_revision(conn: sqlite3.Connection) -> str | None:
    try:
        row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    except sqlite3.DatabaseError:
        return None
    return row[0] if row else None


# ---- PostgreSQL ------------------------------------------------------------------------------------------------

_LIBPQ_QUERY = {"sslmode": "PGSSLMODE", "sslrootcert": "PGSSLROOTCERT", "sslcert": "PGSSLCERT", "sslkey": "PGSSLKEY",
                "connect_timeout": "PGCONNECT_TIMEOUT", "host": "PGHOST", "port": "PGPORT",
                "application_name": "PGAPPNAME", "options": "PGOPTIONS"}


def libpq_environment(url: str) -> dict[str, str]:
    """PG* variables for pg_dump/pg_restore from a SQLAlchemy URL (the password stays off the command line)."""
    u = sa.make_url(url)
    env = {"PGHOST": u.host or "", "PGPORT": str(u.port or ""), "PGUSER": u.username or "",
           "PGPASSWORD": u.password or "", "PGDATABASE": u.database or ""}
    for key, value in u.query.items():
        name = _LIBPQ_QUERY.get(key)
        if name:
            env[name] = value if isinstance(value, str) else value[-1]
    return {k: v for k, v in env.items() if v}


def postgres_commands(url: str, dump: str = "pharmacy-$(date -u +%Y%m%d-%H%M%S).dump") -> list[str]:
    """The equivalent shell commands, for the README and for servers without pg_dump beside the app.

    The password is left out: give it through ~/.pgpass or PGPASSWORD, never on a command line.
    """
    u = sa.make_url(url)
    conn = sa.engine.URL.create("postgresql", username=u.username, host=u.host, port=u.port,
                                database=u.database).render_as_string(hide_password=False)
    return [
        f"pg_dump --format=custom --no-owner --file={dump} '{conn}'",
        f"pg_restore --list {dump} > /dev/null   # the archive is readable",
        f"pg_restore --clean --if-exists --no-owner --no-privileges --single-transaction --exit-on-error "
        f"--dbname='{conn}' {dump}",
    ]


def _tool(name: str, url: str | None = None) -> str:
    path = shutil.which(name)
    if path is None:
        commands = "\n  ".join(postgres_commands(url or "postgresql://USER@HOST:5432/DB"))
        raise BackupError(
            f"{name} is not installed here. Install the PostgreSQL client tools matching the server's major "
            f"version (Debian/Ubuntu: apt install postgresql-client), or back up and restore by hand "
            f"(password from ~/.pgpass or PGPASSWORD):\n  {commands}"
        )
    return path


def _run(cmd: list[str], env: dict[str, str], what: str, timeout: float) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **env}
    try:
        result = subprocess.run(cmd, env=full_env, capture_output=True, text=True, timeout=timeout, check=False)  # noqa: S603
    except subprocess.TimeoutExpired:
        raise BackupError(f"{what} did not finish within {timeout:.0f} s") from None
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()
        raise BackupError(f"{what} failed: {' / '.join(detail[-3:]) or f'exit code {result.returncode}'}")
    return result


def verify_pg_dump(archive: Path, env: dict[str, str], *, read_all: bool = True, timeout: float = 3600) -> dict[str, int]:
    """The archive's table list; with `read_all`, every byte a restore would read, too: `pg_restore --list` reads
    only the table of contents, so a damaged data block passed it and failed the real restore ("could not
    uncompress data"). `pg_restore --file=/dev/null` decompresses every block into nothing, without a database."""
    listing = _run([_tool("pg_restore"), "--list", str(archive)], env, "pg_restore --list", 600).stdout
    if read_all:
        _run([_tool("pg_restore"), "--file=/dev/null", str(archive)], env, "pg_restore (reading every block)", timeout)
    tables: dict[str, int] = {}
    for line in listing.splitlines():
        # e.g. "3456; 0 16390 TABLE DATA public orders postgres"
        if " TABLE DATA " in line and not line.lstrip().startswith(";"):
            parts = line.split(" TABLE DATA ", 1)[1].split()
            if len(parts) >= 2:
                tables[parts[1]] = 0
    if not tables:
        raise BackupError(f"{archive} lists no table data: it is not a usable backup")
    return tables


def backup_postgres(url: str, dest: Path, *, timeout: float = 3600) -> BackupResult:
    env = libpq_environment(url)
    pg_dump = _tool("pg_dump", url)
    started = time.monotonic()
    partial = _prepare_destination(dest)
    try:
        _run([pg_dump, "--format=custom", "--no-owner", "--no-password", f"--file={partial}"], env, "pg_dump", timeout)
        _fsync_file(partial)
        tables = verify_pg_dump(partial, env, timeout=timeout)
        digest = _finish(partial, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
        raise
    return BackupResult(path=dest, kind="pg_dump", size_bytes=dest.stat().st_size, sha256=digest,
                        seconds=time.monotonic() - started, tables=tables)


def _pg_counts(url: str) -> tuple[dict[str, int], str | None]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            names = sa.inspect(conn).get_table_names()
            counts = {n: conn.execute(sa.text(f'SELECT COUNT(*) FROM "{n}"')).scalar_one()  # noqa: S608
                      for n in sorted(names)}
            revision = None
            if "alembic_version" in names:
                revision = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
        return counts, revision
    finally:
        engine.dispose()


def restore_postgres(archive: Path, url: str, *, force: bool = False, timeout: float = 3600) -> RestoreResult:
    env = libpq_environment(url)
    pg_restore = _tool("pg_restore", url)
    # The checksum and the table of contents here; a damaged block fails the single-transaction restore as a whole.
    check_checksum(archive)
    verify_pg_dump(archive, env, read_all=False)
    existing, _ = _pg_counts(url)
    if existing and not force:
        raise BackupError(f"the target database {env.get('PGDATABASE', '?')} already has {len(existing)} tables; "
                          "add --force to replace them (stop the web and scheduler services first)")
    _run([pg_restore, "--clean", "--if-exists", "--no-owner", "--no-privileges", "--single-transaction",
          "--exit-on-error", "--no-password", f"--dbname={env.get('PGDATABASE', '')}", str(archive)],
         env, "pg_restore", timeout)
    counts, revision = _pg_counts(url)
    return RestoreResult(target=env.get("PGDATABASE", ""), kind="pg_dump", tables=counts, revision=revision)


# ---- what the commands call ------------------------------------------------------------------------------------


def create(database_url: str, dest: Path) -> BackupResult:
    dialect = dialect_of(database_url)
    if dialect == "sqlite":
        return backup_sqlite(sqlite_file(database_url), dest)
    if dialect == "postgresql":
        return backup_postgres(database_url, dest)
    raise BackupError(f"no backup method for {dialect}")


@dataclass
class VerifyResult:
    kind: str
    tables: dict[str, int]
    checksum: bool  # the SHA-256 written at backup time was there and matched


def verify(path: Path) -> VerifyResult:
    """`flask backup verify`: the checksum written at backup time (when there is one), then every byte a restore
    would read (SQLite: integrity_check on the file and on a restored copy; pg_dump: pg_restore into /dev/null)."""
    if not path.is_file():
        raise BackupError(f"{path} does not exist")
    kind = backup_kind(path)
    checksum = check_checksum(path)
    tables = verify_sqlite_restorable(path) if kind == "sqlite" else verify_pg_dump(path, {})
    return VerifyResult(kind=kind, tables=tables, checksum=checksum)


def restore(backup: Path, target_url: str, *, force: bool = False) -> RestoreResult:
    if not backup.is_file():
        raise BackupError(f"{backup} does not exist")
    kind = backup_kind(backup)
    dialect = dialect_of(target_url)
    if kind == "sqlite" and dialect == "sqlite":
        return restore_sqlite(backup, sqlite_file(target_url), force=force)
    if kind == "pg_dump" and dialect == "postgresql":
        return restore_postgres(backup, target_url, force=force)
    raise BackupError(f"a {kind} backup cannot be restored into a {dialect} database")


def as_url(target: str) -> str:
    """--to accepts a database URL or, for SQLite, a plain file path."""
    if "://" in target:
        if target.startswith(("postgres://", "postgresql://")):
            return "postgresql+psycopg://" + target.split("://", 1)[1]
        return target
    return f"sqlite:///{Path(target).resolve()}"
