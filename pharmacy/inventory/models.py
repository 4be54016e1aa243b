"""Stock of ingredient lots as a ledger: one row per receipt, use, waste, adjustment or count, so on hand is a sum.

The lots themselves (supplier, number, expiry, quarantine) are compounding's `ingredient_lots`; this feature keeps
what came in and went out of each, and the reorder point of each ingredient.
"""
from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from pharmacy.core.db import Milli, UTCDateTime, enum_column
from pharmacy.extensions import db
from pharmacy.inventory.rules import MoveKind


class StockMove(db.Model):
    """One movement of one lot's stock, in the lot's unit: positive in, negative out; a count records the
    difference between what was counted and what the ledger said (and the count itself)."""

    __tablename__ = "stock_moves"
    __table_args__ = (
        sa.CheckConstraint(
            "(kind = 'receipt' AND quantity_milli > 0) OR (kind IN ('use', 'waste') AND quantity_milli < 0) "
            "OR (kind = 'adjust' AND quantity_milli <> 0) OR kind = 'count'", name="sign_fits_kind"),
        sa.CheckConstraint("counted_milli IS NULL OR counted_milli >= 0", name="counted_nonnegative"),
        sa.Index("ix_stock_moves_lot", "ingredient_lot_id", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    ingredient_lot_id: Mapped[int] = mapped_column(sa.ForeignKey("ingredient_lots.id"))
    kind: Mapped[MoveKind] = mapped_column(enum_column(MoveKind, name="stockmovekind"))
    quantity: Mapped[Decimal] = mapped_column("quantity_milli", Milli())
    unit: Mapped[str] = mapped_column(sa.String(16))
    counted: Mapped[Decimal | None] = mapped_column("counted_milli", Milli())  # a count: what was on the shelf
    reason: Mapped[str | None] = mapped_column(sa.String(400))
    order_id: Mapped[int | None] = mapped_column(sa.ForeignKey("orders.id"), index=True)
    batch_id: Mapped[int | None] = mapped_column(sa.ForeignKey("batches.id"), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))


class LotStock(db.Model):
    """What the ledger says of one lot, kept in the same transaction as each move (the lot row locked), so the
    inventory page, the plan and the alerts read one row per lot however long the ledger grows. The ledger stays
    the truth: `on_hand` equals the sum of the lot's moves (tested; `flask inventory check` verifies it).
    A lot received before inventory was kept has no row: its stock is unknown until it is counted."""

    __tablename__ = "lot_stock"

    ingredient_lot_id: Mapped[int] = mapped_column(sa.ForeignKey("ingredient_lots.id", ondelete="CASCADE"),
                                                   primary_key=True)
    unit: Mapped[str] = mapped_column(sa.String(16))
    received: Mapped[Decimal] = mapped_column("received_milli", Milli(), default=Decimal(0))
    used: Mapped[Decimal] = mapped_column("used_milli", Milli(), default=Decimal(0))
    wasted: Mapped[Decimal] = mapped_column("wasted_milli", Milli(), default=Decimal(0))
    adjusted: Mapped[Decimal] = mapped_column("adjusted_milli", Milli(), default=Decimal(0))  # adjustments and counts
    on_hand: Mapped[Decimal] = mapped_column("on_hand_milli", Milli(), default=Decimal(0))
    counted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class InventoryItem(db.Model):
    """An ingredient as stock: the unit it is counted in and the level at which to reorder."""

    __tablename__ = "inventory_items"
    __table_args__ = (sa.CheckConstraint("reorder_point_milli >= 0", name="reorder_point_nonnegative"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    ingredient_name: Mapped[str] = mapped_column(sa.String(120), unique=True)
    unit: Mapped[str] = mapped_column(sa.String(16))
    reorder_point: Mapped[Decimal] = mapped_column("reorder_point_milli", Milli())
    reorder_quantity: Mapped[Decimal | None] = mapped_column("reorder_quantity_milli", Milli())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))
