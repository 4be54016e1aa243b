"""Auto-refill: prescriptions a patient enrolled (or a pharmacist, with the patient's recorded consent), and what
happened at each supply's order-by date."""
from __future__ import annotations

from datetime import date, datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from pharmacy.core.db import UTCDateTime
from pharmacy.extensions import db


class Enrolment(db.Model):
    __tablename__ = "autorefill_enrolments"
    __table_args__ = (
        # One live enrolment per prescription, kept by the database.
        sa.Index("uq_autorefill_enrolments_live", "prescription_id", unique=True,
                 sqlite_where=sa.text("ended_at IS NULL"), postgresql_where=sa.text("ended_at IS NULL")),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    prescription_id: Mapped[int] = mapped_column(sa.ForeignKey("prescriptions.id", ondelete="CASCADE"), index=True)
    patient_id: Mapped[int] = mapped_column(sa.ForeignKey("patients.id", ondelete="CASCADE"), index=True)
    enrolled_at: Mapped[datetime] = mapped_column(UTCDateTime())
    enrolled_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))  # None: the patient, in the portal
    consent: Mapped[str] = mapped_column(sa.String(200))  # how the patient agreed ("portal", "by phone: …")
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    end_reason: Mapped[str | None] = mapped_column(sa.String(120))


class Cycle(db.Model):
    """One supply's turn: the latest dispensed fill whose order-by date came, and what auto-refill did about it.
    Unique per (enrolment, fill): the scheduler may run any number of times a day and still asks once."""

    __tablename__ = "autorefill_cycles"
    __table_args__ = (sa.UniqueConstraint("enrolment_id", "fill_order_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    enrolment_id: Mapped[int] = mapped_column(sa.ForeignKey("autorefill_enrolments.id", ondelete="CASCADE"))
    fill_order_id: Mapped[int] = mapped_column(sa.ForeignKey("orders.id", ondelete="CASCADE"), index=True)
    order_by: Mapped[date | None] = mapped_column()
    outcome: Mapped[str] = mapped_column(sa.String(16))  # requested, renewal, skipped, in_progress, inactive
    refill_request_id: Mapped[int | None] = mapped_column(sa.ForeignKey("refill_requests.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    skipped_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
