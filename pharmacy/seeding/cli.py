"""`flask seed`: load the demo data from seeds/ (idempotent; a bad row stops it and writes nothing)."""
from __future__ import annotations

from pathlib import Path

import click
from flask import Flask, current_app

from pharmacy.core.uow import unit_of_work
from pharmacy.seeding.loader import SeedError, load

DEFAULT_DIR = Path(__file__).resolve().parents[2] / "seeds"


@click.command("seed")
@click.option("--dir", "directory", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_DIR,
              show_default=True)
def seed(directory: Path) -> None:
    """Load demo formulas, lots, prices, prescribers and patients dated relative to today."""
    try:
        with unit_of_work():
            report = load(directory, on_progress=lambda m: click.echo(f"  … {m}"))
    except SeedError as exc:
        raise click.ClickException(f"seed rejected, nothing loaded: {exc}") from None
    for kind, n in sorted(report.created.items()):
        click.echo(f"  created {n} {kind}")
    if report.skipped:
        click.echo("  already there: " + ", ".join(f"{n} {k}" for k, n in sorted(report.skipped.items())))
    if report.credentials:
        path = Path(current_app.instance_path) / "demo-credentials.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as fh:
            for role, email, password in report.credentials:
                fh.write(f"{role}\t{email}\t{password}\n")
        path.chmod(0o600)
        click.echo(f"Demo staff accounts (also in {path}):")
        for role, email, password in report.credentials:
            click.echo(f"  {role:<11} {email:<32} {password}")


def register(app: Flask) -> None:
    app.cli.add_command(seed)
