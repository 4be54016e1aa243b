"""Every route × every kind of visitor: nobody gets what their role does not allow, and no route is left out."""
from __future__ import annotations

import importlib
import pkgutil
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from pharmacy.extensions import db
from pharmacy.workflows import orders as order_flow
from tests import factories
from tests.conftest import login
from tests.web import route_matrix
from tests.web.route_matrix import PRINCIPALS, Route

MODULES = [importlib.import_module(f"tests.web.route_matrix.{info.name}")
           for info in pkgutil.iter_modules(route_matrix.__path__)]
ROUTES: list[Route] = [route for module in MODULES for route in getattr(module, "ROUTES", [])]
# A module may define open_patient_session(app, client, world): a confirmed refill-link session
# for the *other* patient, so the "other_patient" column really holds another patient's link.
OPENERS = [module.open_patient_session for module in MODULES if hasattr(module, "open_patient_session")]


def test_no_route_is_left_out_of_the_matrix(app: Flask) -> None:
    covered = {(r.endpoint, r.method) for r in ROUTES}
    missing = []
    for rule in app.url_map.iter_rules():
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            if (rule.endpoint, method) not in covered:
                missing.append(f"{method} {rule.rule} ({rule.endpoint})")
    assert missing == [], "routes missing from tests/web/route_matrix: " + ", ".join(missing)


@pytest.fixture
def matrix_world(app: Flask, staff: dict[str, Any]) -> dict[str, Any]:
    with app.test_request_context("/"):
        w = factories.world(staff)
        other = factories.patient(w["pharmacist"], first_name="Otto", last_name="Otherpatient",
                                  date_of_birth=__import__("datetime").date(1950, 1, 2), email="otto@example.com")
        other_rx = factories.prescription(w["pharmacist"], other.id, w["formula"].id, w["prescriber"].id)

        order = order_flow.start_fill(w["pharmacist"], w["rx"].id)
        from pharmacy.core import links
        from pharmacy.reminders import outbox
        from pharmacy.reminders.rules import MessageKind

        message = outbox.enqueue_notice(MessageKind.REQUEST_RECEIVED, patient_id=w["patient"].id,
                                        prescription_id=w["rx"].id, order_id=order.id)
        prefs_token = links.make_token(links.PREFERENCES, w["patient"].id)
        db.session.commit()
        out = {k: v for k, v in w.items()}
        out.update(other=other, other_rx=other_rx, order=order, staff=staff, message=message,
                   prefs_token=prefs_token)
        # Identifiers only: the rows are used outside this context.
        return {k: (_Ids(v) if hasattr(v, "id") and not isinstance(v, dict) else v) for k, v in out.items()}


class _Ids:
    """A detached stand-in carrying the attributes tests need (id and a few strings)."""

    def __init__(self, row: Any) -> None:
        for name in ("id", "last_name", "rx_number", "lot_number", "patient_id", "date_of_birth", "email", "role"):
            if hasattr(row, name):
                setattr(self, name, getattr(row, name))


def _client_for(app: Flask, principal: str, w: dict[str, Any]) -> tuple[FlaskClient, dict[str, str]]:
    client = app.test_client()
    headers: dict[str, str] = {}
    if principal in ("technician", "pharmacist", "admin"):
        login(client, w["staff"][principal])
        with app.test_request_context("/"):
            from pharmacy.core import services
            from tests.factories import actor

            _, raw = services.issue_token(actor(w["staff"][principal]), w["staff"][principal].id, "matrix")
            db.session.commit()
        headers["Authorization"] = f"Bearer {raw}"
    elif principal == "other_patient":
        for opener in OPENERS:
            opener(app, client, w)
    return client, headers


def _outcome(route: Route, response: Any) -> str:
    status = response.status_code
    location = response.headers.get("Location", "")
    if status in (301, 302, 303) and "/login" in location:
        return "login"
    if status == 401:
        return "login"
    if status == 403:
        return "forbidden"
    if status == 404:
        return "missing"
    if status >= 500:
        return "error"
    if status >= 400 and route.expect.get("anonymous") == "invalid":
        return "invalid"
    return "ok"


@pytest.mark.parametrize("principal", PRINCIPALS)
def test_every_route_for(principal: str, app: Flask, matrix_world: dict[str, Any]) -> None:
    client, headers = _client_for(app, principal, matrix_world)
    victim = matrix_world["patient"]
    failures = []
    for route in ROUTES:
        expected = route.expect[principal]
        path = route.path(matrix_world)
        kwargs: dict[str, Any] = {"headers": headers if route.json or path.startswith("/api/") else {}}
        if route.data is not None:
            if route.json:
                kwargs["json"] = route.data(matrix_world)
            else:
                kwargs["data"] = route.data(matrix_world)
        response = client.open(path, method=route.method, **kwargs)
        body = response.get_data().decode("utf-8", "replace")
        response.close()
        got = _outcome(route, response)
        if got == "error":
            failures.append(f"{route.method} {path}: server error {response.status_code}")
            continue
        if expected != "any" and got != expected:
            failures.append(f"{route.method} {path}: expected {expected}, got {got} ({response.status_code})")
        outsider = principal in ("anonymous", "other_patient") and route.endpoint != "static"
        if outsider and (victim.last_name in body or victim.date_of_birth.isoformat() in body):
            failures.append(f"{route.method} {path}: shows the patient's data to {principal}")
        if route.endpoint == "auth.logout" and principal in ("technician", "pharmacist", "admin"):
            login(client, matrix_world["staff"][principal])
    assert failures == []
