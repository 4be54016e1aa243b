"""Prescribers, prescriptions and the screening alerts raised on them (and on their orders)."""
from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from pharmacy.core.db import Milli, UTCDateTime, enum_column
from pharmacy.extensions import db
from pharmacy.prescriptions.rules import DosingTime, RxStatus, Severity

if TYPE_CHECKING:
    from pharmacy.compounding.models import Formula
    from pharmacy.patients.models import Patient


class Prescriber(db.Model):
    __tablename__ = "prescribers"

    id: Mapped[int] = mapped_column(primary_key=True)
    first_name: Mapped[str] = mapped_column(sa.String(80))
    last_name: Mapped[str] = mapped_column(sa.String(80))
    credentials: Mapped[str | None] = mapped_column(sa.String(20))  # MD, DO, NP …
    npi: Mapped[str] = mapped_column(sa.String(10), unique=True)
    phone: Mapped[str | None] = mapped_column(sa.String(32))
    fax: Mapped[str | None] = mapped_column(sa.String(32))
    email: Mapped[str | None] = mapped_column(sa.String(254))
    address: Mapped[str | None] = mapped_column(sa.String(240))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())

    @property
    def display_name(self) -> str:
        suffix = f", {self.credentials}" if self.credentials else ""
        return f"Dr. {self.first_name} {self.last_name}{suffix}"


class Prescription(db.Model):
    __tablename__ = "prescriptions"
    __table_args__ = (
        sa.CheckConstraint("dose_mcg > 0", name="dose_positive"),
        sa.CheckConstraint("quantity_milli > 0", name="quantity_positive"),
        sa.CheckConstraint("days_supply > 0 AND days_supply <= 366", name="days_supply_range"),
        sa.CheckConstraint("refills_authorized >= 0 AND refills_authorized <= 99", name="refills_range"),
        sa.CheckConstraint("expiry_date > written_date", name="expiry_after_written"),
        sa.Index("ix_prescriptions_patient_status", "patient_id", "status"),
        # "Who runs out soon?" (the dashboard): a range of active prescriptions by their latest run-out.
        sa.Index("ix_prescriptions_status_run_out", "status", "latest_run_out_date", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    rx_number: Mapped[str] = mapped_column(sa.String(20), unique=True)
    patient_id: Mapped[int] = mapped_column(sa.ForeignKey("patients.id"))
    prescriber_id: Mapped[int] = mapped_column(sa.ForeignKey("prescribers.id"), index=True)
    formula_id: Mapped[int] = mapped_column(sa.ForeignKey("formulas.id"), index=True)
    # The maintenance (target) daily dose; a titration plan's steps lead up to it.
    dose_mg: Mapped[Decimal] = mapped_column("dose_mcg", Milli())
    # [{"dose_mg": "1.5", "days": 14}, …] in order; None for a fixed dose.
    titration: Mapped[list[dict[str, Any]] | None] = mapped_column(sa.JSON)
    dosing_time: Mapped[DosingTime] = mapped_column(enum_column(DosingTime), default=DosingTime.BEDTIME)
    quantity: Mapped[Decimal] = mapped_column("quantity_milli", Milli())
    days_supply: Mapped[int] = mapped_column()
    # A missing refill count means zero, never unlimited (docs/domain.md, refill timing).
    refills_authorized: Mapped[int] = mapped_column(default=0, server_default="0")
    written_date: Mapped[date] = mapped_column()
    expiry_date: Mapped[date] = mapped_column()
    directions: Mapped[str] = mapped_column(sa.Text)
    indication: Mapped[str] = mapped_column(sa.String(120), default="Multiple sclerosis")
    indication_code: Mapped[str] = mapped_column(sa.String(10), default="G35")
    status: Mapped[RxStatus] = mapped_column(enum_column(RxStatus), default=RxStatus.ACTIVE)
    status_reason: Mapped[str | None] = mapped_column(sa.String(240))
    replaces_id: Mapped[int | None] = mapped_column(sa.ForeignKey("prescriptions.id"), index=True)
    created_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # The supply, cached from the model in supply/rules.py when a fill is dispensed (same transaction): days
    # dispensed in all, the latest dispensed order, its days, and the last day covered. The patients about to run
    # out are then an index range over prescriptions, and lists read supply without walking every fill.
    days_dispensed: Mapped[int] = mapped_column(default=0, server_default="0")
    latest_fill_number: Mapped[int | None] = mapped_column()
    latest_days_supply: Mapped[int | None] = mapped_column()
    latest_run_out_date: Mapped[date | None] = mapped_column()
    # The first day of the covered span ending at latest_run_out_date and the last day covered before it (the
    # supply model's covered_from and prior_run_out): a parcel on its way after a gap is not medicine in hand.
    # NULL covered_from: covered as far back as matters (or a row from before migration 0020 that it could not
    # place). Plain dates, so SQLite adds and drops them in place.
    latest_covered_from: Mapped[date | None] = mapped_column()
    prior_run_out_date: Mapped[date | None] = mapped_column()
    # A replacement not yet dispensed holds supply from the last prescription of its chain that was dispensed (A
    # when C replaced B replaced A, with no fill of B): the reminder planner joins that one's latest order. Set by
    # supply/services.carry_over; nothing reads it once the prescription has a fill of its own. A plain id like
    # latest_fill_number (a copy kept by the supply's writer), so SQLite can drop it again in place.
    supply_source_id: Mapped[int | None] = mapped_column()

    patient: Mapped[Patient] = relationship()
    prescriber: Mapped[Prescriber] = relationship()
    formula: Mapped[Formula] = relationship()
    replaces: Mapped[Prescription | None] = relationship(remote_side=[id])



class ScreeningAlert(db.Model):
    """One finding of the safety screen; stays on the prescription and on each order made from it."""

    __tablename__ = "screening_alerts"
    __table_args__ = (
        # The alerts waiting for a pharmacist (Today): current, unresolved, more than a warning — so the page reads
        # the few open stops along this index, not every alert the screening ever raised. The query must spell the
        # same condition with the literal 'warning' (dashboard/services.py): a bound value cannot prove it.
        sa.Index("ix_screening_alerts_open", "created_at",
                 sqlite_where=sa.text('resolved_at IS NULL AND "current" = 1 AND severity != \'warning\''),
                 postgresql_where=sa.text('resolved_at IS NULL AND "current" AND severity != \'warning\'')),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    prescription_id: Mapped[int] = mapped_column(sa.ForeignKey("prescriptions.id", ondelete="CASCADE"), index=True)
    order_id: Mapped[int | None] = mapped_column(sa.ForeignKey("orders.id", ondelete="CASCADE"), index=True)
    code: Mapped[str] = mapped_column(sa.String(40))
    severity: Mapped[Severity] = mapped_column(enum_column(Severity))
    message: Mapped[str] = mapped_column(sa.String(400))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # False once a later screening no longer finds it (e.g. the opioid was stopped).
    current: Mapped[bool] = mapped_column(default=True)
    resolved_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    resolution_reason: Mapped[str | None] = mapped_column(sa.String(400))

    resolved_by = relationship("User", lazy="joined")

    @property
    def resolved(self) -> bool:
        return self.resolved_at is not None
