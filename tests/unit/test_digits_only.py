"""Whole numbers are read from the digits 0–9 alone: "²" and "٣" pass str.isdigit() but are no number anyone
typed on a keyboard here (int("²") raises; int("٣") is 3)."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pharmacy.core.errors import ValidationFailed
from pharmacy.core.npi import npi_is_valid
from pharmacy.core.numbers import digits_only
from pharmacy.prescriptions.rules import validate_npi


@pytest.mark.parametrize(("text", "expected"), [
    ("0", True), ("0123456789", True), ("", False), ("²", False), ("٣", False), ("３", False), ("1²", False),
    (" 1", False), ("-1", False), ("1.0", False),
])
def test_digits_only(text: str, expected: bool) -> None:
    assert digits_only(text) is expected


@given(st.text(max_size=12))
def test_whatever_passes_is_a_number_int_reads_as_written(text: str) -> None:
    if digits_only(text):
        assert str(int(text)).zfill(len(text)) == text


@pytest.mark.parametrize("npi", ["123456789²", "١٢٣٤٥٦٧٨٩٣", "１２３４５６７８９３"])
def test_an_npi_in_other_digits_is_refused_not_a_crash(npi: str) -> None:
    assert npi_is_valid(npi) is False
    with pytest.raises(ValidationFailed):
        validate_npi(npi)
