"""Exact numbers as people read them (pure)."""
from __future__ import annotations

from decimal import Decimal


def plain_decimal(value: Decimal | int | str) -> str:
    """No trailing zeros, no exponent: Decimal("4.50") -> "4.5", Decimal("30.000") -> "30"."""
    d = Decimal(str(value)).normalize()
    return format(d, "f")


def digits_only(text: str) -> bool:
    """Text of the digits 0–9 alone (and at least one).

    `str.isdigit()` is also true of "²" and "٣": int("²") raises, and int("٣") is 3 — a number read from digits
    nobody on the pharmacy's side could check. Found by `make fuzz`: refills written "²" in an e-prescription
    stopped its mapping with a ValueError. Every whole number read from text is checked with this instead."""
    return text.isascii() and text.isdigit()
