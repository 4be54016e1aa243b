"""Quotes: the price of a fill from the current price list (and the shipping fee), in integer cents.

Orders keep a snapshot of their quote, so a later price change never rewrites a past order.
"""
from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

import sqlalchemy as sa

from pharmacy.billing.models import Fee, PriceEntry
from pharmacy.compounding.rules import DeliveryMethod
from pharmacy.core.errors import ValidationFailed
from pharmacy.extensions import db


@dataclass(frozen=True)
class Quote:
    price_cents: int
    shipping_cents: int
    price_entry_id: int | None
    prorated: bool

    @property
    def total_cents(self) -> int:
        return self.price_cents + self.shipping_cents


def current_entries(formula_id: int) -> list[PriceEntry]:
    return list(db.session.execute(
        sa.select(PriceEntry).where(PriceEntry.formula_id == formula_id, PriceEntry.retired_at.is_(None))
        .order_by(PriceEntry.quantity)
    ).scalars())


def shipping_fee_cents() -> int:
    fee = db.session.execute(
        sa.select(Fee.amount_cents).where(Fee.code == "shipping", Fee.retired_at.is_(None))
        .order_by(Fee.effective_at.desc()).limit(1)
    ).scalar_one_or_none()
    return int(fee or 0)


def quote(formula_id: int, quantity: Decimal, delivery: DeliveryMethod, *, entries: list[PriceEntry] | None = None,
          shipping_cents: int | None = None) -> Quote:
    """Exact list price when the quantity is on the list; otherwise pro-rated per unit from the nearest entry."""
    entries = current_entries(formula_id) if entries is None else entries
    if not entries:
        raise ValidationFailed("This formula has no price on the price list yet.", fields={"formula_id": "No price."})
    exact = next((e for e in entries if e.quantity == quantity), None)
    if exact is not None:
        price, entry, prorated = exact.price_cents, exact, False
    else:
        entry = min(entries, key=lambda e: (abs(e.quantity - quantity), e.quantity))
        price = int((Decimal(entry.price_cents) * quantity / entry.quantity).quantize(Decimal(1), ROUND_HALF_UP))
        prorated = True
    ship = 0
    if delivery == DeliveryMethod.SHIP:
        ship = shipping_fee_cents() if shipping_cents is None else shipping_cents
    return Quote(price_cents=price, shipping_cents=ship, price_entry_id=entry.id, prorated=prorated)
