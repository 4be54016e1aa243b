"""Schema building blocks shared by the HTML forms and the JSON API."""
from __future__ import annotations

from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any

from marshmallow import Schema, ValidationError, fields, pre_load, validate

from pharmacy.core.numbers import plain_decimal


class TrimmedString(fields.String):
    """Strips surrounding whitespace; an all-blank value counts as missing for required fields."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        text = super()._deserialize(value, attr, data, **kwargs)
        text = text.strip()
        if "\x00" in text:
            raise ValidationError("Contains a character that is not allowed.")
        return text


class DecimalString(fields.Field):
    """An exact decimal given as a string or number ("4.5"), serialised as a string (never a float)."""

    def __init__(self, *, places: int = 3, min_value: Decimal | None = None, max_value: Decimal | None = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.places = places
        self.min_value = min_value
        self.max_value = max_value

    def _serialize(self, value: Any, attr: str | None, obj: Any, **kwargs: Any) -> str | None:
        if value is None:
            return None
        return plain_decimal(Decimal(value))

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Decimal:
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise ValidationError("Enter a number.")
        try:
            number = Decimal(str(value).strip())
        except InvalidOperation:
            raise ValidationError("Enter a number, e.g. 4.5.") from None
        if not number.is_finite():
            raise ValidationError("Enter a number, e.g. 4.5.")
        exponent = number.normalize().as_tuple().exponent
        if isinstance(exponent, int) and -exponent > self.places:
            raise ValidationError(f"Use at most {self.places} decimal places.")
        if self.min_value is not None and number < self.min_value:
            raise ValidationError(f"Must be at least {self.min_value}.")
        if self.max_value is not None and number > self.max_value:
            raise ValidationError(f"Must be at most {self.max_value}.")
        return number


class PastDate(fields.Date):
    """A date that cannot be in the future (birth dates, written dates)."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> date:
        d = super()._deserialize(value, attr, data, **kwargs)
        if d.year < 1900:
            raise ValidationError("Enter a date after 1900.")
        return d


def lines_to_list(data: dict[str, Any], *names: str) -> dict[str, Any]:
    """Textareas send one item per line; the API sends lists. Accept both."""
    for name in names:
        value = data.get(name)
        if isinstance(value, str):
            data[name] = [line.strip() for line in value.replace("\r", "").split("\n") if line.strip()]
    return data


MAX_ID = 2**31 - 1


def Id(**kwargs: Any) -> fields.Integer:
    """A row id as input: a positive 32-bit integer, so a 40-digit number is a 422, never a database error."""
    return fields.Integer(strict=False, validate=validate.Range(min=1, max=MAX_ID, error="Not a valid id."), **kwargs)


class BaseSchema(Schema):
    @pre_load
    def _strip_csrf(self, data: Any, **kwargs: Any) -> Any:
        if isinstance(data, dict) and "csrf_token" in data:
            data = {k: v for k, v in data.items() if k != "csrf_token"}
        return data


REASON = TrimmedString(required=True, validate=validate.Length(min=3, max=400))
