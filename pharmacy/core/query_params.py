"""Refuse query parameters an API operation does not document, the way a misspelt body field is refused.

webargs drops unknown query parameters silently, so `GET /api/v1/billing/reports/revenue?month=3` (for
`months`) or `GET /api/v1/refill-requests?pagesize=200` answered 200 with the default — a report or list that
looks right and is not what the client asked for. The names an operation accepts are the ones its OpenAPI
document lists (flask-smorest's `_apidoc`: its query arguments and its pagination), read once per endpoint; any
other name is a 422 naming it, before the view runs. So is a name given twice (`?months=5&months=zz`) unless its
parameter is a list: webargs read the first and dropped the rest, answering 200 for a query it had not understood.
Checked after the bearer token (`api_auth`), so a caller with no token learns nothing but that one is needed.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from flask import current_app, request
from marshmallow import fields
from werkzeug.exceptions import UnprocessableEntity

_CACHE_KEY = "pharmacy.query_names"


def _schema_names(schema: Any) -> set[str]:
    """The names a marshmallow schema (class or instance) reads from the query string."""
    if isinstance(schema, type):
        schema = schema()
    return {field.data_key or name for name, field in schema.fields.items() if not field.dump_only}


def _schema_lists(schema: Any) -> set[str]:
    """The names of a schema's list fields: the only query parameters that may be given more than once."""
    if isinstance(schema, type):
        schema = schema()
    return {field.data_key or name for name, field in schema.fields.items()
            if not field.dump_only and isinstance(field, fields.List)}


def documented_list_names(view: Any) -> frozenset[str]:
    """The query parameters of a flask-smorest view that take several values."""
    apidoc = getattr(view, "_apidoc", None) or {}
    names: set[str] = set()
    for parameter in (apidoc.get("arguments") or {}).get("parameters", ()):
        if isinstance(parameter, Mapping) and parameter.get("in") in ("query", "querystring"):
            if parameter.get("schema") is not None and parameter.get("name") is None:
                names |= _schema_lists(parameter["schema"])
            elif (parameter.get("schema") or {}).get("type") == "array":
                names.add(parameter["name"])
    return frozenset(names)


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
    repeated = [name for name, values in request.args.lists() if len(values) > 1]
    if repeated:
        lists: dict[str, frozenset[str]] = current_app.extensions.setdefault(_CACHE_KEY + ".lists", {})
        if request.endpoint not in lists:
            lists[request.endpoint] = documented_list_names(current_app.view_functions.get(request.endpoint))
        repeated = [name for name in repeated if name not in lists[request.endpoint]]
    if repeated:
        error = UnprocessableEntity(f"Query parameter given more than once: {', '.join(repeated)}.")
        error.data = {"messages": {"query": {name: ["Give one value."] for name in repeated}}}
        raise error
