"""Commands: `flask reports refresh-adherence` (the scheduler also runs it every night).

Output carries counts and dates only — never a patient's name.
"""
from __future__ import annotations

import click
import sqlalchemy as sa
from flask import Flask
from flask.cli import AppGroup

from pharmacy.billing import adherence
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


def register(app: Flask) -> None:
    app.cli.add_command(reports)
