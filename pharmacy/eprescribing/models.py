"""E-prescribing: every SCRIPT message in and out (kept verbatim; the outbound ones are an outbox), the intake queue
the pharmacist works from, and which prescribers can be reached electronically."""
from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from pharmacy.core.db import UTCDateTime, enum_column
from pharmacy.eprescribing.rules import Direction, IntakeKind, IntakeState, MatchStatus, MessageState, Source
from pharmacy.extensions import db

if TYPE_CHECKING:
    from pharmacy.documents.models import Document


class ErxMessage(db.Model):
    """One SCRIPT message, inbound or outbound, exactly as it was received or sent.

    Inbound rows are unique per sender and MessageID: the intermediary posting the same message twice (a retry after
    a lost answer) finds the first row and gets the same answer, and nothing is created twice. Outbound rows are the
    outbox: delivered after commit by the scheduler, retried with backoff, failed after too many attempts.
    """

    __tablename__ = "erx_messages"
    __table_args__ = (
        sa.UniqueConstraint("direction", "sender", "message_id"),
        # Delivery picks due outbound rows oldest first; the queue page lists refused inbound ones.
        sa.Index("ix_erx_messages_state_next", "state", "next_attempt_at"),
        sa.Index("ix_erx_messages_relates_to", "relates_to_message_id"),
        sa.Index("ix_erx_messages_message_id", "message_id"),
        sa.CheckConstraint("attempts >= 0", name="attempts_nonnegative"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    direction: Mapped[Direction] = mapped_column(enum_column(Direction))
    # The transaction (NewRx, CancelRx, Status …), or "unreadable" for a body that is not a SCRIPT message.
    kind: Mapped[str] = mapped_column(sa.String(40))
    message_id: Mapped[str | None] = mapped_column(sa.String(64))
    relates_to_message_id: Mapped[str | None] = mapped_column(sa.String(64))
    sender: Mapped[str | None] = mapped_column(sa.String(64))
    recipient: Mapped[str | None] = mapped_column(sa.String(64))
    prescriber_order_number: Mapped[str | None] = mapped_column(sa.String(64))
    # The message verbatim (inbound: the bytes received, even when unreadable; outbound: the bytes sent).
    body: Mapped[bytes] = mapped_column(sa.LargeBinary)
    state: Mapped[MessageState] = mapped_column(enum_column(MessageState))
    # Inbound: what we answered (Status/Error and its code). Outbound: what the receiver answered.
    answer_kind: Mapped[str | None] = mapped_column(sa.String(24))
    answer_code: Mapped[str | None] = mapped_column(sa.String(8))
    answer_text: Mapped[str | None] = mapped_column(sa.String(400))
    answer_body: Mapped[bytes | None] = mapped_column(sa.LargeBinary)
    patient_id: Mapped[int | None] = mapped_column(sa.ForeignKey("patients.id"), index=True)
    prescription_id: Mapped[int | None] = mapped_column(sa.ForeignKey("prescriptions.id"), index=True)
    # The queue entry this message belongs to (no foreign key: the entry already points at its message, and two
    # tables pointing at each other cannot be created or dropped in one order).
    intake_id: Mapped[int | None] = mapped_column(index=True)
    renewal_id: Mapped[int | None] = mapped_column(sa.ForeignKey("renewal_requests.id"), index=True)
    created_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # Outbound delivery.
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    claimed_by: Mapped[str | None] = mapped_column(sa.String(64))
    last_error: Mapped[str | None] = mapped_column(sa.String(400))
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    @property
    def text(self) -> str:
        return (self.body or b"").decode("utf-8", "replace")


class ErxDeliveryAttempt(db.Model):
    """One try at handing an outbound message to the intermediary, and what came back."""

    __tablename__ = "erx_delivery_attempts"

    id: Mapped[int] = mapped_column(primary_key=True)
    message_id: Mapped[int] = mapped_column(sa.ForeignKey("erx_messages.id", ondelete="CASCADE"), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    result: Mapped[str] = mapped_column(sa.String(16))  # sent, transient, permanent, expired_lease
    detail: Mapped[str | None] = mapped_column(sa.String(400))


class ErxIntake(db.Model):
    """An entry of the e-prescription intake queue: a prescription (or a prescriber's answer) waiting for a pharmacist.

    `written` is the prescription as it arrived (patient, prescriber, medication — parsed, never edited). The match
    and mapping are suggestions the pharmacist confirms or corrects on the review page; only accepting it creates a
    prescription (through the same intake service as typing one in, so screening runs the same way).
    """

    __tablename__ = "erx_intake"
    __table_args__ = (
        sa.Index("ix_erx_intake_state_received", "state", "received_at"),
        sa.Index("ix_erx_intake_source_state", "source", "state"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    source: Mapped[Source] = mapped_column(enum_column(Source))
    kind: Mapped[IntakeKind] = mapped_column(enum_column(IntakeKind))
    state: Mapped[IntakeState] = mapped_column(enum_column(IntakeState), default=IntakeState.WAITING)
    message_row_id: Mapped[int | None] = mapped_column(sa.ForeignKey("erx_messages.id"), index=True)
    document_id: Mapped[int | None] = mapped_column(sa.ForeignKey("documents.id"), index=True)
    written: Mapped[dict[str, Any]] = mapped_column(sa.JSON, default=dict)
    # Shown in lists without reading `written`: the names as the prescription gives them (or the matched records').
    patient_name: Mapped[str | None] = mapped_column(sa.String(170))
    prescriber_name: Mapped[str | None] = mapped_column(sa.String(170))
    match_status: Mapped[MatchStatus] = mapped_column(enum_column(MatchStatus), default=MatchStatus.NONE)
    match_note: Mapped[str | None] = mapped_column(sa.String(240))
    candidate_ids: Mapped[list[int]] = mapped_column(sa.JSON, default=list)
    patient_id: Mapped[int | None] = mapped_column(sa.ForeignKey("patients.id"), index=True)
    prescriber_id: Mapped[int | None] = mapped_column(sa.ForeignKey("prescribers.id"), index=True)
    formula_id: Mapped[int | None] = mapped_column(sa.ForeignKey("formulas.id"))
    unmapped: Mapped[list[str]] = mapped_column(sa.JSON, default=list)
    # A renewal: the prescription it replaces and the renewal request it answers.
    replaces_prescription_id: Mapped[int | None] = mapped_column(sa.ForeignKey("prescriptions.id"))
    renewal_id: Mapped[int | None] = mapped_column(sa.ForeignKey("renewal_requests.id"))
    # What it became (accepted) or concerns (a cancellation).
    prescription_id: Mapped[int | None] = mapped_column(sa.ForeignKey("prescriptions.id"), index=True)
    # What the pharmacist should know or do (a cancellation's outcome, a denied renewal), shown on the entry.
    notice: Mapped[str | None] = mapped_column(sa.String(400))
    clarification: Mapped[str | None] = mapped_column(sa.String(400))  # the last RxChangeRequest/Response, in words
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    decided_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))
    decision_reason: Mapped[str | None] = mapped_column(sa.String(400))

    message: Mapped[ErxMessage | None] = relationship(foreign_keys=[message_row_id])
    document: Mapped[Document | None] = relationship(foreign_keys=[document_id])


class ErxPrescriberAddress(db.Model):
    """A prescriber reachable electronically: the address (SCRIPT From) their e-prescriptions come from, by NPI.

    Learned from the messages they send (and kept current with the latest); a renewal request for a prescription of
    theirs goes back to it as an RxRenewalRequest instead of an email.
    """

    __tablename__ = "erx_prescriber_addresses"

    id: Mapped[int] = mapped_column(primary_key=True)
    npi: Mapped[str] = mapped_column(sa.String(10), unique=True)
    address: Mapped[str] = mapped_column(sa.String(64))
    qualifier: Mapped[str | None] = mapped_column(sa.String(4))
    clinic_name: Mapped[str | None] = mapped_column(sa.String(120))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
