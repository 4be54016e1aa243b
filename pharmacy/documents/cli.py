"""`flask documents import-folder`: faxes dropped into the watched folder (DOCUMENT_INBOX_DIR) go to the intake queue;
the scheduler runs the same import every minute when the folder is configured.

A file is claimed by renaming it into `.importing/` (atomic: two schedulers never take the same file), imported in
its own transaction, then moved to `imported/`, or to `refused/` with a `.reason.txt` beside it. Files still being
written (a name starting with a dot, or ending in .part or .tmp) are left alone.
"""
from __future__ import annotations

import logging
import os
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
from flask import Flask
from flask.cli import with_appcontext

from pharmacy.core.actor import SYSTEM
from pharmacy.core.errors import DomainError
from pharmacy.core.uow import unit_of_work
from pharmacy.documents.rules import DocumentSource
from pharmacy.eprescribing.settings import erx_settings
from pharmacy.extensions import db
from pharmacy.workflows import eprescribing as workflow

log = logging.getLogger(__name__)
IMPORT_SECONDS = 60


@dataclass
class FolderReport:
    imported: int = 0
    duplicates: int = 0
    refused: int = 0

    def line(self) -> str:
        return f"imported {self.imported}, already on file {self.duplicates}, refused {self.refused}"


def _waiting(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.is_file() and not p.name.startswith(".")
                  and not p.name.endswith((".part", ".tmp")))


def import_folder(directory: Path) -> FolderReport:
    """Import every finished file in `directory` (one transaction each); what happened, in counts."""
    report = FolderReport()
    if not directory.is_dir():
        return report
    work, done, refused = (directory / ".importing", directory / "imported", directory / "refused")
    for folder in (work, done, refused):
        folder.mkdir(exist_ok=True)
    limit = erx_settings().document_max_bytes
    for path in _waiting(directory):
        claimed = work / f"{uuid.uuid4().hex[:8]}-{path.name}"
        try:
            os.rename(path, claimed)
        except FileNotFoundError:  # another scheduler took it
            continue
        try:
            if claimed.stat().st_size > limit:
                raise DomainError(f"larger than {limit // 2**20} MB")
            data = claimed.read_bytes()
            with unit_of_work():
                _doc, _intake, new = workflow.receive_document(SYSTEM, name=path.name, data=data,
                                                               source=DocumentSource.FOLDER)
            os.replace(claimed, done / claimed.name)
            if new:
                report.imported += 1
            else:
                report.duplicates += 1
        except DomainError as exc:
            db.session.rollback()
            os.replace(claimed, refused / claimed.name)
            (refused / f"{claimed.name}.reason.txt").write_text(f"{exc.message}\n")
            report.refused += 1
    if report.imported or report.refused:
        log.info("document folder: %s", report.line())
    return report


def job_import_folder(app: Flask) -> None:
    with app.app_context():
        inbox = erx_settings().document_inbox
        if inbox is None:
            return
        try:
            import_folder(inbox)
        except Exception as exc:  # the next run tries again; files stay where they are
            db.session.rollback()
            log.error("document folder import failed (%s)", type(exc).__name__)


def _add_jobs(scheduler: Any, app: Flask, worker: str, stop: threading.Event) -> None:
    scheduler.add_job(job_import_folder, "interval", seconds=IMPORT_SECONDS, args=[app], id="document_folder",
                      name="document folder import")


@click.group("documents")
def documents() -> None:
    """Faxed and scanned prescriptions."""


@documents.command("import-folder")
@click.option("--dir", "directory", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="The folder to import (default: DOCUMENT_INBOX_DIR).")
@with_appcontext
def import_folder_command(directory: Path | None) -> None:
    """Import the faxes waiting in the watched folder into the intake queue."""
    directory = directory or erx_settings().document_inbox
    if directory is None:
        raise click.ClickException("Set DOCUMENT_INBOX_DIR or pass --dir.")
    click.echo(import_folder(directory).line())


def register(app: Flask) -> None:
    app.cli.add_command(documents)
    app.extensions.setdefault("pharmacy.scheduler_jobs", []).append(_add_jobs)
