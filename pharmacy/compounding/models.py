"""Master formulation records, ingredient lots, and the compounding order (one per fill)."""
from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from pharmacy.compounding.rules import DeliveryMethod, OrderState, UspCategory
from pharmacy.core.db import Milli, UTCDateTime, enum_column
from pharmacy.extensions import db
from pharmacy.prescriptions.rules import Form

if TYPE_CHECKING:
    from pharmacy.prescriptions.models import Prescription


class Formula(db.Model):
    """The master formulation record USP <795> asks for (docs/domain.md, compounding standards)."""

    __tablename__ = "formulas"
    __table_args__ = (
        sa.CheckConstraint("strength_mcg > 0", name="strength_positive"),
        sa.CheckConstraint("lead_time_business_days >= 0 AND lead_time_business_days <= 30", name="lead_time_range"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(sa.String(32), unique=True)
    name: Mapped[str] = mapped_column(sa.String(120))
    form: Mapped[Form] = mapped_column(enum_column(Form))
    # mg per capsule for capsules; mg per mL for liquids and creams.
    strength_mg: Mapped[Decimal] = mapped_column("strength_mcg", Milli())
    usp_category: Mapped[UspCategory] = mapped_column(enum_column(UspCategory))
    storage: Mapped[str] = mapped_column(sa.String(120))
    container: Mapped[str] = mapped_column(sa.String(120))
    method: Mapped[str] = mapped_column(sa.Text)
    equipment: Mapped[str | None] = mapped_column(sa.String(240))
    calculations: Mapped[str | None] = mapped_column(sa.Text)
    quality_checks: Mapped[str | None] = mapped_column(sa.Text)
    bud_reference: Mapped[str] = mapped_column(sa.String(200), default="USP <795> (2023) default BUD")
    lead_time_business_days: Mapped[int] = mapped_column(default=2)
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # The approved version in use (pharmacy/formulas: each change is a new version a pharmacist approves before use);
    # orders and batches keep the number they were made with. Retired: may no longer be ordered (active is False).
    version: Mapped[int] = mapped_column(default=1, server_default="1")
    retired_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    ingredients: Mapped[list[FormulaIngredient]] = relationship(
        back_populates="formula", order_by="FormulaIngredient.position", cascade="all, delete-orphan"
    )


class FormulaIngredient(db.Model):
    __tablename__ = "formula_ingredients"
    __table_args__ = (sa.CheckConstraint("amount_milli > 0", name="amount_positive"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    formula_id: Mapped[int] = mapped_column(sa.ForeignKey("formulas.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(default=0)
    name: Mapped[str] = mapped_column(sa.String(120))
    salt_form: Mapped[str | None] = mapped_column(sa.String(80))  # e.g. "hydrochloride"
    amount: Mapped[Decimal] = mapped_column("amount_milli", Milli())
    unit: Mapped[str] = mapped_column(sa.String(16))  # per batch of `per` units
    per: Mapped[str] = mapped_column(sa.String(40), default="100 capsules")
    active_ingredient: Mapped[bool] = mapped_column(default=False)

    formula: Mapped[Formula] = relationship(back_populates="ingredients")


class IngredientLot(db.Model):
    __tablename__ = "ingredient_lots"
    __table_args__ = (sa.UniqueConstraint("supplier", "lot_number"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    ingredient_name: Mapped[str] = mapped_column(sa.String(120), index=True)
    supplier: Mapped[str] = mapped_column(sa.String(120))
    lot_number: Mapped[str] = mapped_column(sa.String(40), index=True)
    expiry_date: Mapped[date] = mapped_column()
    received_on: Mapped[date | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # A recalled (or otherwise suspect) lot is quarantined: it cannot be chosen at compounding until released.
    quarantined_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    quarantine_reason: Mapped[str | None] = mapped_column(sa.String(400))
    quarantined_by_id: Mapped[int | None] = mapped_column()  # a user id (no FK: added without a table rebuild)


class Order(db.Model):
    """A compounding order: one per fill of a prescription, from request to dispensing."""

    __tablename__ = "orders"
    __table_args__ = (
        sa.UniqueConstraint("prescription_id", "fill_number"),
        sa.CheckConstraint("fill_number >= 0", name="fill_number_nonnegative"),
        sa.CheckConstraint("quantity_milli > 0", name="quantity_positive"),
        sa.CheckConstraint("days_supply > 0", name="days_supply_positive"),
        sa.CheckConstraint("price_cents >= 0", name="price_nonnegative"),
        sa.CheckConstraint("shipping_cents >= 0", name="shipping_nonnegative"),
        sa.Index("ix_orders_state_created", "state", "created_at", "id"),
        sa.Index("ix_orders_state_delivery", "state", "delivery_method"),  # the dashboard's tiles, index-only
        sa.Index("ix_orders_patient_created", "patient_id", "created_at"),
        sa.Index("ix_orders_run_out", "run_out_date"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    prescription_id: Mapped[int] = mapped_column(sa.ForeignKey("prescriptions.id"))
    patient_id: Mapped[int] = mapped_column(sa.ForeignKey("patients.id"))
    # The order's number among this prescription's orders (0, 1, 2 …; a cancelled order keeps its number).
    fill_number: Mapped[int] = mapped_column()
    # Which authorized fill it draws from: 0 = the original, 1.. = refills. Partial fills of one authorized fill
    # (a BUD cap, short stock) share it; a refill is used up when its days are all dispensed (supply/rules.py).
    authorized_fill: Mapped[int] = mapped_column(default=0, server_default="0")
    state: Mapped[OrderState] = mapped_column(enum_column(OrderState), default=OrderState.REQUESTED)
    held_from: Mapped[OrderState | None] = mapped_column(enum_column(OrderState, name="held_from"))
    state_changed_at: Mapped[datetime] = mapped_column(UTCDateTime())
    quantity: Mapped[Decimal] = mapped_column("quantity_milli", Milli())
    days_supply: Mapped[int] = mapped_column()
    # Why the fill covers fewer days than the prescription's fill (BUD cap, the rest of a partial) and what is owed.
    cap_note: Mapped[str | None] = mapped_column(sa.String(400))
    # When the batch was planned: lots chosen, BUD and quantity fixed before anyone compounds.
    batch_planned_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    batch_planned_by_id: Mapped[int | None] = mapped_column()  # a user id (no FK: added without rebuilding orders)
    # Earliest date it may be dispensed (the too-soon threshold), set when it is created.
    earliest_dispense_date: Mapped[date | None] = mapped_column()
    too_soon_override_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))
    too_soon_override_reason: Mapped[str | None] = mapped_column(sa.String(400))
    delivery_method: Mapped[DeliveryMethod] = mapped_column(enum_column(DeliveryMethod))
    carrier: Mapped[str | None] = mapped_column(sa.String(40))
    tracking_number: Mapped[str | None] = mapped_column(sa.String(60))
    # An order made in a batch carries the batch's lot number and its place in it ("L261123-007/2").
    lot_number: Mapped[str | None] = mapped_column(sa.String(32), unique=True)
    # Made with other patients' orders of the same formula in one batch (one lot number, record and BUD).
    # No foreign key: added without rebuilding the orders table (SQLite), like batch_planned_by_id.
    batch_id: Mapped[int | None] = mapped_column(index=True)
    formula_version: Mapped[int | None] = mapped_column()  # the master formula's version it was made with
    bud: Mapped[date | None] = mapped_column()
    quantity_made: Mapped[Decimal | None] = mapped_column("quantity_made_milli", Milli())
    qc_yield_pct: Mapped[Decimal | None] = mapped_column("qc_yield_milli", Milli())
    qc_passed: Mapped[bool | None] = mapped_column()
    qc_notes: Mapped[str | None] = mapped_column(sa.String(400))
    deviations: Mapped[str | None] = mapped_column(sa.String(400))
    verified_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))
    verified_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    compounded_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))
    compounded_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    checked_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))
    checked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    released_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))
    released_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    dispensed_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))
    dispensed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    dispensed_on: Mapped[date | None] = mapped_column()  # local date it left the pharmacy (handed over or shipped)
    # The day the patient has it: the pickup day, or the parcel's expected arrival. The supply starts here.
    supply_starts_on: Mapped[date | None] = mapped_column()
    run_out_date: Mapped[date | None] = mapped_column()  # last day covered, once this fill joined the supply
    hold_reason: Mapped[str | None] = mapped_column(sa.String(400))
    cancel_reason: Mapped[str | None] = mapped_column(sa.String(400))
    # A dispensed fill taken back (lost in the post, damaged, dispensed in error): the order is then cancelled,
    # so it no longer counts as supply, a refill used or a charge (compounding/returns.py). Plain columns, added
    # without rebuilding orders; returned_by_id is a user id.
    returned_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    returned_by_id: Mapped[int | None] = mapped_column()
    return_reason: Mapped[str | None] = mapped_column(sa.String(32))
    price_cents: Mapped[int] = mapped_column(default=0)
    shipping_cents: Mapped[int] = mapped_column(default=0)
    price_entry_id: Mapped[int | None] = mapped_column(sa.ForeignKey("price_list.id"))
    created_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())

    prescription: Mapped[Prescription] = relationship()
    lots_used: Mapped[list[OrderIngredientLot]] = relationship(
        back_populates="order", cascade="all, delete-orphan"
    )

    @property
    def total_cents(self) -> int:
        return self.price_cents + self.shipping_cents


class OrderIngredientLot(db.Model):
    """Which ingredient lot went into which order, and how much: the basis of a lot recall."""

    __tablename__ = "order_ingredient_lots"
    __table_args__ = (
        sa.UniqueConstraint("order_id", "ingredient_lot_id"),
        sa.CheckConstraint("quantity_used_milli > 0", name="quantity_used_positive"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    order_id: Mapped[int] = mapped_column(sa.ForeignKey("orders.id", ondelete="CASCADE"), index=True)
    ingredient_lot_id: Mapped[int] = mapped_column(sa.ForeignKey("ingredient_lots.id"), index=True)
    # None while the batch is planned (lot chosen, not yet weighed); the measured amount once compounded.
    quantity_used: Mapped[Decimal | None] = mapped_column("quantity_used_milli", Milli(), nullable=True)
    unit: Mapped[str] = mapped_column(sa.String(16))

    order: Mapped[Order] = relationship(back_populates="lots_used")
    ingredient_lot: Mapped[IngredientLot] = relationship()


class Batch(db.Model):
    """One preparation made for several patients' orders of the same formula (USP <795> allows it): one lot
    number, one compounding record, one BUD; each order linked to it keeps its own label and fill."""

    __tablename__ = "batches"
    __table_args__ = (
        sa.CheckConstraint("expected_quantity_milli > 0", name="expected_positive"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    formula_id: Mapped[int] = mapped_column(sa.ForeignKey("formulas.id"), index=True)
    formula_version: Mapped[int] = mapped_column()
    lot_number: Mapped[str | None] = mapped_column(sa.String(32), unique=True)
    bud: Mapped[date | None] = mapped_column()
    expected_quantity: Mapped[Decimal] = mapped_column("expected_quantity_milli", Milli())
    quantity_made: Mapped[Decimal | None] = mapped_column("quantity_made_milli", Milli())
    qc_yield_pct: Mapped[Decimal | None] = mapped_column("qc_yield_milli", Milli())
    qc_passed: Mapped[bool | None] = mapped_column()
    planned_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))
    planned_at: Mapped[datetime] = mapped_column(UTCDateTime())
    compounded_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))
    compounded_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    checked_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))
    checked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    orders: Mapped[list[Order]] = relationship(primaryjoin="Batch.id == foreign(Order.batch_id)", order_by="Order.id",
                                               viewonly=True)
