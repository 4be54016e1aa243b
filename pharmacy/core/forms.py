"""HTML forms validated with the same marshmallow schemas as the API (CSRF comes from Flask-WTF)."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from marshmallow import Schema, ValidationError
from werkzeug.datastructures import MultiDict

from pharmacy.core.messages import plain_errors
from pharmacy.core.numbers import digits_only


def form_values(form: MultiDict[str, str], list_fields: tuple[str, ...] = ()) -> dict[str, Any]:
    """Blank inputs become missing (so defaults apply); list fields keep every value."""
    data: dict[str, Any] = {}
    for key in form:
        if key == "csrf_token":
            continue
        if key in list_fields:
            data[key] = [v for v in form.getlist(key) if v.strip()]
        else:
            value = form.get(key, "").strip()
            if value != "":
                data[key] = value
    return data


def load(schema: Schema, data: Mapping[str, Any]) -> tuple[dict[str, Any] | None, dict[str, list[str]]]:
    try:
        return schema.load(data), {}
    except ValidationError as err:
        return None, with_line_errors(plain_errors(flatten(err.messages)))


def with_line_errors(errors: dict[str, list[str]]) -> dict[str, list[str]]:
    """An error on one line of a one-per-line textarea ("medications.2") or of a table of rows ("lots.2.quantity_used")
    is also shown at the textarea or table itself, naming its line."""
    out = dict(errors)
    for key, messages in errors.items():
        parts = key.split(".")
        if len(parts) in (2, 3) and parts[0] and digits_only(parts[1]):
            out.setdefault(parts[0], []).extend(f"Line {int(parts[1]) + 1}: {m}" for m in messages)
    return out


def flatten(messages: Any, prefix: str = "") -> dict[str, list[str]]:
    """marshmallow's nested messages as {"field": [..]} / {"titration.0.days": [..]} for templates."""
    out: dict[str, list[str]] = {}
    if isinstance(messages, dict):
        for key, value in messages.items():
            name = f"{prefix}.{key}" if prefix else str(key)
            if isinstance(value, list) and all(isinstance(v, str) for v in value):
                out[name] = list(value)
            else:
                out.update(flatten(value, name))
    elif isinstance(messages, list):
        out[prefix or "_schema"] = [str(m) for m in messages]
    else:
        out[prefix or "_schema"] = [str(messages)]
    return out
