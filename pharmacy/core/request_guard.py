"""Refuse request bodies that would reach the parser or the database as a crash instead of a clear 400.

Two shapes of JSON do that with Python's parser: nesting deep enough to exhaust the stack
(RecursionError) and strings with a lone UTF-16 surrogate ("\\ud800"), which parse but cannot be
encoded for the database. Both are refused here, before any view or webargs parser reads the body,
so every JSON endpoint — patients' included — answers them with the same 400.
"""
from __future__ import annotations

import json
from typing import Any

from flask import Flask, request
from werkzeug.exceptions import BadRequest

from pharmacy.core.errors import ValidationFailed

MAX_JSON_DEPTH = 32


def nesting_depth(raw: bytes) -> int:
    """The deepest bracket nesting of a JSON text, counted without parsing (strings skipped)."""
    depth = deepest = 0
    in_string = escaped = False
    for byte in raw:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            deepest = max(deepest, depth)
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return deepest


def first_unencodable(value: Any) -> str | None:
    """The path of the first string (key or value) that is not valid Unicode text, or None."""
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return path or "body"
        elif isinstance(item, dict):
            for key, sub in item.items():
                try:
                    key.encode("utf-8")
                except UnicodeEncodeError:
                    return path or "body"
                stack.append((f"{path}.{key}" if path else key, sub))
        elif isinstance(item, list):
            stack.extend((f"{path}[{i}]", sub) for i, sub in enumerate(item))
    return None


def check_json_body(raw: bytes) -> None:
    """Refuse a body the app cannot safely parse: too deep is a 400; text that is not Unicode is a 422 that
    names the field, like any other invalid value."""
    if not raw:
        return
    if nesting_depth(raw) > MAX_JSON_DEPTH:
        raise BadRequest(f"The JSON body is nested more than {MAX_JSON_DEPTH} levels deep.")
    try:
        parsed = json.loads(raw)
    except (ValueError, RecursionError):
        return  # the endpoint's own parser answers malformed JSON with its usual 400
    bad = first_unencodable(parsed)
    if bad is not None:
        raise ValidationFailed("The request has text that is not valid Unicode; nothing was saved.",
                               fields={bad: "Contains a character that is not allowed."})


def init_app(app: Flask) -> None:
    @app.before_request
    def _guard_json() -> None:
        if request.method in ("POST", "PUT", "PATCH", "DELETE") and request.is_json:
            check_json_body(request.get_data(cache=True))
