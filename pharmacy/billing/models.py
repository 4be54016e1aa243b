"""Price list (with history) and payments; every amount is integer cents."""
from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from pharmacy.billing.rules import PaymentKind, PaymentMethod
from pharmacy.core.db import Milli, UTCDateTime, enum_column
from pharmacy.extensions import db


class PriceEntry(db.Model):
    """A price for a formula and quantity from a moment on; retired rather than rewritten."""

    __tablename__ = "price_list"
    __table_args__ = (
        sa.CheckConstraint("price_cents >= 0", name="price_nonnegative"),
        sa.CheckConstraint("quantity_milli > 0", name="quantity_positive"),
        sa.Index("ix_price_list_formula_current", "formula_id", "retired_at"),
        # One current price per formula and quantity, whatever two admins do at the same moment.
        sa.Index("uq_price_list_current", "formula_id", "quantity_milli", unique=True,
                 sqlite_where=sa.text("retired_at IS NULL"), postgresql_where=sa.text("retired_at IS NULL")),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    formula_id: Mapped[int] = mapped_column(sa.ForeignKey("formulas.id"))
    quantity: Mapped[Decimal] = mapped_column("quantity_milli", Milli())
    days_supply: Mapped[int] = mapped_column()  # the supply this quantity makes at the usual dose
    price_cents: Mapped[int] = mapped_column()
    effective_at: Mapped[datetime] = mapped_column(UTCDateTime())
    retired_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))


class Fee(db.Model):
    """Flat fees such as shipping, with the same retire-don't-rewrite history."""

    __tablename__ = "fees"
    __table_args__ = (sa.CheckConstraint("amount_cents >= 0", name="amount_nonnegative"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(sa.String(32), index=True)  # "shipping"
    amount_cents: Mapped[int] = mapped_column()
    effective_at: Mapped[datetime] = mapped_column(UTCDateTime())
    retired_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class Payment(db.Model):
    __tablename__ = "payments"
    __table_args__ = (
        sa.CheckConstraint("amount_cents > 0", name="amount_positive"),
        sa.Index("ix_payments_patient_received", "patient_id", "received_at"),
        sa.Index("ix_payments_received", "received_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    patient_id: Mapped[int] = mapped_column(sa.ForeignKey("patients.id"))
    order_id: Mapped[int | None] = mapped_column(sa.ForeignKey("orders.id"), index=True)
    kind: Mapped[PaymentKind] = mapped_column(enum_column(PaymentKind), default=PaymentKind.PAYMENT)
    method: Mapped[PaymentMethod] = mapped_column(enum_column(PaymentMethod))
    amount_cents: Mapped[int] = mapped_column()
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())
    reference: Mapped[str | None] = mapped_column(sa.String(60))
    note: Mapped[str | None] = mapped_column(sa.String(200))
    recorded_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))
