"""The email outbox: every reminder and notice is a row, delivered after commit by the scheduler."""
from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from pharmacy.core.db import UTCDateTime, enum_column
from pharmacy.extensions import db
from pharmacy.reminders.rules import MessageKind, OutboxState


class OutboxMessage(db.Model):
    __tablename__ = "outbox"
    __table_args__ = (
        # The delivery scan: pending rows whose time has come, oldest first.
        sa.Index("ix_outbox_state_next_attempt", "state", "next_attempt_at"),
        sa.Index("ix_outbox_order", "order_id"),
        # Cancelling a prescription's pending reminders (a refill requested or ordered, a stopped prescription).
        sa.Index("ix_outbox_prescription", "prescription_id"),
        # The outbox page, state by state: finished rows newest first (WHERE state = ? ORDER BY id DESC LIMIT n),
        # and the capped count of each state.
        sa.Index("ix_outbox_state_id", "state", "id"),
        sa.Index("ix_outbox_patient_created", "patient_id", "created_at"),
        sa.CheckConstraint("attempts >= 0", name="attempts_nonnegative"),
        # Text messages: the provider's id (status callbacks find their row by it) and the rows due lately
        # (pharmacy/sms/fanout.py sends a text beside each email a patient wants as a text too).
        sa.Index("ix_outbox_provider_id", "provider_id"),
        sa.Index("ix_outbox_due_at", "due_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    # Unique per cause, e.g. "fill:42:reminder_early": writing it twice is a no-op, not a second email.
    dedupe_key: Mapped[str] = mapped_column(sa.String(80), unique=True)
    kind: Mapped[MessageKind] = mapped_column(enum_column(MessageKind))
    patient_id: Mapped[int | None] = mapped_column(sa.ForeignKey("patients.id", ondelete="CASCADE"))
    prescription_id: Mapped[int | None] = mapped_column(sa.ForeignKey("prescriptions.id", ondelete="CASCADE"))
    order_id: Mapped[int | None] = mapped_column(sa.ForeignKey("orders.id", ondelete="CASCADE"))
    refill_request_id: Mapped[int | None] = mapped_column(sa.ForeignKey("refill_requests.id", ondelete="CASCADE"))
    renewal_id: Mapped[int | None] = mapped_column(sa.ForeignKey("renewal_requests.id", ondelete="CASCADE"))
    to_address: Mapped[str | None] = mapped_column(sa.String(254))
    due_at: Mapped[datetime] = mapped_column(UTCDateTime())
    state: Mapped[OutboxState] = mapped_column(enum_column(OutboxState), default=OutboxState.PENDING)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime())
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    claimed_by: Mapped[str | None] = mapped_column(sa.String(64))
    attempts: Mapped[int] = mapped_column(default=0)
    last_error: Mapped[str | None] = mapped_column(sa.String(400))
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    cancelled_reason: Mapped[str | None] = mapped_column(sa.String(200))
    # Deterministic, so a resend after a crash can be recognised by the receiving side.
    message_id: Mapped[str] = mapped_column(sa.String(200), unique=True)
    subject: Mapped[str | None] = mapped_column(sa.String(200))
    body_text: Mapped[str | None] = mapped_column(sa.Text)
    body_html: Mapped[str | None] = mapped_column(sa.Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # "email" or "sms" (reminders.rules.Channel): one row per channel, each claimed, retried and failed on its own.
    channel: Mapped[str] = mapped_column(sa.String(8), server_default="email")
    provider_id: Mapped[str | None] = mapped_column(sa.String(64))  # the text's Twilio SID
    provider_status: Mapped[str | None] = mapped_column(sa.String(24))  # queued, sent, delivered, undelivered …

    attempts_log: Mapped[list[DeliveryAttempt]] = relationship(
        back_populates="message", order_by="DeliveryAttempt.id", cascade="all, delete-orphan"
    )


class DeliveryAttempt(db.Model):
    __tablename__ = "delivery_attempts"

    id: Mapped[int] = mapped_column(primary_key=True)
    message_id: Mapped[int] = mapped_column(sa.ForeignKey("outbox.id", ondelete="CASCADE"), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    result: Mapped[str] = mapped_column(sa.String(16))  # sent, transient, permanent, expired_lease, cancelled
    detail: Mapped[str | None] = mapped_column(sa.String(400))

    message: Mapped[OutboxMessage] = relationship(back_populates="attempts_log")
