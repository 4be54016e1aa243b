"""Core commands: `flask users create|list|token|set-password|prune-sessions`, and the nightly session prune."""
from __future__ import annotations

import logging
import threading
from typing import Any

import click
from flask import Flask
from flask.cli import AppGroup

from pharmacy.core import services, sessions
from pharmacy.core.actor import Actor
from pharmacy.core.errors import DomainError
from pharmacy.core.roles import Role
from pharmacy.core.uow import unit_of_work

log = logging.getLogger(__name__)
PRUNE_HOUR = 3  # pharmacy time: after the adherence refresh, before the day starts

users = AppGroup("users", help="Staff accounts.")
# The shell is trusted like an admin at the console; its actions are audited as "system".
CONSOLE = Actor(kind="staff", user_id=None, role=Role.ADMIN)


def _fail(exc: DomainError) -> None:
    details = "; ".join(f"{k}: {' '.join(v)}" for k, v in exc.fields.items())
    raise click.ClickException(f"{exc.message} {details}".strip())


@users.command("create")
@click.option("--email", required=True)
@click.option("--name", "full_name", required=True)
@click.option("--role", type=click.Choice([r.value for r in Role]), required=True)
@click.password_option(help="Prompted (twice) when not given; never stored in clear.")
def create(email: str, full_name: str, role: str, password: str) -> None:
    """Create a staff account (there is no default account or password)."""
    try:
        with unit_of_work():
            user = services.create_user(CONSOLE, email=email, full_name=full_name, role=role, password=password)
    except DomainError as exc:
        _fail(exc)
    click.echo(f"Created {user.role.value} account {user.email} (id {user.id}).")


@users.command("list")
def list_() -> None:
    for u in services.list_users():
        click.echo(f"{u.id:>4}  {u.role.value:<11} {'active' if u.active else 'inactive':<8} {u.email}")


@users.command("token")
@click.option("--email", required=True)
@click.option("--name", required=True, help="What the token is for, e.g. 'pharmacy-management-system'.")
@click.option("--scope", default="api", show_default=True, type=click.Choice(["api", "fhir", "ncpdp"]),
              help="api: the JSON and FHIR APIs; fhir: FHIR only; ncpdp: the e-prescribing intermediary's endpoint only.")
def token(email: str, name: str, scope: str) -> None:
    """Issue an API token for a user; the token is shown once."""
    user = next((u for u in services.list_users() if u.email == services.normalise_email(email)), None)
    if user is None:
        raise click.ClickException("No such account.")
    try:
        with unit_of_work():
            _, raw = services.issue_token(CONSOLE, user.id, name, scope=scope)
    except DomainError as exc:
        _fail(exc)
    click.echo(raw)


@users.command("set-password")
@click.option("--email", required=True)
@click.password_option(help="Prompted (twice) when not given; never stored in clear.")
def set_password(email: str, password: str) -> None:
    """Reset a staff password from the server's console (a forgotten admin password has no one else to reset it);
    every session of that person ends. Audited as the system."""
    user = next((u for u in services.list_users() if u.email == services.normalise_email(email)), None)
    if user is None:
        raise click.ClickException("No such account.")
    try:
        with unit_of_work():
            services.set_password(CONSOLE, user.id, password)
    except DomainError as exc:
        _fail(exc)
    click.echo(f"Password changed for {user.email}; their sessions have ended.")


@users.command("prune-sessions")
@click.option("--keep-days", default=sessions.KEEP_ENDED_DAYS, show_default=True, type=click.IntRange(1, 3650),
              help="Delete ended sessions older than this.")
def prune_sessions(keep_days: int) -> None:
    """End sessions past the absolute limit and delete old ended ones (the scheduler does it nightly)."""
    with unit_of_work():
        click.echo(sessions.prune(keep_days).line())


def job_prune_sessions(app: Flask) -> None:
    with app.app_context():
        try:
            with unit_of_work():
                log.info(sessions.prune().line())
        except Exception as exc:  # rolled back; tomorrow night's run tries again, the loader refuses expired rows
            log.error("pruning staff sessions failed (%s)", type(exc).__name__)


def _add_jobs(scheduler: Any, app: Flask, worker: str, stop: threading.Event) -> None:
    tz = app.extensions["pharmacy.settings"].timezone
    scheduler.add_job(job_prune_sessions, "cron", hour=PRUNE_HOUR, minute=0, timezone=tz, args=[app],
                      id="prune_sessions", name="staff sessions prune")


def register(app: Flask) -> None:
    app.cli.add_command(users)
    app.extensions.setdefault("pharmacy.scheduler_jobs", []).append(_add_jobs)
