"""Price list (with history), payments (every amount is integer cents) and the adherence snapshot."""
from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from pharmacy.billing.rules import PaymentKind, PaymentMethod
from pharmacy.compounding.models import Order
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
        # A patient's payments (cost page, statements, ledger, outstanding balances): covering, read index-only.
        sa.Index("ix_payments_patient_received", "patient_id", "received_at", "kind", "amount_cents"),
        # Revenue by month: a range of received_at summed by kind, read index-only.
        sa.Index("ix_payments_received", "received_at", "kind", "amount_cents"),
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


class AdherenceSnapshot(db.Model):
    """Each measured patient's PDC as of the last refresh (`flask reports refresh-adherence`, nightly job).

    Computing PDC means walking every fill of the window for every patient with an active prescription:
    seconds at chain scale, far too slow for a page view or the dashboard. The refresh writes one row per
    measured patient; the adherence page and the dashboard's call list read these rows. Exact: the PDC is
    covered_days / days_in_window (the rules' own arithmetic, rules.pdc), pdc_milli the same rounded to
    thousandths for ordering and the index; `period_days` is the report's window the refresh used.
    """

    __tablename__ = "adherence_snapshots"
    __table_args__ = (
        sa.CheckConstraint("covered_days >= 0 AND covered_days <= days_in_window", name="covered_within_window"),
        sa.CheckConstraint("pdc_milli >= 0 AND pdc_milli <= 1000", name="pdc_milli_range"),
        # The call list: lowest first, a range scan up to the threshold.
        sa.Index("ix_adherence_snapshots_pdc", "pdc_milli", "patient_id"),
    )

    patient_id: Mapped[int] = mapped_column(sa.ForeignKey("patients.id", ondelete="CASCADE"), primary_key=True,
                                            autoincrement=False)
    pdc_milli: Mapped[int] = mapped_column()
    percent: Mapped[int] = mapped_column()  # rules.pdc_percent: half-up from the exact fraction
    covered_days: Mapped[int] = mapped_column()
    days_in_window: Mapped[int] = mapped_column()
    window_start: Mapped[date] = mapped_column()  # the patient's: the report's start or their first fill, if later
    window_end: Mapped[date] = mapped_column()
    period_days: Mapped[int] = mapped_column()  # the report's window (PDC_WINDOW_DAYS at refresh time)
    last_fill_on: Mapped[date] = mapped_column()
    last_days_supply: Mapped[int] = mapped_column()
    last_formula_id: Mapped[int] = mapped_column(sa.ForeignKey("formulas.id"))
    computed_at: Mapped[datetime] = mapped_column(UTCDateTime())


# Reporting indexes on the orders table, declared beside the reports that read them (an Index on another model's
# columns attaches to that table: it is part of the one metadata, so the migrations and the drift check see it
# like any other). Covering, so each report reads index entries only, never the (wide) order rows:
#  * by state and dispense day: fills by form and the average monthly cost of a period;
#  * by patient: the adherence refresh (one patient range at a time) and outstanding balances (every charged
#    fill's amount, grouped by patient in index order).
_orders = Order.__table__
sa.Index("ix_orders_report_day", _orders.c.state, _orders.c.dispensed_on, _orders.c.prescription_id,
         _orders.c.patient_id, _orders.c.price_cents, _orders.c.days_supply)
sa.Index("ix_orders_report_patient", _orders.c.patient_id, _orders.c.state, _orders.c.dispensed_on,
         _orders.c.days_supply, _orders.c.prescription_id, _orders.c.price_cents, _orders.c.shipping_cents,
         _orders.c.supply_starts_on)
