"""The patient portal's own records: sign-in codes, sessions, and private calendar feeds."""
from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from pharmacy.core.db import UTCDateTime
from pharmacy.extensions import db
from pharmacy.patients.models import Patient

# Signing in by email looks a patient up by address: an index, not a scan of every patient.
sa.Index("ix_patients_email", Patient.email)


class SignInChallenge(db.Model):
    """One code asked for: by email or text, to sign in or to verify a mobile number.

    The code itself is never stored: it is an HMAC of the row's salt under SECRET_KEY (portal/rules.code_for), so
    the message is rendered at send time and the check recomputes it. Wrong tries are core.models.LinkGuard rows
    (nonce "code:<id>"), like a refill link's wrong birth dates: kept though the refused request rolls back.
    A challenge for an address we do not know is written too (with no candidates), so the page and the timing say
    nothing about who is a patient.
    """

    __tablename__ = "portal_challenges"
    __table_args__ = (sa.Index("ix_portal_challenges_contact_created", "contact_hash", "created_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)  # the browser's half (in its cookie)
    purpose: Mapped[str] = mapped_column(sa.String(16))  # sign_in, verify_number
    channel: Mapped[str] = mapped_column(sa.String(8))  # email, sms
    contact_hash: Mapped[str] = mapped_column(sa.String(64))  # keyed hash of the address: rate limits, no address
    candidates: Mapped[list[int]] = mapped_column(sa.JSON, default=list)  # patients this address belongs to
    phone: Mapped[str | None] = mapped_column(sa.String(16))  # verify_number: the number being proved
    salt: Mapped[str] = mapped_column(sa.String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    patient_id: Mapped[int | None] = mapped_column(sa.ForeignKey("patients.id", ondelete="CASCADE"))


class PortalSession(db.Model):
    """A signed-in patient: the cookie holds a random token, this row its hash. Short on purpose (idle and absolute
    limits, PORTAL_IDLE_MINUTES / PORTAL_MAX_MINUTES), ended for good at sign-out."""

    __tablename__ = "portal_sessions"

    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    patient_id: Mapped[int] = mapped_column(sa.ForeignKey("patients.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime())
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    end_reason: Mapped[str | None] = mapped_column(sa.String(24))


class CalendarFeed(db.Model):
    """A private calendar subscription URL: a random token (only its hash here), revocable, one live per patient."""

    __tablename__ = "calendar_feeds"

    id: Mapped[int] = mapped_column(primary_key=True)
    patient_id: Mapped[int] = mapped_column(sa.ForeignKey("patients.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    show_drug_name: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_fetched_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
