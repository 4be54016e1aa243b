"""`flask inventory check`: every lot's kept totals against the sum of its ledger rows (they must agree)."""
from __future__ import annotations

import click
from flask import Flask
from flask.cli import AppGroup

from pharmacy.inventory import services

inventory = AppGroup("inventory", help="Stock of ingredient lots.")


@inventory.command("check")
def check() -> None:
    """Lots whose on-hand figure differs from their ledger; exit status 1 when there is one."""
    wrong = services.ledger_mismatches()
    for lot_id, kept, ledger in wrong:
        click.echo(f"lot {lot_id}: on hand {kept}, ledger {ledger}")
    click.echo(f"inventory: {len(wrong)} lot(s) disagree with their ledger" if wrong else
               "inventory: every lot agrees with its ledger")
    if wrong:
        raise SystemExit(1)


def register(app: Flask) -> None:
    app.cli.add_command(inventory)
