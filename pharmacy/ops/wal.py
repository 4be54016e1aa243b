"""SQLite's write-ahead log copied back into the database by the scheduler, every few seconds, not by a page view.

In WAL mode every commit appends the pages it changed to the log; someone must copy them back into the database
file (a checkpoint, with two fsyncs) before the log can start again. Left to SQLite, the commit that takes the log
past its limit does it, inside its own request: at chain scale a list page's read events alone touch ~60 pages of
the audit trail's patient index, so every ~16th page view paid 5–30 ms for the others' writes — the tail of every
page. The scheduler (one per SQLite deployment) now checkpoints PASSIVE every CHECKPOINT_SECONDS: it copies what
no reader still needs, waits for nobody and blocks nobody. The connections' own limit (SQLITE_WAL_AUTOCHECKPOINT,
core/db_events.py) stays as the backstop for a deployment whose scheduler is not running.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from flask import Flask

from pharmacy.extensions import db

log = logging.getLogger(__name__)

CHECKPOINT_SECONDS = 5


@dataclass(frozen=True)
class Checkpoint:
    """What one PASSIVE checkpoint found: the log's length and how much of it is now in the database (frames)."""

    busy: bool
    log_frames: int
    checkpointed_frames: int


def checkpoint(engine: sa.Engine) -> Checkpoint | None:
    """Copy the log back as far as no reader still needs it (None when the database is not SQLite)."""
    if engine.dialect.name != "sqlite":
        return None
    with engine.connect() as conn:
        busy, frames, done = conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)").one()
    return Checkpoint(busy=bool(busy), log_frames=int(frames), checkpointed_frames=int(done))


def job_checkpoint(app: Flask) -> None:
    with app.app_context():
        try:
            result = checkpoint(db.engine)
        except sa.exc.SQLAlchemyError as exc:  # the next run tries again; the connections' own limit is the backstop
            log.warning("WAL checkpoint failed (%s)", type(exc).__name__)
            return
        if result is not None and result.log_frames > 0 and result.checkpointed_frames < result.log_frames:
            log.debug("WAL checkpoint: %d of %d frames copied (a reader still needs the rest)",
                      result.checkpointed_frames, result.log_frames)


def add_jobs(scheduler: Any, app: Flask, worker: str, stop: threading.Event) -> None:
    """The checkpoint job, on SQLite only (PostgreSQL manages its own log)."""
    with app.app_context():
        if db.engine.dialect.name != "sqlite":
            return
    scheduler.add_job(job_checkpoint, "interval", seconds=CHECKPOINT_SECONDS, args=[app], id="wal_checkpoint",
                      name="SQLite WAL checkpoint")
