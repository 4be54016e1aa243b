"""What "ready" means: the database answers, its schema is at the migration head, the scheduler is alive.

Shared by /readyz, /metrics and `flask doctor`. Everything here reports identifiers, revisions
and ages — never a row's contents.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from flask import current_app

from pharmacy.core.context import now, settings
from pharmacy.core.models import SCHEDULER_HEARTBEAT, Heartbeat
from pharmacy.extensions import db
from pharmacy.ops.schema_scripts import script_directory

# The scheduler beats every 30 s; five minutes without one means it is stopped or stuck.
HEARTBEAT_STALE_AFTER = timedelta(minutes=5)


@dataclass(frozen=True)
class MigrationState:
    current: tuple[str, ...]
    heads: tuple[str, ...]

    @property
    def at_head(self) -> bool:
        return set(self.current) == set(self.heads)

    @property
    def status(self) -> str:
        """ok, pending (run `flask db upgrade`), empty (never migrated) or unknown (newer than this code)."""
        if self.at_head:
            return "ok"
        if not self.current:
            return "empty"
        script = script_directory()
        known = all(_known(script, rev) for rev in self.current)
        return "pending" if known else "unknown"

    def describe(self) -> str:
        current = ", ".join(self.current) or "none"
        head = ", ".join(self.heads)
        return {
            "ok": f"schema at {head}",
            "empty": f"the database has no schema revision (this code needs {head}): run `flask db upgrade`",
            "pending": f"schema at {current}, this code needs {head}: run `flask db upgrade`",
            "unknown": f"schema at {current} is newer than this code ({head}): deploy the matching code",
        }[self.status]


def _known(script: ScriptDirectory, revision: str) -> bool:
    try:
        return script.get_revision(revision) is not None
    except Exception:
        return False


def migration_state(connection: sa.Connection) -> MigrationState:
    current = MigrationContext.configure(connection).get_current_heads()
    return MigrationState(current=tuple(sorted(current)), heads=tuple(sorted(script_directory().get_heads())))


def heartbeat_at(connection: sa.Connection) -> datetime | None:
    return connection.execute(sa.select(Heartbeat.beat_at).where(Heartbeat.name == SCHEDULER_HEARTBEAT)).scalar()


def heartbeat_report(beat_at: datetime | None, at: datetime) -> dict[str, Any]:
    if beat_at is None:
        return {"status": "missing", "age_seconds": None}
    age = max((at - beat_at).total_seconds(), 0.0)
    status = "ok" if age <= HEARTBEAT_STALE_AFTER.total_seconds() else "stale"
    return {"status": status, "age_seconds": round(age, 1)}


def scheduler_required() -> bool:
    """Whether a stale scheduler makes /readyz answer 503 (READYZ_REQUIRE_SCHEDULER; on in production)."""
    value = current_app.config.get("READYZ_REQUIRE_SCHEDULER")
    if value is None or value == "":
        return settings().production
    return str(value).strip().lower() in ("1", "true", "yes", "on")


def readiness() -> tuple[bool, dict[str, Any]]:
    """(ready, report): the report is what /readyz serialises (no PHI, no configuration values)."""
    checks: dict[str, Any] = {}
    ready = True
    try:
        with db.engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
            checks["database"] = {"status": "ok"}
            state = migration_state(conn)
            checks["migrations"] = {"status": state.status, "current": list(state.current), "head": list(state.heads)}
            ready = ready and state.at_head
            # The heartbeats table exists from the first revision on; an empty database has none.
            beat = heartbeat_at(conn) if state.current else None
    except Exception as exc:  # anything from the driver: unreachable, refused, bad credentials, no table
        checks["database"] = {"status": "fail", "error": type(exc).__name__}
        checks.setdefault("migrations", {"status": "unknown"})
        return False, {"status": "fail", "checks": checks}
    scheduler = heartbeat_report(beat, now())
    scheduler["required"] = scheduler_required()
    checks["scheduler"] = scheduler
    if scheduler["status"] != "ok" and scheduler["required"]:
        ready = False
    if not ready:
        status = "fail"
    elif scheduler["status"] != "ok":
        status = "degraded"  # serving, but reminders are not going out
    else:
        status = "ok"
    return ready, {"status": status, "checks": checks}
