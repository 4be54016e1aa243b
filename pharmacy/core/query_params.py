"""Refuse query parameters an API operation does not document, the way a misspelt body field is refused.

webargs drops unknown query parameters silently, so `GET /api/v1/billing/reports/revenue?month=3` (for
`months`) or `GET /api/v1/refill-requests?pagesize=200` answered 200 with the default — a report or list that
looks right and is not what the client asked for. The names an operation accepts are the ones its OpenAPI
document lists (flask-smorest's `_apidoc`: its query arguments and its pagination), read once per endpoint; any
other name is a 422 naming it, before the view runs. Checked after the bearer token (`api_auth`), so a caller
with no token learns nothing but that one is needed.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from flask import current_app, request
from werkzeug.exceptions import UnprocessableEntity

_CACHE_KEY = "pharmacy.query_names"


def _schema_names(schema: Any) -> set[str]:
    """The names a marshmallow schema (class or instance) reads from the query string."""
    if isinstance(schema, type):
        schema = schema()
    return {field.data_key or name for name, field in schema.fields.items() if not field.dump_only}


def _parameter_names(parameters: Iterable[Any]) -> set[str]:
    names: set[str] = set()
    for parameter in parameters:
        if not isinstance(parameter, Mapping) or parameter.get("in") not in ("query", "querystring"):
            continue
        if parameter.get("schema") is not None and parameter.get("name") is None:
            names |= _schema_names(parameter["schema"])
        elif parameter.get("name"):
            names.add(parameter["name"])
    return names


def documented_query_names(view: Any) -> frozenset[str] | None:
    """The query parameters a flask-smorest view documents, or None for a view that is not one (left alone)."""
    apidoc = getattr(view, "_apidoc", None)
    if apidoc is None:
        return None
    names = _parameter_names((apidoc.get("arguments") or {}).get("parameters", ()))
    pagination = (apidoc.get("pagination") or {}).get("parameters")
    if pagination:
        names |= _parameter_names([pagination])
    names |= _parameter_names((apidoc.get("manual_doc") or {}).get("parameters", ()))
    return frozenset(names)


def unknown_query_names(given: Iterable[str], allowed: frozenset[str]) -> list[str]:
    """The names given that are not allowed, in the order given, each once."""
    return list(dict.fromkeys(name for name in given if name not in allowed))


def refuse_unknown() -> None:
    """Raise a 422 when this request's query string has a name its operation does not take.

    Shaped like webargs' own refusal of a bad query value (`errors.query.<name>`), so a client reads both alike.
    """
    if not request.args or request.endpoint is None:
        return
    cache: dict[str, frozenset[str] | None] = current_app.extensions.setdefault(_CACHE_KEY, {})
    if request.endpoint not in cache:
        cache[request.endpoint] = documented_query_names(current_app.view_functions.get(request.endpoint))
    allowed = cache[request.endpoint]
    if allowed is None:
        return
    unknown = unknown_query_names(request.args.keys(), allowed)
    if unknown:
        accepted = ", ".join(sorted(allowed)) or "none"
        error = UnprocessableEntity(f"Unknown query parameter: {', '.join(unknown)} (this operation takes: {accepted}).")
        error.data = {"messages": {"query": {name: ["Unknown field."] for name in unknown}}}
        raise error
