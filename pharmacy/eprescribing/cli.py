"""`flask erx deliver` sends the outbound SCRIPT messages now; the scheduler does it every 30 seconds."""
from __future__ import annotations

import logging
import threading
from typing import Any

import click
from flask import Flask
from flask.cli import with_appcontext

from pharmacy.eprescribing import delivery
from pharmacy.extensions import db

log = logging.getLogger(__name__)
DELIVER_SECONDS = 30


def job_deliver(app: Flask, worker: str, stop: threading.Event) -> None:
    with app.app_context():
        try:
            delivery.deliver_due(worker=f"erx:{worker}", should_stop=stop.is_set)
        except Exception as exc:  # the next run retries; claimed messages come back when their lease expires
            db.session.rollback()
            log.error("e-prescribing delivery failed (%s)", type(exc).__name__)


def _add_jobs(scheduler: Any, app: Flask, worker: str, stop: threading.Event) -> None:
    scheduler.add_job(job_deliver, "interval", seconds=DELIVER_SECONDS, args=[app, worker, stop], id="erx_deliver",
                      name="e-prescribing delivery")


@click.group("erx")
def erx() -> None:
    """E-prescribing (NCPDP SCRIPT) messages."""


@erx.command("deliver")
@with_appcontext
def deliver() -> None:
    """Send the outbound SCRIPT messages that are due, now."""
    click.echo(delivery.deliver_due().line())


def register(app: Flask) -> None:
    app.cli.add_command(erx)
    app.extensions.setdefault("pharmacy.scheduler_jobs", []).append(_add_jobs)
