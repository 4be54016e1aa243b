"""Exact numbers as people read them (pure)."""
from __future__ import annotations

from decimal import Decimal


def plain_decimal(value: Decimal | int | str) -> str:
    """No trailing zeros, no exponent: Decimal("4.50") -> "4.5", Decimal("30.000") -> "30"."""
    d = Decimal(str(value)).normalize()
    return format(d, "f")
