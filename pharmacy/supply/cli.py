"""`flask supply verify [--fix]`: the supply every prescription caches, checked against its dispensings.

Exit 1 when any prescription's cached columns differ from a walk of its dispensings (supply/verify.py); with --fix
they are written again by the supply's one writer, with the replacements that carry them, in one audited
transaction. Output carries counts, column names and internal prescription ids only (no patient data).
"""
from __future__ import annotations

from collections import Counter

import click
from flask import Flask
from flask.cli import AppGroup

from pharmacy.core import audit, uow
from pharmacy.core.actor import SYSTEM
from pharmacy.extensions import db
from pharmacy.prescriptions.models import Prescription
from pharmacy.supply import services, verify

supply = AppGroup("supply", help="The supply each prescription holds.")

_SHOWN = 20


@supply.command("verify")
@click.option("--fix", is_flag=True, help="Write the cached supply of each prescription that differs again.")
def verify_command(fix: bool) -> None:
    """Exit 1 when a prescription's cached supply differs from its dispensings (unless --fix put it right)."""
    with uow.unit_of_work():
        found = list(verify.mismatches())
        if found and fix:
            for rx_id in sorted(m.rx_id for m in found):
                rx = db.session.get(Prescription, rx_id)
                if rx is not None:
                    services.refresh_with_successors(rx)
            audit.record(SYSTEM, "supply.resync", details={"prescriptions": len(found)})
            click.echo(f"Wrote the supply of {len(found)} prescription(s) again from their dispensings.")
            return
    if found:
        columns = Counter(name for m in found for name in m.columns)
        click.echo(f"MISMATCH: {len(found)} prescription(s) cache a supply their dispensings do not give "
                   f"({', '.join(f'{name} {n}' for name, n in columns.most_common())}); prescription ids: "
                   f"{', '.join(str(m.rx_id) for m in found[:_SHOWN])}{' …' if len(found) > _SHOWN else ''}. "
                   "Run `flask supply verify --fix`.")
        raise SystemExit(1)
    click.echo("Every prescription's cached supply is what its dispensings give.")


def register(app: Flask) -> None:
    app.cli.add_command(supply)
