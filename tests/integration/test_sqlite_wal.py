"""SQLite's write-ahead log: copied back by the scheduler's job, not by the commit of a page view (ops/wal.py)."""
from __future__ import annotations

import shutil
import threading
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from pharmacy import create_app
from pharmacy.core import uow
from pharmacy.extensions import db
from pharmacy.ops import wal
from pharmacy.reminders import scheduler

PAGE = 4096


def _sqlite_app(app_config: dict, tmp_path: Path, schema: str, clock: Any, **settings: str) -> Flask:
    if not app_config["DATABASE_URL"].startswith("sqlite"):
        pytest.skip("SQLite only: PostgreSQL keeps its own log")
    path = tmp_path / "wal.db"
    shutil.copyfile(schema, path)
    return create_app({**app_config, "DATABASE_URL": f"sqlite:///{path}", **settings}, clock=clock)


def _write_pages(pages: int, per_commit: int = 100) -> None:
    """About `pages` pages of the log, in commits of `per_commit` (a blob a little under a page each)."""
    db.session.execute(sa.text("CREATE TABLE IF NOT EXISTS wal_probe (b BLOB)"))
    db.session.commit()
    for start in range(0, pages, per_commit):
        db.session.execute(sa.text("INSERT INTO wal_probe (b) VALUES (randomblob(:n))"),
                           [{"n": PAGE - 200}] * min(per_commit, pages - start))
        db.session.commit()


def test_a_commit_leaves_the_log_to_the_scheduler_below_the_setting(app_config: dict, tmp_path: Path, _schema: str,
                                                                     clock: Any) -> None:
    app = _sqlite_app(app_config, tmp_path, _schema, clock, SQLITE_WAL_AUTOCHECKPOINT="5000")
    with app.app_context():
        assert db.session.execute(sa.text("PRAGMA wal_autocheckpoint")).scalar() == 5000
        with uow.autonomous() as conn:  # the connection a refused request's counter is written on: the same limit
            assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 5000
        _write_pages(1500)
        found = wal.checkpoint(db.engine)
    assert found is not None
    # No commit copied the log back (SQLite's own limit, 1,000 pages, would have restarted it): all 1,500 pages wait
    # for the checkpoint, which copies them all (nobody else reads).
    assert found.log_frames >= 1500 and found.checkpointed_frames == found.log_frames and not found.busy


def test_the_setting_stays_the_backstop_when_no_scheduler_runs(app_config: dict, tmp_path: Path, _schema: str,
                                                              clock: Any) -> None:
    app = _sqlite_app(app_config, tmp_path, _schema, clock, SQLITE_WAL_AUTOCHECKPOINT="200")
    with app.app_context():
        _write_pages(1500)
        found = wal.checkpoint(db.engine)
    assert found is not None and found.log_frames < 500  # the commits past 200 pages copied it back themselves


def test_the_scheduler_job_copies_the_log_back_so_it_starts_again(app_config: dict, tmp_path: Path, _schema: str,
                                                                  clock: Any) -> None:
    app = _sqlite_app(app_config, tmp_path, _schema, clock)
    with app.app_context():
        _write_pages(600)
        wal.job_checkpoint(app)
        _write_pages(1, per_commit=1)  # the first write after a complete checkpoint starts the log from the top
        found = wal.checkpoint(db.engine)
    assert found is not None and found.log_frames < 50


def test_the_checkpoint_job_is_scheduled_on_sqlite_only(app: Flask) -> None:
    sched = scheduler.build(app, worker="w", stop=threading.Event())
    sched.start(paused=True)
    try:
        jobs = {job.id: job for job in sched.get_jobs()}
    finally:
        sched.shutdown(wait=False)
    with app.app_context():
        sqlite = db.engine.dialect.name == "sqlite"
        assert wal.checkpoint(db.engine) is None or sqlite
    if sqlite:
        assert jobs["wal_checkpoint"].trigger.interval.total_seconds() == wal.CHECKPOINT_SECONDS
        assert jobs["wal_checkpoint"].coalesce is True and jobs["wal_checkpoint"].max_instances == 1
    else:
        assert "wal_checkpoint" not in jobs
