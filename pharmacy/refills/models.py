"""Refill requests from patients or staff, and renewal requests to prescribers."""
from __future__ import annotations

from datetime import date, datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from pharmacy.compounding.rules import DeliveryMethod
from pharmacy.core.db import UTCDateTime, enum_column
from pharmacy.extensions import db
from pharmacy.prescriptions.models import Prescription
from pharmacy.refills.rules import RefillRequestState, RenewalState, RequestSource

OPEN_REQUEST_STATES = ("open", "awaiting_renewal")


class RefillRequest(db.Model):
    __tablename__ = "refill_requests"
    __table_args__ = (
        # At most one open request per prescription, enforced by the database itself: two clicks,
        # a double submit or fifty concurrent requests leave exactly one row.
        sa.Index(
            "uq_refill_requests_one_open",
            "prescription_id",
            unique=True,
            sqlite_where=sa.text("state IN ('open', 'awaiting_renewal')"),
            postgresql_where=sa.text("state IN ('open', 'awaiting_renewal')"),
        ),
        # Oldest first within a state (Today's list, the counts); ends with the prescription, so that the queue's
        # order (patients out of medicine first) joins each open request to its prescription from the index alone.
        sa.Index("ix_refill_requests_state_requested", "state", "requested_at", "id", "prescription_id"),
        # The refill queue's order (patients out of medicine first, then the oldest) from the index alone: the
        # open requests' entries are read and sorted without touching a row or a prescription.
        sa.Index("ix_refill_requests_state_run_out", "state", "run_out_date", "requested_at", "id"),
        # The queue page's "recently decided" list: ORDER BY decided_at DESC, id DESC LIMIT n, read backwards from the
        # end (with the id, many decided in the same second need no sort; the open requests' NULLs are skipped).
        sa.Index("ix_refill_requests_decided", "decided_at", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    prescription_id: Mapped[int] = mapped_column(sa.ForeignKey("prescriptions.id"), index=True)
    patient_id: Mapped[int] = mapped_column(sa.ForeignKey("patients.id"), index=True)
    state: Mapped[RefillRequestState] = mapped_column(
        enum_column(RefillRequestState), default=RefillRequestState.OPEN
    )
    source: Mapped[RequestSource] = mapped_column(enum_column(RequestSource))
    delivery_method: Mapped[DeliveryMethod] = mapped_column(enum_column(DeliveryMethod))
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime())
    requested_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    decided_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))
    decline_reason: Mapped[str | None] = mapped_column(sa.String(400))
    order_id: Mapped[int | None] = mapped_column(sa.ForeignKey("orders.id"))
    renewal_id: Mapped[int | None] = mapped_column(sa.ForeignKey("renewal_requests.id"))
    note: Mapped[str | None] = mapped_column(sa.String(400))
    # While the request is open: its prescription's last day covered (Prescription.latest_run_out_date), kept in
    # step by supply.services — the one writer of that date — so that the queue can order three thousand open
    # requests by it along an index instead of looking up each one's prescription (5 ms on SQLite, 12 ms on
    # PostgreSQL at chain scale). Only the order reads it; what the page says of the supply comes from the
    # prescription. Once the request is decided nothing reads it.
    run_out_date: Mapped[date | None] = mapped_column()

    prescription: Mapped[Prescription] = relationship()


class RenewalRequest(db.Model):
    """A request to the prescriber for a new prescription, tracked until one is linked."""

    __tablename__ = "renewal_requests"
    __table_args__ = (
        sa.Index(
            "uq_renewal_requests_one_open",
            "prescription_id",
            unique=True,
            sqlite_where=sa.text("state IN ('needed', 'sent')"),
            postgresql_where=sa.text("state IN ('needed', 'sent')"),
        ),
        sa.Index("ix_renewal_requests_state", "state", "created_at", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    prescription_id: Mapped[int] = mapped_column(sa.ForeignKey("prescriptions.id"), index=True)
    prescriber_id: Mapped[int] = mapped_column(sa.ForeignKey("prescribers.id"))
    patient_id: Mapped[int] = mapped_column(sa.ForeignKey("patients.id"), index=True)
    state: Mapped[RenewalState] = mapped_column(enum_column(RenewalState), default=RenewalState.NEEDED)
    reason: Mapped[str] = mapped_column(sa.String(200))  # "no refills left", "expires 2027-01-02" …
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    sent_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    new_prescription_id: Mapped[int | None] = mapped_column(sa.ForeignKey("prescriptions.id"))

    prescription: Mapped[Prescription] = relationship(foreign_keys=[prescription_id])
