"""Commands: `flask doctor`, `flask backup create|restore|verify`.

Output names files, sizes, tables and revisions — never patient data.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from flask import Flask, current_app
from flask.cli import AppGroup, with_appcontext

from pharmacy.core.context import now, settings
from pharmacy.core.uow import unit_of_work
from pharmacy.extensions import db
from pharmacy.ops import backup as backups
from pharmacy.ops import doctor, health, wal
from pharmacy.ops.models import BACKUP, OpsEvent


@click.command("doctor")
@with_appcontext
def doctor_command() -> None:
    """Check this deployment's settings and connections; exit code 1 when something is wrong."""
    results = doctor.run()
    for result in results:
        click.echo(result.line())
    failures = sum(r.status == doctor.FAIL for r in results)
    warnings = sum(r.status == doctor.WARN for r in results)
    if failures:
        click.echo(f"{failures} problem(s) to fix" + (f", {warnings} thing(s) worth a look." if warnings else "."))
        raise SystemExit(1)
    click.echo("Ready." + (f" {warnings} thing(s) worth a look." if warnings else ""))


backup = AppGroup("backup", help="Back up and restore the database (SQLite: online backup API; PostgreSQL: pg_dump).")


def _record(outcome: str, details: dict[str, Any]) -> None:
    """Note the backup in the operations log (read by `flask doctor` and /metrics); never fatal."""
    try:
        with unit_of_work():
            db.session.add(OpsEvent(at=now(), kind=BACKUP, outcome=outcome, details=details))
    except Exception as exc:
        click.echo(f"! the backup is fine, but it could not be noted in the operations log ({type(exc).__name__}); "
                   "run `flask db upgrade`?", err=True)


@backup.command("create")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Where to write it (default: instance/backups/pharmacy-YYYYmmdd-HHMMSS.db or .dump, UTC).")
def create(output: Path | None) -> None:
    """Write a consistent, verified copy of the database while the app keeps running."""
    cfg = settings()
    kind = "sqlite" if backups.dialect_of(cfg.database_url) == "sqlite" else "pg_dump"
    dest = output or backups.default_backup_path(Path(current_app.instance_path), now(), kind)
    try:
        result = backups.create(cfg.database_url, dest)
    except backups.BackupError as exc:
        _record("failed", {"kind": kind, "file": str(dest), "error": str(exc)[:300]})
        raise click.ClickException(str(exc)) from None
    _record("ok", {"kind": result.kind, "file": str(result.path), "bytes": result.size_bytes,
                   "sha256": result.sha256, "tables": len(result.tables), "rows": sum(result.tables.values())})
    click.echo(f"Backup written and verified: {result.summary()}")


@backup.command("restore")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--to", "target", default=None,
              help="Restore into this database URL (or SQLite file path) instead of the app's own DATABASE_URL.")
@click.option("--force", is_flag=True, help="Overwrite a target that already holds data.")
def restore(path: Path, target: str | None, force: bool) -> None:
    """Restore a backup file into an empty database (or over one, with --force)."""
    url = backups.as_url(target) if target else settings().database_url
    if target is None:
        click.echo("Restoring over this app's own database: stop the web and scheduler services first.")
        db.session.remove()
        db.engine.dispose()  # no pooled connection of ours may hold the old file or tables open
    try:
        result = backups.restore(path, url, force=force)
    except backups.BackupError as exc:
        raise click.ClickException(str(exc)) from None
    rows = sum(result.tables.values())
    click.echo(f"Restored {path} into {result.target}: {len(result.tables)} tables, {rows} rows, "
               f"integrity ok, schema revision {result.revision or 'none'}.")
    heads = set(health.script_directory().get_heads())
    if result.revision not in heads:
        click.echo(f"! this code expects schema {', '.join(sorted(heads))}: run `flask db upgrade` with "
                   "DATABASE_URL pointing at the restored database before starting the app on it.")


@backup.command("verify")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def verify(path: Path) -> None:
    """Check that a backup file is intact: its checksum, and every byte a restore would read (no database is touched)."""
    try:
        result = backups.verify(path)
    except backups.BackupError as exc:
        raise click.ClickException(str(exc)) from None
    checksum = "checksum ok" if result.checksum else \
        f"! no checksum file ({backups.checksum_path(path).name}): made before checksums were written"
    if result.kind == "sqlite":
        click.echo(f"{path}: SQLite, {checksum}, integrity ok on the file and on a restored copy, "
                   f"{len(result.tables)} tables, {sum(result.tables.values())} rows")
    else:
        click.echo(f"{path}: pg_dump archive, {checksum}, every block read back, data for {len(result.tables)} tables")


def register(app: Flask) -> None:
    app.cli.add_command(doctor_command)
    app.cli.add_command(backup)
    app.extensions.setdefault("pharmacy.scheduler_jobs", []).append(wal.add_jobs)
