"""Patients: contact, date of birth, conditions, current medications, reminder preferences, side effects."""
from __future__ import annotations

from datetime import date, datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from pharmacy.compounding.rules import DeliveryMethod
from pharmacy.core.db import UTCDateTime, enum_column
from pharmacy.extensions import db


class Patient(db.Model):
    __tablename__ = "patients"
    __table_args__ = (
        sa.CheckConstraint("shipping_days >= 0 AND shipping_days <= 30", name="shipping_days_range"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    first_name: Mapped[str] = mapped_column(sa.String(80))
    last_name: Mapped[str] = mapped_column(sa.String(80))
    # "last, first" lower-cased: searched with a prefix range so a plain B-tree index serves it.
    name_key: Mapped[str] = mapped_column(sa.String(170), index=True)
    date_of_birth: Mapped[date] = mapped_column(index=True)
    email: Mapped[str | None] = mapped_column(sa.String(254))
    phone: Mapped[str | None] = mapped_column(sa.String(32))
    address_line1: Mapped[str | None] = mapped_column(sa.String(120))
    address_line2: Mapped[str | None] = mapped_column(sa.String(120))
    city: Mapped[str | None] = mapped_column(sa.String(80))
    state: Mapped[str | None] = mapped_column(sa.String(2))
    postal_code: Mapped[str | None] = mapped_column(sa.String(10))
    # Free-text lists screened by prescriptions/screening_rules.py (conditions: "liver disease", "spasticity", …).
    conditions: Mapped[list[str]] = mapped_column(sa.JSON, default=list)
    medications: Mapped[list[str]] = mapped_column(sa.JSON, default=list)
    allergies: Mapped[list[str]] = mapped_column(sa.JSON, default=list)
    reminders_opt_in: Mapped[bool] = mapped_column(default=True)
    delivery_preference: Mapped[DeliveryMethod] = mapped_column(
        enum_column(DeliveryMethod), default=DeliveryMethod.PICKUP
    )
    shipping_days: Mapped[int] = mapped_column(default=2)
    notes: Mapped[str | None] = mapped_column(sa.Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())

    @property
    def full_name(self) -> str:
        return f"{self.first_name} {self.last_name}"

    @property
    def ships(self) -> bool:
        return self.delivery_preference == DeliveryMethod.SHIP


class SideEffectEntry(db.Model):
    """docs/domain.md "Side effects worth logging": what the patient reported and what was suggested."""

    __tablename__ = "side_effects"
    __table_args__ = (sa.Index("ix_side_effects_source_reviewed", "source", "reviewed_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    patient_id: Mapped[int] = mapped_column(sa.ForeignKey("patients.id", ondelete="CASCADE"), index=True)
    effect: Mapped[str] = mapped_column(sa.String(40))
    noted_on: Mapped[date] = mapped_column()
    note: Mapped[str | None] = mapped_column(sa.Text)
    suggested_action: Mapped[str | None] = mapped_column(sa.String(200))
    recorded_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # "staff" (logged by the pharmacy) or "patient" (reported in the portal: shown on Today until reviewed).
    source: Mapped[str] = mapped_column(sa.String(16), server_default="staff")
    reviewed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    reviewed_by_id: Mapped[int | None] = mapped_column()  # a user id; no FK, like the audit trail's
