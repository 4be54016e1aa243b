"""`flask autorefill run`: ask for every enrolled prescription's refill whose order-by date has come."""
from __future__ import annotations

import click
from flask import Flask
from flask.cli import AppGroup

from pharmacy.autorefill import services

autorefill = AppGroup("autorefill", help="Automatic refills on the order-by date.")


@autorefill.command("run")
def run() -> None:
    """What the scheduler does every morning (AUTOREFILL_HOUR): one request per supply, never twice."""
    report = services.run_due()
    click.echo(f"auto-refill: {report.line()}")


def register(app: Flask) -> None:
    app.cli.add_command(autorefill)
