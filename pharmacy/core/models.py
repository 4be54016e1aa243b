"""Staff accounts, API tokens, the append-only audit trail, used patient links, scheduler heartbeats."""
from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from pharmacy.core.audit_guard import attach
from pharmacy.core.db import UTCDateTime, enum_column
from pharmacy.core.roles import Role
from pharmacy.extensions import db


class User(db.Model):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(sa.String(254), unique=True)
    full_name: Mapped[str] = mapped_column(sa.String(120))
    role: Mapped[Role] = mapped_column(enum_column(Role))
    password_hash: Mapped[str] = mapped_column(sa.String(255))
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Bumped on password change / deactivation so old sessions stop working.
    session_version: Mapped[int] = mapped_column(default=1)

    tokens: Mapped[list[ApiToken]] = relationship(back_populates="user", lazy="raise")

    # Flask-Login protocol
    @property
    def is_authenticated(self) -> bool:
        return True

    @property
    def is_active(self) -> bool:
        return self.active

    @property
    def is_anonymous(self) -> bool:
        return False

    def get_id(self) -> str:
        return f"{self.id}:{self.session_version}"


class ApiToken(db.Model):
    """An integration credential: only its SHA-256 is stored; revocable; acts with its user's role."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(sa.String(80))
    prefix: Mapped[str] = mapped_column(sa.String(12))
    token_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # What it may call (core/auth.TOKEN_SCOPES): "api" (the JSON API and FHIR), "fhir" (FHIR only) or "ncpdp" (the
    # e-prescribing intermediary's endpoint only). A token scoped to one endpoint is refused everywhere else.
    scope: Mapped[str] = mapped_column(sa.String(16), default="api", server_default="api")

    user: Mapped[User] = relationship(back_populates="tokens", lazy="joined")


class AuditEvent(db.Model):
    """Who did or saw what, to which patient, when (UTC) and from where. Never updated or deleted.

    The database refuses UPDATE and DELETE on this table (triggers, see core/audit_guard.py).
    `details` holds identifiers and field names, never free-text PHI.
    """

    __tablename__ = "audit_events"
    __table_args__ = (
        sa.Index("ix_audit_events_patient_at", "patient_id", "at"),
        sa.Index("ix_audit_events_at", "at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    actor_user_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"), index=True)
    actor_kind: Mapped[str] = mapped_column(sa.String(16))  # staff, token, patient, system, anonymous
    action: Mapped[str] = mapped_column(sa.String(64), index=True)
    outcome: Mapped[str] = mapped_column(sa.String(16), default="ok")  # ok, denied, failed
    entity_type: Mapped[str | None] = mapped_column(sa.String(40))
    entity_id: Mapped[int | None] = mapped_column()
    patient_id: Mapped[int | None] = mapped_column()  # no FK: the trail outlives any row
    ip_address: Mapped[str | None] = mapped_column(sa.String(45))
    details: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON)


class LinkUse(db.Model):
    """A patient link's nonce once it has been used: signed tokens alone are replayable."""

    __tablename__ = "link_uses"

    id: Mapped[int] = mapped_column(primary_key=True)
    nonce: Mapped[str] = mapped_column(sa.String(64), unique=True)
    purpose: Mapped[str] = mapped_column(sa.String(32))
    patient_id: Mapped[int] = mapped_column(sa.ForeignKey("patients.id", ondelete="CASCADE"), index=True)
    used_at: Mapped[datetime] = mapped_column(UTCDateTime())


class LinkGuard(db.Model):
    """The wrong answers given on one signed link (a patient's date of birth, a prescriber's NPI).

    One row per link nonce, counted by a single atomic upsert (core/links.py), so concurrent guesses
    queue up behind the row and never more than the limit are ever checked.
    """

    __tablename__ = "link_guards"

    nonce: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    failed_attempts: Mapped[int] = mapped_column(default=0)
    last_failed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class StaffSession(db.Model):
    """One signed-in browser: the cookie carries a random id whose SHA-256 is kept here.

    Flask-Login's user loader accepts a cookie only while its row is open, so signing out, a password
    change or a deactivation ends the session on the server at once — a copied cookie is worthless after.
    """

    __tablename__ = "staff_sessions"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    ended_reason: Mapped[str | None] = mapped_column(sa.String(32))  # logout, expired, password, deactivated


SCHEDULER_HEARTBEAT = "scheduler"  # the row the scheduler process beats (reminders/scheduler.py), /readyz reads


class Heartbeat(db.Model):
    """The scheduler's last sign of life, read by /readyz."""

    __tablename__ = "heartbeats"

    name: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    beat_at: Mapped[datetime] = mapped_column(UTCDateTime())
    detail: Mapped[str | None] = mapped_column(sa.String(200))


def _guard_audit_table() -> None:

    attach(AuditEvent.__table__)


_guard_audit_table()
