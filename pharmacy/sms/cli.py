"""`flask sms send`: deliver the texts due now (what the scheduler does every 30 seconds)."""
from __future__ import annotations

import click
from flask import Flask
from flask.cli import AppGroup

from pharmacy.sms import delivery

sms = AppGroup("sms", help="Text messages: the outbox's sms channel.")


@sms.command("send")
def send() -> None:
    """Spawn the texts now due and send every text that is due."""
    report = delivery.deliver_due()
    click.echo(f"texts: sent {report.sent}, retry later {report.retried}, failed {report.failed}, "
               f"cancelled {report.cancelled}, waiting for the morning or taken over {report.skipped}")


def register(app: Flask) -> None:
    app.cli.add_command(sms)
