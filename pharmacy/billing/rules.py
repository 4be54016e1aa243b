"""Money rules (pure): integer cents, monthly equivalents, the price band, balances and PDC."""
from __future__ import annotations

from enum import StrEnum


class PaymentMethod(StrEnum):
    CASH = "cash"
    CARD = "card"
    CHECK = "check"
    HSA_FSA = "hsa_fsa"


class PaymentKind(StrEnum):
    PAYMENT = "payment"
    REFUND = "refund"
