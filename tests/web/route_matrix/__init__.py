"""The role × route matrix: every route of the app, for every kind of visitor, with the expected outcome.

Each feature adds a module here defining ROUTES (a list of Route). test_route_matrix.py checks that
the app's URL map has no route missing from the table, then requests each one as each principal.

Outcomes:
  "ok"         – served (2xx, or a redirect that is not to the sign-in page)
  "login"      – sent to sign in (302 to /login for pages, 401 for the API)
  "forbidden"  – refused for the role (403)
  "missing"    – not found (404) — e.g. a patient link that does not match
  "invalid"    – a patient-link page that refuses the link (4xx) without showing anything
A POST whose body is incomplete may answer 409/422 for an allowed role: "ok" accepts any status below
500 that is not 401/403 or a redirect to sign-in, because the point here is who gets through.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

PRINCIPALS = ("anonymous", "other_patient", "technician", "pharmacist", "admin")


@dataclass(frozen=True)
class Route:
    endpoint: str
    method: str
    path: Callable[[dict[str, Any]], str]
    expect: dict[str, str]
    data: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    json: bool = False
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def staff_page(endpoint: str, path: Callable[[dict[str, Any]], str], *, technician: str = "ok",
               pharmacist: str = "ok", admin: str = "ok", method: str = "GET",
               data: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> Route:
    """A dashboard page: anonymous and patients are sent to sign in; staff by role."""
    return Route(endpoint, method, path, {"anonymous": "login", "other_patient": "login", "technician": technician,
                                          "pharmacist": pharmacist, "admin": admin}, data=data)


def api_route(endpoint: str, path: Callable[[dict[str, Any]], str], *, technician: str = "ok",
              pharmacist: str = "ok", admin: str = "ok", method: str = "GET",
              data: Callable[[dict[str, Any]], dict[str, Any]] | None = None, anonymous: str = "login") -> Route:
    """A JSON endpoint: a bearer token per role; anonymous gets 401."""
    return Route(endpoint, method, path, {"anonymous": anonymous, "other_patient": anonymous,
                                          "technician": technician, "pharmacist": pharmacist, "admin": admin},
                 data=data, json=True)


def public(endpoint: str, path: Callable[[dict[str, Any]], str], *, method: str = "GET", outcome: str = "ok",
           data: Callable[[dict[str, Any]], dict[str, Any]] | None = None, json: bool = False) -> Route:
    return Route(endpoint, method, path, dict.fromkeys(PRINCIPALS, outcome), data=data, json=json)
