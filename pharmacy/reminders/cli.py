"""Commands: `flask reminders due|send|replan`, `flask scheduler`, and `flask serve-dev` (used by `make run`).

Output carries ids, Rx numbers and dates — never a patient's name or address.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import date, datetime
from typing import Any

import click
from flask import Flask, current_app
from flask.cli import AppGroup, with_appcontext
from werkzeug.serving import run_simple

from pharmacy.core.context import today
from pharmacy.reminders import bulk_planning, claims, delivery, scheduler, services

reminders = AppGroup("reminders", help="Refill reminders and the email outbox.")


@reminders.command("due")
@click.option("--as-of", "as_of", type=click.DateTime(formats=["%Y-%m-%d"]), default=None,
              help="The pharmacy-local day (YYYY-MM-DD); today when omitted.")
def due(as_of: datetime | None) -> None:
    """Print what would go out on a day, and why (ids and Rx numbers only)."""
    day: date = as_of.date() if as_of else today()
    items = services.due_on(day)
    click.echo(f"{len(items)} email(s) due on {day.isoformat()}")
    for item in items:
        click.echo(
            f"{item.at:%Y-%m-%d %H:%M %Z}  #{item.message_id:<6} {item.kind.value:<20} "
            f"patient {item.patient_id if item.patient_id is not None else '-':<6} "
            f"Rx {item.rx_number or '-':<10} "
            f"order-by {item.order_by.isoformat() if item.order_by else '-':<10}  {item.why}"
        )


@reminders.command("send")
@click.option("--batch-size", default=claims.BATCH_SIZE, show_default=True, type=click.IntRange(1, 1000))
def send(batch_size: int) -> None:
    """Deliver every email that is due now (what the scheduler does every 30 seconds)."""
    report = delivery.deliver_due(batch_size=batch_size)
    click.echo(f"sent {report.sent}, retry later {report.retried}, failed {report.failed}, "
               f"cancelled {report.cancelled}, expired leases released {report.expired_leases}")


@reminders.command("replan")
@click.option("--batch-size", default=5000, show_default=True, type=click.IntRange(1, 50000),
              help="Prescriptions read, planned and written (and committed) together.")
def replan(batch_size: int) -> None:
    """Re-plan the reminders of every active prescription's latest fill (after a settings change).

    Set-based (bulk_planning.replan_all): a fixed number of statements per batch of prescriptions,
    committed batch by batch, so an interrupted run leaves every finished batch re-planned.
    """
    total = bulk_planning.active_prescriptions()
    with click.progressbar(length=total, label="Re-planning prescriptions") as bar:
        report = bulk_planning.replan_all(batch_size=batch_size, on_progress=bar.update)
    click.echo(f"{report.prescriptions} prescription(s), {report.fills} fill(s) re-planned ({report.blocked} left "
               f"alone: a refill is already ordered or requested); reminders: {report.added} added, "
               f"{report.moved} moved, {report.revived} restored, {report.cancelled} cancelled; "
               f"{report.renewal_tasks} renewal task(s) opened")


@click.command("scheduler")
@with_appcontext
def scheduler_command() -> None:
    """Run the scheduler process (delivery every 30 s, planning sweep every 10 min) until stopped."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    try:
        scheduler.run(app)
    except scheduler.SchedulerRefused as exc:
        raise click.ClickException(str(exc)) from None


@click.command("serve-dev")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True, type=int)
@with_appcontext
def serve_dev(host: str, port: int) -> None:
    """The development server with the scheduler beside it (`make run`); stopping one stops both."""

    app = current_app._get_current_object()  # type: ignore[attr-defined]
    env = dict(os.environ)
    env.setdefault("FLASK_APP", "pharmacy.entry")
    child = subprocess.Popen([sys.executable, "-m", "flask", "scheduler"], env=env)

    def _stop(*_: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, _stop)
    try:
        # No reloader: it would start a second process (and a second scheduler with it).
        run_simple(host, port, app, use_reloader=False, use_debugger=False, threaded=True)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        _stop_child(child)


def _stop_child(child: subprocess.Popen[Any]) -> None:
    if child.poll() is not None:
        return
    child.terminate()
    try:
        child.wait(timeout=20)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


def register(app: Flask) -> None:
    app.cli.add_command(reminders)
    app.cli.add_command(scheduler_command)
    app.cli.add_command(serve_dev)
