"""`flask bench seed --patients N`: chain-scale data for the benchmarks (see benchmarks/README.md)."""
from __future__ import annotations

import json
from pathlib import Path

import click
from flask import Flask, current_app
from flask.cli import AppGroup

from pharmacy.bench.generator import generate
from pharmacy.billing import adherence

bench = AppGroup("bench", help="Benchmark data (chain-scale, generated; never for production).")


@bench.command("seed")
@click.option("--patients", type=click.IntRange(1, 5_000_000), required=True, help="How many patients (100000 ≈ 1M fills).")
@click.option("--seed", type=int, default=42, show_default=True, help="Same seed and same day, same data.")
@click.option("--years", type=click.IntRange(1, 10), default=3, show_default=True, help="Years of history.")
@click.option("--batch-size", type=click.IntRange(100, 100_000), default=5000, show_default=True)
@click.option("--password", default=None, help="Password for the bench-* staff accounts it creates (random if omitted).")
@click.option("--report", "report_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the report (rows per table, rows/s, peak RSS) as JSON here.")
def seed(patients: int, seed: int, years: int, batch_size: int, password: str | None, report_path: Path | None) -> None:
    """Generate patients, prescriptions, fills, payments, requests and the outbox in bulk."""

    with click.progressbar(length=patients, label="Generating patients", show_pos=True) as bar:
        report, credentials = generate(patients=patients, seed=seed, years=years, batch_size=batch_size,
                                       password=password, on_progress=bar.update)
    width = max(len(name) for name in report.rows)
    for name, n in report.rows.items():
        click.echo(f"  {name:<{width}}  {n:>10,}")
    click.echo(f"{report.total_rows:,} rows in {report.seconds:.1f} s ({report.rows_per_second:,.0f} rows/s), "
               f"peak RSS {report.peak_rss_mb:.0f} MB; today is {report.today}")
    # The adherence page and Today's call list read the nightly snapshot, not the fills: fill it now, as the
    # scheduler would tonight, or they would be measured (and shown) empty.
    with click.progressbar(length=patients, label="Adherence snapshot") as bar:
        done = adherence.refresh_adherence(on_progress=bar.update)
    click.echo(f"adherence snapshot: {done.measured:,} patients measured over {done.window_days} days")
    if report.lot_numbers_over_999_a_day:
        click.echo(f"note: {report.lot_numbers_over_999_a_day:,} fills needed a 4-digit lot sequence "
                   "(more than 999 batches compounded in one day)")
    if credentials:
        path = Path(current_app.instance_path) / "bench-credentials.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as fh:
            for role, email, pw in credentials:
                fh.write(f"{role}\t{email}\t{pw}\n")
        path.chmod(0o600)
        click.echo(f"bench staff accounts created (passwords in {path})")
    if report_path:
        report_path.write_text(json.dumps(report.as_dict(), indent=2))


def register(app: Flask) -> None:
    app.cli.add_command(bench)
