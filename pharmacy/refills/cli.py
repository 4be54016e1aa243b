"""`flask refills verify [--fix]`: the refill queue's order checked against the supply it is kept from.

Each open request carries its prescription's run-out date (RefillRequest.run_out_date), which orders the queue —
patients out of medicine first. The supply's one writer keeps it in step; this recomputes it from the prescriptions
and says how many differ (exit 1), and with --fix copies them again (audited). Output carries counts only.
"""
from __future__ import annotations

import click
from flask import Flask
from flask.cli import AppGroup

from pharmacy.core import audit, uow
from pharmacy.core.actor import SYSTEM
from pharmacy.supply import services as supply

refills = AppGroup("refills", help="Refill requests.")


@refills.command("verify")
@click.option("--fix", is_flag=True, help="Copy each open request's prescription's run-out onto it.")
def verify(fix: bool) -> None:
    """Exit 1 when an open request's run-out copy differs from its prescription's (unless --fix put it right)."""
    with uow.unit_of_work():
        found = supply.open_requests_out_of_step()
        if found and fix:
            fixed = supply.resync_open_requests()
            audit.record(SYSTEM, "refills.resync_run_out", details={"requests": fixed})
            click.echo(f"Copied the prescription's run-out onto {fixed} open request(s); the queue's order is right.")
            return
    if found:
        click.echo(f"MISMATCH: {found} open refill request(s) carry a run-out that is not their prescription's, "
                   "so the refill queue lists them out of order. Run `flask refills verify --fix`.")
        raise SystemExit(1)
    click.echo("Every open refill request carries its prescription's run-out: the queue's order is right.")


def register(app: Flask) -> None:
    app.cli.add_command(refills)
