"""Commands: `flask reports refresh-adherence` (the scheduler also runs it every night); `flask reports verify` and
`flask reports rebuild-totals` (the money reports' running totals, billing/totals.py).

Output carries counts and dates only — never a patient's name.
"""
from __future__ import annotations

import click
import sqlalchemy as sa
from flask import Flask
from flask.cli import AppGroup

from pharmacy.billing import adherence, totals
from pharmacy.core import uow
from pharmacy.core.actor import SYSTEM
from pharmacy.core.context import settings
from pharmacy.extensions import db
from pharmacy.prescriptions.models import Prescription
from pharmacy.prescriptions.rules import RxStatus

reports = AppGroup("reports", help="Money and adherence reports.")


@reports.command("refresh-adherence")
@click.option("--batch-size", default=adherence.SNAPSHOT_BATCH, show_default=True,
              type=click.IntRange(1, 20000), help="Patients read, measured and written (and committed) together.")
def refresh_adherence(batch_size: int) -> None:
    """Recompute every measured patient's PDC (the adherence page and the dashboard's call list read it)."""

    total = db.session.execute(
        sa.select(sa.func.count(sa.distinct(Prescription.patient_id))).where(Prescription.status == RxStatus.ACTIVE)
    ).scalar_one()
    with click.progressbar(length=int(total), label="Measuring adherence") as bar:
        done = adherence.refresh_adherence(batch_size=batch_size, on_progress=bar.update)
    click.echo(f"{done.measured} patient(s) measured over {done.window_days} days up to {done.window_end.isoformat()} "
               f"(threshold {settings().pdc_threshold_percent}%)")


@reports.command("verify")
def verify() -> None:
    """Recompute every running total from the orders and payments and compare: exit 1 on any difference."""
    found = totals.verify()
    for m in found:
        click.echo(f"MISMATCH {m.table}: {m.count} row(s) differ")
        for row in m.kept_only:
            click.echo(f"  kept, not recomputed: {_row(row)}")
        for row in m.recomputed_only:
            click.echo(f"  recomputed, not kept: {_row(row)}")
    if found:
        click.echo("Run `flask reports rebuild-totals` to recompute them (and find what wrote around the totals).")
        raise SystemExit(1)
    click.echo(f"Running totals match the rows ({', '.join(totals.TABLES)}).")


def _row(row: tuple) -> str:
    return "(" + ", ".join(str(v) for v in row) + ")"


@reports.command("rebuild-totals")
def rebuild_totals() -> None:
    """Recompute every running total from the rows and replace them, in one transaction (audited)."""
    written = totals.rebuild_audited(SYSTEM)
    uow.commit_step()
    click.echo("Rebuilt: " + ", ".join(f"{name} {n} row(s)" for name, n in written.items()))


def register(app: Flask) -> None:
    app.cli.add_command(reports)
