"""The NPI check digit (Luhn over the prefix 80840), used for prescribers and the pharmacy itself.

Source: CMS, "Requirements for NPI check digit" — the 9 identifier digits are prefixed with
80840 (health-industry card issuer) and checked with the Luhn formula.
"""
from __future__ import annotations

from pharmacy.core.numbers import digits_only


def npi_check_digit(first_nine: str) -> int:
    digits = [int(c) for c in "80840" + first_nine]
    total = 0
    # Double every second digit from the right of the payload (which will sit left of the check digit).
    for i, d in enumerate(reversed(digits)):
        if i % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return (10 - total % 10) % 10


def npi_is_valid(npi: str | None) -> bool:
    if npi is None or len(npi) != 10 or not digits_only(npi) or npi[0] not in "12":
        return False
    return npi_check_digit(npi[:9]) == int(npi[9])

