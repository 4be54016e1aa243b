"""Schema building blocks shared by the HTML forms and the JSON API."""
from __future__ import annotations

from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any

from flask import has_app_context
from marshmallow import Schema, ValidationError, fields, pre_load, validate

from pharmacy.core.context import today
from pharmacy.core.numbers import plain_decimal

# Invisible characters that change how text around them is displayed: the right-to-left override makes
# "Smith\u202eftn" read as "Smithntf" (names that look like someone else's, a dose that reads backwards).
# Arabic and Hebrew text needs none of them: the Unicode bidi algorithm orders it by itself.
BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def text_problem(text: str) -> str | None:
    """Why a text may not be stored as typed: NUL and other control characters (tab and line breaks are fine),
    text-direction controls, lone UTF-16 surrogates (the database cannot encode them). None when it is fine."""
    for ch in text:
        code = ord(ch)
        if ch in BIDI_CONTROLS:
            return "Contains an invisible text-direction character; type the text without it."
        if 0xD800 <= code <= 0xDFFF:
            return "Contains a character that is not allowed."
        if (code < 0x20 and ch not in "\t\n\r") or 0x7F <= code < 0xA0:
            return "Contains a character that is not allowed."
    return None


class TrimmedString(fields.String):
    """Strips surrounding whitespace; an all-blank value counts as missing for required fields. Refuses what
    `text_problem` names, so such text is a field error on every path (forms, API, seeds), never a 500."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        text = super()._deserialize(value, attr, data, **kwargs)
        text = text.strip()
        problem = text_problem(text)
        if problem:
            raise ValidationError(problem)
        return text


class Flag(fields.Boolean):
    """A yes/no input: true or false, or the text a form or query string sends ("true", "on", "1", "no" …).

    marshmallow's Boolean also reads the numbers 0 and 1 (and 1.0) as false and true; a JSON client that sends a
    number where a yes/no belongs has mixed up its fields, so the number is refused rather than guessed at
    (`{"reminders_opt_in": 0}` switched reminders off; found by `make fuzz`)."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> bool:
        if not isinstance(value, bool | str):
            raise self.make_error("invalid")
        return super()._deserialize(value, attr, data, **kwargs)


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
        if isinstance(value, str) and not value.strip().isascii():
            # Decimal("٣") is 3: a dose typed in other digits would be read, and labelled, as a number nobody saw.
            raise ValidationError("Enter the number with the digits 0–9, e.g. 4.5.")
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


class BoundedDate(fields.Date):
    """A date within sane years (1900–2199): every date that reaches the database is one of these."""

    MIN_YEAR, MAX_YEAR = 1900, 2199

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> date:
        d = super()._deserialize(value, attr, data, **kwargs)
        if d.year < self.MIN_YEAR:
            raise ValidationError(f"Enter a date after {self.MIN_YEAR}.")
        if d.year > self.MAX_YEAR:
            raise ValidationError(f"Enter a date before {self.MAX_YEAR + 1}.")
        return d


def today_or_none() -> date | None:
    """The pharmacy's today when an app is running (schemas are also used without one)."""
    return today() if has_app_context() else None


class PastDate(BoundedDate):
    """A date that cannot be in the future (birth dates, written dates), by the pharmacy's clock."""

    def __init__(self, *, future_error: str = "That date is in the future.", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.future_error = future_error

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> date:
        d = super()._deserialize(value, attr, data, **kwargs)
        now = today_or_none()
        if now is not None and d > now:
            raise ValidationError(self.future_error)
        return d


def lines_to_list(data: dict[str, Any], *names: str) -> dict[str, Any]:
    """A form's textareas send one item a line: the list the schema reads (the API sends lists)."""
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

    @pre_load
    def _ascii_whole_numbers(self, data: Any, **kwargs: Any) -> Any:
        """int("٣") is 3 and int(2.5) is 2: a count or an id typed in other digits, or with a fraction, is refused
        rather than read as some other number (2.5 shipping days must not quietly become 2; found by `make fuzz`)."""
        if isinstance(data, dict):
            errors = {}
            for name, value in data.items():
                if not isinstance(self.load_fields.get(name), fields.Integer):
                    continue
                if isinstance(value, str) and not value.isascii():
                    errors[name] = ["Enter the number with the digits 0–9."]
                elif _fractional(value):
                    errors[name] = ["Enter a whole number."]
            if errors:
                raise ValidationError(errors)
        return data


def _fractional(value: Any) -> bool:
    """A float or Decimal that is no whole number (infinity and NaN are none either)."""
    if not isinstance(value, float | Decimal):
        return False
    try:
        return value != int(value)
    except (OverflowError, ValueError, InvalidOperation):
        return True


REASON = TrimmedString(required=True, validate=validate.Length(min=3, max=400))
