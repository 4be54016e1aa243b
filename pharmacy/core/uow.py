"""The one place that commits: the end of a request, a job or a CLI command; rollback on any error."""
from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa
from flask import Flask, Response, current_app, g
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.pool import NullPool

from pharmacy.core import audit, db_events
from pharmacy.core.error_handlers import busy_response, conflict_response, is_busy
from pharmacy.extensions import db

log = logging.getLogger(__name__)


def discard() -> None:
    """Undo the request's unsaved work now, keeping the audit events that must survive (refusals, failed
    log-ins): a view about to show a refused form again starts from a clean session, and nothing of the
    refused attempt can be committed later in the request."""
    _rollback_keeping_audit()


def mark_rollback() -> None:
    """Ask the end of the request to roll back even though the response is a success (e.g. previews)."""
    g._uow_rollback = True


def _rollback_keeping_audit() -> None:
    db.session.rollback()
    kept = audit.kept_after_rollback()
    redo = audit.redone_after_rollback()
    if kept or redo:
        db.session.add_all(model(**values) for model, values in kept)
        for step in redo:
            step()
        try:
            db.session.commit()
        except OperationalError:  # the database still refuses (SQLite busy past its timeout): said, not raised
            db.session.rollback()
            log.error("%d audit event(s) kept after a rollback could not be written: database busy", len(kept))


def init_app(app: Flask) -> None:
    @app.before_request
    def _begin() -> None:
        audit.write_at_commit()  # the request's audit events are written by the commit below

    @app.after_request
    def _finish(response: Response) -> Response:
        if response.status_code >= 400 or g.pop("_uow_rollback", False):
            _rollback_keeping_audit()
            return response
        try:
            db.session.commit()
        except (IntegrityError, OperationalError) as exc:
            # The request's audit events are written by this commit, so a read-only page meets a busy SQLite here:
            # what must survive a rollback (its reads, refusals) is written again, and "busy" is said as such.
            _rollback_keeping_audit()
            log.warning("commit failed, nothing saved: %s", type(exc).__name__)
            if isinstance(exc, OperationalError) and is_busy(exc):
                return busy_response()
            return conflict_response("Someone else changed this at the same moment; nothing was saved. Try again.")
        return response

    @app.teardown_request
    def _teardown(exc: BaseException | None) -> None:
        if exc is not None:
            db.session.rollback()


@contextmanager
def unit_of_work() -> Iterator[None]:
    """For jobs and CLI commands: commit when the block finishes, roll back if it raises."""
    try:
        yield
        db.session.commit()
    except BaseException:
        db.session.rollback()
        raise


@contextmanager
def autonomous() -> Iterator[sa.Connection]:
    """A short transaction on a connection of its own, committed when the block ends, whatever becomes of the
    request around it: for the few writes a refused request must keep *and* that must be atomic with a check
    (a link's wrong-answer counter, core/links.py). Never for ordinary work, which commits with its request.

    The connection comes from an engine without a pool (opened and closed here), not from the app's pool: a
    request already holds one pooled connection, and twenty requests each waiting for a second from a pool of
    fifteen would wait for each other until the pool timed out."""
    with _autonomous_engine().begin() as conn:
        yield conn


_ENGINE_LOCK = threading.Lock()


def _autonomous_engine() -> sa.Engine:
    with _ENGINE_LOCK:
        engine = current_app.extensions.get("pharmacy.autonomous_engine")
        if engine is None:
            url = db.engine.url
            s = current_app.extensions["pharmacy.settings"]
            connect_args = {"timeout": s.sqlite_busy_timeout_ms / 1000} if url.get_backend_name() == "sqlite" else {}
            engine = sa.create_engine(url, poolclass=NullPool, hide_parameters=True, connect_args=connect_args)
            db_events.install(engine, busy_timeout_ms=s.sqlite_busy_timeout_ms,
                              wal_autocheckpoint=s.sqlite_wal_autocheckpoint)
            current_app.extensions["pharmacy.autonomous_engine"] = engine
        return engine


def commit_step() -> None:
    """End one step of a long job and keep it: jobs that work in steps (the delivery run — a claim, each message's
    outcome —, the bulk re-plan and the adherence refresh batch by batch, the benchmark generator) commit through
    here, so a run cut short keeps every finished step and every commit of the code base is found from this module.
    Services never call it: a request commits once, at its end."""
    db.session.commit()
