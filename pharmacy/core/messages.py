"""Form messages in plain language: what to type, not what the parser thought ("Missing data for required field.").

marshmallow's own messages name a type ("Not a valid integer.") or a bound ("Must be greater than or equal to 0 and
less than or equal to 14."); a pharmacist at the counter, or a patient on a phone, needs to hear what to enter.
`plain(field, message)` turns each into words, using what the field asks for when we know it; messages our schemas
already wrote in plain words pass through unchanged. Used by core.forms.load, so every HTML form gets them.
"""
from __future__ import annotations

import re

# What each field asks for, as an instruction (used when it is missing or not the right kind of value).
ASK = {
    "first_name": "Enter the first name",
    "last_name": "Enter the last name",
    "date_of_birth": "Enter the date of birth, e.g. 1968-04-12",
    "email": "Enter an email address like name@example.com",
    "phone": "Enter a phone number like (217) 555-0142",
    "postal_code": "Enter a ZIP code like 62704",
    "shipping_days": "Enter the days shipping takes",
    "formula_id": "Choose the formula (form and strength)",
    "prescriber_id": "Choose the prescriber",
    "patient_id": "Start from the patient's page: the patient is missing",
    "dose_mg": "Enter the daily dose in mg, e.g. 4.5",
    "days_supply": "Enter how many days one fill lasts, e.g. 30",
    "refills_authorized": "Enter the refills the prescriber wrote, 0 if none",
    "written_date": "Enter the date the prescriber wrote it, e.g. 2026-11-20",
    "dosing_time": "Choose when the dose is taken",
    "indication": "Enter what it is for, e.g. multiple sclerosis",
    "indication_code": "Enter the diagnosis code, e.g. G35",
    "npi": "Enter the prescriber's 10-digit NPI",
    "amount": "Enter an amount, like 45.00",
    "method": "Choose how it was paid",
    "order_id": "Choose the fill it is for, or the account",
    "reason": "Say why, in a few words",
    "too_soon_reason": "Say why it may be dispensed early, in a few words",
    "quantity_made": "Enter the quantity you counted or measured",
    "quantity_used": "Enter the amount you weighed or measured",
    "lots": "Choose a lot for every ingredient",
    "lot_number": "Enter the lot number printed on the container",
    "ingredient_name": "Enter the ingredient's name",
    "supplier": "Enter the supplier",
    "expiry_date": "Enter the expiry date printed on the container",
    "received_on": "Enter the day it arrived",
    "carrier": "Enter the carrier, e.g. USPS",
    "tracking_number": "Enter the tracking number",
    "bag_code": "Scan or type the code on the bag's label",
    "month": "Enter the month, e.g. 9 or Sept",
    "day": "Enter the day, e.g. 30",
    "days": "Enter the number of days, e.g. 14",
    "year": "Enter the year with four digits, e.g. 1975",
    "effect": "Choose the side effect",
    "delivery": "Choose pick-up or shipping",
    "price_cents": "Enter the price, like 55.00",
    "name": "Enter a name",
    "password": "Enter the password",
    "role": "Choose a role",
    "full_name": "Enter the person's full name",
    "user_id": "Choose a staff member",
    "since": "Enter a date, e.g. 2026-11-01",
    "until": "Enter a date, e.g. 2026-11-30",
    "months": "Enter a number of months, e.g. 12",
    "page": "Enter a page number",
}

_RANGE = re.compile(r"Must be greater than or equal to (-?[\d.]+) and less than or equal to (-?[\d.]+)\.")
_MIN = re.compile(r"Must be greater than or equal to (-?[\d.]+)\.")
_MAX = re.compile(r"Must be less than or equal to (-?[\d.]+)\.")
_LEN_BETWEEN = re.compile(r"Length must be between (\d+) and (\d+)\.")
_LONGER = re.compile(r"Longer than maximum length (\d+)\.")
_SHORTER = re.compile(r"Shorter than minimum length (\d+)\.")
_ONE_OF = re.compile(r"Must be one of: (.+)\.")
_LIST_LEN = re.compile(r"Length must be between (\d+) and (\d+)\.")

_TYPE_WORDS = {
    "Not a valid integer.": "Enter a whole number, e.g. 30",
    "Not a valid number.": "Enter a number, e.g. 4.5",
    "Not a valid date.": "Enter the date as year-month-day, e.g. 1968-04-12",
    "Not a valid datetime.": "Enter a date and time",
    "Not a valid email address.": "Enter an email address like name@example.com",
    "Not a valid boolean.": "Choose yes or no",
    "Not a valid string.": "Enter text",
    "Not a valid list.": "Enter one item per line",
    "Not a valid id.": "Choose one from the list",
    "Not a valid mapping type.": "This part of the form was not sent as expected; reload the page and try again",
    "Invalid input type.": "This part of the form was not sent as expected; reload the page and try again",
    "Unknown field.": "This form sent something it does not have; reload the page and try again",
    "Invalid value.": "Check this value",
}


def _sentence(text: str) -> str:
    return text if text.endswith((".", "?", "!")) else text + "."


def plain(field: str, message: str) -> str:
    """`message` for `field` in plain words (messages already written in plain words are kept)."""
    name = field.rsplit(".", 1)[-1] if not field.rsplit(".", 1)[-1].isdigit() else field.split(".")[0]
    ask = ASK.get(name)
    if message in ("Missing data for required field.", "Field may not be null."):
        return _sentence(ask or "Fill this in")
    if message in _TYPE_WORDS:
        if message in ("Not a valid integer.", "Not a valid number.", "Not a valid date.", "Not a valid id.") and ask:
            return _sentence(ask)
        return _sentence(_TYPE_WORDS[message])
    if m := _RANGE.fullmatch(message):
        lo, hi = m.groups()
        return f"{ask}: a number from {lo} to {hi}." if ask else f"Enter a number from {lo} to {hi}."
    if m := _MIN.fullmatch(message):
        return f"Enter {m.group(1)} or more."
    if m := _MAX.fullmatch(message):
        return f"Enter {m.group(1)} or less."
    if m := _LEN_BETWEEN.fullmatch(message):
        lo, hi = m.groups()
        return f"Use {lo} to {hi} characters." if name not in ("lots", "titration") else f"Give {lo} to {hi} rows."
    if m := _LONGER.fullmatch(message):
        return f"Use at most {m.group(1)} characters."
    if m := _SHORTER.fullmatch(message):
        return f"Use at least {m.group(1)} characters."
    if m := _ONE_OF.fullmatch(message):
        return _sentence(ask) if ask else f"Choose one of: {m.group(1).replace('_', ' ')}."
    return message


def plain_errors(errors: dict[str, list[str]]) -> dict[str, list[str]]:
    """Every message of a {field: [messages]} map in plain words."""
    return {name: [plain(name, str(m)) for m in messages] for name, messages in errors.items()}
