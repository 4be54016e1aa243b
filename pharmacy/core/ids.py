"""What can be a row id: a positive 32-bit integer (every id column is one).

Anything else — a bool, a string, a number past 32 bits — is simply "not found", never a database error.
"""
from __future__ import annotations

MAX_ID = 2**31 - 1


def valid_id(value: object) -> bool:
    return not isinstance(value, bool) and isinstance(value, int) and 1 <= value <= MAX_ID
